// SPDX-License-Identifier: GPL-3.0-or-later
//! Files tyd writes for others to read (init, munged, Slurm, the resolver):
//! always whole, under a temporary name first and then renamed into place,
//! so a reader sees the old file or the new one and never half of one; with
//! their mode and owner set before anyone can open them.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Who owns a file, as uid and gid.
pub type Owner = (u32, u32);

/// Replaces `path` with `contents`, making its directory if need be.
pub fn replace(path: &Path, contents: &[u8], mode: u32, owner: Option<Owner>) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let partial = partial(path);
    std::fs::write(&partial, contents)?;
    set_mode(&partial, mode)?;
    if let Some((uid, gid)) = owner {
        nix::unistd::chown(&partial, Some(uid.into()), Some(gid.into()))?;
    }
    std::fs::rename(&partial, path)
}

/// Makes `dir` (and its parents) and gives it `mode` and `owner`.
pub fn directory(dir: &Path, mode: u32, owner: Option<Owner>) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    set_mode(dir, mode)?;
    if let Some((uid, gid)) = owner {
        nix::unistd::chown(dir, Some(uid.into()), Some(gid.into()))?;
    }
    Ok(())
}

fn partial(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".partial");
    PathBuf::from(name)
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_replaced_whole_with_its_mode() {
        let dir = std::env::temp_dir().join(format!("chaos-files-{}", std::process::id()));
        let path = dir.join("deep/key");
        replace(&path, b"one", 0o400, None).unwrap();
        replace(&path, b"two", 0o640, None).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
        assert!(!dir.join("deep/key.partial").exists());
        directory(&dir.join("private"), 0o700, None).unwrap();
        let mode = std::fs::metadata(dir.join("private"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
