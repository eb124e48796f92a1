//! Debian packages taken apart into build/ rather than installed: the
//! distribution kernel, and what would clash with the host's own packages
//! (the shared busybox beside the host's busybox-static). Each is cached
//! by package and version, so a new version in the archive is fetched once
//! and an old one is never mistaken for it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use xshell::{cmd, Shell};

/// apt's record of the version of `package` it would install (`Package:`,
/// `Version:`, `Depends:`... lines).
pub fn record(sh: &Shell, package: &str) -> anyhow::Result<String> {
    cmd!(sh, "apt-cache show --no-all-versions {package}")
        .quiet()
        .read()
        .with_context(|| {
            format!("asking apt about {package} (is apt's package list current? `apt-get update`)")
        })
}

/// The version of `package` apt would install.
pub fn version(sh: &Shell, package: &str) -> anyhow::Result<String> {
    record(sh, package)?
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .map(str::to_string)
        .with_context(|| format!("apt-cache show {package} names no version"))
}

/// The version of `package` installed on the build host; asking dpkg
/// takes milliseconds where apt takes a second.
pub fn installed_version(sh: &Shell, package: &str) -> anyhow::Result<String> {
    let format = "${Version}";
    let version = cmd!(sh, "dpkg-query -W --showformat {format} {package}")
        .quiet()
        .ignore_stderr()
        .read()
        .with_context(|| format!("{package} is not installed (`cargo xtask deps` installs it)"))?;
    if version.is_empty() {
        anyhow::bail!("{package} is not installed (`cargo xtask deps` installs it)");
    }
    Ok(version)
}

/// The root of `package` at `version` unpacked under build/debian,
/// downloading it on first use. `finish` runs on the unpacked root before
/// it is put in place (the kernel's depmod), so a tree that is there is
/// whole.
pub fn unpacked(
    sh: &Shell,
    package: &str,
    version: &str,
    finish: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<PathBuf> {
    // apt's epochs ("1:1.35.0") make no good file names.
    let dir = crate::build_dir()
        .join("debian")
        .join(format!("{package}_{}", version.replace(':', "%3a")));
    if !dir.join(COMPLETE).exists() {
        unpack(sh, package, version, &dir, finish)?;
    }
    Ok(dir.join("root"))
}

/// Written last, so an interrupted download never looks like a cached one.
const COMPLETE: &str = ".complete";

fn unpack(
    sh: &Shell,
    package: &str,
    version: &str,
    dir: &Path,
    finish: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    println!("debian: downloading {package} {version}");
    let partial = crate::partial(dir);
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial)?;
    {
        let _cd = sh.push_dir(&partial);
        cmd!(sh, "apt-get download -q {package}={version}")
            .run()
            .with_context(|| format!("apt-get download {package}={version} (is apt's package list current? `apt-get update`)"))?;
    }
    let deb = std::fs::read_dir(&partial)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download left no .deb in {}", partial.display()))?;
    println!("debian: unpacking {}", deb.display());
    let root = partial.join("root");
    cmd!(sh, "dpkg-deb -x {deb} {root}")
        .run()
        .context("dpkg-deb -x")?;
    std::fs::remove_file(&deb)?;
    finish(&root)?;
    std::fs::write(partial.join(COMPLETE), format!("{package} {version}\n"))?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&partial, dir)?;
    Ok(())
}
