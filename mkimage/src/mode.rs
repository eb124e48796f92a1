//! Unix `st_mode` encoding: the file-type bits of a mode word and their
//! `ls -l` rendering.
//!
//! This module owns the one table mapping entry types to mode bits, so the
//! archive writer and the lister cannot disagree about it. It knows nothing
//! about cpio or images.

/// Mask selecting the file-type bits of a mode word (`S_IFMT`).
pub const TYPE_MASK: u32 = 0o170_000;
/// Mask selecting the permission bits, including setuid, setgid and sticky.
pub const PERMISSION_MASK: u32 = 0o7777;

/// The type of a filesystem entry, as encoded in the top bits of its mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    Regular,
    Directory,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

/// (type, `S_IF*` bits, `ls -l` letter, human name), in `FileType` order so a
/// type's row is `TYPES[type as usize]`.
const TYPES: [(FileType, u32, char, &str); 7] = [
    (FileType::Regular, 0o100_000, '-', "file"),
    (FileType::Directory, 0o040_000, 'd', "directory"),
    (FileType::Symlink, 0o120_000, 'l', "symlink"),
    (FileType::CharDevice, 0o020_000, 'c', "character device"),
    (FileType::BlockDevice, 0o060_000, 'b', "block device"),
    (FileType::Fifo, 0o010_000, 'p', "named pipe"),
    (FileType::Socket, 0o140_000, 's', "socket"),
];

impl FileType {
    fn row(self) -> &'static (FileType, u32, char, &'static str) {
        &TYPES[self as usize]
    }

    /// The `S_IF*` bits of this type.
    pub fn bits(self) -> u32 {
        self.row().1
    }

    /// A human name for messages ("file", "directory", ...).
    pub fn name(self) -> &'static str {
        self.row().3
    }

    /// The type encoded in `mode`, or `None` for bits no Unix uses.
    pub fn from_mode(mode: u32) -> Option<FileType> {
        TYPES
            .iter()
            .find(|row| row.1 == mode & TYPE_MASK)
            .map(|row| row.0)
    }
}

/// Renders `mode` the way `ls -l` does: a type letter (`?` if unknown) and
/// nine permission letters, with setuid/setgid/sticky shown as `s`/`S`/`t`/`T`.
pub fn ls_string(mode: u32) -> String {
    let type_letter = FileType::from_mode(mode).map_or('?', |t| t.row().2);
    // Each triple: (read bit, write bit, execute bit, special bit, special letter).
    let triples = [
        (0o400, 0o200, 0o100, 0o4000, 's'),
        (0o040, 0o020, 0o010, 0o2000, 's'),
        (0o004, 0o002, 0o001, 0o1000, 't'),
    ];
    let mut out = String::with_capacity(10);
    out.push(type_letter);
    for (r, w, x, special, letter) in triples {
        out.push(if mode & r != 0 { 'r' } else { '-' });
        out.push(if mode & w != 0 { 'w' } else { '-' });
        out.push(match (mode & x != 0, mode & special != 0) {
            (true, true) => letter,
            (false, true) => letter.to_ascii_uppercase(),
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ls_strings() {
        let cases = [
            (0o040_755, "drwxr-xr-x"),
            (0o100_644, "-rw-r--r--"),
            (0o120_777, "lrwxrwxrwx"),
            (0o020_600, "crw-------"),
            (0o060_660, "brw-rw----"),
            (0o104_755, "-rwsr-xr-x"),
            (0o102_644, "-rw-r-Sr--"),
            (0o041_777, "drwxrwxrwt"),
            (0o041_776, "drwxrwxrwT"),
            (0o010_644, "prw-r--r--"),
            (0o000_644, "?rw-r--r--"),
        ];
        for (mode, want) in cases {
            assert_eq!(ls_string(mode), want, "mode {mode:o}");
        }
    }

    #[test]
    fn type_bits_round_trip() {
        for (i, (file_type, bits, _, _)) in TYPES.into_iter().enumerate() {
            assert_eq!(file_type as usize, i, "TYPES is in FileType order");
            assert_eq!(file_type.bits(), bits);
            assert_eq!(FileType::from_mode(bits | 0o7777), Some(file_type));
        }
        assert_eq!(FileType::from_mode(0o030_000), None);
    }
}
