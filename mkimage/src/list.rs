//! Reading an image back (gzip-compressed or plain) into a list of entries,
//! for `mkimage list` and for tests. An image is a sequence of newc cpio
//! archives, each ending with its `TRAILER!!!` entry, in one or more gzip
//! members; like the kernel, the reader takes the sequence as one archive.
//!
//! The reader treats its input as untrusted: every malformation is a
//! [`ListError`] naming what was wrong and its byte offset in the
//! uncompressed archive, never a panic, and no allocation is sized from a
//! header before the bytes have arrived. It parses headers itself rather
//! than through the `cpio` crate's reader, whose errors carry neither the
//! offset nor the field. The input ends after a trailer; anything else
//! there must be the next archive.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read};

use flate2::read::MultiGzDecoder;

use crate::mode::{ls_string, FileType};

const HEADER_LEN: usize = 110;
const FIELDS: [&str; 13] = [
    "c_ino",
    "c_mode",
    "c_uid",
    "c_gid",
    "c_nlink",
    "c_mtime",
    "c_filesize",
    "c_devmajor",
    "c_devminor",
    "c_rdevmajor",
    "c_rdevminor",
    "c_namesize",
    "c_check",
];
const TRAILER: &str = "TRAILER!!!";
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// One entry of an archive, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedEntry {
    /// The name as stored in the archive (no leading `/` in chaos images).
    pub name: String,
    pub ino: u32,
    /// Type and permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: u32,
    pub size: u32,
    pub rdev_major: u32,
    pub rdev_minor: u32,
    /// The target, for symlinks.
    pub link_target: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("reading the archive at byte {offset}: {source}")]
    Read { offset: u64, source: io::Error },
    #[error("archive truncated at byte {offset}: expected {expected}")]
    Truncated { offset: u64, expected: String },
    #[error(
        "bad magic at byte {offset}: expected \"070701\" or \"070702\" (newc), found {found:?}"
    )]
    Magic { offset: u64, found: String },
    #[error("header field {field} at byte {offset} is not 8 hex digits: {value:?}")]
    Field {
        offset: u64,
        field: &'static str,
        value: String,
    },
    #[error("entry name at byte {offset} {reason}")]
    Name { offset: u64, reason: &'static str },
}

/// Lists the entries of an image, excluding the trailers.
pub fn list(reader: impl Read) -> Result<Vec<ListedEntry>, ListError> {
    Ok(read_entries(Counted::new(uncompressed(reader)?))?.0)
}

/// The archives of an image, each uncompressed and whole, in order: the
/// input for a reader that stops at the first trailer, as GNU cpio does.
pub fn archives(reader: impl Read) -> Result<Vec<Vec<u8>>, ListError> {
    let mut plain = Vec::new();
    uncompressed(reader)?
        .read_to_end(&mut plain)
        .map_err(|source| ListError::Read {
            offset: plain.len() as u64,
            source,
        })?;
    let (_, ends) = read_entries(Counted::new(plain.as_slice()))?;
    let mut start = 0;
    Ok(ends
        .into_iter()
        .map(|end| {
            let end = end as usize;
            let archive = plain[start..end].to_vec();
            start = end;
            archive
        })
        .collect())
}

/// The image's bytes, through every gzip member if it is compressed.
fn uncompressed<'r>(reader: impl Read + 'r) -> Result<Box<dyn Read + 'r>, ListError> {
    let mut buffered = BufReader::new(reader);
    let start = buffered
        .fill_buf()
        .map_err(|source| ListError::Read { offset: 0, source })?;
    Ok(if start.starts_with(&GZIP_MAGIC) {
        Box::new(MultiGzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    })
}

/// The entries of every archive in `input`, and the offset where each
/// archive ends (after its trailer's padding).
fn read_entries(mut input: Counted<impl Read>) -> Result<(Vec<ListedEntry>, Vec<u64>), ListError> {
    let mut entries = Vec::new();
    let mut ends = Vec::new();
    loop {
        let at = input.offset;
        let mut header = [0u8; HEADER_LEN];
        match input.read_full(&mut header)? {
            HEADER_LEN => {}
            0 if ends.last() == Some(&at) => return Ok((entries, ends)),
            0 => {
                return Err(ListError::Truncated {
                    offset: at,
                    expected: format!("another entry or the {TRAILER} entry"),
                })
            }
            got => {
                return Err(ListError::Truncated {
                    offset: at + got as u64,
                    expected: format!(
                        "the rest of the {HEADER_LEN}-byte header starting at byte {at}"
                    ),
                })
            }
        }
        if !matches!(&header[..6], b"070701" | b"070702") {
            return Err(ListError::Magic {
                offset: at,
                found: String::from_utf8_lossy(&header[..6]).into_owned(),
            });
        }
        let mut fields = [0u32; 13];
        for (i, (value, field)) in fields.iter_mut().zip(FIELDS).enumerate() {
            let start = 6 + 8 * i;
            let text = &header[start..start + 8];
            *value = parse_hex(text).ok_or_else(|| ListError::Field {
                offset: at + start as u64,
                field,
                value: String::from_utf8_lossy(text).into_owned(),
            })?;
        }
        let [ino, mode, uid, gid, nlink, mtime, size, _, _, rdev_major, rdev_minor, name_len, _] =
            fields;

        let name_at = input.offset;
        let name_bytes = input.read_exactly(name_len, "the entry name")?;
        let name = match name_bytes.split_last() {
            Some((0, name)) => String::from_utf8_lossy(name).into_owned(),
            Some(_) => {
                return Err(ListError::Name {
                    offset: name_at,
                    reason: "is not NUL-terminated",
                })
            }
            None => {
                return Err(ListError::Name {
                    offset: name_at,
                    reason: "is empty (c_namesize is 0)",
                })
            }
        };
        input.skip_padding()?;
        if name == TRAILER {
            ends.push(input.offset);
            continue;
        }

        let link_target = if FileType::from_mode(mode) == Some(FileType::Symlink) {
            let target = input.read_exactly(size, "the symlink target")?;
            Some(String::from_utf8_lossy(&target).into_owned())
        } else {
            input.skip_data(size)?;
            None
        };
        input.skip_padding()?;
        entries.push(ListedEntry {
            name,
            ino,
            mode,
            uid,
            gid,
            nlink,
            mtime,
            size,
            rdev_major,
            rdev_minor,
            link_target,
        });
    }
}

/// Strict hex: exactly the digits, no sign or whitespace as
/// `from_str_radix` would allow.
fn parse_hex(text: &[u8]) -> Option<u32> {
    text.iter().try_fold(0u32, |acc, &b| {
        let digit = (b as char).to_digit(16)?;
        Some(acc << 4 | digit)
    })
}

/// A reader that knows its offset, so errors can say where they happened.
struct Counted<R> {
    inner: R,
    offset: u64,
}

impl<R: Read> Counted<R> {
    fn new(inner: R) -> Self {
        Counted { inner, offset: 0 }
    }

    /// Reads until `buf` is full or the input ends; returns the count.
    fn read_full(&mut self, buf: &mut [u8]) -> Result<usize, ListError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => {
                    filled += n;
                    self.offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(ListError::Read {
                        offset: self.offset,
                        source,
                    })
                }
            }
        }
        Ok(filled)
    }

    /// Reads exactly `len` bytes into a buffer that grows as data arrives,
    /// so a forged length cannot make us allocate gigabytes up front.
    fn read_exactly(&mut self, len: u32, what: &str) -> Result<Vec<u8>, ListError> {
        let start = self.offset;
        let mut out = Vec::new();
        let got = (&mut self.inner)
            .take(len.into())
            .read_to_end(&mut out)
            .map_err(|source| ListError::Read {
                offset: start + out.len() as u64,
                source,
            })?;
        self.offset += got as u64;
        if got < len as usize {
            return Err(self.truncated(format!("{what} ({len} bytes from byte {start})")));
        }
        Ok(out)
    }

    fn skip_data(&mut self, len: u32) -> Result<(), ListError> {
        let start = self.offset;
        let got = io::copy(&mut (&mut self.inner).take(len.into()), &mut io::sink()).map_err(
            |source| ListError::Read {
                offset: start,
                source,
            },
        )?;
        self.offset += got;
        if got < u64::from(len) {
            return Err(self.truncated(format!("file data ({len} bytes from byte {start})")));
        }
        Ok(())
    }

    /// Skips the NUL padding that aligns the next item to 4 bytes.
    fn skip_padding(&mut self) -> Result<(), ListError> {
        let mut pad = [0u8; 3];
        let want = (4 - self.offset % 4) as usize % 4;
        if self.read_full(&mut pad[..want])? < want {
            return Err(self.truncated("padding to a 4-byte boundary".into()));
        }
        Ok(())
    }

    fn truncated(&self, expected: String) -> ListError {
        ListError::Truncated {
            offset: self.offset,
            expected,
        }
    }
}

impl fmt::Display for ListedEntry {
    /// One `ls -l`-like line: mode, uid, gid, size (or major, minor for
    /// devices), name, and ` -> target` for symlinks.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let size = match FileType::from_mode(self.mode) {
            Some(FileType::CharDevice | FileType::BlockDevice) => {
                format!("{}, {}", self.rdev_major, self.rdev_minor)
            }
            _ => self.size.to_string(),
        };
        write!(
            f,
            "{} {:>5} {:>5} {:>10} {}",
            ls_string(self.mode),
            self.uid,
            self.gid,
            size,
            self.name
        )?;
        if let Some(target) = &self.link_target {
            write!(f, " -> {target}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Spec;

    fn sample() -> Spec {
        let mut spec = Spec::new();
        spec.file("/etc/motd", 0o644, "hello\n").unwrap();
        spec.symlink("/sbin", "bin").unwrap();
        spec.char_dev("/dev/console", 0o600, 5, 1).unwrap();
        spec.dir("/root", 0o700)
            .unwrap()
            .owner("/root", 1000, 100)
            .unwrap();
        spec
    }

    fn plain(spec: &Spec) -> Vec<u8> {
        let gz = spec.write(Vec::new(), 0).unwrap();
        let mut out = Vec::new();
        MultiGzDecoder::new(gz.as_slice())
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn lists_gzip_and_plain_alike() {
        let spec = sample();
        let from_gz = list(spec.write(Vec::new(), 0).unwrap().as_slice()).unwrap();
        let from_plain = list(plain(&spec).as_slice()).unwrap();
        assert_eq!(from_gz, from_plain);
        let lines: Vec<String> = from_gz.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "drwxr-xr-x     0     0          0 dev",
                "crw-------     0     0       5, 1 dev/console",
                "drwxr-xr-x     0     0          0 etc",
                "-rw-r--r--     0     0          6 etc/motd",
                "drwx------  1000   100          0 root",
                "lrwxrwxrwx     0     0          3 sbin -> bin",
            ]
        );
    }

    /// Each case damages a valid archive and expects an error message.
    #[test]
    fn malformed_archives_are_errors_with_offsets() {
        let good = plain(&sample());
        let with = |at: usize, bytes: &[u8]| {
            let mut bad = good.clone();
            bad[at..at + bytes.len()].copy_from_slice(bytes);
            bad
        };
        // The first entry is "dev" (name 4 bytes, no data), so the second
        // header starts at 116.
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (with(0, b"070707"), "bad magic at byte 0: expected \"070701\" or \"070702\" (newc), found \"070707\""),
            (with(116 + 14, b"0000x1ed"), "header field c_mode at byte 130 is not 8 hex digits: \"0000x1ed\""),
            (with(116 + 6, b"+0000001"), "header field c_ino at byte 122 is not 8 hex digits: \"+0000001\""),
            (good[..50].to_vec(), "archive truncated at byte 50: expected the rest of the 110-byte header starting at byte 0"),
            (good[..112].to_vec(), "archive truncated at byte 112: expected the entry name (4 bytes from byte 110)"),
            (with(110 + 3, b"x"), "entry name at byte 110 is not NUL-terminated"),
            (with(94, b"00000000"), "entry name at byte 110 is empty (c_namesize is 0)"),
            // The "dev" entry claims 4 GiB of data.
            (with(54, b"ffffffff"), "archive truncated at byte "),
            (good[..good.len() - 124].to_vec(), "archive truncated at byte "),
            (Vec::new(), "archive truncated at byte 0: expected another entry or the TRAILER!!! entry"),
        ];
        for (bad, want) in cases {
            let err = list(bad.as_slice()).unwrap_err().to_string();
            assert!(err.starts_with(want), "got {err:?}, want {want:?}");
        }
    }

    #[test]
    fn truncated_file_data_names_the_span() {
        let mut spec = Spec::new();
        spec.file("/f", 0o644, vec![7u8; 100]).unwrap();
        let archive = plain(&spec);
        // Header 110 + name "f\0" 2 + padding 0 = data at 112.
        let err = list(&archive[..150]).unwrap_err().to_string();
        assert_eq!(
            err,
            "archive truncated at byte 150: expected file data (100 bytes from byte 112)"
        );
    }

    /// An image of two members, split at /etc by a 256 KiB file.
    fn two_members() -> Spec {
        let mut spec = sample();
        spec.file("/big", 0o644, vec![1u8; crate::image::MEMBER_ALONE])
            .unwrap();
        spec
    }

    #[test]
    fn a_sequence_of_archives_lists_as_one() {
        let spec = two_members();
        let gz = spec.write(Vec::new(), 0).unwrap();
        let parts = archives(gz.as_slice()).unwrap();
        // "big" sorts first and is alone; the rest share the second.
        assert_eq!(parts.len(), 2);
        let listed = |bytes: &[u8]| -> Vec<String> {
            list(bytes)
                .unwrap()
                .iter()
                .map(|e| e.name.clone())
                .collect()
        };
        assert_eq!(listed(&parts[0]), ["big"]);
        assert_eq!(
            listed(&parts[1]),
            ["dev", "dev/console", "etc", "etc/motd", "root", "sbin"]
        );
        assert_eq!(listed(&gz), [listed(&parts[0]), listed(&parts[1])].concat());
        assert_eq!(listed(&parts.concat()), listed(&gz));
    }

    #[test]
    fn damage_after_a_trailer_is_named() {
        let plain = plain(&two_members());
        let first_end = archives(plain.as_slice()).unwrap()[0].len();
        let mut junk = plain[..first_end].to_vec();
        junk.extend_from_slice(b"070707");
        junk.resize(first_end + 200, b'.');
        let err = list(junk.as_slice()).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("bad magic at byte {first_end}:")),
            "{err}"
        );
        let err = list(&plain[..first_end + 50]).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("archive truncated at byte {}", first_end + 50)),
            "{err}"
        );
        // Gzip garbage after the last member is not silently dropped.
        let mut gz = two_members().write(Vec::new(), 0).unwrap();
        gz.extend_from_slice(b"not gzip");
        assert!(list(gz.as_slice()).is_err());
    }

    #[test]
    fn corrupt_gzip_is_an_error() {
        let mut gz = sample().write(Vec::new(), 0).unwrap();
        let mid = gz.len() / 2;
        gz[mid..].iter_mut().for_each(|b| *b ^= 0x55);
        assert!(list(gz.as_slice()).is_err());
    }
}
