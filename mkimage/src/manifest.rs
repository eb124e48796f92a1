//! The image manifest: the one definition of the integrity baseline that
//! mkimage writes into every image and certaintyd reads back on the node.
//!
//! A manifest lists every entry of an image, sorted byte-wise by path, one
//! line each, after a version header:
//!
//! ```text
//! chaos-manifest 1
//! /dev dir 0755 0 0
//! /dev/console chardev 0600 0 0 5 1
//! /etc/hosts symlink 0777 0 0 /run/chaos/hosts
//! /init file 0755 0 0 1048576 <64 lower-case hex digits of SHA-256>
//! ```
//!
//! Fields are separated by one space: path, type (`dir`, `file`, `symlink`,
//! `chardev`, `blockdev`), the permission bits as four octal digits, uid and
//! gid in decimal, then by type: a file's size and the SHA-256 of its
//! content; a symlink's target; a device's major and minor number. Paths and
//! targets keep the printable ASCII bytes except `%` and write every other
//! byte (space, newline, `%`, anything non-ASCII) as `%XX` with upper-case
//! hex, so a line always splits the same way and the file stays ASCII.
//! Everything has exactly one spelling (no leading zeros, no needless
//! escapes, one trailing newline), and [`Manifest::parse`] rejects any other,
//! so a manifest's [`Digest`] (SHA-256 of its text) names its content.
//!
//! The manifest cannot list itself: its own hash would be part of its text.
//! [`embed`] stores it at [`chaos_contract::paths::MANIFEST`] and leaves that path out of the
//! list; the entry is implied instead ([`manifest_entry`]): a root-owned
//! `0444` regular file whose SHA-256 is the manifest digest, which the kernel
//! command line (`chaos.root_digest=`) pins. So the one hash outside the list
//! covers the list and, through it, every other file.
//!
//! This module never writes archives or walks a live filesystem; it reads
//! host files only to hash the content a [`Spec`] names.

use std::collections::HashSet;
use std::fmt;
use std::io::{self, Read};
use std::path::PathBuf;
use std::str::FromStr;

use chaos_contract::paths::MANIFEST;
use sha2::{Digest as _, Sha256};

use crate::mode::FileType;
use crate::spec::{self, Content, Spec, SpecError};

/// The first line of every manifest; the number is the format version.
pub const HEADER: &str = "chaos-manifest 1";
/// Read-only for everyone: nothing on the node has a reason to change it.
pub const MANIFEST_MODE: u32 = 0o444;

/// A SHA-256 hash, written `sha256:<64 lower-case hex digits>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn of(bytes: &[u8]) -> Self {
        Digest(Sha256::digest(bytes).into())
    }

    /// The SHA-256 of everything `reader` yields.
    pub fn of_reader(mut reader: impl Read) -> io::Result<(Self, u64)> {
        let mut hasher = Sha256::new();
        // Large enough that per-call overhead vanishes next to hashing.
        let mut buf = vec![0; 64 * 1024];
        let mut size = 0;
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    hasher.update(&buf[..n]);
                    size += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok((Digest(hasher.finalize().into()), size))
    }

    /// The 64 lower-case hex digits, without the `sha256:` prefix.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// 64 hex digits, lower-case only when `strict` (the manifest's own
    /// spelling); the command line accepts either case.
    fn from_hex(hex: &str, strict: bool) -> Option<Self> {
        let hex = hex.as_bytes();
        if hex.len() != 64 {
            return None;
        }
        let mut out = [0; 32];
        for (byte, pair) in out.iter_mut().zip(hex.chunks(2)) {
            *byte = (hex_digit(pair[0], strict)? << 4) | hex_digit(pair[1], strict)?;
        }
        Some(Digest(out))
    }
}

fn hex_digit(c: u8, lower_only: bool) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' if !lower_only => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not sha256:<64 hex digits>")]
pub struct DigestError(pub String);

/// Parses `sha256:<hex>` in either case, as `chaos.root_digest=` spells it.
impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.strip_prefix("sha256:")
            .and_then(|hex| Digest::from_hex(hex, false))
            .ok_or_else(|| DigestError(s.to_owned()))
    }
}

/// One line of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Absolute (`/etc/chaos/x`), without escapes.
    pub path: String,
    pub kind: Kind,
    /// Permission bits only; the type is in `kind`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File { size: u64, sha256: Digest },
    Dir,
    Symlink(String),
    CharDev { major: u32, minor: u32 },
    BlockDev { major: u32, minor: u32 },
}

/// (type, manifest word, names of the fields after gid), in one table so
/// rendering, parsing and error messages agree.
const KINDS: [(FileType, &str, &[&str]); 5] = [
    (FileType::Directory, "dir", &[]),
    (FileType::Regular, "file", &["size", "sha256"]),
    (FileType::Symlink, "symlink", &["target"]),
    (FileType::CharDevice, "chardev", &["major", "minor"]),
    (FileType::BlockDevice, "blockdev", &["major", "minor"]),
];
/// The fields every line starts with.
const COMMON: [&str; 5] = ["path", "type", "mode", "uid", "gid"];

impl Kind {
    pub fn file_type(&self) -> FileType {
        match self {
            Kind::File { .. } => FileType::Regular,
            Kind::Dir => FileType::Directory,
            Kind::Symlink(_) => FileType::Symlink,
            Kind::CharDev { .. } => FileType::CharDevice,
            Kind::BlockDev { .. } => FileType::BlockDevice,
        }
    }

    fn row(&self) -> &'static (FileType, &'static str, &'static [&'static str]) {
        let file_type = self.file_type();
        KINDS
            .iter()
            .find(|row| row.0 == file_type)
            .expect("KINDS covers every Kind")
    }
}

/// A whole manifest: entries sorted by path, each path once, every parent a
/// directory listed before its children (the image root `/` is implicit).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    entries: Vec<Entry>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: reading {host}: {source}", host = host.display())]
    Read {
        path: String,
        host: PathBuf,
        source: io::Error,
    },
    #[error("{MANIFEST} is already in the image; the manifest goes there")]
    Occupied,
    #[error(transparent)]
    Spec(#[from] SpecError),
}

/// A malformed manifest: the line (1-based) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl Manifest {
    /// The manifest of the image `spec` describes, reading host files as the
    /// image writer does. [`chaos_contract::paths::MANIFEST`] is left out (see the module
    /// docs), so a spec with its manifest embedded gives the same manifest.
    pub fn from_spec(spec: &Spec) -> Result<Self, ManifestError> {
        let mut entries = Vec::new();
        for (name, entry) in spec.iter() {
            let path = format!("/{name}");
            if path == chaos_contract::paths::MANIFEST {
                continue;
            }
            let kind = match &entry.kind {
                spec::Kind::File(Content::Bytes(bytes)) => Kind::File {
                    size: bytes.len() as u64,
                    sha256: Digest::of(bytes),
                },
                spec::Kind::File(Content::Host(host)) => {
                    let (sha256, size) =
                        crate::digests::of_file(host).map_err(|source| ManifestError::Read {
                            path: path.clone(),
                            host: host.clone(),
                            source,
                        })?;
                    Kind::File { size, sha256 }
                }
                spec::Kind::Dir => Kind::Dir,
                spec::Kind::Symlink(target) => Kind::Symlink(target.clone()),
                &spec::Kind::CharDev { major, minor } => Kind::CharDev { major, minor },
                &spec::Kind::BlockDev { major, minor } => Kind::BlockDev { major, minor },
            };
            entries.push(Entry {
                path,
                kind,
                mode: entry.mode,
                uid: entry.uid,
                gid: entry.gid,
            });
        }
        // The spec iterates in archive-name order, which is path order: both
        // compare the same bytes after the common leading '/'.
        Ok(Manifest { entries })
    }

    /// Sorted by path.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.path.as_bytes().cmp(path.as_bytes()))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// The canonical text; see the module docs.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(64 * (self.entries.len() + 1));
        out.push_str(HEADER);
        out.push('\n');
        for e in &self.entries {
            out.push_str(&escape(e.path.as_bytes()));
            out.push(' ');
            out.push_str(e.kind.row().1);
            out.push_str(&format!(" {:04o} {} {}", e.mode, e.uid, e.gid));
            match &e.kind {
                Kind::Dir => {}
                Kind::File { size, sha256 } => out.push_str(&format!(" {size} {}", sha256.hex())),
                Kind::Symlink(target) => {
                    out.push(' ');
                    out.push_str(&escape(target.as_bytes()));
                }
                Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
                    out.push_str(&format!(" {major} {minor}"))
                }
            }
            out.push('\n');
        }
        out
    }

    /// SHA-256 of [`render`](Self::render)'s text: what `chaos.root_digest=`
    /// pins and what mkimage prints.
    pub fn digest(&self) -> Digest {
        Digest::of(self.render().as_bytes())
    }

    /// Reads a manifest, accepting only the canonical text that
    /// [`render`](Self::render) writes.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut lines = text
            .split_inclusive('\n')
            .enumerate()
            .map(|(i, l)| (i + 1, l));
        let fail = |line, message: String| ParseError { line, message };
        let line_text = |n: usize, raw: &str| -> Result<String, ParseError> {
            raw.strip_suffix('\n')
                .map(str::to_owned)
                .ok_or_else(|| fail(n, "the last line has no newline".into()))
        };
        let header = match lines.next() {
            Some((n, raw)) => line_text(n, raw)?,
            None => return Err(fail(1, format!("empty; expected the header {HEADER:?}"))),
        };
        if header != HEADER {
            let message = match header.strip_prefix("chaos-manifest ") {
                Some(version) => format!(
                    "manifest version {version:?} is not supported (this build reads {:?})",
                    &HEADER["chaos-manifest ".len()..]
                ),
                None => format!("expected the header {HEADER:?}, found {header:?}"),
            };
            return Err(fail(1, message));
        }
        let mut entries: Vec<Entry> = Vec::new();
        let mut dirs: HashSet<String> = HashSet::new();
        for (n, raw) in lines {
            let line = line_text(n, raw)?;
            let entry = parse_line(&line).map_err(|message| fail(n, message))?;
            if let Some(prev) = entries.last() {
                if prev.path.as_bytes() >= entry.path.as_bytes() {
                    return Err(fail(
                        n,
                        format!(
                            "{} is not after {}; entries must be sorted by path, each path once",
                            escape(entry.path.as_bytes()),
                            escape(prev.path.as_bytes())
                        ),
                    ));
                }
            }
            if entry.path == chaos_contract::paths::MANIFEST {
                return Err(fail(
                    n,
                    format!("{MANIFEST} is the manifest itself, which never lists itself"),
                ));
            }
            if let Some((parent, _)) = entry.path.rsplit_once('/') {
                if !parent.is_empty() && !dirs.contains(parent) {
                    return Err(fail(
                        n,
                        format!(
                            "{}: parent {} is not a directory listed before it",
                            escape(entry.path.as_bytes()),
                            escape(parent.as_bytes())
                        ),
                    ));
                }
            }
            if entry.kind == Kind::Dir {
                dirs.insert(entry.path.clone());
            }
            entries.push(entry);
        }
        Ok(Manifest { entries })
    }
}

/// One entry line, without its newline; the error is the message after
/// `line N: `.
fn parse_line(line: &str) -> Result<Entry, String> {
    if line.is_empty() {
        return Err("empty line".into());
    }
    let fields: Vec<&str> = line.split(' ').collect();
    let field_error = |i: usize, name: &str, problem: &str| {
        format!("field {} ({name}) {:?} {problem}", i + 1, fields[i])
    };
    if fields.len() < COMMON.len() {
        return Err(format!(
            "{} fields, expected at least {} ({})",
            fields.len(),
            COMMON.len(),
            COMMON.join(" ")
        ));
    }
    let Some(&(_, word, extra)) = KINDS.iter().find(|row| row.1 == fields[1]) else {
        let words: Vec<&str> = KINDS.iter().map(|row| row.1).collect();
        return Err(field_error(
            1,
            "type",
            &format!("is not one of {}", words.join(", ")),
        ));
    };
    if fields.len() != COMMON.len() + extra.len() {
        let names: Vec<&str> = COMMON.iter().chain(extra).copied().collect();
        return Err(format!(
            "{} fields, a {word} entry has {} ({})",
            fields.len(),
            names.len(),
            names.join(" ")
        ));
    }
    let path = unescape(fields[0]).map_err(|problem| field_error(0, "path", &problem))?;
    check_path(&path).map_err(|problem| field_error(0, "path", problem))?;
    let mode = (fields[2].len() == 4)
        .then(|| u32::from_str_radix(fields[2], 8).ok())
        .flatten()
        .filter(|_| fields[2].bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| field_error(2, "mode", "is not 4 octal digits"))?;
    let number = |i: usize, name: &str| -> Result<u64, String> {
        canonical_decimal(fields[i]).ok_or_else(|| {
            field_error(
                i,
                name,
                "is not a decimal number (digits only, no leading zeros)",
            )
        })
    };
    let number32 = |i: usize, name: &str| -> Result<u32, String> {
        u32::try_from(number(i, name)?).map_err(|_| field_error(i, name, "is more than 2^32 - 1"))
    };
    let uid = number32(3, "uid")?;
    let gid = number32(4, "gid")?;
    let kind = match word {
        "dir" => Kind::Dir,
        "file" => Kind::File {
            size: number(5, "size")?,
            sha256: Digest::from_hex(fields[6], true)
                .ok_or_else(|| field_error(6, "sha256", "is not 64 lower-case hex digits"))?,
        },
        "symlink" => {
            let target =
                unescape(fields[5]).map_err(|problem| field_error(5, "target", &problem))?;
            if target.is_empty() || target.contains('\0') {
                return Err(field_error(5, "target", "is empty or contains a NUL byte"));
            }
            Kind::Symlink(target)
        }
        _ => {
            let (major, minor) = (number32(5, "major")?, number32(6, "minor")?);
            if word == "chardev" {
                Kind::CharDev { major, minor }
            } else {
                Kind::BlockDev { major, minor }
            }
        }
    };
    Ok(Entry {
        path,
        kind,
        mode,
        uid,
        gid,
    })
}

/// A number in its one spelling: ASCII digits, no sign, no leading zero.
fn canonical_decimal(s: &str) -> Option<u64> {
    let digits_only = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = s.len() > 1 && s.starts_with('0');
    if digits_only && !leading_zero {
        s.parse().ok()
    } else {
        None
    }
}

/// The image path rules of [`Spec`], restated because a manifest is read on
/// the node, not built from a spec.
fn check_path(path: &str) -> Result<(), &'static str> {
    let name = path.strip_prefix('/').ok_or("is not absolute")?;
    if name.contains('\0') {
        return Err("contains a NUL byte");
    }
    if name
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err("has an empty, \".\" or \"..\" component");
    }
    Ok(())
}

/// Writes `bytes` with every byte outside printable ASCII, and `%`, as
/// `%XX`. Public so that logs show an odd file name the way a manifest does.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_graphic() && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The inverse of [`escape`], accepting only what `escape` writes, and only
/// text that decodes to UTF-8 (image paths are strings).
fn unescape(field: &str) -> Result<String, String> {
    let raw = field.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let byte = raw
                .get(i + 1..i + 3)
                .and_then(|pair| Some(hex_upper(pair[0])? << 4 | hex_upper(pair[1])?))
                .ok_or_else(|| {
                    format!("has a bad escape at byte {i} (expected %XX, upper-case hex)")
                })?;
            out.push(byte);
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    let canonical = escape(&out);
    if canonical != field {
        return Err(format!(
            "is not escaped canonically (expected {canonical:?})"
        ));
    }
    String::from_utf8(out).map_err(|_| "does not decode to UTF-8".to_owned())
}

fn hex_upper(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The entry the manifest stands for at [`chaos_contract::paths::MANIFEST`] but never lists:
/// `text` is the manifest file's content, whose hash is its digest.
pub fn manifest_entry(text: &[u8]) -> Entry {
    Entry {
        path: chaos_contract::paths::MANIFEST.into(),
        kind: Kind::File {
            size: text.len() as u64,
            sha256: Digest::of(text),
        },
        mode: MANIFEST_MODE,
        uid: 0,
        gid: 0,
    }
}

/// Adds the manifest of `spec` to it at [`chaos_contract::paths::MANIFEST`] and returns the
/// manifest (its [`Manifest::digest`] is what to print and pin). Missing
/// parents are added first, as plain `0755` directories, so they are listed.
pub fn embed(spec: &mut Spec) -> Result<Manifest, ManifestError> {
    if spec.get(chaos_contract::paths::MANIFEST).is_some() {
        return Err(ManifestError::Occupied);
    }
    let parents: Vec<&str> = chaos_contract::paths::MANIFEST
        .match_indices('/')
        .skip(1)
        .map(|(i, _)| &chaos_contract::paths::MANIFEST[..i])
        .collect();
    for parent in parents {
        if spec.get(parent).is_none() {
            spec.dir(parent, spec::IMPLICIT_DIR_MODE)?;
        }
    }
    let manifest = Manifest::from_spec(spec)?;
    spec.file(
        chaos_contract::paths::MANIFEST,
        MANIFEST_MODE,
        manifest.render(),
    )?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA_ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    fn sample() -> Spec {
        let mut spec = Spec::new();
        spec.file("/etc/motd", 0o644, "abc").unwrap();
        spec.file("/etc-old", 0o600, "").unwrap();
        spec.dir("/root", 0o700).unwrap();
        spec.symlink("/etc/hosts", "/run/chaos/hosts").unwrap();
        spec.char_dev("/dev/console", 0o600, 5, 1).unwrap();
        spec.block_dev("/dev/sda", 0o660, 8, 0)
            .unwrap()
            .owner("/dev/sda", 0, 6)
            .unwrap();
        spec.file("/odd/a b%\n\u{e9}", 0o4755, "abc").unwrap();
        spec.symlink("/odd/link", "a b%").unwrap();
        spec
    }

    const SAMPLE: &str = "chaos-manifest 1
/dev dir 0755 0 0
/dev/console chardev 0600 0 0 5 1
/dev/sda blockdev 0660 0 6 8 0
/etc dir 0755 0 0
/etc-old file 0600 0 0 0 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
/etc/hosts symlink 0777 0 0 /run/chaos/hosts
/etc/motd file 0644 0 0 3 ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
/odd dir 0755 0 0
/odd/a%20b%25%0A%C3%A9 file 4755 0 0 3 ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
/odd/link symlink 0777 0 0 a%20b%25
/root dir 0700 0 0
";

    #[test]
    fn renders_sorted_canonical_text() {
        let manifest = Manifest::from_spec(&sample()).unwrap();
        assert_eq!(manifest.render(), SAMPLE);
        let paths: Vec<&str> = manifest.entries().iter().map(|e| &e.path[..]).collect();
        // Byte order: '-' (0x2d) sorts before '/' (0x2f), so /etc-old comes
        // between /etc and its children, as in the archive.
        assert_eq!(
            &paths[3..7],
            ["/etc", "/etc-old", "/etc/hosts", "/etc/motd"]
        );
        assert_eq!(
            manifest.get("/odd/a b%\n\u{e9}").unwrap().mode,
            0o4755,
            "get finds decoded paths"
        );
    }

    #[test]
    fn round_trip() {
        let manifest = Manifest::from_spec(&sample()).unwrap();
        let parsed = Manifest::parse(&manifest.render()).unwrap();
        assert_eq!(parsed, manifest);
        assert_eq!(parsed.render(), SAMPLE);
        assert_eq!(Manifest::parse(HEADER_LINE).unwrap(), Manifest::default());
    }
    const HEADER_LINE: &str = "chaos-manifest 1\n";

    #[test]
    fn digest_is_sha256_of_the_text_and_stable() {
        assert_eq!(Digest::of(b"abc").hex(), SHA_ABC);
        let manifest = Manifest::from_spec(&sample()).unwrap();
        assert_eq!(manifest.digest(), Digest::of(SAMPLE.as_bytes()));
        // Pinned: a change here changes every image's digest, so it must be
        // a deliberate format change with a new version number.
        assert_eq!(
            manifest.digest().to_string(),
            "sha256:4d5c0e5214fd92a256d34ca44627ce01b13dc5d12e8e3755da6b1047be827af4"
        );
        assert_eq!(
            Manifest::from_spec(&sample()).unwrap().digest(),
            manifest.digest()
        );
    }

    #[test]
    fn digest_text_form() {
        let digest = Digest::of(b"abc");
        let text = format!("sha256:{SHA_ABC}");
        assert_eq!(digest.to_string(), text);
        assert_eq!(text.parse::<Digest>(), Ok(digest));
        assert_eq!(
            text.to_uppercase().replace("SHA256", "sha256").parse(),
            Ok(digest)
        );
        for bad in [
            "",
            SHA_ABC,
            "sha256:abc",
            "md5:abc",
            &format!("sha256:{SHA_ABC}0"),
        ] {
            assert_eq!(
                bad.parse::<Digest>().unwrap_err().to_string(),
                format!("{bad:?} is not sha256:<64 hex digits>")
            );
        }
    }

    #[test]
    fn host_files_are_hashed_and_errors_name_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("init");
        std::fs::write(&host, vec![b'x'; 200_000]).unwrap();
        let mut spec = Spec::new();
        spec.file_from("/init", 0o755, &host).unwrap();
        let manifest = Manifest::from_spec(&spec).unwrap();
        assert_eq!(
            manifest.get("/init").unwrap().kind,
            Kind::File {
                size: 200_000,
                sha256: Digest::of(&vec![b'x'; 200_000])
            }
        );
        spec.file_from("/missing", 0o755, dir.path().join("nope"))
            .unwrap();
        let err = Manifest::from_spec(&spec).unwrap_err().to_string();
        let want = format!("/missing: reading {}/nope: ", dir.path().display());
        assert!(err.starts_with(&want), "{err}");
    }

    #[test]
    fn embed_stores_the_manifest_outside_its_own_list() {
        let mut spec = Spec::new();
        spec.file("/init", 0o755, "init").unwrap();
        let manifest = embed(&mut spec).unwrap();
        let paths: Vec<&str> = manifest.entries().iter().map(|e| &e.path[..]).collect();
        assert_eq!(paths, ["/etc", "/etc/chaos", "/init"]);
        let stored = spec.get(chaos_contract::paths::MANIFEST).unwrap();
        let text = manifest.render();
        assert_eq!(
            stored.kind,
            spec::Kind::File(Content::Bytes(text.clone().into_bytes()))
        );
        assert_eq!((stored.mode, stored.uid, stored.gid), (0o444, 0, 0));
        // The embedded image yields the same manifest: the file is not listed.
        assert_eq!(Manifest::from_spec(&spec).unwrap(), manifest);
        let implied = manifest_entry(text.as_bytes());
        assert_eq!(
            implied.kind,
            Kind::File {
                size: text.len() as u64,
                sha256: manifest.digest()
            }
        );
        assert!(matches!(embed(&mut spec), Err(ManifestError::Occupied)));
    }

    #[test]
    fn embed_keeps_existing_parent_modes() {
        let mut spec = Spec::new();
        spec.dir("/etc", 0o750).unwrap();
        let manifest = embed(&mut spec).unwrap();
        assert_eq!(manifest.get("/etc").unwrap().mode, 0o750);
        assert_eq!(manifest.get("/etc/chaos").unwrap().mode, 0o755);
    }

    #[test]
    fn malformed_manifests_name_line_and_field() {
        let sha = SHA_ABC;
        let cases: &[(&str, &str)] = &[
            ("", "line 1: empty; expected the header \"chaos-manifest 1\""),
            ("chaos-manifest 1", "line 1: the last line has no newline"),
            (
                "chaos-manifest 2\n",
                "line 1: manifest version \"2\" is not supported (this build reads \"1\")",
            ),
            (
                "# manifest\n",
                "line 1: expected the header \"chaos-manifest 1\", found \"# manifest\"",
            ),
            ("chaos-manifest 1\n\n", "line 2: empty line"),
            ("chaos-manifest 1\n/a dir 0755 0 0", "line 2: the last line has no newline"),
            (
                "chaos-manifest 1\n/a dir 0755 0 0\r\n",
                "line 2: field 5 (gid) \"0\\r\" is not a decimal number (digits only, no leading zeros)",
            ),
            (
                "chaos-manifest 1\n/a dir 0755\n",
                "line 2: 3 fields, expected at least 5 (path type mode uid gid)",
            ),
            (
                "chaos-manifest 1\n/a pipe 0755 0 0\n",
                "line 2: field 2 (type) \"pipe\" is not one of dir, file, symlink, chardev, blockdev",
            ),
            (
                "chaos-manifest 1\n/a dir 0755 0 0 7\n",
                "line 2: 6 fields, a dir entry has 5 (path type mode uid gid)",
            ),
            (
                "chaos-manifest 1\n/a file 0644 0 0 3\n",
                "line 2: 6 fields, a file entry has 7 (path type mode uid gid size sha256)",
            ),
            (
                "chaos-manifest 1\n/a  dir 0755 0 0\n",
                "line 2: field 2 (type) \"\" is not one of dir, file, symlink, chardev, blockdev",
            ),
            (
                "chaos-manifest 1\na dir 0755 0 0\n",
                "line 2: field 1 (path) \"a\" is not absolute",
            ),
            (
                "chaos-manifest 1\n/ dir 0755 0 0\n",
                "line 2: field 1 (path) \"/\" has an empty, \".\" or \"..\" component",
            ),
            (
                "chaos-manifest 1\n/a/../b dir 0755 0 0\n",
                "line 2: field 1 (path) \"/a/../b\" has an empty, \".\" or \"..\" component",
            ),
            (
                "chaos-manifest 1\n/a%2 dir 0755 0 0\n",
                "line 2: field 1 (path) \"/a%2\" has a bad escape at byte 2 (expected %XX, upper-case hex)",
            ),
            (
                "chaos-manifest 1\n/a%2f dir 0755 0 0\n",
                "line 2: field 1 (path) \"/a%2f\" has a bad escape at byte 2 (expected %XX, upper-case hex)",
            ),
            (
                "chaos-manifest 1\n/%41 dir 0755 0 0\n",
                "line 2: field 1 (path) \"/%41\" is not escaped canonically (expected \"/A\")",
            ),
            (
                "chaos-manifest 1\n/%FF dir 0755 0 0\n",
                "line 2: field 1 (path) \"/%FF\" does not decode to UTF-8",
            ),
            (
                "chaos-manifest 1\n/a%00 dir 0755 0 0\n",
                "line 2: field 1 (path) \"/a%00\" contains a NUL byte",
            ),
            (
                "chaos-manifest 1\n/a dir 755 0 0\n",
                "line 2: field 3 (mode) \"755\" is not 4 octal digits",
            ),
            (
                "chaos-manifest 1\n/a dir 0855 0 0\n",
                "line 2: field 3 (mode) \"0855\" is not 4 octal digits",
            ),
            (
                "chaos-manifest 1\n/a dir +755 0 0\n",
                "line 2: field 3 (mode) \"+755\" is not 4 octal digits",
            ),
            (
                "chaos-manifest 1\n/a dir 0755 00 0\n",
                "line 2: field 4 (uid) \"00\" is not a decimal number (digits only, no leading zeros)",
            ),
            (
                "chaos-manifest 1\n/a dir 0755 0 4294967296\n",
                "line 2: field 5 (gid) \"4294967296\" is more than 2^32 - 1",
            ),
            (
                "chaos-manifest 1\n/a file 0644 0 0 -1 x\n",
                "line 2: field 6 (size) \"-1\" is not a decimal number (digits only, no leading zeros)",
            ),
            (
                &"chaos-manifest 1\n/a file 0644 0 0 3 SHA\n".replace("SHA", &sha.to_uppercase()),
                &"line 2: field 7 (sha256) \"SHA\" is not 64 lower-case hex digits"
                    .replace("SHA", &sha.to_uppercase()),
            ),
            (
                "chaos-manifest 1\n/a file 0644 0 0 3 abc\n",
                "line 2: field 7 (sha256) \"abc\" is not 64 lower-case hex digits",
            ),
            (
                "chaos-manifest 1\n/a symlink 0777 0 0 %00\n",
                "line 2: field 6 (target) \"%00\" is empty or contains a NUL byte",
            ),
            (
                "chaos-manifest 1\n/a chardev 0600 0 0 5 x\n",
                "line 2: field 7 (minor) \"x\" is not a decimal number (digits only, no leading zeros)",
            ),
            (
                "chaos-manifest 1\n/b dir 0755 0 0\n/a dir 0755 0 0\n",
                "line 3: /a is not after /b; entries must be sorted by path, each path once",
            ),
            (
                "chaos-manifest 1\n/a dir 0755 0 0\n/a dir 0755 0 0\n",
                "line 3: /a is not after /a; entries must be sorted by path, each path once",
            ),
            (
                "chaos-manifest 1\n/a/b dir 0755 0 0\n",
                "line 2: /a/b: parent /a is not a directory listed before it",
            ),
            (
                "chaos-manifest 1\n/a symlink 0777 0 0 b\n/a/b dir 0755 0 0\n",
                "line 3: /a/b: parent /a is not a directory listed before it",
            ),
            (
                "chaos-manifest 1\n/etc dir 0755 0 0\n/etc/chaos dir 0755 0 0\n\
                 /etc/chaos/manifest file 0444 0 0 0 SHA\n",
                "line 4: /etc/chaos/manifest is the manifest itself, which never lists itself",
            ),
        ];
        for (text, want) in cases {
            let text = text.replace("SHA", sha);
            let err = Manifest::parse(&text).expect_err(want);
            assert_eq!(err.to_string(), *want, "{text:?}");
        }
    }
}
