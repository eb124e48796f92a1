//! The vocabulary of a failed verification: one [`Difference`] per path, in
//! words an administrator reads on the console. Owns only the
//! classification and its wording; finding the differences is `verify`'s.

use std::fmt;

use mkimage::manifest::Digest;
use mkimage::mode::FileType;

/// How one path differs from the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Not in the manifest. Nothing below an added directory is listed.
    Added { found: Option<FileType> },
    /// In the manifest, gone from the root. Nothing below it is listed.
    Removed { expected: FileType },
    /// Something else now stands at the path; `None` is a type no Unix names.
    Type {
        expected: FileType,
        found: Option<FileType>,
    },
    /// Another filesystem is mounted on the path, hiding what the image put
    /// there.
    MountedOver,
    /// A regular file's bytes. `found` is `None` when the size already
    /// differs, since hashing the file then proves nothing more.
    Content {
        expected_size: u64,
        found_size: u64,
        expected: Digest,
        found: Option<Digest>,
    },
    /// File capabilities were set on a regular file (the image has none).
    Capabilities,
    /// Permission bits (`0o7777`).
    Mode { expected: u32, found: u32 },
    /// (uid, gid).
    Owner {
        expected: (u32, u32),
        found: (u32, u32),
    },
    /// A symlink's target (escaped like manifest paths).
    Target { expected: String, found: String },
    /// A device node's (major, minor).
    Device {
        expected: (u32, u32),
        found: (u32, u32),
    },
    /// The path could not be checked; failing closed, that is a difference.
    Unreadable { error: String },
    /// The manifest itself cannot be trusted or read, so nothing can be
    /// verified against it (the forged-manifest case).
    Baseline { problem: String },
}

/// A path (escaped like manifest paths) and how it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub path: String,
    pub change: Change,
}

fn type_name(t: Option<FileType>) -> &'static str {
    t.map_or("unknown file type", FileType::name)
}

/// A digest short enough for a console line and long enough to compare.
fn short(d: &Digest) -> String {
    d.hex()[..16].to_owned()
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Added { found } => write!(f, "added ({})", type_name(*found)),
            Change::Removed { expected } => write!(f, "removed ({})", expected.name()),
            Change::Type { expected, found } => {
                write!(
                    f,
                    "type changed: {} -> {}",
                    expected.name(),
                    type_name(*found)
                )
            }
            Change::MountedOver => f.write_str("mounted over: another filesystem hides it"),
            Change::Content {
                expected_size,
                found_size,
                expected,
                found,
            } => match found {
                Some(found) => write!(
                    f,
                    "content changed: sha256 {} -> {} ({found_size} bytes)",
                    short(expected),
                    short(found)
                ),
                None => write!(
                    f,
                    "content changed: size {expected_size} -> {found_size} bytes"
                ),
            },
            Change::Capabilities => f.write_str("file capabilities added (security.capability)"),
            Change::Mode { expected, found } => {
                write!(f, "mode changed: {expected:04o} -> {found:04o}")
            }
            Change::Owner { expected, found } => write!(
                f,
                "owner changed: {}:{} -> {}:{}",
                expected.0, expected.1, found.0, found.1
            ),
            Change::Target { expected, found } => {
                write!(f, "symlink retargeted: {expected} -> {found}")
            }
            Change::Device { expected, found } => write!(
                f,
                "device changed: {}:{} -> {}:{}",
                expected.0, expected.1, found.0, found.1
            ),
            Change::Unreadable { error } => write!(f, "could not be verified: {error}"),
            Change::Baseline { problem } => write!(f, "untrusted baseline: {problem}"),
        }
    }
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wording() {
        let abc = Digest::of(b"abc");
        let abd = Digest::of(b"abd");
        let cases = [
            (
                Change::Added {
                    found: Some(FileType::Regular),
                },
                "added (file)",
            ),
            (
                Change::Removed {
                    expected: FileType::Directory,
                },
                "removed (directory)",
            ),
            (
                Change::Type {
                    expected: FileType::Regular,
                    found: Some(FileType::Symlink),
                },
                "type changed: file -> symlink",
            ),
            (
                Change::MountedOver,
                "mounted over: another filesystem hides it",
            ),
            (
                Change::Content {
                    expected_size: 3,
                    found_size: 3,
                    expected: abc,
                    found: Some(abd),
                },
                "content changed: sha256 ba7816bf8f01cfea -> a52d159f262b2c6d (3 bytes)",
            ),
            (
                Change::Content {
                    expected_size: 3,
                    found_size: 4,
                    expected: abc,
                    found: None,
                },
                "content changed: size 3 -> 4 bytes",
            ),
            (
                Change::Capabilities,
                "file capabilities added (security.capability)",
            ),
            (
                Change::Mode {
                    expected: 0o755,
                    found: 0o4755,
                },
                "mode changed: 0755 -> 4755",
            ),
            (
                Change::Owner {
                    expected: (0, 0),
                    found: (1000, 100),
                },
                "owner changed: 0:0 -> 1000:100",
            ),
            (
                Change::Target {
                    expected: "/run/chaos/hosts".into(),
                    found: "/tmp/evil".into(),
                },
                "symlink retargeted: /run/chaos/hosts -> /tmp/evil",
            ),
            (
                Change::Device {
                    expected: (5, 1),
                    found: (1, 3),
                },
                "device changed: 5:1 -> 1:3",
            ),
        ];
        for (change, want) in cases {
            assert_eq!(change.to_string(), want);
        }
        let d = Difference {
            path: "/etc/motd".into(),
            change: Change::Removed {
                expected: FileType::Regular,
            },
        };
        assert_eq!(d.to_string(), "/etc/motd: removed (file)");
    }
}
