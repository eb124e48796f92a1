//! Compressed archive members kept between builds, so a build whose inputs
//! barely changed compresses only what did.
//!
//! An entry is keyed by the SHA-256 of everything that decides the
//! compressed bytes: the member's uncompressed bytes, as the image writer
//! describes them (its headers and the SHA-256 of each entry's data, so a
//! warm build need not read the data), and a fingerprint of
//! the compressor (its output for a fixed sample at the level the writer
//! uses), so a cache filled by another compressor version is never mixed
//! into an image. An entry file holds the SHA-256 of the member followed by
//! the member; a file that does not match its own hash (a torn write, a bad
//! disk) is a miss, never part of an image. Files are written beside their
//! final name and renamed, so builds running at once can share a cache.
//!
//! The cache is bounded: [`MemberCache::trim`] removes the entries used
//! longest ago (a hit refreshes the entry's mtime) until the rest fit
//! [`CACHE_LIMIT`]. This module never decides what a member contains.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use flate2::{Compression, GzBuilder};
use sha2::{Digest as _, Sha256};

use crate::manifest::Digest;

/// What the cache may hold before [`MemberCache::trim`] removes the
/// entries used longest ago: some dozens of images' worth.
pub const CACHE_LIMIT: u64 = 256 * 1024 * 1024;

/// A temporary file older than this was left by a build that died.
const STALE_PARTIAL: Duration = Duration::from_secs(600);
const PARTIAL_SUFFIX: &str = ".partial";

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("member cache {dir}: {source}", dir = dir.display())]
    Dir { dir: PathBuf, source: io::Error },
    #[error("member cache: writing {path}: {source}", path = path.display())]
    Write { path: PathBuf, source: io::Error },
}

/// A directory of compressed members; see the module docs.
#[derive(Debug, Clone)]
pub struct MemberCache {
    dir: PathBuf,
}

impl MemberCache {
    /// Opens the cache in `dir`, creating the directory if needed.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, CacheError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| CacheError::Dir {
            dir: dir.clone(),
            source,
        })?;
        Ok(MemberCache { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key of the member whose uncompressed bytes `described` decides,
    /// one way.
    pub(crate) fn key(described: &[u8]) -> Digest {
        let mut hasher = Sha256::new();
        hasher.update(compressor_fingerprint().0);
        hasher.update(described);
        Digest(hasher.finalize().into())
    }

    /// The compressed member stored under `key`, if there is a sound one.
    pub(crate) fn get(&self, key: &Digest) -> Option<Vec<u8>> {
        let path = self.path(key);
        let mut stored = std::fs::read(&path).ok()?;
        if stored.len() < 32 || Digest::of(&stored[32..]).0 != stored[..32] {
            return None;
        }
        // Best effort: a stale mtime only makes the entry an earlier
        // candidate for trimming.
        let _ = std::fs::File::options()
            .append(true)
            .open(&path)
            .and_then(|file| file.set_modified(SystemTime::now()));
        Some(stored.split_off(32))
    }

    /// Stores `member` under `key`.
    pub(crate) fn put(&self, key: &Digest, member: &[u8]) -> Result<(), CacheError> {
        // Unique within this process and across processes sharing the cache.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = self.path(key);
        let partial = self.dir.join(format!(
            "{}.{}.{}{PARTIAL_SUFFIX}",
            key.hex(),
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let written = std::fs::File::create(&partial)
            .and_then(|mut file| {
                file.write_all(&Digest::of(member).0)?;
                file.write_all(member)
            })
            .and_then(|()| std::fs::rename(&partial, &path));
        written.map_err(|source| {
            let _ = std::fs::remove_file(&partial);
            CacheError::Write { path, source }
        })
    }

    /// Removes the entries used longest ago until the rest fit `limit`
    /// bytes, and partial files left by builds that died.
    pub fn trim(&self, limit: u64) -> Result<(), CacheError> {
        let dir_error = |source| CacheError::Dir {
            dir: self.dir.clone(),
            source,
        };
        let now = SystemTime::now();
        let mut entries = Vec::new();
        for item in std::fs::read_dir(&self.dir).map_err(dir_error)? {
            let item = item.map_err(dir_error)?;
            // Raced by another build's trim, or not ours to judge.
            let Ok(meta) = item.metadata() else { continue };
            let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            if item.file_name().to_string_lossy().ends_with(PARTIAL_SUFFIX) {
                if now.duration_since(used).unwrap_or_default() > STALE_PARTIAL {
                    let _ = std::fs::remove_file(item.path());
                }
                continue;
            }
            if meta.is_file() {
                entries.push((used, meta.len(), item.path()));
            }
        }
        // Newest first: what survives is what the latest builds used.
        entries.sort_by_key(|entry| std::cmp::Reverse(entry.0));
        let mut kept = 0;
        for (_, size, path) in entries {
            kept += size;
            if kept > limit {
                // Another build may have removed it first.
                let _ = std::fs::remove_file(path);
            }
        }
        Ok(())
    }

    fn path(&self, key: &Digest) -> PathBuf {
        self.dir.join(key.hex())
    }
}

/// The gzip compression every member gets: level 9, about 3% smaller
/// than 6 (a Slurm drone image: 8,583 KiB against 8,862) for twice the
/// time, which only a member that is not in the cache costs.
pub(crate) fn compression() -> Compression {
    Compression::best()
}

/// Compresses one member: a gzip member with no file name and mtime 0, so
/// the same bytes always give the same member.
pub(crate) fn compress(plain: &[u8]) -> io::Result<Vec<u8>> {
    let mut gz = GzBuilder::new()
        .mtime(0)
        .write(Vec::with_capacity(plain.len() / 2), compression());
    gz.write_all(plain)?;
    gz.finish()
}

/// The hash of the compressor's output for a fixed sample: a different
/// compressor (or version of it) gives different bytes for the same input,
/// and its members must not meet this one's in one image.
fn compressor_fingerprint() -> Digest {
    static FINGERPRINT: OnceLock<Digest> = OnceLock::new();
    *FINGERPRINT.get_or_init(|| {
        // Text, repeats and noise, so the match finder, the literal coder
        // and the block splitter all have a say in the output.
        let mut sample = Vec::with_capacity(96 * 1024);
        let mut state: u32 = 0x9e37_79b9;
        for round in 0..2048u32 {
            sample.extend_from_slice(format!("entry {round} of the sample; ").as_bytes());
            for _ in 0..(round % 23) {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                sample.push((state >> 24) as u8);
            }
        }
        let member = compress(&sample).expect("compressing into memory cannot fail");
        Digest::of(&member)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_damaged_ones_are_misses() {
        let dir = tempfile::tempdir().unwrap();
        let cache = MemberCache::open(dir.path().join("members")).unwrap();
        let key = MemberCache::key(b"plain bytes");
        assert_ne!(key, MemberCache::key(b"plain bytez"));
        assert_eq!(cache.get(&key), None);
        cache.put(&key, b"compressed").unwrap();
        assert_eq!(cache.get(&key).as_deref(), Some(&b"compressed"[..]));

        // A flipped byte and a truncated file are both misses.
        let path = cache.path(&key);
        let mut stored = std::fs::read(&path).unwrap();
        *stored.last_mut().unwrap() ^= 1;
        std::fs::write(&path, &stored).unwrap();
        assert_eq!(cache.get(&key), None);
        std::fs::write(&path, &stored[..10]).unwrap();
        assert_eq!(cache.get(&key), None);
    }

    #[test]
    fn trim_keeps_the_most_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let cache = MemberCache::open(dir.path()).unwrap();
        let keys: Vec<Digest> = (0..4u8).map(|i| MemberCache::key(&[i])).collect();
        let epoch = SystemTime::UNIX_EPOCH;
        for (age, key) in keys.iter().enumerate() {
            cache.put(key, &[0; 68]).unwrap();
            // Entry i was last used at second i: 0 is the oldest.
            std::fs::File::options()
                .append(true)
                .open(cache.path(key))
                .unwrap()
                .set_modified(epoch + Duration::from_secs(age as u64 + 1))
                .unwrap();
        }
        let stale = dir.path().join(format!("x{PARTIAL_SUFFIX}"));
        std::fs::write(&stale, b"").unwrap();
        std::fs::File::options()
            .append(true)
            .open(&stale)
            .unwrap()
            .set_modified(epoch)
            .unwrap();
        // Each entry is 100 bytes (32 of hash, 68 of member): room for two.
        cache.trim(250).unwrap();
        let present: Vec<bool> = keys.iter().map(|k| cache.path(k).exists()).collect();
        assert_eq!(present, [false, false, true, true]);
        assert!(!stale.exists());
    }

    #[test]
    fn unwritable_cache_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"").unwrap();
        let err = MemberCache::open(file.join("cache")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("member cache {}/cache: ", file.display())),
            "{err}"
        );
    }
}
