//! The in-memory image spec: what the image contains, before any bytes are
//! written.
//!
//! A [`Spec`] is a map from image path to [`Entry`], kept sorted by archive
//! name so iteration order is the archive order. It validates paths and
//! enforces the tree shape (every parent is a directory) as entries are
//! added, so a spec that exists is one the writer can emit. It never touches
//! the host filesystem: host files are named here and read by the writer.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::mode::{FileType, PERMISSION_MASK};

/// Mode of directories the spec adds implicitly as missing parents.
pub const IMPLICIT_DIR_MODE: u32 = 0o755;
/// Mode of symlinks added with [`Spec::symlink`]; Linux ignores it anyway.
pub const SYMLINK_MODE: u32 = 0o777;

/// One entry of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// Permission bits only (`0o7777` at most); the type bits come from `kind`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File(Content),
    Dir,
    Symlink(String),
    CharDev { major: u32, minor: u32 },
    BlockDev { major: u32, minor: u32 },
}

/// Where a regular file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Bytes(Vec<u8>),
    /// A host file, read when the image is written.
    Host(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("image path {path:?} {reason}")]
    Path { path: String, reason: &'static str },
    #[error("{path}: mode {mode:#o} has bits outside the permission mask 0o7777")]
    Mode { path: String, mode: u32 },
    #[error("{path}: symlink target {reason}")]
    Target { path: String, reason: &'static str },
    #[error(
        "{path}: already in the image as a {existing}; the new {new} differs \
         (only directories may be declared twice)"
    )]
    Conflict {
        path: String,
        existing: &'static str,
        new: &'static str,
    },
    #[error("{path}: parent {parent} is a {kind}, not a directory")]
    NotADirectory {
        path: String,
        parent: String,
        kind: &'static str,
    },
    #[error("{path}: no such entry in the image")]
    Missing { path: String },
}

impl Entry {
    /// An entry owned by root (uid 0, gid 0).
    pub fn new(kind: Kind, mode: u32) -> Self {
        Entry {
            kind,
            mode,
            uid: 0,
            gid: 0,
        }
    }
}

impl Kind {
    pub fn file_type(&self) -> FileType {
        match self {
            Kind::File(_) => FileType::Regular,
            Kind::Dir => FileType::Directory,
            Kind::Symlink(_) => FileType::Symlink,
            Kind::CharDev { .. } => FileType::CharDevice,
            Kind::BlockDev { .. } => FileType::BlockDevice,
        }
    }
}

/// An image under construction; see the module docs.
///
/// Paths given to the builder methods are absolute inside the image
/// (`/etc/chaos/x`); missing parents are added as root-owned `0755`
/// directories. Re-adding a path follows one rule: a directory may be
/// declared any number of times and the last declaration's mode and owner
/// win (this is how an implicit parent gets its real mode); any other entry
/// may only be re-added identically, and anything else is
/// [`SpecError::Conflict`].
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// Keyed by archive name: the image path without its leading `/`.
    entries: BTreeMap<String, Entry>,
}

impl Spec {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `entry` at `path`; the builder methods below are shorthands.
    pub fn insert(&mut self, path: &str, entry: Entry) -> Result<&mut Self, SpecError> {
        let name = archive_name(path)?;
        if entry.mode & !PERMISSION_MASK != 0 {
            return Err(SpecError::Mode {
                path: path.into(),
                mode: entry.mode,
            });
        }
        if let Kind::Symlink(target) = &entry.kind {
            check_target(path, target)?;
        }
        // Check everything before changing anything, so a failed insert
        // leaves the spec as it was.
        let parents: Vec<&str> = name.match_indices('/').map(|(i, _)| &name[..i]).collect();
        for parent in &parents {
            if let Some(existing) = self.entries.get(*parent) {
                if existing.kind != Kind::Dir {
                    return Err(SpecError::NotADirectory {
                        path: path.into(),
                        parent: format!("/{parent}"),
                        kind: existing.kind.file_type().name(),
                    });
                }
            }
        }
        if let Some(existing) = self.entries.get(name) {
            let both_dirs = existing.kind == Kind::Dir && entry.kind == Kind::Dir;
            if !both_dirs && *existing != entry {
                return Err(SpecError::Conflict {
                    path: path.into(),
                    existing: existing.kind.file_type().name(),
                    new: entry.kind.file_type().name(),
                });
            }
        }
        for parent in parents {
            self.entries
                .entry(parent.to_owned())
                .or_insert_with(|| Entry::new(Kind::Dir, IMPLICIT_DIR_MODE));
        }
        self.entries.insert(name.to_owned(), entry);
        Ok(self)
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> Result<&mut Self, SpecError> {
        self.insert(path, Entry::new(Kind::Dir, mode))
    }

    pub fn file(
        &mut self,
        path: &str,
        mode: u32,
        bytes: impl Into<Vec<u8>>,
    ) -> Result<&mut Self, SpecError> {
        self.insert(
            path,
            Entry::new(Kind::File(Content::Bytes(bytes.into())), mode),
        )
    }

    /// A file whose bytes are read from `host_path` when the image is written.
    pub fn file_from(
        &mut self,
        path: &str,
        mode: u32,
        host_path: impl Into<PathBuf>,
    ) -> Result<&mut Self, SpecError> {
        let content = Content::Host(host_path.into());
        self.insert(path, Entry::new(Kind::File(content), mode))
    }

    pub fn symlink(
        &mut self,
        path: &str,
        target: impl Into<String>,
    ) -> Result<&mut Self, SpecError> {
        self.insert(path, Entry::new(Kind::Symlink(target.into()), SYMLINK_MODE))
    }

    pub fn char_dev(
        &mut self,
        path: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<&mut Self, SpecError> {
        self.insert(path, Entry::new(Kind::CharDev { major, minor }, mode))
    }

    pub fn block_dev(
        &mut self,
        path: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<&mut Self, SpecError> {
        self.insert(path, Entry::new(Kind::BlockDev { major, minor }, mode))
    }

    /// Sets the owner of an entry already in the spec.
    pub fn owner(&mut self, path: &str, uid: u32, gid: u32) -> Result<&mut Self, SpecError> {
        let name = archive_name(path)?;
        let entry = self
            .entries
            .get_mut(name)
            .ok_or_else(|| SpecError::Missing { path: path.into() })?;
        entry.uid = uid;
        entry.gid = gid;
        Ok(self)
    }

    /// Takes `path` and everything below it out of the spec; returns how
    /// many entries went. For derived images that replace part of a base.
    pub fn remove(&mut self, path: &str) -> Result<usize, SpecError> {
        let name = archive_name(path)?.to_owned();
        let below = format!("{name}/");
        let before = self.entries.len();
        self.entries
            .retain(|entry, _| entry != &name && !entry.starts_with(&below));
        Ok(before - self.entries.len())
    }

    /// The entry at the absolute image path `path`, if any.
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(archive_name(path).ok()?)
    }

    /// Entries in archive order, each with its archive name (the image path
    /// without the leading `/`). Byte-wise order puts every directory before
    /// its contents, because a name sorts before any name it prefixes.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries
            .iter()
            .map(|(name, entry)| (name.as_str(), entry))
    }
}

/// Validates an absolute image path and returns it without the leading `/`,
/// which is how the kernel's gen_init_cpio names entries.
fn archive_name(path: &str) -> Result<&str, SpecError> {
    let fail = |reason| SpecError::Path {
        path: path.into(),
        reason,
    };
    let name = path
        .strip_prefix('/')
        .ok_or_else(|| fail("must be absolute (start with /)"))?;
    if name.is_empty() {
        return Err(fail("is the image root, which is implicit"));
    }
    if name.contains('\0') {
        return Err(fail("contains a NUL byte"));
    }
    if name
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(fail("has an empty, \".\" or \"..\" component"));
    }
    Ok(name)
}

fn check_target(path: &str, target: &str) -> Result<(), SpecError> {
    let reason = if target.is_empty() {
        "is empty"
    } else if target.contains('\0') {
        "contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(SpecError::Target {
        path: path.into(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(spec: &Spec) -> Vec<&str> {
        spec.iter().map(|(name, _)| name).collect()
    }

    #[test]
    fn parents_are_implicit_and_sorted_first() {
        let mut spec = Spec::new();
        spec.file("/etc/chaos/x", 0o600, "x").unwrap();
        spec.file("/etc-old", 0o644, "").unwrap();
        spec.symlink("/bin", "usr/bin").unwrap();
        assert_eq!(
            names(&spec),
            ["bin", "etc", "etc-old", "etc/chaos", "etc/chaos/x"]
        );
        assert_eq!(spec.get("/etc/chaos"), Some(&Entry::new(Kind::Dir, 0o755)));
    }

    #[test]
    fn directory_redeclaration_sets_mode_and_keeps_children() {
        let mut spec = Spec::new();
        spec.file("/root/.profile", 0o644, "").unwrap();
        spec.dir("/root", 0o700)
            .unwrap()
            .owner("/root", 0, 0)
            .unwrap();
        assert_eq!(spec.get("/root").unwrap().mode, 0o700);
        // An implicit parent never overrides an explicit directory.
        spec.file("/root/.bashrc", 0o644, "").unwrap();
        assert_eq!(spec.get("/root").unwrap().mode, 0o700);
    }

    #[test]
    fn identical_readd_is_accepted() {
        let mut spec = Spec::new();
        spec.file("/a", 0o644, "same").unwrap();
        spec.file("/a", 0o644, "same").unwrap();
        spec.symlink("/l", "a").unwrap().symlink("/l", "a").unwrap();
        assert_eq!(names(&spec), ["a", "l"]);
    }

    #[test]
    fn conflicts_name_the_path() {
        let mut spec = Spec::new();
        spec.file("/a", 0o644, "one").unwrap();
        let cases = [
            (
                "different content",
                Entry::new(Kind::File(Content::Bytes(b"two".to_vec())), 0o644),
            ),
            (
                "different mode",
                Entry::new(Kind::File(Content::Bytes(b"one".to_vec())), 0o600),
            ),
            (
                "different source",
                Entry::new(Kind::File(Content::Host("/one".into())), 0o644),
            ),
            ("different kind", Entry::new(Kind::Dir, 0o644)),
        ];
        for (what, entry) in cases {
            let err = spec.insert("/a", entry).unwrap_err();
            assert!(matches!(err, SpecError::Conflict { .. }), "{what}: {err}");
            assert!(
                err.to_string()
                    .starts_with("/a: already in the image as a file"),
                "{err}"
            );
        }
        assert_eq!(
            spec.get("/a"),
            Some(&Entry::new(
                Kind::File(Content::Bytes(b"one".to_vec())),
                0o644
            ))
        );
    }

    #[test]
    fn parent_must_be_a_directory_and_failure_changes_nothing() {
        let mut spec = Spec::new();
        spec.symlink("/lib", "usr/lib").unwrap();
        let err = spec.file("/lib/modules/x/y", 0o644, "").unwrap_err();
        assert_eq!(
            err.to_string(),
            "/lib/modules/x/y: parent /lib is a symlink, not a directory"
        );
        assert_eq!(names(&spec), ["lib"]);
    }

    #[test]
    fn remove_takes_a_subtree_and_nothing_else() {
        let mut spec = Spec::new();
        spec.file("/etc/a/x", 0o644, "x").unwrap();
        spec.file("/etc/ab", 0o644, "y").unwrap();
        assert_eq!(spec.remove("/etc/a").unwrap(), 2);
        assert_eq!(names(&spec), ["etc", "etc/ab"]);
        assert_eq!(spec.remove("/nothing").unwrap(), 0);
    }

    #[test]
    fn bad_paths_modes_and_targets() {
        let mut spec = Spec::new();
        let cases = [
            (
                spec.dir("etc", 0o755).err(),
                "image path \"etc\" must be absolute (start with /)",
            ),
            (
                spec.dir("/", 0o755).err(),
                "image path \"/\" is the image root, which is implicit",
            ),
            (
                spec.dir("/a//b", 0o755).err(),
                "image path \"/a//b\" has an empty, \".\" or \"..\" component",
            ),
            (
                spec.dir("/a/../b", 0o755).err(),
                "image path \"/a/../b\" has an empty, \".\" or \"..\" component",
            ),
            (
                spec.dir("/a/", 0o755).err(),
                "image path \"/a/\" has an empty, \".\" or \"..\" component",
            ),
            (
                spec.dir("/a\0", 0o755).err(),
                "image path \"/a\\0\" contains a NUL byte",
            ),
            (
                spec.file("/f", 0o100_644, "").err(),
                "/f: mode 0o100644 has bits outside the permission mask 0o7777",
            ),
            (spec.symlink("/l", "").err(), "/l: symlink target is empty"),
            (
                spec.owner("/nope", 1, 1).err(),
                "/nope: no such entry in the image",
            ),
        ];
        for (err, want) in cases {
            assert_eq!(err.expect(want).to_string(), want);
        }
        assert_eq!(names(&spec), Vec::<&str>::new());
    }

    #[test]
    fn owner_and_devices() {
        let mut spec = Spec::new();
        spec.char_dev("/dev/console", 0o600, 5, 1).unwrap();
        spec.block_dev("/dev/sda", 0o660, 8, 0)
            .unwrap()
            .owner("/dev/sda", 0, 6)
            .unwrap();
        let sda = spec.get("/dev/sda").unwrap();
        assert_eq!(
            (sda.kind.clone(), sda.uid, sda.gid),
            (Kind::BlockDev { major: 8, minor: 0 }, 0, 6)
        );
    }
}
