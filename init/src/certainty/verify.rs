//! One verification pass: walk a root directory and compare it with the
//! baseline, entry by entry, content and metadata.
//!
//! Compared: type, owner, permission bits (not a symlink's, which Linux
//! fixes at 0777), a file's size, SHA-256 and file capabilities, a link's
//! target, a device's numbers. Not compared: times and link counts (the
//! image zeroes the first and the second means nothing in a RAM root), the
//! root directory's own metadata (the manifest has no entry for `/`).
//!
//! The walk is descriptor-relative (`openat`/`fstatat` with `O_NOFOLLOW`), so
//! a directory swapped for a symlink mid-pass is seen as a symlink, never
//! followed; files are opened non-blocking and checked to be the inode that
//! was stat'ed, so a FIFO slipped in cannot hang the daemon. Mount points
//! are found by device number: an entry on another device than the root is
//! a mount. One on a [`WRITABLE_MOUNTS`](super::WRITABLE_MOUNTS) path is
//! skipped; one anywhere else is [`Change::MountedOver`], and the walk never
//! crosses it. (A bind mount from the root onto itself keeps the device
//! number; what it shows is still compared, so a changed file shows as
//! changed content and a new one as added.)
//!
//! This module only reads; it never changes what it walks and never decides
//! what to do about a difference.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use mkimage::manifest::{self, Digest, Entry, Kind, Manifest, ParseError};
use mkimage::mode::{FileType, PERMISSION_MASK};
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstatat, FileStat, Mode};
use sha2::{Digest as _, Sha256};

use super::change::{Change, Difference};

/// The expected root, indexed for the walk.
#[derive(Debug, Clone)]
pub struct Baseline {
    /// Sorted by path.
    entries: Vec<Entry>,
    /// Directory path (`""` for the root) -> indexes of its direct children
    /// in `entries`, in name order.
    children: HashMap<String, Vec<usize>>,
}

#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("reading the manifest {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "the manifest {} has digest {found} but chaos.root_digest= pins {pinned}: \
         it is forged or from another image",
        path.display()
    )]
    Mismatch {
        path: PathBuf,
        pinned: Digest,
        found: Digest,
    },
    #[error("the manifest {} is not UTF-8 text", path.display())]
    NotText { path: PathBuf },
    #[error("the manifest {}: {source}", path.display())]
    Parse { path: PathBuf, source: ParseError },
}

impl Baseline {
    /// A baseline of exactly `entries`.
    pub fn new(entries: impl IntoIterator<Item = Entry>) -> Self {
        let mut entries: Vec<Entry> = entries.into_iter().collect();
        entries.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
        entries.dedup_by(|a, b| a.path == b.path);
        let mut children: HashMap<String, Vec<usize>> = HashMap::new();
        // Entries sorted by path list each directory's children in name
        // order, since siblings share everything before their names.
        for (i, entry) in entries.iter().enumerate() {
            let parent = entry.path.rsplit_once('/').map_or("", |(parent, _)| parent);
            children.entry(parent.to_owned()).or_default().push(i);
        }
        Baseline { entries, children }
    }

    /// An image's baseline: the manifest's entries plus the manifest file
    /// itself, which the manifest cannot list (see `mkimage::manifest`).
    pub fn of_image(manifest: &Manifest, text: &[u8]) -> Self {
        let listed = manifest.entries().iter().cloned();
        Self::new(listed.chain([manifest::manifest_entry(text)]))
    }

    /// Reads the manifest at `file`, checks it against the pinned digest
    /// before trusting a byte of it, and returns the baseline with the
    /// manifest's digest.
    pub fn load(file: &Path, pinned: Option<Digest>) -> Result<(Self, Digest), BaselineError> {
        let path = file.to_path_buf();
        let text = std::fs::read(file).map_err(|source| BaselineError::Read {
            path: path.clone(),
            source,
        })?;
        let found = Digest::of(&text);
        if let Some(pinned) = pinned.filter(|&pinned| pinned != found) {
            return Err(BaselineError::Mismatch {
                path,
                pinned,
                found,
            });
        }
        let utf8 = std::str::from_utf8(&text)
            .map_err(|_| BaselineError::NotText { path: path.clone() })?;
        let manifest =
            Manifest::parse(utf8).map_err(|source| BaselineError::Parse { path, source })?;
        Ok((Self::of_image(&manifest, &text), found))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn children(&self, dir: &str) -> &[usize] {
        self.children.get(dir).map_or(&[], Vec::as_slice)
    }
}

/// What one pass found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Sorted by path.
    pub differences: Vec<Difference>,
    /// Entries examined in the root, the root itself not counted.
    pub entries: usize,
    /// Bytes read and hashed.
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("opening the root {}: {source}", root.display())]
pub struct VerifyError {
    pub root: PathBuf,
    pub source: Errno,
}

/// Compares the tree at `root` with `baseline`. Paths in `writable` are
/// absolute inside that root (`/tmp`) and skipped while they are mounts.
pub fn verify(root: &Path, baseline: &Baseline, writable: &[&str]) -> Result<Report, VerifyError> {
    verify_with(root, baseline, writable, &mut || {})
}

/// [`verify`], calling `progress` after every file hashed: a pass over a
/// big image takes seconds under emulation, and the daemon's heartbeat
/// must not stop meanwhile.
pub fn verify_with(
    root: &Path,
    baseline: &Baseline,
    writable: &[&str],
    progress: &mut dyn FnMut(),
) -> Result<Report, VerifyError> {
    let fail = |source| VerifyError {
        root: root.to_path_buf(),
        source,
    };
    let mut dir = Dir::open(
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(fail)?;
    let root_dev = nix::sys::stat::fstat(dir.as_raw_fd()).map_err(fail)?.st_dev;
    let mut walk = Walk {
        baseline,
        writable,
        root_dev,
        buf: vec![0; 128 * 1024],
        report: Report::default(),
        progress,
    };
    walk.dir(&mut dir, "");
    let mut report = walk.report;
    report
        .differences
        .sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    Ok(report)
}

struct Walk<'a> {
    baseline: &'a Baseline,
    writable: &'a [&'a str],
    root_dev: libc::dev_t,
    /// Reused for every file, so a pass allocates no read buffers.
    buf: Vec<u8>,
    report: Report,
    progress: &'a mut dyn FnMut(),
}

impl Walk<'_> {
    fn differ(&mut self, path: String, change: Change) {
        self.report.differences.push(Difference { path, change });
    }

    fn unreadable(&mut self, path: String, what: &str, error: impl std::fmt::Display) {
        let error = format!("{what}: {error}");
        self.differ(path, Change::Unreadable { error });
    }

    /// Compares the directory `dir` (at baseline path `path`, `""` for the
    /// root) with the baseline's children of that path, merging the two
    /// name-sorted lists.
    fn dir(&mut self, dir: &mut Dir, path: &str) {
        let mut names: Vec<Vec<u8>> = Vec::new();
        for item in dir.iter() {
            match item {
                Ok(item) => {
                    let name = item.file_name().to_bytes();
                    if name != b"." && name != b".." {
                        names.push(name.to_vec());
                    }
                }
                Err(e) => {
                    let shown = if path.is_empty() { "/" } else { path };
                    return self.unreadable(escape(shown), "listing it", e);
                }
            }
        }
        names.sort();
        let fd = dir.as_raw_fd();
        let baseline = self.baseline;
        let expected = baseline.children(path);
        let (mut found, mut want) = (names.iter().peekable(), expected.iter().peekable());
        loop {
            let name_of = |i: usize| &baseline.entries[i].path.as_bytes()[path.len() + 1..];
            // Less: only on disk; Greater: only in the baseline.
            let order = match (found.peek(), want.peek()) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(name), Some(&&i)) => name.as_slice().cmp(name_of(i)),
            };
            match order {
                Ordering::Less => {
                    let name = found.next().expect("peeked");
                    self.added(fd, path, name);
                }
                Ordering::Greater => {
                    let entry = &baseline.entries[*want.next().expect("peeked")];
                    let expected = entry.kind.file_type();
                    self.differ(escape(&entry.path), Change::Removed { expected });
                }
                Ordering::Equal => {
                    let name = found.next().expect("peeked");
                    let entry = &baseline.entries[*want.next().expect("peeked")];
                    self.entry(fd, name, entry);
                }
            }
        }
    }

    fn added(&mut self, fd: RawFd, parent: &str, name: &[u8]) {
        let path = [parent.as_bytes(), b"/", name].concat();
        match stat_at(fd, name) {
            Ok(st) => {
                self.report.entries += 1;
                let found = FileType::from_mode(st.st_mode);
                self.differ(manifest::escape(&path), Change::Added { found });
            }
            // Gone again before we looked: nothing is there to report.
            Err(Errno::ENOENT) => {}
            Err(e) => self.unreadable(manifest::escape(&path), "stat", e),
        }
    }

    fn entry(&mut self, fd: RawFd, name: &[u8], entry: &Entry) {
        let path = || escape(&entry.path);
        let expected_type = entry.kind.file_type();
        let st = match stat_at(fd, name) {
            Ok(st) => st,
            Err(Errno::ENOENT) => {
                let change = Change::Removed {
                    expected: expected_type,
                };
                return self.differ(path(), change);
            }
            Err(e) => return self.unreadable(path(), "stat", e),
        };
        self.report.entries += 1;
        if st.st_dev != self.root_dev {
            // The mount's own root says nothing about the image: do not
            // compare it, and never cross into it.
            if !self.writable.contains(&entry.path.as_str()) {
                self.differ(path(), Change::MountedOver);
            }
            return;
        }
        let found_type = FileType::from_mode(st.st_mode);
        if found_type != Some(expected_type) {
            let change = Change::Type {
                expected: expected_type,
                found: found_type,
            };
            return self.differ(path(), change);
        }
        // Linux gives every symlink mode 0777 and has no call to change it.
        let mode = st.st_mode & PERMISSION_MASK;
        if mode != entry.mode && expected_type != FileType::Symlink {
            let change = Change::Mode {
                expected: entry.mode,
                found: mode,
            };
            self.differ(path(), change);
        }
        if (st.st_uid, st.st_gid) != (entry.uid, entry.gid) {
            let change = Change::Owner {
                expected: (entry.uid, entry.gid),
                found: (st.st_uid, st.st_gid),
            };
            self.differ(path(), change);
        }
        match &entry.kind {
            Kind::Dir => match Dir::openat(
                Some(fd),
                name,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            ) {
                Ok(mut sub) => self.dir(&mut sub, &entry.path),
                Err(e) => self.unreadable(path(), "opening the directory", e),
            },
            &Kind::File { size, sha256 } => {
                let found_size = st.st_size as u64;
                let found = if found_size == size {
                    let hashed = self.hash_at(fd, name, &st);
                    (self.progress)();
                    match hashed {
                        Ok(hashed) => {
                            if hashed.capabilities {
                                self.differ(path(), Change::Capabilities);
                            }
                            if hashed.size == size && hashed.sha256 == sha256 {
                                return;
                            }
                            (hashed.size, Some(hashed.sha256))
                        }
                        Err(e) => return self.unreadable(path(), "reading", e),
                    }
                } else {
                    (found_size, None)
                };
                let change = Change::Content {
                    expected_size: size,
                    found_size: found.0,
                    expected: sha256,
                    found: found.1,
                };
                self.differ(path(), change);
            }
            Kind::Symlink(target) => match nix::fcntl::readlinkat(Some(fd), name) {
                Ok(found) if found.as_bytes() == target.as_bytes() => {}
                Ok(found) => {
                    let change = Change::Target {
                        expected: escape(target),
                        found: manifest::escape(found.as_bytes()),
                    };
                    self.differ(path(), change);
                }
                Err(e) => self.unreadable(path(), "reading the link", e),
            },
            &Kind::CharDev { major, minor } | &Kind::BlockDev { major, minor } => {
                let found = (
                    nix::sys::stat::major(st.st_rdev) as u32,
                    nix::sys::stat::minor(st.st_rdev) as u32,
                );
                if found != (major, minor) {
                    let change = Change::Device {
                        expected: (major, minor),
                        found,
                    };
                    self.differ(path(), change);
                }
            }
        }
    }

    /// Reads the regular file `name`, which must still be the inode `st`
    /// describes.
    fn hash_at(&mut self, dir: RawFd, name: &[u8], st: &FileStat) -> io::Result<Hashed> {
        // O_NONBLOCK: should a FIFO replace the file after the stat, opening
        // it must not wait for a writer.
        let flags = OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY
            | OFlag::O_CLOEXEC;
        let raw = nix::fcntl::openat(Some(dir), name, flags, Mode::empty())?;
        // SAFETY: openat just returned this descriptor and nothing else owns it.
        let mut file = File::from(unsafe { OwnedFd::from_raw_fd(raw) });
        let meta = file.metadata()?;
        if (meta.dev(), meta.ino()) != (st.st_dev, st.st_ino) || !meta.is_file() {
            return Err(io::Error::other("replaced while being verified"));
        }
        let mut hasher = Sha256::new();
        let mut size = 0;
        loop {
            match file.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => {
                    hasher.update(&self.buf[..n]);
                    size += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.report.bytes += size;
        Ok(Hashed {
            sha256: Digest(hasher.finalize().into()),
            size,
            capabilities: has_capabilities(&file)?,
        })
    }
}

struct Hashed {
    sha256: Digest,
    size: u64,
    capabilities: bool,
}

/// True when the file carries file capabilities (the `security.capability`
/// attribute): they grant privileges without a mode bit or a byte of
/// content changing. A newc image cannot carry extended attributes, so the
/// baseline has none. Other attributes are not checked, since a security
/// module may label files on its own.
fn has_capabilities(file: &File) -> io::Result<bool> {
    // SAFETY: the name is a NUL-terminated constant and a null buffer of
    // size 0 only asks for the value's length.
    let rc = unsafe {
        libc::fgetxattr(
            file.as_raw_fd(),
            c"security.capability".as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    if rc >= 0 {
        return Ok(true);
    }
    match Errno::last() {
        // No such attribute, or a filesystem without attributes at all.
        Errno::ENODATA | Errno::EOPNOTSUPP => Ok(false),
        e => Err(e.into()),
    }
}

fn stat_at(dir: RawFd, name: &[u8]) -> nix::Result<FileStat> {
    fstatat(Some(dir), name, AtFlags::AT_SYMLINK_NOFOLLOW)
}

fn escape(path: &str) -> String {
    manifest::escape(path.as_bytes())
}

#[cfg(test)]
mod tests;
