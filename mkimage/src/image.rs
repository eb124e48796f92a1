//! Writing a [`Spec`] as a reproducible initramfs: a sequence of
//! gzip-compressed newc cpio archives, which the kernel unpacks one after
//! another into the same RAM root, as if they were one archive. Each
//! compressed member holds one whole archive, trailer included, because
//! the kernel insists that a compressed member ends where an archive does.
//!
//! The entries are split into members by a rule that looks at nothing but
//! the entries themselves ([`split`]): a file of at least [`MEMBER_ALONE`]
//! bytes is a member of its own, and runs of smaller entries share one up
//! to [`MEMBER_RUN`] bytes. So a changed file changes only its own member,
//! the members are compressed on every core at once, and with a
//! [`MemberCache`] a member compressed by an earlier build is taken as it
//! was. Splitting costs about 0.1% of the size of an image with modules.
//!
//! Reproducibility is by construction: the same spec, host file contents and
//! mtime give the same bytes, whichever members came from the cache (its
//! keys include the compressor, see [`crate::cache`]). Entries go out in
//! the spec's sorted order, so every directory precedes its contents in
//! the sequence; inode numbers are sequential from [`FIRST_INO`] within
//! each member (the kernel reads them only to find hard links, within one
//! archive, and only for files with nlink > 1, which are never written);
//! one caller-chosen mtime (`SOURCE_DATE_EPOCH` or 0), dev numbers 0,
//! nlink 2 for directories and 1 otherwise; gzip headers carry no name and
//! mtime 0, and the compression level is fixed. Headers are encoded by the
//! `cpio` crate, which lets us set every field. This module never decides
//! what goes into an image.

use std::borrow::Cow;
use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use cpio::NewcBuilder;

use crate::cache::{self, CacheError, MemberCache, CACHE_LIMIT};
use crate::digests;
use crate::manifest::Digest;
use crate::spec::{Content, Entry, Kind, Spec};

/// Inode number of the first entry of each member; the rest follow
/// sequentially. Same start as the kernel's gen_init_cpio, so archives
/// compare easily with its output.
pub const FIRST_INO: u32 = 721;

/// A file this large is a member of its own: large files are what changes
/// between builds (the node's binaries) and what is worth compressing on
/// its own core.
pub const MEMBER_ALONE: usize = 256 * 1024;
/// Smaller entries share a member up to this many bytes of data.
pub const MEMBER_RUN: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("mtime {0} does not fit the 32-bit newc mtime field")]
    Mtime(u64),
    #[error("/{path}: reading {host}: {source}", host = host.display())]
    Read {
        path: String,
        host: PathBuf,
        source: io::Error,
    },
    #[error("/{path}: {host} changed while the image was written", host = host.display())]
    Changed { path: String, host: PathBuf },
    #[error("/{path}: {size} bytes is more than the 4 GiB a newc entry can hold")]
    TooLarge { path: String, size: u64 },
    #[error("writing the archive: {0}")]
    Write(#[from] io::Error),
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// What a write did, for callers that report it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Compressed members (each one archive) in the image.
    pub members: usize,
    /// How many of them this write compressed; the rest came from the cache.
    pub compressed: usize,
}

/// One entry with the hash of its data, ready to key its member; a host
/// file is read only when its member must be compressed.
struct Item<'s> {
    name: &'s str,
    entry: &'s Entry,
    data: Data<'s>,
    size: u32,
    digest: Digest,
}

enum Data<'s> {
    Here(&'s [u8]),
    Host(&'s Path),
}

impl Item<'_> {
    /// The entry's data; a host file must still hash as it did when its
    /// member was keyed, or the cache would file a member under another
    /// file's key.
    fn bytes(&self) -> Result<Cow<'_, [u8]>, WriteError> {
        match self.data {
            Data::Here(bytes) => Ok(Cow::Borrowed(bytes)),
            Data::Host(host) => {
                let read = std::fs::read(host).map_err(|source| WriteError::Read {
                    path: self.name.into(),
                    host: host.to_owned(),
                    source,
                })?;
                if Digest::of(&read) != self.digest {
                    return Err(WriteError::Changed {
                        path: self.name.into(),
                        host: host.to_owned(),
                    });
                }
                Ok(Cow::Owned(read))
            }
        }
    }

    /// The entry's header, as the `ino`th of its member.
    fn header(&self, ino: u32, mtime: u32) -> NewcBuilder {
        let entry = self.entry;
        let (rdev_major, rdev_minor) = match entry.kind {
            Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => (major, minor),
            _ => (0, 0),
        };
        NewcBuilder::new(self.name)
            .ino(ino)
            .mode(entry.kind.file_type().bits() | entry.mode)
            .uid(entry.uid)
            .gid(entry.gid)
            .nlink(if entry.kind == Kind::Dir { 2 } else { 1 })
            .mtime(mtime)
            .dev_major(0)
            .dev_minor(0)
            .rdev_major(rdev_major)
            .rdev_minor(rdev_minor)
    }
}

impl Spec {
    /// Writes the image to `out` with every entry's mtime set to `mtime`,
    /// and returns `out`.
    pub fn write<W: Write>(&self, out: W, mtime: u64) -> Result<W, WriteError> {
        Ok(self.write_with(out, mtime, None)?.0)
    }

    /// [`Spec::write`], taking members from `cache` when an earlier build
    /// compressed the same bytes and storing the ones it compresses.
    pub fn write_with<W: Write>(
        &self,
        mut out: W,
        mtime: u64,
        cache: Option<&MemberCache>,
    ) -> Result<(W, WriteStats), WriteError> {
        let mtime = u32::try_from(mtime).map_err(|_| WriteError::Mtime(mtime))?;
        let items = self.items()?;
        let sizes: Vec<usize> = items.iter().map(|item| item.size as usize).collect();
        let members = split(&sizes);
        let compressed = compress_all(&items, &members, mtime, cache)?;
        let mut stats = WriteStats {
            members: members.len(),
            compressed: 0,
        };
        for (bytes, fresh) in compressed {
            out.write_all(&bytes)?;
            stats.compressed += usize::from(fresh);
        }
        if let Some(cache) = cache {
            cache.trim(CACHE_LIMIT)?;
        }
        Ok((out, stats))
    }

    /// Every entry with the hash of its data; host files are hashed
    /// through [`digests`], which reads only what this process has not.
    fn items(&self) -> Result<Vec<Item<'_>>, WriteError> {
        self.iter()
            .map(|(name, entry)| {
                let here = |bytes: &[u8]| (bytes.len() as u64, Digest::of(bytes));
                let (data, (size, digest)) = match &entry.kind {
                    Kind::File(Content::Bytes(bytes)) => (Data::Here(bytes), here(bytes)),
                    Kind::File(Content::Host(host)) => {
                        let (digest, size) =
                            digests::of_file(host).map_err(|source| WriteError::Read {
                                path: name.into(),
                                host: host.clone(),
                                source,
                            })?;
                        (Data::Host(host), (size, digest))
                    }
                    // Without a trailing NUL, as GNU cpio writes symlinks.
                    Kind::Symlink(target) => {
                        (Data::Here(target.as_bytes()), here(target.as_bytes()))
                    }
                    Kind::Dir | Kind::CharDev { .. } | Kind::BlockDev { .. } => {
                        (Data::Here(&[]), here(&[]))
                    }
                };
                let size = u32::try_from(size).map_err(|_| WriteError::TooLarge {
                    path: name.into(),
                    size,
                })?;
                Ok(Item {
                    name,
                    entry,
                    data,
                    size,
                    digest,
                })
            })
            .collect()
    }

    /// The uncompressed image as one archive, for tests of the encoding.
    #[cfg(test)]
    fn write_newc(&self, mtime: u32) -> Result<Vec<u8>, WriteError> {
        newc(&self.items()?, mtime)
    }
}

/// The members of an image whose entries have `sizes` bytes of data, in
/// order, as ranges of entry indices: a file of [`MEMBER_ALONE`] bytes or
/// more alone, smaller entries together until the next would take the run
/// past [`MEMBER_RUN`]. No entries make one member, a trailer alone.
// One member spanning no entries, not a vector of the range's indices.
#[allow(clippy::single_range_in_vec_init)]
pub fn split(sizes: &[usize]) -> Vec<Range<usize>> {
    if sizes.is_empty() {
        return vec![0..0];
    }
    let mut members: Vec<Range<usize>> = Vec::new();
    let mut run = 0;
    for (index, &size) in sizes.iter().enumerate() {
        let alone = size >= MEMBER_ALONE;
        match members.last_mut() {
            Some(last) if !alone && run > 0 && run + size <= MEMBER_RUN => {
                last.end = index + 1;
                run += size;
            }
            _ => {
                members.push(index..index + 1);
                // A member that holds a large file takes nothing more; an
                // empty entry still opens a run (hence at least 1).
                run = if alone { 0 } else { size.max(1) };
            }
        }
    }
    members
}

/// Each member compressed (or taken from `cache`), in order, with whether
/// this call compressed it. The largest members are handed out first, so
/// the cores finish at about the same time.
fn compress_all(
    items: &[Item],
    members: &[Range<usize>],
    mtime: u32,
    cache: Option<&MemberCache>,
) -> Result<Vec<(Vec<u8>, bool)>, WriteError> {
    let size = |member: &Range<usize>| -> usize {
        items[member.clone()]
            .iter()
            .map(|item| item.size as usize)
            .sum()
    };
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by_key(|&index| std::cmp::Reverse(size(&members[index])));
    let next = AtomicUsize::new(0);
    let work = || -> Result<Vec<(usize, Vec<u8>, bool)>, WriteError> {
        let mut done = Vec::new();
        while let Some(&index) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
            let member = &items[members[index].clone()];
            let (bytes, fresh) = match cache {
                None => (cache::compress(&newc(member, mtime)?)?, true),
                Some(cache) => {
                    let key = MemberCache::key(&outline(member, mtime)?);
                    match cache.get(&key) {
                        Some(bytes) => (bytes, false),
                        None => {
                            let bytes = cache::compress(&newc(member, mtime)?)?;
                            cache.put(&key, &bytes)?;
                            (bytes, true)
                        }
                    }
                }
            };
            done.push((index, bytes, fresh));
        }
        Ok(done)
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(members.len())
        .max(1);
    let finished: Vec<_> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads).map(|_| scope.spawn(work)).collect();
        workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    let mut all = Vec::with_capacity(members.len());
    for done in finished {
        all.extend(done?);
    }
    all.sort_by_key(|(index, ..)| *index);
    Ok(all
        .into_iter()
        .map(|(_, bytes, fresh)| (bytes, fresh))
        .collect())
}

/// `items` as one uncompressed newc archive, trailer included.
fn newc(items: &[Item], mtime: u32) -> Result<Vec<u8>, WriteError> {
    let size: usize = items.iter().map(|item| item.size as usize + 256).sum();
    let mut out = Vec::with_capacity(size);
    for (item, ino) in items.iter().zip(FIRST_INO..) {
        let mut writer = item.header(ino, mtime).write(out, item.size);
        writer.write_all(&item.bytes()?)?;
        out = writer.finish()?;
    }
    Ok(cpio::newc::trailer(out)?)
}

/// What decides the archive [`newc`] makes of `items`, without reading a
/// file: the archive with each entry's data (and its padding, which the
/// header's sizes decide) replaced by the data's SHA-256. The member
/// cache's key, so a warm build reads no file the manifest already hashed.
fn outline(items: &[Item], mtime: u32) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(items.len() * (128 + 32));
    for (item, ino) in items.iter().zip(FIRST_INO..) {
        // Finishing short of the data writes the header alone.
        out = item.header(ino, mtime).write(out, item.size).finish()?;
        out.extend_from_slice(&item.digest.0);
    }
    cpio::newc::trailer(out)
}

#[derive(Debug, thiserror::Error)]
#[error("SOURCE_DATE_EPOCH={0:?} is not a whole number of seconds since 1970")]
pub struct EpochError(std::ffi::OsString);

/// The archive mtime from SOURCE_DATE_EPOCH's value if set (it must then be
/// a whole number of seconds, as reproducible-builds.org specifies), else 0.
pub fn source_date_epoch(value: Option<std::ffi::OsString>) -> Result<u64, EpochError> {
    let Some(value) = value else { return Ok(0) };
    // Digits only: u64's FromStr would also take a leading '+'.
    let seconds = value
        .to_str()
        .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|text| text.parse().ok());
    seconds.ok_or(EpochError(value))
}

#[cfg(test)]
mod tests {

    #[test]
    fn source_date_epoch_values() {
        assert_eq!(source_date_epoch(None).unwrap(), 0);
        assert_eq!(
            source_date_epoch(Some("1700000000".into())).unwrap(),
            1_700_000_000
        );
        for bad in ["", "12abc", "-1", "+1", " 1", "99999999999999999999999"] {
            let err = source_date_epoch(Some(bad.into())).unwrap_err().to_string();
            assert_eq!(
                err,
                format!("SOURCE_DATE_EPOCH={bad:?} is not a whole number of seconds since 1970")
            );
        }
    }
    use super::*;

    /// Splits a newc archive into (header fields as hex strings, name, data).
    fn entries(archive: &[u8]) -> Vec<(Vec<&str>, &str, &[u8])> {
        let align = |n: usize| n.div_ceil(4) * 4;
        let hex = |field: &str| usize::from_str_radix(field, 16).unwrap();
        let mut out = Vec::new();
        let mut at = 0;
        while at < archive.len() {
            assert_eq!(&archive[at..at + 6], b"070701");
            let fields: Vec<&str> = archive[at + 6..at + 110]
                .chunks(8)
                .map(|field| std::str::from_utf8(field).unwrap())
                .collect();
            let (size, name_len) = (hex(fields[6]), hex(fields[11]));
            let name = std::str::from_utf8(&archive[at + 110..at + 110 + name_len - 1]).unwrap();
            let data_at = align(at + 110 + name_len);
            out.push((fields, name, &archive[data_at..data_at + size]));
            at = align(data_at + size);
        }
        out
    }

    #[test]
    fn header_fields() {
        let mut spec = Spec::new();
        spec.file("/etc/motd", 0o644, "hello\n").unwrap();
        spec.symlink("/sbin", "bin").unwrap();
        spec.char_dev("/dev/console", 0o600, 5, 1)
            .unwrap()
            .owner("/dev/console", 7, 8)
            .unwrap();
        let archive = spec.write_newc(0x1234_5678).unwrap();
        let got = entries(&archive);
        let names: Vec<&str> = got.iter().map(|e| e.1).collect();
        assert_eq!(
            names,
            [
                "dev",
                "dev/console",
                "etc",
                "etc/motd",
                "sbin",
                "TRAILER!!!"
            ]
        );
        //            ino       mode      uid       gid       nlink     mtime     size      devmaj    devmin    rdevmaj   rdevmin   namesize  check
        #[rustfmt::skip]
        let want: [[&str; 13]; 6] = [
            ["000002d1", "000041ed", "00000000", "00000000", "00000002", "12345678", "00000000", "00000000", "00000000", "00000000", "00000000", "00000004", "00000000"],
            ["000002d2", "00002180", "00000007", "00000008", "00000001", "12345678", "00000000", "00000000", "00000000", "00000005", "00000001", "0000000c", "00000000"],
            ["000002d3", "000041ed", "00000000", "00000000", "00000002", "12345678", "00000000", "00000000", "00000000", "00000000", "00000000", "00000004", "00000000"],
            ["000002d4", "000081a4", "00000000", "00000000", "00000001", "12345678", "00000006", "00000000", "00000000", "00000000", "00000000", "00000009", "00000000"],
            ["000002d5", "0000a1ff", "00000000", "00000000", "00000001", "12345678", "00000003", "00000000", "00000000", "00000000", "00000000", "00000005", "00000000"],
            ["00000000", "00000000", "00000000", "00000000", "00000001", "00000000", "00000000", "00000000", "00000000", "00000000", "00000000", "0000000b", "00000000"],
        ];
        for ((fields, name, _), want) in got.iter().zip(want) {
            assert_eq!(fields, &want, "{name}");
        }
        assert_eq!(got[3].2, b"hello\n");
        assert_eq!(got[4].2, b"bin");
    }

    #[test]
    fn padding_aligns_every_header_and_data_to_four_bytes() {
        // Name lengths 1..=4 and data lengths 0..=4 cover every remainder.
        let mut spec = Spec::new();
        for (i, name) in ["/a", "/bb", "/ccc", "/dddd"].into_iter().enumerate() {
            spec.file(name, 0o644, vec![b'x'; i + 1]).unwrap();
        }
        spec.file("/e", 0o644, "").unwrap();
        let archive = spec.write_newc(0).unwrap();
        assert_eq!(archive.len() % 4, 0);
        let got = entries(&archive);
        let sizes: Vec<usize> = got.iter().map(|e| e.2.len()).collect();
        assert_eq!(sizes, [1, 2, 3, 4, 0, 0]);
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)]
    fn split_puts_large_files_alone_and_bounds_runs() {
        // Four runs of `small` are 4 bytes short of MEMBER_RUN.
        let (alone, small) = (MEMBER_ALONE, MEMBER_ALONE - 1);
        assert_eq!(4 * small + 4, MEMBER_RUN);
        let cases: [(&[usize], &[Range<usize>]); 5] = [
            (&[], &[0..0]),
            (&[0, 0, 10], &[0..3]),
            (&[small, small, small, small, 4, 1], &[0..5, 5..6]),
            (&[alone, alone + 1, 3], &[0..1, 1..2, 2..3]),
            (
                &[0, 10, alone, 5, small, small, small, small, 1],
                &[0..2, 2..3, 3..7, 7..9],
            ),
        ];
        for (sizes, want) in cases {
            assert_eq!(split(sizes), want, "{sizes:?}");
        }
    }

    /// Three large host files in `dir` and some small entries: four members.
    fn large_files(dir: &std::path::Path) -> Spec {
        let mut spec = Spec::new();
        for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
            let host = dir.join(name);
            let bytes: Vec<u8> = (0..MEMBER_ALONE + i).map(|n| (n * 7 / 5) as u8).collect();
            std::fs::write(&host, bytes).unwrap();
            spec.file_from(&format!("/lib/{name}"), 0o644, host)
                .unwrap();
        }
        spec.file("/etc/motd", 0o644, "hello\n").unwrap();
        spec.symlink("/sbin", "bin").unwrap();
        spec
    }

    #[test]
    fn a_warm_cache_gives_the_cold_bytes_and_compresses_only_what_changed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = MemberCache::open(dir.path().join("cache")).unwrap();
        let spec = large_files(dir.path());
        let uncached = spec.write(Vec::new(), 7).unwrap();
        let write = |spec: &Spec| spec.write_with(Vec::new(), 7, Some(&cache)).unwrap();
        let (cold, stats) = write(&spec);
        assert_eq!(
            stats,
            WriteStats {
                members: 5,
                compressed: 5
            }
        );
        let (warm, stats) = write(&spec);
        assert_eq!(
            stats,
            WriteStats {
                members: 5,
                compressed: 0
            }
        );
        assert!(
            cold == uncached && warm == uncached,
            "the cache changed the bytes"
        );

        // One changed file: its member alone is compressed again.
        let mut b = std::fs::read(dir.path().join("b")).unwrap();
        b[100] ^= 1;
        std::fs::write(dir.path().join("b"), b).unwrap();
        let (changed, stats) = write(&spec);
        assert_eq!(
            stats,
            WriteStats {
                members: 5,
                compressed: 1
            }
        );
        assert!(changed == spec.write(Vec::new(), 7).unwrap());
        assert!(changed != uncached);

        // Damaged entries are compressed again, to the same bytes.
        for item in std::fs::read_dir(cache.dir()).unwrap() {
            let path = item.unwrap().path();
            let mut stored = std::fs::read(&path).unwrap();
            stored[40] ^= 1;
            std::fs::write(&path, stored).unwrap();
        }
        let (repaired, stats) = write(&spec);
        assert_eq!(stats.compressed, 5);
        assert!(repaired == changed);
    }

    #[test]
    fn a_file_changed_after_it_was_hashed_is_an_error_not_a_member() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("init");
        std::fs::write(&host, b"one").unwrap();
        let mut spec = Spec::new();
        spec.file_from("/init", 0o755, &host).unwrap();
        let items = spec.items().unwrap();
        std::fs::write(&host, b"two").unwrap();
        let err = newc(&items, 0).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "/init: {} changed while the image was written",
                host.display()
            )
        );
    }

    #[test]
    fn gzip_header_is_fixed() {
        let archive = Spec::new().write(Vec::new(), 0).unwrap();
        // magic, deflate, no flags (no name), mtime 0, XFL of the best
        // compression, OS byte.
        assert_eq!(archive[..10], [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 255]);
    }

    #[test]
    fn errors_name_the_entry() {
        let mut spec = Spec::new();
        spec.file_from("/sbin/init", 0o755, "/nonexistent/init")
            .unwrap();
        let err = spec.write(Vec::new(), 0).unwrap_err().to_string();
        assert!(
            err.starts_with("/sbin/init: reading /nonexistent/init: "),
            "{err}"
        );
        let err = Spec::new()
            .write(Vec::new(), 1 << 32)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "mtime 4294967296 does not fit the 32-bit newc mtime field"
        );
    }
}
