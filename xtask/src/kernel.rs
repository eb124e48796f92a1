//! `cargo xtask kernel`: the distribution kernel, taken from Debian's
//! package and unpacked into build/debian with its modules, so nothing
//! needs root and the host's own /boot is never read.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

/// Debian's metapackage that names the current kernel package.
const METAPACKAGE: &str = "linux-image-amd64";

#[derive(Clone, Debug)]
pub struct Kernel {
    pub release: String,
    pub vmlinuz: PathBuf,
    /// lib/modules/<release> of the unpacked package; `None` for a kernel
    /// with everything built in (`cargo xtask kernel --custom`).
    pub modules: Option<PathBuf>,
}

/// The unpacked distribution kernel, downloading it on first use.
pub fn distribution(sh: &Shell) -> anyhow::Result<Kernel> {
    let package = current_package(sh)?;
    let version = crate::debian::version(sh, &package)?;
    let root = crate::debian::unpacked(sh, &package, &version, |root| {
        // The package leaves modules.dep to its install script; make it
        // here, against the unpacked tree only.
        let release = find_vmlinuz(&root.join("boot"))?.1;
        cmd!(sh, "depmod -b {root} {release}")
            .run()
            .context("depmod on the unpacked kernel (package kmod)")
    })?;
    find(&root)
}

fn current_package(sh: &Shell) -> anyhow::Result<String> {
    let depends = cmd!(sh, "apt-cache depends --important {METAPACKAGE}")
        .quiet()
        .read()
        .with_context(|| format!("asking apt which kernel {METAPACKAGE} stands for (run `cargo xtask deps` on Debian)"))?;
    depends
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .map(str::to_string)
        .with_context(|| format!("{METAPACKAGE} depends on no linux-image package; is apt's package list empty (apt-get update)?"))
}

fn find(root: &Path) -> anyhow::Result<Kernel> {
    let (vmlinuz, release) = find_vmlinuz(&root.join("boot"))?;
    let modules = root.join("lib/modules").join(&release);
    if !modules.join("modules.dep").exists() {
        bail!(
            "{} has no modules.dep for release {release}",
            modules.display()
        );
    }
    Ok(Kernel {
        release,
        vmlinuz,
        modules: Some(modules),
    })
}

/// The kernel image in an unpacked /boot and the release its name carries.
fn find_vmlinuz(boot: &Path) -> anyhow::Result<(PathBuf, String)> {
    let vmlinuz = std::fs::read_dir(boot)
        .with_context(|| format!("reading {}", boot.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .with_context(|| format!("no vmlinuz-* in {}", boot.display()))?;
    let release = vmlinuz
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .unwrap_or_default()
        .to_string();
    Ok((vmlinuz, release))
}
