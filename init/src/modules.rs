//! Loading kernel modules at boot. The image builder resolved the closure:
//! /etc/chaos/modules lists the modules to load, dependencies first, and the
//! image's pruned modules.dep (read with the builder's own parser, so there
//! is one definition of it) says where each file is. This module loads them
//! with finit_module(2); it never decides which modules a node needs and
//! never runs modprobe.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use nix::kmod::{finit_module, ModuleInitFlags};

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("this image's modules are for kernel {image}, but the running kernel is {running}")]
    WrongKernel { image: String, running: String },
    #[error("loading {name} ({path}): {source}")]
    Load {
        name: String,
        path: PathBuf,
        source: io::Error,
    },
}

/// Loads one module file; false if it was already loaded.
pub fn load(name: &str, path: &Path) -> Result<bool, ModuleError> {
    let fail = |source: io::Error| ModuleError::Load {
        name: name.to_string(),
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(fail)?;
    match finit_module(&file, c"", ModuleInitFlags::empty()) {
        Ok(()) => Ok(true),
        Err(nix::errno::Errno::EEXIST) => Ok(false),
        Err(e) => Err(fail(e.into())),
    }
}

/// The image's modules directory for the running kernel, or the mismatch.
pub fn image_dir(root: &Path, running: &str) -> Result<PathBuf, ModuleError> {
    let dir = root.join("lib/modules").join(running);
    if dir.is_dir() {
        return Ok(dir);
    }
    let image = std::fs::read_dir(root.join("lib/modules"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .unwrap_or_else(|| "none".to_string());
    Err(ModuleError::WrongKernel {
        image,
        running: running.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mismatched_kernel_names_both_releases() {
        let root = std::env::temp_dir().join(format!("chaos-modules-{}", std::process::id()));
        std::fs::create_dir_all(root.join("lib/modules/6.1.0-56-amd64")).unwrap();
        let err = image_dir(&root, "6.12.0-1-amd64").unwrap_err();
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(
            err.to_string(),
            "this image's modules are for kernel 6.1.0-56-amd64, but the running kernel is 6.12.0-1-amd64"
        );
    }
}
