//! The build and test driver behind `cargo xtask`, as a library so the
//! integration tests build their images and boot them with the same code the
//! commands use. Each module is one concern; `main.rs` only parses arguments.

pub mod appliance;
pub mod bench;
pub mod cluster;
pub mod compare;
pub mod custom_kernel;
pub mod debian;
pub mod deps;
pub mod drones;
pub mod fuzz;
pub mod head;
pub mod image;
pub mod iso;
pub mod kernel;
pub mod lab;
pub mod netbench;
pub mod node;
pub mod probe;
pub mod pxe;
pub mod sharebench;
pub mod slurm;
pub mod testing;
pub mod timeline;
pub mod uki;
pub mod vm;

use std::path::PathBuf;

/// The workspace root (the directory with the top-level Cargo.toml).
pub fn root() -> PathBuf {
    let xtask = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().map(PathBuf::from).unwrap_or(xtask)
}

/// Where every generated artifact and cache lives; `git clean` territory.
pub fn build_dir() -> PathBuf {
    root().join("build")
}

/// Where to write `path` before renaming it into place, so an interrupted
/// build never leaves something that looks finished.
pub fn partial(path: &std::path::Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".partial");
    PathBuf::from(name)
}

/// A shell rooted at the workspace, for running the host's tools.
pub fn shell() -> anyhow::Result<xshell::Shell> {
    let sh = xshell::Shell::new()?;
    sh.change_dir(root());
    Ok(sh)
}

/// The time every artifact is stamped with: SOURCE_DATE_EPOCH when set
/// (reproducible builds' convention), else 0.
pub fn mtime() -> anyhow::Result<u64> {
    Ok(mkimage::source_date_epoch(std::env::var_os(
        "SOURCE_DATE_EPOCH",
    ))?)
}
