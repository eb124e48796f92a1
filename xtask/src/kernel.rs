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
    let (package, version) = current_package(sh)?;
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

/// The kernel package the metapackage stands for, and its version: one
/// question to apt (each takes about a second), since the metapackage
/// pins its kernel's version.
fn current_package(sh: &Shell) -> anyhow::Result<(String, String)> {
    let show = crate::debian::record(sh, METAPACKAGE).with_context(|| {
        format!("which kernel {METAPACKAGE} stands for (run `cargo xtask deps` on Debian)")
    })?;
    let (package, version) = kernel_dependency(&show).with_context(|| {
        format!("{METAPACKAGE} depends on no linux-image package; is apt's package list empty (apt-get update)?")
    })?;
    let version = match version {
        Some(version) => version,
        None => crate::debian::version(sh, &package)?,
    };
    Ok((package, version))
}

/// The linux-image package in a metapackage's `Depends:` line, with the
/// version it pins, if it pins one.
fn kernel_dependency(show: &str) -> Option<(String, Option<String>)> {
    show.lines()
        .filter_map(|l| l.strip_prefix("Depends: "))
        .flat_map(|depends| depends.split(','))
        .map(str::trim)
        .find(|d| d.starts_with("linux-image-"))
        .map(|d| {
            let (name, constraint) = d.split_once(' ').unwrap_or((d, ""));
            let pinned = constraint
                .trim()
                .strip_prefix("(=")
                .and_then(|v| v.strip_suffix(')'))
                .map(|v| v.trim().to_string());
            (name.to_string(), pinned)
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metapackage_names_its_kernel_and_pins_its_version() {
        let show = "Package: linux-image-amd64\nVersion: 6.1.192-3\n\
                    Depends: linux-image-6.1.0-57-amd64 (= 6.1.192-3)\n";
        assert_eq!(
            kernel_dependency(show),
            Some((
                "linux-image-6.1.0-57-amd64".into(),
                Some("6.1.192-3".into())
            ))
        );
        let unpinned = "Depends: initramfs-tools, linux-image-6.1.0-57-amd64\n";
        assert_eq!(
            kernel_dependency(unpinned),
            Some(("linux-image-6.1.0-57-amd64".into(), None))
        );
        assert_eq!(kernel_dependency("Depends: initramfs-tools\n"), None);
    }
}
