//! The seam between PID 1's decisions and the running system: the few calls
//! that change the machine (mounts, files, the host name) go through
//! [`System`], so the mount table and fix_hosts are unit-tested with a
//! recording double instead of root and a VM. [`Linux`] is the only real
//! implementation; nothing here decides anything.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use nix::mount::MsFlags;

pub trait System {
    /// Creates a directory and its parents; an existing one is fine.
    fn create_dir_all(&self, path: &Path, mode: u32) -> io::Result<()>;
    /// True when something is mounted on `path` (it sits on another device
    /// than its parent directory).
    fn is_mountpoint(&self, path: &Path) -> io::Result<bool>;
    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: MsFlags,
        data: &str,
    ) -> io::Result<()>;
    /// Replaces a file's contents; a symlink is followed, so /etc/hosts may
    /// point into /run and the root stays as the image built it.
    fn write_file(&self, path: &Path, contents: &str, mode: u32) -> io::Result<()>;
    fn set_hostname(&self, name: &str) -> io::Result<()>;
    /// The NIS domain, as the kernel's own `ip=` handling sets it.
    fn set_domainname(&self, name: &str) -> io::Result<()>;
}

/// The running kernel.
#[derive(Debug, Default)]
pub struct Linux;

impl System for Linux {
    fn create_dir_all(&self, path: &Path, mode: u32) -> io::Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(path)
    }

    fn is_mountpoint(&self, path: &Path) -> io::Result<bool> {
        let parent = path.parent().unwrap_or(Path::new("/"));
        if path == Path::new("/") {
            return Ok(true);
        }
        Ok(std::fs::metadata(path)?.dev() != std::fs::metadata(parent)?.dev())
    }

    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: MsFlags,
        data: &str,
    ) -> io::Result<()> {
        let data = (!data.is_empty()).then_some(data);
        nix::mount::mount(Some(source), target, Some(fstype), flags, data).map_err(io::Error::from)
    }

    fn write_file(&self, path: &Path, contents: &str, mode: u32) -> io::Result<()> {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(path)?;
        file.write_all(contents.as_bytes())
    }

    fn set_hostname(&self, name: &str) -> io::Result<()> {
        nix::unistd::sethostname(name).map_err(io::Error::from)
    }

    fn set_domainname(&self, name: &str) -> io::Result<()> {
        // SAFETY: the pointer and length describe `name`, which outlives the call.
        let rc = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

#[cfg(test)]
pub mod double {
    //! A recording [`System`] for unit tests: it keeps every call as a line
    //! and a set of paths that count as mounted.

    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    #[derive(Default)]
    pub struct Recorder {
        pub calls: RefCell<Vec<String>>,
        pub mounted: RefCell<BTreeSet<PathBuf>>,
        pub files: RefCell<Vec<(PathBuf, String)>>,
    }

    impl System for Recorder {
        fn create_dir_all(&self, path: &Path, mode: u32) -> io::Result<()> {
            self.calls
                .borrow_mut()
                .push(format!("mkdir {} {mode:o}", path.display()));
            Ok(())
        }

        fn is_mountpoint(&self, path: &Path) -> io::Result<bool> {
            Ok(self.mounted.borrow().contains(path))
        }

        fn mount(
            &self,
            source: &str,
            target: &Path,
            fstype: &str,
            _flags: MsFlags,
            data: &str,
        ) -> io::Result<()> {
            self.mounted.borrow_mut().insert(target.to_path_buf());
            self.calls.borrow_mut().push(format!(
                "mount {source} {} {fstype} {data}",
                target.display()
            ));
            Ok(())
        }

        fn write_file(&self, path: &Path, contents: &str, _mode: u32) -> io::Result<()> {
            self.files
                .borrow_mut()
                .push((path.to_path_buf(), contents.to_string()));
            Ok(())
        }

        fn set_hostname(&self, name: &str) -> io::Result<()> {
            self.calls.borrow_mut().push(format!("hostname {name}"));
            Ok(())
        }

        fn set_domainname(&self, name: &str) -> io::Result<()> {
            self.calls.borrow_mut().push(format!("domainname {name}"));
            Ok(())
        }
    }
}
