//! Host programs in the image: a program, plugin or helper from the build
//! host together with everything the dynamic loader will open for it, found
//! the way the loader finds it, by reading the ELF files ([`crate::elf`]);
//! never by running them or `ldd`.
//!
//! For each object: its interpreter (`PT_INTERP`) and every `DT_NEEDED`
//! library, searched as glibc's loader does: an absolute name as is, else
//! the object's `DT_RPATH` and its loaders' (when it has no `DT_RUNPATH`),
//! its `DT_RUNPATH`, the directories of the host's `/etc/ld.so.conf` (with
//! its `include`s), then the loader's built-in directories; `$ORIGIN` is
//! the directory of the object (of the program's real file; of the path a
//! library was found at). A library of another class or machine is skipped,
//! as the loader skips it; one already loaded under that name is not
//! searched again. Relative search entries, which depend on the working
//! directory, are not followed.
//!
//! Every symbolic link on the way is kept with its target, so the image
//! resolves the host's paths the same way (`/usr/sbin/slurmd ->
//! /etc/alternatives/slurmd -> /usr/sbin/slurmd-wlm`, merged /usr's `/lib
//! -> usr/lib`, `libfoo.so.1 -> libfoo.so.1.2.3`), and files land at their
//! real paths with their host permission bits, owned by root. Files loaded
//! at run time, invisible to ELF (plugins, programs run by compiled-in
//! paths), are added by name with [`Payload::binary`], each with its own
//! closure; plain data with [`Payload::file`].
//!
//! The image has no `ld.so.cache`, so its loader sees only search paths and
//! its built-in directories: a library the host finds only through
//! ld.so.conf is an error rather than an image that fails at run time.
//!
//! The host is read under a root directory (`/` for the build host), so
//! tests run on trees they make. Nothing is written; [`Payload::add_to`]
//! puts the result into a [`Spec`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::Metadata;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::elf::{Elf, ElfError, EM_X86_64};
use crate::modalias::glob_match;
use crate::spec::{Content, Entry, Kind, Spec, SpecError};

/// Links followed in one path before giving up, the kernel's ELOOP limit.
const MAX_LINKS: usize = 40;
const LD_SO_CONF: &str = "/etc/ld.so.conf";
/// `include` depth in ld.so.conf before it is taken for a cycle.
const MAX_INCLUDE_DEPTH: usize = 8;

/// The directories Debian's glibc loader searches after the cache, per ELF
/// machine (`ld.so --help`, "system search path").
const LOADER_DIRS: &[(u16, &[&str])] = &[(
    EM_X86_64,
    &[
        "/lib/x86_64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu",
        "/lib",
        "/usr/lib",
    ],
)];

#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("{path}: no such file on the build host")]
    Missing { path: String },
    #[error("{path}: a {kind} on the build host, where a file was expected")]
    NotAFile { path: String, kind: &'static str },
    #[error("{path}: more than {MAX_LINKS} symbolic links on the way (a loop?)")]
    Loop { path: String },
    #[error("{path}: {what} is not UTF-8")]
    NotUtf8 { path: String, what: &'static str },
    #[error("image path {0:?} must be absolute")]
    Relative(String),
    #[error("reading {path}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Elf { path: String, source: ElfError },
    #[error("{name}, needed by {needed_by}, is in none of {}", searched.join(" "))]
    NotFound {
        name: String,
        needed_by: String,
        searched: Vec<String>,
    },
    #[error(
        "{name}, needed by {needed_by}, is only in {dir} (listed in {conf}), which the \
         image's loader does not search: the image has no ld.so.cache"
    )]
    CacheOnly {
        name: String,
        needed_by: String,
        dir: String,
        conf: String,
    },
    #[error("{path}: {what} entry {entry:?} uses a dynamic string token other than $ORIGIN")]
    Token {
        path: String,
        what: &'static str,
        entry: String,
    },
    #[error("{path}: ELF machine {machine} has no known loader directories (known: x86-64)")]
    Machine { path: String, machine: u16 },
    #[error("{path}: {reason}")]
    LdConf { path: String, reason: String },
    #[error(
        "{}: cannot stand in for {library}: its soname is {got}, the library's {wanted} \
         (an ELF file of the same soname, class and machine was expected)",
        file.display()
    )]
    StandIn {
        library: String,
        file: PathBuf,
        wanted: String,
        got: String,
    },
}

/// A closure of host files under construction; see the module docs.
#[derive(Debug)]
pub struct Payload {
    root: PathBuf,
    /// ld.so.conf's directories, each with the file that listed it.
    conf_dirs: Vec<(String, String)>,
    /// Image path (the host's real path) -> where the bytes are and mode.
    files: BTreeMap<String, (PathBuf, u32)>,
    links: BTreeMap<String, Link>,
    /// Parsed objects by real path, so each is read once.
    parsed: BTreeMap<String, Elf>,
    /// Real path of a host library -> the file that stands in for it.
    stand_ins: BTreeMap<String, PathBuf>,
}

/// A host symlink and the rest of every path resolved through it, so a
/// link to a directory the image already has can be placed below it.
#[derive(Debug)]
struct Link {
    target: String,
    through: BTreeSet<String>,
}

/// A path resolved on the host: its real path, the links on the way (link,
/// target, the rest of the path after the link) and the real file's
/// metadata.
struct Resolved {
    path: String,
    links: Vec<(String, String, String)>,
    metadata: Metadata,
}

/// Where a search directory came from, for the cache-only check.
#[derive(Clone, Copy, PartialEq)]
enum Source {
    Path,
    /// The index of the entry in `conf_dirs`.
    Conf(usize),
    Loader,
}

/// An object whose libraries are to be found.
struct Pending {
    path: String,
    origin: String,
    /// The DT_RPATHs of its loaders, nearest first.
    inherited: Vec<String>,
}

impl Payload {
    /// A payload taken from the build host.
    pub fn from_host() -> Result<Payload, PayloadError> {
        Payload::with_root("/")
    }

    /// A payload taken from the tree at `root`, as if it were `/`.
    pub fn with_root(root: impl Into<PathBuf>) -> Result<Payload, PayloadError> {
        let mut payload = Payload {
            root: root.into(),
            conf_dirs: Vec::new(),
            files: BTreeMap::new(),
            links: BTreeMap::new(),
            parsed: BTreeMap::new(),
            stand_ins: BTreeMap::new(),
        };
        let mut dirs = Vec::new();
        payload.read_conf(LD_SO_CONF, 0, &mut dirs)?;
        payload.conf_dirs = dirs;
        Ok(payload)
    }

    /// Adds the ELF file at `path` (a program, plugin or helper) with its
    /// interpreter and libraries, and every link on the way to each.
    pub fn binary(&mut self, path: &str) -> Result<&mut Self, PayloadError> {
        let resolved = self.resolve_file(path)?;
        let real = resolved.path.clone();
        let elf = self.parse(&real)?.clone();
        let dirs = LOADER_DIRS
            .iter()
            .find(|(machine, _)| *machine == elf.machine)
            .map(|(_, dirs)| *dirs)
            .ok_or(PayloadError::Machine {
                path: path.into(),
                machine: elf.machine,
            })?;
        self.commit(&resolved);
        if let Some(interpreter) = &elf.interpreter {
            let resolved = self.resolve_file(interpreter)?;
            self.commit(&resolved);
        }
        let origin = parent(&real).to_owned();
        let mut loaded: BTreeSet<String> = elf.soname.iter().cloned().collect();
        let mut queue = VecDeque::from([Pending {
            path: real,
            origin,
            inherited: Vec::new(),
        }]);
        let mut seen = BTreeSet::new();
        while let Some(object) = queue.pop_front() {
            if !seen.insert(object.path.clone()) {
                continue;
            }
            let elf = self.parsed[&object.path].clone();
            let rpath = self.expand(&object, "DT_RPATH", &elf.rpath)?;
            let runpath = self.expand(&object, "DT_RUNPATH", &elf.runpath)?;
            // The loader searches the DT_RPATHs of the object and of its
            // loaders up to the program, those of objects with a
            // DT_RUNPATH left out, and only when the object itself has
            // no DT_RUNPATH.
            let mut chain = if runpath.is_empty() {
                rpath
            } else {
                Vec::new()
            };
            chain.extend(object.inherited.iter().cloned());
            let mut search: Vec<(String, Source)> = Vec::new();
            if runpath.is_empty() {
                search.extend(chain.iter().map(|d| (d.clone(), Source::Path)));
            }
            search.extend(runpath.iter().map(|d| (d.clone(), Source::Path)));
            search.extend(
                self.conf_dirs
                    .iter()
                    .enumerate()
                    .map(|(index, (d, _))| (d.clone(), Source::Conf(index))),
            );
            search.extend(dirs.iter().map(|d| (d.to_string(), Source::Loader)));
            for name in &elf.needed {
                if loaded.contains(name) {
                    continue;
                }
                let (found, resolved) = self.find(name, &object.path, &elf, &search, dirs)?;
                if let Some(soname) = &self.parsed[&resolved.path].soname {
                    loaded.insert(soname.clone());
                }
                loaded.insert(name.clone());
                queue.push_back(Pending {
                    path: resolved.path.clone(),
                    origin: parent(&found).to_owned(),
                    inherited: chain.clone(),
                });
                self.commit(&resolved);
            }
        }
        Ok(self)
    }

    /// Puts `file` (outside the root: a library built for the image) in
    /// place of the host library at `library` wherever the closure reaches
    /// it: same path and links, the stand-in's bytes, and its own needs
    /// followed instead of the host library's. Call it before
    /// [`Self::binary`]. The stand-in must be an ELF file of the same
    /// soname, so the loader takes it for the library.
    pub fn stand_in(&mut self, library: &str, file: &Path) -> Result<&mut Self, PayloadError> {
        let real = self.resolve_file(library)?.path;
        let host = self.parse(&real)?.clone();
        let bytes = std::fs::read(file).map_err(|source| PayloadError::Io {
            path: file.to_owned(),
            source,
        })?;
        let elf = Elf::parse(&bytes).map_err(|source| PayloadError::Elf {
            path: file.display().to_string(),
            source,
        })?;
        if (elf.soname.as_deref(), elf.class, elf.machine)
            != (host.soname.as_deref(), host.class, host.machine)
        {
            return Err(PayloadError::StandIn {
                library: library.into(),
                file: file.to_owned(),
                wanted: format!("{:?}", host.soname),
                got: format!("{:?}", elf.soname),
            });
        }
        self.parsed.insert(real.clone(), elf);
        self.stand_ins.insert(real, file.to_owned());
        Ok(self)
    }

    /// Adds the file at `path` as it is (data a program reads), with every
    /// link on the way.
    pub fn file(&mut self, path: &str) -> Result<&mut Self, PayloadError> {
        let resolved = self.resolve_file(path)?;
        self.commit(&resolved);
        Ok(self)
    }

    /// The image paths of the files and links gathered, sorted.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        let all: BTreeSet<&str> = self
            .files
            .keys()
            .chain(self.links.keys())
            .map(String::as_str)
            .collect();
        all.into_iter()
    }

    /// Puts the files and links into `spec`. A host link to a directory the
    /// spec already has as a real directory (merged /usr's `/lib ->
    /// usr/lib` in an image with `/lib/modules`) becomes links one level
    /// down, for just the entries the payload reaches through it, so the
    /// host's paths still resolve.
    pub fn add_to(&self, spec: &mut Spec) -> Result<(), SpecError> {
        for (path, (host, mode)) in &self.files {
            spec.insert(
                path,
                Entry::new(Kind::File(Content::Host(host.clone())), *mode),
            )?;
        }
        for (path, link) in &self.links {
            if spec.get(path).map(|e| &e.kind) != Some(&Kind::Dir) {
                spec.symlink(path, link.target.as_str())?;
                continue;
            }
            // A path that ended at the link meets the directory: the
            // conflict is the spec's to report.
            for rest in &link.through {
                let mut at = path.clone();
                let mut down = Vec::new();
                for component in rest.split('/').filter(|c| !c.is_empty()) {
                    at = format!("{at}/{component}");
                    down.push(component);
                    if spec.get(&at).map(|e| &e.kind) != Some(&Kind::Dir) {
                        break;
                    }
                }
                let target = if down.is_empty() {
                    link.target.clone()
                } else if link.target.starts_with('/') {
                    format!("{}/{}", link.target, down.join("/"))
                } else {
                    format!(
                        "{}{}/{}",
                        "../".repeat(down.len()),
                        link.target,
                        down.join("/")
                    )
                };
                spec.symlink(&at, target)?;
            }
        }
        Ok(())
    }

    /// The library `name` that `needed_by` (parsed as `elf`) loads: the
    /// path it is found at and that path resolved.
    fn find(
        &mut self,
        name: &str,
        needed_by: &str,
        elf: &Elf,
        search: &[(String, Source)],
        loader_dirs: &[&str],
    ) -> Result<(String, Resolved), PayloadError> {
        let candidates: Vec<(String, Source)> = if name.starts_with('/') {
            vec![(name.to_owned(), Source::Path)]
        } else {
            search
                .iter()
                .filter(|(dir, _)| dir.starts_with('/'))
                .map(|(dir, source)| (format!("{}/{name}", dir.trim_end_matches('/')), *source))
                .collect()
        };
        for (candidate, source) in &candidates {
            let Some(resolved) = self.resolve(candidate)? else {
                continue;
            };
            if !resolved.metadata.is_file() {
                continue;
            }
            // The loader skips a file that is no ELF of this class and
            // machine, and looks on.
            let Ok(found) = self.parse(&resolved.path) else {
                continue;
            };
            if (found.class, found.machine) != (elf.class, elf.machine) {
                continue;
            }
            if let Source::Conf(index) = source {
                let dir = parent(candidate);
                if !loader_dirs.contains(&dir) {
                    return Err(PayloadError::CacheOnly {
                        name: name.into(),
                        needed_by: needed_by.into(),
                        dir: dir.into(),
                        conf: self.conf_dirs[*index].1.clone(),
                    });
                }
            }
            return Ok((candidate.clone(), resolved));
        }
        let mut searched: Vec<String> = Vec::new();
        for (dir, _) in search {
            if !searched.contains(dir) {
                searched.push(dir.clone());
            }
        }
        Err(PayloadError::NotFound {
            name: name.into(),
            needed_by: needed_by.into(),
            searched,
        })
    }

    /// `$ORIGIN` and `${ORIGIN}` replaced in the search entries of `object`.
    fn expand(
        &self,
        object: &Pending,
        what: &'static str,
        entries: &[String],
    ) -> Result<Vec<String>, PayloadError> {
        entries
            .iter()
            .map(|entry| {
                let expanded = entry
                    .replace("${ORIGIN}", &object.origin)
                    .replace("$ORIGIN", &object.origin);
                if expanded.contains('$') {
                    return Err(PayloadError::Token {
                        path: object.path.clone(),
                        what,
                        entry: entry.clone(),
                    });
                }
                Ok(expanded)
            })
            .collect()
    }

    /// The parsed ELF file at the real path `path`.
    fn parse(&mut self, path: &str) -> Result<&Elf, PayloadError> {
        if !self.parsed.contains_key(path) {
            let host = self.host(path);
            let bytes =
                std::fs::read(&host).map_err(|source| PayloadError::Io { path: host, source })?;
            let elf = Elf::parse(&bytes).map_err(|source| PayloadError::Elf {
                path: path.into(),
                source,
            })?;
            self.parsed.insert(path.to_owned(), elf);
        }
        Ok(&self.parsed[path])
    }

    fn commit(&mut self, resolved: &Resolved) {
        for (link, target, rest) in &resolved.links {
            self.links
                .entry(link.clone())
                .or_insert_with(|| Link {
                    target: target.clone(),
                    through: BTreeSet::new(),
                })
                .through
                .insert(rest.clone());
        }
        let mode = resolved.metadata.permissions().mode() & 0o7777;
        let bytes = match self.stand_ins.get(&resolved.path) {
            Some(file) => file.clone(),
            None => self.host(&resolved.path),
        };
        self.files.insert(resolved.path.clone(), (bytes, mode));
    }

    /// [`Self::resolve`] for a path that must name a regular file.
    fn resolve_file(&self, path: &str) -> Result<Resolved, PayloadError> {
        let resolved = self
            .resolve(path)?
            .ok_or_else(|| PayloadError::Missing { path: path.into() })?;
        let kind = resolved.metadata.file_type();
        if !kind.is_file() {
            return Err(PayloadError::NotAFile {
                path: path.into(),
                kind: if kind.is_dir() {
                    "directory"
                } else {
                    "special file"
                },
            });
        }
        Ok(resolved)
    }

    /// Follows `path` component by component under the root, as the kernel
    /// does; `None` if it does not exist.
    fn resolve(&self, path: &str) -> Result<Option<Resolved>, PayloadError> {
        if !path.starts_with('/') {
            return Err(PayloadError::Relative(path.into()));
        }
        let mut pending: VecDeque<String> = components(path).collect();
        let mut real = String::new();
        let mut links = Vec::new();
        let mut metadata = None;
        while let Some(component) = pending.pop_front() {
            match component.as_str() {
                "." => continue,
                ".." => {
                    real.truncate(real.rfind('/').unwrap_or(0));
                    continue;
                }
                _ => {}
            }
            let at = format!("{real}/{component}");
            let host = self.host(&at);
            let found = match std::fs::symlink_metadata(&host) {
                Ok(found) => found,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(source) => return Err(PayloadError::Io { path: host, source }),
            };
            if found.file_type().is_symlink() {
                if links.len() == MAX_LINKS {
                    return Err(PayloadError::Loop { path: path.into() });
                }
                let target = std::fs::read_link(&host)
                    .map_err(|source| PayloadError::Io {
                        path: host.clone(),
                        source,
                    })?
                    .into_os_string()
                    .into_string()
                    .map_err(|_| PayloadError::NotUtf8 {
                        path: at.clone(),
                        what: "the link's target",
                    })?;
                let rest: Vec<&str> = pending.iter().map(String::as_str).collect();
                links.push((at, target.clone(), rest.join("/")));
                if target.starts_with('/') {
                    real.clear();
                }
                for component in components(&target).rev() {
                    pending.push_front(component);
                }
                metadata = None;
                continue;
            }
            if !pending.is_empty() && !found.is_dir() {
                return Ok(None);
            }
            real = at;
            metadata = Some(found);
        }
        if real.is_empty() {
            return Err(PayloadError::NotAFile {
                path: path.into(),
                kind: "directory",
            });
        }
        let metadata = match metadata {
            Some(metadata) => metadata,
            // The path ended in "..".
            None => std::fs::metadata(self.host(&real)).map_err(|source| PayloadError::Io {
                path: self.host(&real),
                source,
            })?,
        };
        Ok(Some(Resolved {
            path: real,
            links,
            metadata,
        }))
    }

    /// The host path of the absolute path `path` under the root.
    fn host(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// Appends the directories of the ld.so.conf at `path` (and of the
    /// files it includes) to `dirs`; a missing file lists none.
    fn read_conf(
        &self,
        path: &str,
        depth: usize,
        dirs: &mut Vec<(String, String)>,
    ) -> Result<(), PayloadError> {
        let fail = |reason: String| PayloadError::LdConf {
            path: path.into(),
            reason,
        };
        if depth > MAX_INCLUDE_DEPTH {
            return Err(fail(format!(
                "includes nest deeper than {MAX_INCLUDE_DEPTH} files (a cycle?)"
            )));
        }
        let host = self.host(path);
        let text = match std::fs::read(&host) {
            Ok(bytes) => String::from_utf8(bytes).map_err(|_| PayloadError::NotUtf8 {
                path: path.into(),
                what: "the file",
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(PayloadError::Io { path: host, source }),
        };
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            let mut words = line.split_whitespace();
            match words.next() {
                None => {}
                Some("include") => {
                    for pattern in words {
                        let pattern = if pattern.starts_with('/') {
                            pattern.to_owned()
                        } else {
                            format!("{}/{pattern}", parent(path))
                        };
                        for included in self.glob(&pattern).map_err(fail)? {
                            self.read_conf(&included, depth + 1, dirs)?;
                        }
                    }
                }
                // Obsolete, and nothing the loader searches.
                Some("hwcap") => {}
                Some(_) => {
                    // ldconfig's old `dir=type` form: the type is ignored.
                    let dir = line.split('=').next().unwrap_or(line).trim();
                    let dir = dir.trim_end_matches('/');
                    if dir.starts_with('/') {
                        dirs.push((dir.to_owned(), path.to_owned()));
                    }
                }
            }
        }
        Ok(())
    }

    /// The files matching `pattern` (wildcards in its last component only),
    /// sorted as glob(3) sorts them.
    fn glob(&self, pattern: &str) -> Result<Vec<String>, String> {
        let (dir, name) = (parent(pattern), &pattern[parent(pattern).len() + 1..]);
        if dir.contains(['*', '?', '[']) {
            return Err(format!(
                "include {pattern:?}: wildcards are supported in the last component only"
            ));
        }
        let host = self.host(dir);
        let entries = match std::fs::read_dir(&host) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("include {pattern:?}: reading {dir}: {e}")),
        };
        let mut found: Vec<String> = entries
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|file| glob_match(name, file))
            .map(|file| format!("{dir}/{file}"))
            .collect();
        found.sort_unstable();
        Ok(found)
    }
}

/// The directory part of an absolute path (`""` for the root).
fn parent(path: &str) -> &str {
    &path[..path.rfind('/').unwrap_or(0)]
}

fn components(path: &str) -> impl DoubleEndedIterator<Item = String> + '_ {
    path.split('/').filter(|c| !c.is_empty()).map(String::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::build::{elf, Fake};
    use std::os::unix::fs::symlink;

    const LOADER: &str = "/lib64/ld-linux-x86-64.so.2";

    /// A merged-/usr host tree in a temporary directory.
    struct Tree {
        dir: tempfile::TempDir,
    }

    impl Tree {
        fn new() -> Tree {
            let tree = Tree {
                dir: tempfile::tempdir().unwrap(),
            };
            for dir in ["usr/lib/x86_64-linux-gnu", "usr/lib64", "usr/sbin", "etc"] {
                std::fs::create_dir_all(tree.path(dir)).unwrap();
            }
            tree.link("lib", "usr/lib");
            tree.link("lib64", "usr/lib64");
            tree.link("sbin", "usr/sbin");
            tree.elf(
                "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                &Fake::default(),
            );
            tree.link(
                "usr/lib64/ld-linux-x86-64.so.2",
                "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            );
            tree.elf(
                "usr/lib/x86_64-linux-gnu/libc.so.6",
                &Fake {
                    soname: Some("libc.so.6"),
                    ..Fake::default()
                },
            );
            tree.write("etc/ld.so.conf", "include /etc/ld.so.conf.d/*.conf\n");
            std::fs::create_dir_all(tree.path("etc/ld.so.conf.d")).unwrap();
            tree.write(
                "etc/ld.so.conf.d/x86_64-linux-gnu.conf",
                "# Multiarch support\n/usr/local/lib/x86_64-linux-gnu\n/lib/x86_64-linux-gnu\n",
            );
            tree
        }

        fn path(&self, path: &str) -> PathBuf {
            self.dir.path().join(path)
        }

        fn write(&self, path: &str, bytes: impl AsRef<[u8]>) {
            let path = self.path(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, bytes).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }

        fn elf(&self, path: &str, fake: &Fake) {
            self.write(path, elf(fake));
        }

        fn link(&self, path: &str, target: &str) {
            let path = self.path(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            symlink(target, path).unwrap();
        }

        /// A program that needs `needed` and has `runpath`.
        fn program(&self, path: &str, needed: &[&str], runpath: Option<&str>) {
            self.elf(
                path,
                &Fake {
                    interpreter: Some(LOADER),
                    needed,
                    runpath,
                    ..Fake::default()
                },
            );
        }

        fn payload(&self) -> Payload {
            Payload::with_root(self.dir.path()).unwrap()
        }
    }

    /// Follows symlinks inside `spec` as the kernel would inside the image;
    /// the entry `path` ends at.
    fn lookup<'a>(spec: &'a Spec, path: &str) -> Option<(String, &'a Entry)> {
        let mut pending: VecDeque<String> = components(path).collect();
        let mut real = String::new();
        for _ in 0..MAX_LINKS * 4 {
            let Some(component) = pending.pop_front() else {
                return Some((real.clone(), spec.get(&real)?));
            };
            if component == ".." {
                real.truncate(real.rfind('/').unwrap_or(0));
                continue;
            }
            let at = format!("{real}/{component}");
            match &spec.get(&at)?.kind {
                Kind::Symlink(target) => {
                    if target.starts_with('/') {
                        real.clear();
                    }
                    for c in components(target).rev() {
                        pending.push_front(c);
                    }
                }
                _ => real = at,
            }
        }
        None
    }

    fn host_file(spec: &Spec, path: &str) -> PathBuf {
        match lookup(spec, path) {
            Some((
                _,
                Entry {
                    kind: Kind::File(Content::Host(host)),
                    ..
                },
            )) => host.clone(),
            other => panic!("{path} does not resolve to a host file in the image: {other:?}"),
        }
    }

    #[test]
    fn a_program_brings_its_loader_libraries_and_links() {
        let tree = Tree::new();
        tree.elf(
            "usr/lib/x86_64-linux-gnu/slurm-wlm/libslurmfull.so",
            &Fake {
                needed: &["libc.so.6"],
                ..Fake::default()
            },
        );
        tree.elf(
            "usr/lib/x86_64-linux-gnu/libnuma.so.1.0.0",
            &Fake {
                soname: Some("libnuma.so.1"),
                needed: &["libc.so.6"],
                ..Fake::default()
            },
        );
        tree.link("usr/lib/x86_64-linux-gnu/libnuma.so.1", "libnuma.so.1.0.0");
        tree.program(
            "usr/sbin/slurmd-wlm",
            &["libslurmfull.so", "libnuma.so.1", "libc.so.6"],
            Some("/usr/lib/x86_64-linux-gnu/slurm-wlm"),
        );
        tree.link("etc/alternatives/slurmd", "/usr/sbin/slurmd-wlm");
        tree.link("usr/sbin/slurmd", "/etc/alternatives/slurmd");

        let mut payload = tree.payload();
        payload.binary("/sbin/slurmd").unwrap();
        assert_eq!(
            payload.paths().collect::<Vec<_>>(),
            [
                "/etc/alternatives/slurmd",
                "/lib",
                "/lib64",
                "/sbin",
                "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                "/usr/lib/x86_64-linux-gnu/libc.so.6",
                "/usr/lib/x86_64-linux-gnu/libnuma.so.1",
                "/usr/lib/x86_64-linux-gnu/libnuma.so.1.0.0",
                "/usr/lib/x86_64-linux-gnu/slurm-wlm/libslurmfull.so",
                "/usr/lib64/ld-linux-x86-64.so.2",
                "/usr/sbin/slurmd",
                "/usr/sbin/slurmd-wlm",
            ]
        );
        let mut spec = Spec::new();
        payload.add_to(&mut spec).unwrap();
        assert_eq!(
            spec.get("/lib").unwrap().kind,
            Kind::Symlink("usr/lib".into())
        );
        let slurmd = spec.get("/usr/sbin/slurmd-wlm").unwrap();
        assert_eq!((slurmd.mode, slurmd.uid, slurmd.gid), (0o755, 0, 0));
        // The paths the kernel and the loader open resolve in the image to
        // the host's files.
        for (path, host) in [
            ("/sbin/slurmd", "usr/sbin/slurmd-wlm"),
            (LOADER, "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
            (
                "/lib/x86_64-linux-gnu/libc.so.6",
                "usr/lib/x86_64-linux-gnu/libc.so.6",
            ),
            (
                "/usr/lib/x86_64-linux-gnu/libnuma.so.1",
                "usr/lib/x86_64-linux-gnu/libnuma.so.1.0.0",
            ),
        ] {
            assert_eq!(host_file(&spec, path), tree.path(host), "{path}");
        }
    }

    #[test]
    fn a_link_to_a_directory_the_image_has_goes_one_level_down() {
        let tree = Tree::new();
        tree.program("usr/sbin/munged", &["libc.so.6"], None);
        let mut payload = tree.payload();
        payload.binary("/usr/sbin/munged").unwrap();
        let mut spec = Spec::new();
        spec.file("/lib/modules/6.1/modules.dep", 0o644, "")
            .unwrap();
        spec.dir("/lib64", 0o755).unwrap();
        payload.add_to(&mut spec).unwrap();
        assert_eq!(
            spec.get("/lib/x86_64-linux-gnu").unwrap().kind,
            Kind::Symlink("../usr/lib/x86_64-linux-gnu".into())
        );
        assert_eq!(
            spec.get(LOADER).unwrap().kind,
            Kind::Symlink("../usr/lib64/ld-linux-x86-64.so.2".into())
        );
        assert_eq!(spec.get("/lib/modules").unwrap().kind, Kind::Dir);
        for path in [LOADER, "/lib/x86_64-linux-gnu/libc.so.6"] {
            host_file(&spec, path);
        }
    }

    #[test]
    fn search_order_origin_and_class() {
        let tree = Tree::new();
        // Found through the program's DT_RPATH with $ORIGIN, before the
        // loader's directories; the 32-bit copy first in the path is
        // skipped, as the loader skips it.
        tree.elf(
            "opt/app/lib32/libapp.so",
            &Fake {
                elf32: true,
                ..Fake::default()
            },
        );
        tree.elf("usr/lib/x86_64-linux-gnu/libapp.so", &Fake::default());
        // libapp's own DT_RPATH is inherited by what it loads: libdep.
        tree.elf(
            "opt/app/lib/libapp.so",
            &Fake {
                needed: &["libdep.so"],
                rpath: Some("${ORIGIN}/dep"),
                ..Fake::default()
            },
        );
        tree.elf(
            "opt/app/lib/dep/libdep.so",
            &Fake {
                needed: &["libleaf.so"],
                ..Fake::default()
            },
        );
        tree.elf("opt/app/lib/dep/libleaf.so", &Fake::default());
        tree.elf(
            "opt/app/bin/app",
            &Fake {
                interpreter: Some(LOADER),
                needed: &["libapp.so", "libc.so.6"],
                rpath: Some("$ORIGIN/../lib32:$ORIGIN/../lib"),
                ..Fake::default()
            },
        );
        let mut payload = tree.payload();
        payload.binary("/opt/app/bin/app").unwrap();
        let paths: Vec<&str> = payload.paths().collect();
        for want in [
            "/opt/app/lib/libapp.so",
            "/opt/app/lib/dep/libdep.so",
            "/opt/app/lib/dep/libleaf.so",
        ] {
            assert!(paths.contains(&want), "{want} in {paths:?}");
        }
        for not in [
            "/opt/app/lib32/libapp.so",
            "/usr/lib/x86_64-linux-gnu/libapp.so",
        ] {
            assert!(!paths.contains(&not), "{not} in {paths:?}");
        }
    }

    #[test]
    fn runpath_is_not_inherited_and_hides_rpath() {
        let tree = Tree::new();
        tree.elf(
            "opt/r/libx.so",
            &Fake {
                needed: &["liby.so"],
                ..Fake::default()
            },
        );
        tree.elf("opt/r/liby.so", &Fake::default());
        tree.elf("opt/p/libx.so", &Fake::default());
        tree.elf(
            "opt/bin/tool",
            &Fake {
                interpreter: Some(LOADER),
                needed: &["libx.so"],
                rpath: Some("/opt/p"),
                runpath: Some("/opt/r"),
                ..Fake::default()
            },
        );
        let err = tree
            .payload()
            .binary("/opt/bin/tool")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "liby.so, needed by /opt/r/libx.so, is in none of /usr/local/lib/x86_64-linux-gnu \
             /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu /lib /usr/lib"
        );
    }

    #[test]
    fn errors_name_what_is_missing_or_broken() {
        let tree = Tree::new();
        tree.program("usr/sbin/needs-missing", &["libgone.so.1"], None);
        tree.write("usr/sbin/script", "#!/bin/sh\n");
        tree.link("usr/sbin/loop", "loop");
        tree.elf(
            "usr/sbin/lib-token",
            &Fake {
                needed: &["libc.so.6"],
                runpath: Some("$LIB/x"),
                ..Fake::default()
            },
        );
        tree.elf(
            "usr/sbin/arm",
            &Fake {
                machine: Some(183),
                ..Fake::default()
            },
        );
        let mut truncated = elf(&Fake {
            interpreter: Some(LOADER),
            ..Fake::default()
        });
        truncated.truncate(70);
        tree.write("usr/sbin/truncated", truncated);
        tree.elf("usr/local/lib/libonly.so", &Fake::default());
        tree.write("etc/ld.so.conf.d/libc.conf", "/usr/local/lib\n");
        tree.program("usr/sbin/needs-local", &["libonly.so"], None);
        let cases = [
            ("/usr/sbin/slurmd", "/usr/sbin/slurmd: no such file on the build host".to_string()),
            ("/usr/sbin", "/usr/sbin: a directory on the build host, where a file was expected".into()),
            ("/usr/sbin/loop", "/usr/sbin/loop: more than 40 symbolic links on the way (a loop?)".into()),
            ("usr/sbin/script", "image path \"usr/sbin/script\" must be absolute".into()),
            ("/usr/sbin/script", "/usr/sbin/script: not an ELF file (it does not start with \\x7fELF)".into()),
            ("/usr/sbin/truncated", "/usr/sbin/truncated: truncated: the program header table at offset 64 (168 bytes) runs past the end of the file (70 bytes)".into()),
            ("/usr/sbin/arm", "/usr/sbin/arm: ELF machine 183 has no known loader directories (known: x86-64)".into()),
            ("/usr/sbin/lib-token", "/usr/sbin/lib-token: DT_RUNPATH entry \"$LIB/x\" uses a dynamic string token other than $ORIGIN".into()),
            (
                "/usr/sbin/needs-missing",
                "libgone.so.1, needed by /usr/sbin/needs-missing, is in none of /usr/local/lib \
                 /usr/local/lib/x86_64-linux-gnu /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu /lib /usr/lib".into(),
            ),
            (
                "/usr/sbin/needs-local",
                "libonly.so, needed by /usr/sbin/needs-local, is only in /usr/local/lib (listed in \
                 /etc/ld.so.conf.d/libc.conf), which the image's loader does not search: the image has no ld.so.cache".into(),
            ),
        ];
        for (path, want) in cases {
            let err = tree.payload().binary(path).unwrap_err();
            assert_eq!(err.to_string(), want);
        }
    }

    #[test]
    fn an_include_cycle_is_an_error() {
        let tree = Tree::new();
        tree.write("etc/ld.so.conf.d/self.conf", "include self.conf\n");
        let err = Payload::with_root(tree.dir.path()).unwrap_err().to_string();
        assert_eq!(
            err,
            "/etc/ld.so.conf.d/self.conf: includes nest deeper than 8 files (a cycle?)"
        );
    }

    #[test]
    fn data_files_keep_their_links() {
        let tree = Tree::new();
        tree.write("usr/share/x/data", "x");
        tree.link("etc/x", "../usr/share/x");
        let mut payload = tree.payload();
        payload.file("/etc/x/data").unwrap();
        assert_eq!(
            payload.paths().collect::<Vec<_>>(),
            ["/etc/x", "/usr/share/x/data"]
        );
    }

    #[test]
    fn a_stand_in_takes_the_librarys_place_and_brings_its_own_needs() {
        let tree = Tree::new();
        let lib = "usr/lib/x86_64-linux-gnu";
        let needs = |needed, soname| Fake {
            needed,
            soname: Some(soname),
            ..Fake::default()
        };
        tree.elf(
            &format!("{lib}/libbig.so.1.2"),
            &needs(&["libheavy.so.0"], "libbig.so.1"),
        );
        tree.link(&format!("{lib}/libbig.so.1"), "libbig.so.1.2");
        tree.elf(
            &format!("{lib}/libheavy.so.0"),
            &needs(&[], "libheavy.so.0"),
        );
        tree.program("usr/sbin/daemon", &["libbig.so.1"], None);
        let outside = tempfile::tempdir().unwrap();
        let stub = outside.path().join("stub.so");
        std::fs::write(&stub, elf(&needs(&["libc.so.6"], "libbig.so.1"))).unwrap();
        let mut payload = tree.payload();
        payload
            .stand_in("/lib/x86_64-linux-gnu/libbig.so.1", &stub)
            .unwrap();
        payload.binary("/usr/sbin/daemon").unwrap();
        let paths: Vec<_> = payload.paths().collect();
        assert!(
            paths.contains(&"/usr/lib/x86_64-linux-gnu/libc.so.6"),
            "{paths:?}"
        );
        assert!(!paths.iter().any(|p| p.contains("libheavy")), "{paths:?}");
        let mut spec = Spec::new();
        payload.add_to(&mut spec).unwrap();
        assert_eq!(host_file(&spec, "/lib/x86_64-linux-gnu/libbig.so.1"), stub);

        let wrong = outside.path().join("wrong.so");
        std::fs::write(&wrong, elf(&needs(&[], "libother.so.1"))).unwrap();
        let error = tree
            .payload()
            .stand_in("/lib/x86_64-linux-gnu/libbig.so.1", &wrong)
            .unwrap_err()
            .to_string();
        assert!(error.contains("cannot stand in for"), "{error}");
        assert!(error.contains("libother.so.1"), "{error}");
    }

    #[test]
    fn the_build_hosts_true_brings_its_loader_and_libc() {
        let mut payload = Payload::from_host().unwrap();
        payload.binary("/bin/true").unwrap();
        let elf = Elf::parse(&std::fs::read("/bin/true").unwrap()).unwrap();
        let mut spec = Spec::new();
        payload.add_to(&mut spec).unwrap();
        host_file(&spec, "/bin/true");
        host_file(&spec, elf.interpreter.as_deref().unwrap());
        let libc = payload
            .paths()
            .find(|p| p.ends_with("/libc.so.6"))
            .expect("libc.so.6 in the closure");
        host_file(&spec, libc);
    }
}
