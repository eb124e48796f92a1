//! The SHA-256 of host files, remembered for the life of the process, so
//! that an image's manifest and its archive, and the builds after them in
//! the same process, read an unchanged file once. This module never
//! decides what goes into an image.
//!
//! A file counts as unchanged while its device, inode, size, mtime and
//! ctime are: every write changes ctime, which unlike mtime no program
//! can set back. But the kernel stamps files from a clock that ticks every
//! few milliseconds, so a file written twice within a tick keeps its
//! stamps; as git does with "racily clean" index entries, a file changed
//! less than [`SETTLED`] before it was hashed is not remembered, and is
//! hashed again each time. The trade-off: a file rewritten with the same
//! size and stamps (a clock set back, a filesystem without ctime) keeps
//! its old digest within the process, and so its old member from the
//! member cache; across processes nothing is remembered.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use crate::manifest::Digest;

/// How long a file must have been left alone before its digest is kept:
/// well past any filesystem's timestamp granularity (FAT's is 2 s).
pub const SETTLED: Duration = Duration::from_secs(3);

/// What identifies a file's content without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Whether both stamps are more than [`SETTLED`] before `now`; a stamp
    /// before 1970 or in the future never is.
    fn settled(&self, now: SystemTime) -> bool {
        [self.mtime, self.ctime].into_iter().all(|(secs, nsecs)| {
            let (Ok(secs), Ok(nsecs)) = (u64::try_from(secs), u32::try_from(nsecs)) else {
                return false;
            };
            let stamped = SystemTime::UNIX_EPOCH + Duration::new(secs, nsecs);
            now.duration_since(stamped).is_ok_and(|age| age > SETTLED)
        })
    }
}

type Known = HashMap<PathBuf, (Stamp, Digest)>;

fn known() -> std::sync::MutexGuard<'static, Known> {
    static KNOWN: OnceLock<Mutex<Known>> = OnceLock::new();
    // A poisoned lock only means another thread panicked; the map is whole
    // at every step.
    KNOWN
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// The SHA-256 and size of the file at `path`, read unless this process
/// hashed it since it last changed.
pub fn of_file(path: &Path) -> io::Result<(Digest, u64)> {
    let file = File::open(path)?;
    // The stamp of the open file, so it is the one whose bytes are read.
    let stamp = Stamp::of(&file.metadata()?);
    if let Some((known, digest)) = known().get(path) {
        if *known == stamp {
            return Ok((*digest, stamp.size));
        }
    }
    let (digest, size) = Digest::of_reader(&file)?;
    // A size that moved while reading is a file being written.
    if size == stamp.size && stamp.settled(SystemTime::now()) {
        known().insert(path.to_owned(), (stamp, digest));
    }
    Ok((digest, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_is_kept_only_for_a_file_left_alone() {
        let at = |secs: i64| Stamp {
            dev: 1,
            ino: 2,
            size: 3,
            mtime: (secs, 0),
            ctime: (secs, 0),
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        assert!(at(1_000 - 4).settled(now));
        assert!(!at(1_000 - 3).settled(now));
        assert!(!at(1_000 + 1).settled(now));
        assert!(!at(-1).settled(now));
        let mut touched = at(10);
        touched.ctime = (999, 0);
        assert!(!touched.settled(now));
    }

    #[test]
    fn a_file_rewritten_at_once_is_hashed_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(of_file(&path).unwrap(), (Digest::of(b"abc"), 3));
        // Same size, within the same clock tick, most likely.
        std::fs::write(&path, b"abd").unwrap();
        assert_eq!(of_file(&path).unwrap(), (Digest::of(b"abd"), 3));
        assert!(of_file(&dir.path().join("missing")).is_err());
    }
}
