//! Kernel-module closure: which `.ko` files an image needs, in the order
//! init must load them, and how init finds the driver for a device.
//!
//! Input is a kernel's module tree, `lib/modules/<release>/`, as depmod
//! leaves it:
//!
//! - `modules.dep`: one line per loadable module,
//!   `<path>: <dependency path> <dependency path> ...`, paths relative to
//!   the tree and ending in `.ko`, `.ko.xz`, `.ko.zst` or `.ko.gz`
//!   (compressed modules are copied as they are);
//! - `modules.builtin` (optional): one path per line of a module compiled
//!   into the kernel, which therefore needs no loading;
//! - `modules.alias` (optional): the device patterns each module handles
//!   (see [`crate::modalias`]);
//! - `modules.softdep` (optional): `softdep <module> pre: <names> post:
//!   <names>`, modules to load before or after one that does not link
//!   against them (names may be aliases, as `crypto-crc32c`).
//!
//! A module's name is its file name without the suffix, with `-` read as
//! `_`, as modprobe does; requested names are normalised the same way. A
//! request may also name a whole class, `@ethernet` (see [`CLASSES`]).
//!
//! Output, added to a [`Spec`] by [`Closure::add_to`], under
//! `/lib/modules/<release>/`:
//!
//! - each module of the closure (the requests, their dependencies and their
//!   soft dependencies);
//! - `modules.dep`, `modules.softdep` and `modules.alias`: the input lines
//!   of just those modules, so init reads them with this same parser;
//! - [`chaos_contract::paths::MODULE_LIST`] (`/etc/chaos/modules`): the modules init loads at every
//!   boot, one name per line; the others wait for a device that matches one
//!   of their aliases;
//! - [`chaos_contract::paths::KERNEL_RELEASE`]: the release the modules belong to, which init
//!   compares with the running kernel.
//!
//! This module reads the tree but never loads anything.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use sha2::{Digest as _, Sha256};

use crate::manifest::Digest;

use crate::modalias::{glob_match, AliasTable};
use crate::spec::{Spec, SpecError};

/// Mode of every file this module adds.
const FILE_MODE: u32 = 0o644;
const MODULE_SUFFIXES: [&str; 4] = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"];

/// A named set of modules, requested as `@<name>`: every module whose path
/// matches one of the globs.
#[derive(Debug)]
pub struct Class {
    pub name: &'static str,
    pub about: &'static str,
    pub paths: &'static [&'static str],
}

pub const CLASSES: &[Class] = &[
    Class {
        name: "ethernet",
        about: "every wired Ethernet driver",
        paths: &["kernel/drivers/net/ethernet/*"],
    },
    Class {
        name: "nftables",
        about: "nf_tables and every nftables expression",
        paths: &[
            "kernel/net/netfilter/nf_tables.ko*",
            "kernel/net/netfilter/nft_*",
            "kernel/net/ipv4/netfilter/nft_*",
            "kernel/net/ipv6/netfilter/nft_*",
        ],
    },
];

#[derive(Debug, thiserror::Error)]
pub enum ModulesError {
    #[error("reading {path}: {source}", path = path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}", path = path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{dir}: cannot tell the kernel release from the directory name", dir = dir.display())]
    Release { dir: PathBuf },
    #[error("module {name:?} is in neither modules.dep nor modules.builtin of kernel {release}")]
    Unknown { name: String, release: String },
    #[error("module class {name:?} is not one of {known}")]
    UnknownClass { name: String, known: String },
    #[error("module class @{name} matches no module of kernel {release}")]
    EmptyClass { name: String, release: String },
    #[error("module {module} depends on {dependency}, which has no line in modules.dep of kernel {release}")]
    MissingDependency {
        module: String,
        dependency: String,
        release: String,
    },
    #[error("dependency cycle in modules.dep of kernel {release}: {}", chain.join(" -> "))]
    Cycle { chain: Vec<String>, release: String },
}

/// A kernel's module tree, parsed.
#[derive(Debug)]
pub struct ModuleTree {
    dir: PathBuf,
    release: String,
    /// modules.dep, keyed by module path.
    lines: BTreeMap<String, DepLine>,
    /// Module name -> path, for requests by name.
    paths: BTreeMap<String, String>,
    builtin: BTreeSet<String>,
    aliases: AliasTable,
    /// Module name -> its soft dependencies, as written (names or aliases).
    softdeps: BTreeMap<String, SoftDep>,
}

/// One modules.dep line.
#[derive(Debug)]
struct DepLine {
    name: String,
    deps: Vec<String>,
}

/// A module's soft dependencies: loaded before or after it, if present.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SoftDep {
    pub pre: Vec<String>,
    pub post: Vec<String>,
}

/// A loadable module of a closure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Normalised name (`_`, never `-`).
    pub name: String,
    /// Path relative to the module tree.
    pub path: String,
    /// Paths of the modules it depends on, as listed in modules.dep.
    pub deps: Vec<String>,
    /// Paths of the closure's modules it must be loaded after: its
    /// dependencies and its `pre:` soft dependencies.
    pub after: Vec<String>,
}

/// The modules needed for a request, in load order.
#[derive(Debug, Clone)]
pub struct Closure {
    dir: PathBuf,
    release: String,
    modules: Vec<Module>,
    builtin: Vec<String>,
    /// The requested names to load at every boot (the rest wait for a device).
    load: Vec<String>,
    aliases: AliasTable,
    softdeps: BTreeMap<String, SoftDep>,
}

/// The modules.* files [`ModuleTree::open`] parses, read whole; `None`
/// for an optional file that is missing.
struct Sources {
    dep: String,
    builtin: Option<String>,
    alias: Option<String>,
    softdep: Option<String>,
}

impl Sources {
    fn read(dir: &Path) -> Result<Self, ModulesError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| ModulesError::Read { path, source })
        };
        let optional = |name: &str| match read(name) {
            Err(ModulesError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(None)
            }
            other => other.map(Some),
        };
        Ok(Sources {
            dep: read("modules.dep")?,
            builtin: optional("modules.builtin")?,
            alias: optional("modules.alias")?,
            softdep: optional("modules.softdep")?,
        })
    }

    /// What the parsed tree depends on: each file's presence, length and
    /// bytes, so no two different sets of files hash alike.
    fn digest(&self) -> Digest {
        let mut hasher = Sha256::new();
        for text in [
            Some(&self.dep),
            self.builtin.as_ref(),
            self.alias.as_ref(),
            self.softdep.as_ref(),
        ] {
            match text {
                None => hasher.update([0]),
                Some(text) => {
                    hasher.update([1]);
                    hasher.update((text.len() as u64).to_le_bytes());
                    hasher.update(text);
                }
            }
        }
        Digest(hasher.finalize().into())
    }
}

impl ModuleTree {
    /// Reads `dir` (`.../lib/modules/<release>`); the release is the
    /// directory's name.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, ModulesError> {
        let dir = dir.into();
        let sources = Sources::read(&dir)?;
        Self::parse(dir, &sources)
    }

    /// [`ModuleTree::open`], parsed once per process for the same files: a
    /// build that opens the tree again (the bench's repeated builds, an
    /// image and its variants) rereads and hashes the few MB of modules.*
    /// text, which is quick, but skips parsing it, which is not (tens of ms
    /// for a distribution kernel's aliases). A changed file is parsed anew.
    pub fn open_shared(dir: impl Into<PathBuf>) -> Result<Arc<Self>, ModulesError> {
        type Parsed = HashMap<(PathBuf, Digest), Arc<ModuleTree>>;
        static PARSED: OnceLock<Mutex<Parsed>> = OnceLock::new();
        let dir = dir.into();
        let sources = Sources::read(&dir)?;
        let key = (dir.clone(), sources.digest());
        let parsed = PARSED.get_or_init(Mutex::default);
        // A poisoned lock only means another thread panicked; the map is
        // whole at every step.
        if let Some(tree) = parsed.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(Arc::clone(tree));
        }
        let tree = Arc::new(Self::parse(dir, &sources)?);
        parsed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, Arc::clone(&tree));
        Ok(tree)
    }

    fn parse(dir: PathBuf, sources: &Sources) -> Result<Self, ModulesError> {
        let release = dir
            .file_name()
            .and_then(|name| name.to_str())
            .ok_or_else(|| ModulesError::Release { dir: dir.clone() })?
            .to_owned();

        let dep_path = dir.join("modules.dep");
        let mut lines = BTreeMap::new();
        let mut paths = BTreeMap::new();
        for (line, text) in numbered_lines(&sources.dep) {
            let syntax = |reason: String| ModulesError::Syntax {
                path: dep_path.clone(),
                line,
                reason,
            };
            let (module, dependencies) = text.split_once(':').ok_or_else(|| {
                syntax(format!(
                    "expected \"<module path>: <dependency paths>\", found {text:?}"
                ))
            })?;
            let module = module.trim();
            let name = module_name(module).map_err(&syntax)?;
            let dependencies: Vec<String> =
                dependencies.split_whitespace().map(str::to_owned).collect();
            for dependency in &dependencies {
                module_name(dependency).map_err(&syntax)?;
            }
            if let Some(first) = paths.insert(name.clone(), module.to_owned()) {
                return Err(syntax(format!(
                    "module {name} is listed twice ({first} and {module})"
                )));
            }
            lines.insert(
                module.to_owned(),
                DepLine {
                    name,
                    deps: dependencies,
                },
            );
        }

        // Optional: a kernel without built-in modules may not ship one, and
        // a name it would have listed still fails loudly as unknown.
        let builtin_path = dir.join("modules.builtin");
        let builtin = numbered_lines(sources.builtin.as_deref().unwrap_or_default())
            .map(|(line, text)| {
                module_name(text).map_err(|reason| ModulesError::Syntax {
                    path: builtin_path.clone(),
                    line,
                    reason,
                })
            })
            .collect::<Result<_, _>>()?;

        let alias_path = dir.join("modules.alias");
        let aliases = match &sources.alias {
            Some(text) => {
                AliasTable::parse(text).map_err(|(line, reason)| ModulesError::Syntax {
                    path: alias_path.clone(),
                    line,
                    reason,
                })?
            }
            None => AliasTable::default(),
        };

        let softdep_path = dir.join("modules.softdep");
        let mut softdeps = BTreeMap::new();
        for (line, text) in numbered_lines(sources.softdep.as_deref().unwrap_or_default()) {
            if text.starts_with('#') {
                continue;
            }
            let (module, softdep) = parse_softdep(text).map_err(|reason| ModulesError::Syntax {
                path: softdep_path.clone(),
                line,
                reason,
            })?;
            let entry: &mut SoftDep = softdeps.entry(module).or_default();
            entry.pre.extend(softdep.pre);
            entry.post.extend(softdep.post);
        }

        Ok(ModuleTree {
            dir,
            release,
            lines,
            paths,
            builtin,
            aliases,
            softdeps,
        })
    }

    pub fn release(&self) -> &str {
        &self.release
    }

    /// The tree's alias table (the image's is pruned to its modules).
    pub fn aliases(&self) -> &AliasTable {
        &self.aliases
    }

    /// The named modules and everything they depend on, in load order:
    /// each module after its dependencies and `pre:` soft dependencies,
    /// otherwise in request order. Built-in names are collected apart, not
    /// loaded. Every request is loaded at boot; see [`ModuleTree::image`].
    pub fn closure<S: AsRef<str>>(&self, names: &[S]) -> Result<Closure, ModulesError> {
        self.image(names, &[] as &[&str])
    }

    /// An image's modules: `load` at every boot, `probe` when a device
    /// matches one of their aliases. Either may name classes (`@ethernet`).
    pub fn image<S: AsRef<str>, T: AsRef<str>>(
        &self,
        load: &[S],
        probe: &[T],
    ) -> Result<Closure, ModulesError> {
        let mut walk = Walk {
            tree: self,
            done: HashSet::new(),
            stack: Vec::new(),
            order: Vec::new(),
        };
        let mut builtin = Vec::new();
        let mut loaded = Vec::new();
        let load = self.expand(load)?;
        let probe = self.expand(probe)?;
        for (requested, at_boot) in load
            .iter()
            .map(|n| (n, true))
            .chain(probe.iter().map(|n| (n, false)))
        {
            let name = normalise(requested);
            if self.builtin.contains(&name) {
                if !builtin.contains(&name) {
                    builtin.push(name);
                }
                continue;
            }
            let path = self.paths.get(&name).ok_or_else(|| ModulesError::Unknown {
                name: requested.to_owned(),
                release: self.release.clone(),
            })?;
            walk.visit(path, false)?;
            if at_boot && !loaded.contains(&name) {
                loaded.push(name);
            }
        }
        let order = walk.order;
        let in_closure: BTreeSet<&str> = order.iter().copied().collect();
        let modules: Vec<Module> = order
            .iter()
            .map(|&path| {
                let line = &self.lines[path];
                let mut after = line.deps.clone();
                for pre in self.soft(&line.name, |s| &s.pre) {
                    if in_closure.contains(pre) && !after.iter().any(|a| a == pre) {
                        after.push(pre.to_owned());
                    }
                }
                Module {
                    name: line.name.clone(),
                    path: path.to_owned(),
                    deps: line.deps.clone(),
                    after,
                }
            })
            .collect();
        let names: BTreeSet<String> = modules.iter().map(|m| m.name.clone()).collect();
        let softdeps = modules
            .iter()
            .filter_map(|m| {
                let keep = |list: fn(&SoftDep) -> &Vec<String>| -> Vec<String> {
                    self.soft(&m.name, list)
                        .into_iter()
                        .map(|p| self.lines[p].name.clone())
                        .collect()
                };
                let softdep = SoftDep {
                    pre: keep(|s| &s.pre),
                    post: keep(|s| &s.post),
                };
                (softdep != SoftDep::default()).then(|| (m.name.clone(), softdep))
            })
            .collect();
        Ok(Closure {
            dir: self.dir.clone(),
            release: self.release.clone(),
            aliases: self.aliases.pruned(&names),
            modules,
            builtin,
            load: loaded,
            softdeps,
        })
    }

    /// Requests with every `@class` replaced by its modules, sorted by path.
    fn expand<S: AsRef<str>>(&self, requests: &[S]) -> Result<Vec<String>, ModulesError> {
        let mut names = Vec::new();
        for request in requests {
            let request = request.as_ref();
            let Some(class) = request.strip_prefix('@') else {
                names.push(request.to_owned());
                continue;
            };
            let known = CLASSES.iter().find(|c| c.name == class).ok_or_else(|| {
                ModulesError::UnknownClass {
                    name: request.to_owned(),
                    known: CLASSES
                        .iter()
                        .map(|c| format!("@{} ({})", c.name, c.about))
                        .collect::<Vec<_>>()
                        .join(", "),
                }
            })?;
            let before = names.len();
            names.extend(
                self.lines
                    .iter()
                    .filter(|(path, _)| known.paths.iter().any(|glob| glob_match(glob, path)))
                    .map(|(_, line)| line.name.clone()),
            );
            if names.len() == before {
                return Err(ModulesError::EmptyClass {
                    name: class.to_owned(),
                    release: self.release.clone(),
                });
            }
        }
        Ok(names)
    }

    /// The loadable modules (paths) a module's `pre:` or `post:` soft
    /// dependencies name, directly or through an alias; names the kernel
    /// has built in or does not have are skipped, as modprobe skips them.
    fn soft(&self, name: &str, list: fn(&SoftDep) -> &Vec<String>) -> Vec<&str> {
        let Some(softdep) = self.softdeps.get(name) else {
            return Vec::new();
        };
        let mut paths = Vec::new();
        for wanted in list(softdep) {
            let found: Vec<&str> = match self.paths.get(&normalise(wanted)) {
                Some(path) => vec![path.as_str()],
                None => self
                    .aliases
                    .lookup(wanted)
                    .into_iter()
                    .filter_map(|m| self.paths.get(m).map(String::as_str))
                    .collect(),
            };
            for path in found {
                if !paths.contains(&path) {
                    paths.push(path);
                }
            }
        }
        paths
    }
}

/// `softdep <module> [pre: <names>...] [post: <names>...]`; words before
/// the first `pre:` or `post:` are ignored, as kmod ignores them.
fn parse_softdep(text: &str) -> Result<(String, SoftDep), String> {
    let mut words = text.split_whitespace();
    let (Some("softdep"), Some(module)) = (words.next(), words.next()) else {
        return Err(format!(
            "expected \"softdep <module> pre: <modules> post: <modules>\", found {text:?}"
        ));
    };
    let mut softdep = SoftDep::default();
    let mut list: Option<&mut Vec<String>> = None;
    for word in words {
        match word {
            "pre:" => list = Some(&mut softdep.pre),
            "post:" => list = Some(&mut softdep.post),
            name => {
                // Kept as written: it may be an alias, where '-' and '_' differ.
                if let Some(list) = list.as_mut() {
                    list.push(name.to_owned());
                }
            }
        }
    }
    Ok((normalise(module), softdep))
}

/// Depth-first walk over modules.dep and the soft dependencies, emitting
/// each module after what it must follow.
struct Walk<'t> {
    tree: &'t ModuleTree,
    done: HashSet<&'t str>,
    /// The modules being visited, for cycle reports.
    stack: Vec<&'t str>,
    order: Vec<&'t str>,
}

impl<'t> Walk<'t> {
    /// Visits a module; `soft` for a soft dependency, which must not fail
    /// the closure: one that would close a cycle is left to load later.
    fn visit(&mut self, path: &'t str, soft: bool) -> Result<(), ModulesError> {
        if self.done.contains(path) {
            return Ok(());
        }
        let tree = self.tree;
        if let Some(start) = self.stack.iter().position(|p| *p == path) {
            if soft {
                return Ok(());
            }
            let chain = self.stack[start..].iter().chain([&path]);
            return Err(ModulesError::Cycle {
                chain: chain.map(|p| tree.lines[*p].name.clone()).collect(),
                release: tree.release.clone(),
            });
        }
        self.stack.push(path);
        let line = &tree.lines[path];
        for pre in tree.soft(&line.name, |s| &s.pre) {
            self.visit(pre, true)?;
        }
        for dependency in &line.deps {
            let (dependency, _) =
                tree.lines
                    .get_key_value(dependency.as_str())
                    .ok_or_else(|| ModulesError::MissingDependency {
                        module: line.name.clone(),
                        dependency: dependency.clone(),
                        release: tree.release.clone(),
                    })?;
            self.visit(dependency, false)?;
        }
        self.stack.pop();
        self.done.insert(path);
        self.order.push(path);
        for post in tree.soft(&line.name, |s| &s.post) {
            self.visit(post, true)?;
        }
        Ok(())
    }
}

impl Closure {
    /// Shorthand for [`ModuleTree::open`] then [`ModuleTree::closure`].
    pub fn resolve<S: AsRef<str>>(
        dir: impl Into<PathBuf>,
        names: &[S],
    ) -> Result<Closure, ModulesError> {
        ModuleTree::open(dir)?.closure(names)
    }

    pub fn release(&self) -> &str {
        &self.release
    }

    /// Loadable modules in load order.
    pub fn modules(&self) -> &[Module] {
        &self.modules
    }

    /// Requested names the kernel has built in, in request order.
    pub fn builtin(&self) -> &[String] {
        &self.builtin
    }

    /// The modules in waves: every module of a wave only follows modules
    /// of earlier waves, so a wave's modules may load at the same time.
    pub fn waves(&self) -> Vec<Vec<&Module>> {
        let mut wave_of: BTreeMap<&str, usize> = BTreeMap::new();
        let mut waves: Vec<Vec<&Module>> = Vec::new();
        // Load order puts every module after what it follows, so one pass
        // sees each predecessor's wave before the module itself.
        for module in &self.modules {
            let wave = module
                .after
                .iter()
                .filter_map(|p| wave_of.get(p.as_str()))
                .map(|w| w + 1)
                .max()
                .unwrap_or(0);
            wave_of.insert(&module.path, wave);
            if waves.len() <= wave {
                waves.resize_with(wave + 1, Vec::new);
            }
            waves[wave].push(module);
        }
        waves
    }

    /// Adds the modules, the pruned modules.dep, modules.softdep and
    /// modules.alias, [`chaos_contract::paths::MODULE_LIST`] and [`chaos_contract::paths::KERNEL_RELEASE`] to `spec`;
    /// module files are read from the tree when the image is written.
    pub fn add_to(&self, spec: &mut Spec) -> Result<(), SpecError> {
        let base = format!("/lib/modules/{}", self.release);
        let mut dep_text = String::new();
        for module in &self.modules {
            spec.file_from(
                &format!("{base}/{}", module.path),
                FILE_MODE,
                self.dir.join(&module.path),
            )?;
            dep_text.push_str(&module.path);
            dep_text.push(':');
            for dependency in &module.deps {
                dep_text.push(' ');
                dep_text.push_str(dependency);
            }
            dep_text.push('\n');
        }
        let mut softdep_text = String::new();
        for (module, softdep) in &self.softdeps {
            softdep_text.push_str(&format!("softdep {module}"));
            for (label, names) in [("pre:", &softdep.pre), ("post:", &softdep.post)] {
                if !names.is_empty() {
                    softdep_text.push_str(&format!(" {label} {}", names.join(" ")));
                }
            }
            softdep_text.push('\n');
        }
        let list_text: String = self.load.iter().map(|name| format!("{name}\n")).collect();
        spec.file(&format!("{base}/modules.dep"), FILE_MODE, dep_text)?;
        spec.file(&format!("{base}/modules.softdep"), FILE_MODE, softdep_text)?;
        spec.file(
            &format!("{base}/modules.alias"),
            FILE_MODE,
            self.aliases.render(),
        )?;
        spec.file(chaos_contract::paths::MODULE_LIST, FILE_MODE, list_text)?;
        spec.file(
            chaos_contract::paths::KERNEL_RELEASE,
            FILE_MODE,
            format!("{}\n", self.release),
        )?;
        Ok(())
    }
}

/// The non-blank lines of a file, trimmed, numbered from 1.
fn numbered_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| (i + 1, line.trim()))
}

/// The normalised module name of a tree-relative module path, or why the
/// path is unacceptable.
fn module_name(path: &str) -> Result<String, String> {
    if path.starts_with('/')
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(format!(
            "module path {path:?} is not a plain path relative to the module tree"
        ));
    }
    let file = path.rsplit('/').next().unwrap_or(path);
    MODULE_SUFFIXES
        .iter()
        .find_map(|suffix| file.strip_suffix(suffix))
        .filter(|stem| !stem.is_empty())
        .map(normalise)
        .ok_or_else(|| {
            format!("module path {path:?} does not end in .ko, .ko.xz, .ko.zst or .ko.gz")
        })
}

/// modprobe treats `-` and `_` in module names as the same character.
pub fn normalise(name: &str) -> String {
    name.replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Content, Kind};

    const RELEASE: &str = "6.1.0-test";

    /// A module tree in a temp dir with the given modules.dep and
    /// modules.builtin.
    fn tree(dep: &str, builtin: Option<&str>) -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("lib/modules").join(RELEASE);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("modules.dep"), dep).unwrap();
        if let Some(builtin) = builtin {
            std::fs::write(dir.join("modules.builtin"), builtin).unwrap();
        }
        (tmp, dir)
    }

    const DEP: &str = "\
kernel/net/core/failover.ko:
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko

kernel/drivers/net/wireguard/wireguard.ko.zst: kernel/lib/crypto/libchacha20poly1305.ko.xz kernel/net/ipv4/udp_tunnel.ko
kernel/lib/crypto/libchacha20poly1305.ko.xz: kernel/lib/crypto/libchacha.ko
kernel/lib/crypto/libchacha.ko:
kernel/net/ipv4/udp_tunnel.ko:
kernel/drivers/hid/hid-generic.ko:
";
    const BUILTIN: &str = "kernel/drivers/block/virtio_blk.ko\nkernel/fs/ext4/ext4.ko\n";

    #[test]
    fn closure_is_in_load_order_with_builtins_apart() {
        let (_tmp, dir) = tree(DEP, Some(BUILTIN));
        let tree = ModuleTree::open(&dir).unwrap();
        assert_eq!(tree.release(), RELEASE);
        let closure = tree
            .closure(&[
                "virtio-net",
                "wireguard",
                "virtio_blk",
                "hid_generic",
                "virtio_net",
                "virtio-blk",
            ])
            .unwrap();
        let names: Vec<&str> = closure.modules().iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "failover",
                "net_failover",
                "virtio_net",
                "libchacha",
                "libchacha20poly1305",
                "udp_tunnel",
                "wireguard",
                "hid_generic",
            ]
        );
        assert_eq!(closure.builtin(), ["virtio_blk"]);
    }

    #[test]
    fn add_to_writes_modules_pruned_dep_and_list() {
        let (_tmp, dir) = tree(DEP, Some(BUILTIN));
        let closure = ModuleTree::open(&dir)
            .unwrap()
            .closure(&["net_failover"])
            .unwrap();
        for module in closure.modules() {
            let ko = dir.join(&module.path);
            std::fs::create_dir_all(ko.parent().unwrap()).unwrap();
            std::fs::write(&ko, &module.name).unwrap();
        }
        let mut spec = Spec::new();
        closure.add_to(&mut spec).unwrap();
        let base = format!("/lib/modules/{RELEASE}");
        let ko = spec
            .get(&format!("{base}/kernel/net/core/failover.ko"))
            .unwrap();
        assert_eq!(
            ko.kind,
            Kind::File(Content::Host(dir.join("kernel/net/core/failover.ko")))
        );
        assert_eq!(ko.mode, 0o644);
        let text = |path: &str| match &spec.get(path).unwrap().kind {
            Kind::File(Content::Bytes(bytes)) => String::from_utf8(bytes.clone()).unwrap(),
            other => panic!("{path} is {other:?}"),
        };
        assert_eq!(
            text(&format!("{base}/modules.dep")),
            "kernel/net/core/failover.ko:\nkernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n"
        );
        assert_eq!(text(chaos_contract::paths::MODULE_LIST), "net_failover\n");
        assert_eq!(text(chaos_contract::paths::KERNEL_RELEASE), "6.1.0-test\n");
        let files = spec
            .iter()
            .filter(|(_, e)| matches!(e.kind, Kind::File(_)))
            .count();
        assert_eq!(files, 7);
        // The host files exist, so the image can be written.
        spec.write(std::io::sink(), 0).unwrap();
    }

    #[test]
    fn shared_trees_are_parsed_again_only_when_a_file_changes() {
        let (_tmp, dir) = tree("kernel/a.ko:\n", None);
        let first = ModuleTree::open_shared(&dir).unwrap();
        assert!(Arc::ptr_eq(&first, &ModuleTree::open_shared(&dir).unwrap()));
        // Same length, other content: a new parse that knows the new name.
        std::fs::write(dir.join("modules.dep"), "kernel/b.ko:\n").unwrap();
        let changed = ModuleTree::open_shared(&dir).unwrap();
        assert!(!Arc::ptr_eq(&first, &changed));
        assert!(changed.closure(&["b"]).is_ok());
        assert!(changed.closure(&["a"]).is_err());
        // A file that appears is a change too.
        std::fs::write(dir.join("modules.builtin"), "kernel/c.ko\n").unwrap();
        let builtin = ModuleTree::open_shared(&dir).unwrap();
        assert_eq!(builtin.closure(&["c"]).unwrap().builtin(), ["c"]);
    }

    #[test]
    fn builtin_file_is_optional() {
        let (_tmp, dir) = tree(DEP, None);
        let err = ModuleTree::open(&dir)
            .unwrap()
            .closure(&["ext4"])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "module \"ext4\" is in neither modules.dep nor modules.builtin of kernel 6.1.0-test"
        );
    }

    #[test]
    fn closure_errors() {
        let cases = [
            (DEP, "no-such-module", "module \"no-such-module\" is in neither modules.dep nor modules.builtin of kernel 6.1.0-test"),
            ("a.ko: b.ko\nb.ko: c.ko\nc.ko: a.ko\n", "a", "dependency cycle in modules.dep of kernel 6.1.0-test: a -> b -> c -> a"),
            ("a.ko: a.ko\n", "a", "dependency cycle in modules.dep of kernel 6.1.0-test: a -> a"),
            ("a.ko: kernel/gone.ko\n", "a", "module a depends on kernel/gone.ko, which has no line in modules.dep of kernel 6.1.0-test"),
        ];
        for (dep, name, want) in cases {
            let (_tmp, dir) = tree(dep, Some(BUILTIN));
            let err = ModuleTree::open(&dir)
                .unwrap()
                .closure(&[name])
                .unwrap_err();
            assert_eq!(err.to_string(), want);
        }
    }

    #[test]
    fn malformed_trees() {
        let cases = [
            ("a.ko:\nb.ko c.ko\n", None, "modules.dep:2: expected \"<module path>: <dependency paths>\", found \"b.ko c.ko\""),
            ("a.ko: b.txt\n", None, "modules.dep:1: module path \"b.txt\" does not end in .ko, .ko.xz, .ko.zst or .ko.gz"),
            ("/lib/a.ko:\n", None, "modules.dep:1: module path \"/lib/a.ko\" is not a plain path relative to the module tree"),
            ("x/../a.ko:\n", None, "modules.dep:1: module path \"x/../a.ko\" is not a plain path relative to the module tree"),
            ("x/a-b.ko:\n\ny/a_b.ko:\n", None, "modules.dep:3: module a_b is listed twice (x/a-b.ko and y/a_b.ko)"),
            ("a.ko:\n", Some("\nkernel/.ko\n"), "modules.builtin:2: module path \"kernel/.ko\" does not end in .ko, .ko.xz, .ko.zst or .ko.gz"),
        ];
        for (dep, builtin, want) in cases {
            let (_tmp, dir) = tree(dep, builtin);
            let err = ModuleTree::open(&dir).unwrap_err().to_string();
            let want = format!("{}/{want}", dir.display());
            assert_eq!(err, want);
        }
    }

    #[test]
    fn missing_modules_dep_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let err = ModuleTree::open(tmp.path().join("5.10"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "reading {}/5.10/modules.dep: ",
                tmp.path().display()
            )),
            "{err}"
        );
    }
    const ALIAS: &str = "\
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias virtio:d00000001v* virtio_net
alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000
alias pci:v000010ECd00008139sv*sd*bc*sc*i* 8139cp
alias crypto-crc32c crc32c-intel
alias crypto-crc32c crc32c_generic
";
    const SOFTDEP_DEP: &str = "\
kernel/drivers/net/ethernet/intel/e1000/e1000.ko:
kernel/drivers/net/ethernet/realtek/8139cp.ko: kernel/drivers/net/mii.ko
kernel/drivers/net/mii.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio.ko:
kernel/drivers/net/virtio_net.ko: kernel/drivers/virtio/virtio.ko
kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko
kernel/fs/jbd2/jbd2.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/crypto/crc32c_generic.ko:
kernel/net/netfilter/nf_tables.ko:
kernel/net/netfilter/nft_ct.ko: kernel/net/netfilter/nf_tables.ko
kernel/a.ko:
kernel/b.ko:
";
    const SOFTDEP: &str = "\
# Soft dependencies extracted from modules themselves.
softdep ext4 pre: crypto-crc32c
softdep virtio_pci post: virtio_net
softdep e1000 mii
softdep a pre: b
softdep b pre: a gone
";

    fn full_tree() -> (tempfile::TempDir, PathBuf) {
        let (tmp, dir) = tree(SOFTDEP_DEP, Some("kernel/drivers/block/virtio_blk.ko\n"));
        std::fs::write(dir.join("modules.alias"), ALIAS).unwrap();
        std::fs::write(dir.join("modules.softdep"), SOFTDEP).unwrap();
        (tmp, dir)
    }

    fn names(modules: &[Module]) -> Vec<&str> {
        modules.iter().map(|m| m.name.as_str()).collect()
    }

    #[test]
    fn soft_dependencies_load_before_or_after() {
        let (_tmp, dir) = full_tree();
        let tree = ModuleTree::open(&dir).unwrap();
        // pre: through an alias that two modules provide; words before
        // pre:/post: ignored (e1000 gets no mii).
        let closure = tree.closure(&["ext4", "e1000", "virtio_pci"]).unwrap();
        assert_eq!(
            names(closure.modules()),
            [
                "crc32c_generic",
                "crc32c_intel",
                "jbd2",
                "ext4",
                "e1000",
                "virtio",
                "virtio_pci",
                "virtio_net",
            ]
        );
        let ext4 = &closure.modules()[3];
        assert_eq!(
            ext4.after,
            [
                "kernel/fs/jbd2/jbd2.ko",
                "kernel/crypto/crc32c_generic.ko",
                "kernel/arch/x86/crypto/crc32c-intel.ko",
            ]
        );
        // Soft dependencies in a circle, or on nothing, do not fail.
        let closure = tree.closure(&["a"]).unwrap();
        assert_eq!(names(closure.modules()), ["b", "a"]);
    }

    #[test]
    fn waves_respect_every_ordering_constraint() {
        let (_tmp, dir) = full_tree();
        let closure = ModuleTree::open(&dir)
            .unwrap()
            .closure(&["ext4", "virtio_net", "e1000", "8139cp"])
            .unwrap();
        let waves: Vec<Vec<&str>> = closure
            .waves()
            .iter()
            .map(|wave| wave.iter().map(|m| m.name.as_str()).collect())
            .collect();
        assert_eq!(
            waves,
            [
                vec![
                    "crc32c_generic",
                    "crc32c_intel",
                    "jbd2",
                    "virtio",
                    "e1000",
                    "mii"
                ],
                vec!["ext4", "virtio_net", "8139cp"],
            ]
        );
    }

    #[test]
    fn images_carry_pruned_aliases_and_softdeps_and_load_only_what_is_asked() {
        let (_tmp, dir) = full_tree();
        let closure = ModuleTree::open(&dir)
            .unwrap()
            .image(&["nft_ct"], &["virtio_pci", "@ethernet"])
            .unwrap();
        assert_eq!(
            names(closure.modules()),
            [
                "nf_tables",
                "nft_ct",
                "virtio",
                "virtio_pci",
                "virtio_net",
                "e1000",
                "mii",
                "8139cp"
            ]
        );
        let mut spec = Spec::new();
        closure.add_to(&mut spec).unwrap();
        let text = |path: &str| match &spec.get(path).unwrap().kind {
            Kind::File(Content::Bytes(bytes)) => String::from_utf8(bytes.clone()).unwrap(),
            other => panic!("{path} is {other:?}"),
        };
        let base = format!("/lib/modules/{RELEASE}");
        assert_eq!(text(chaos_contract::paths::MODULE_LIST), "nft_ct\n");
        assert_eq!(
            text(&format!("{base}/modules.alias")),
            "alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n\
             alias virtio:d00000001v* virtio_net\n\
             alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000\n\
             alias pci:v000010ECd00008139sv*sd*bc*sc*i* 8139cp\n"
        );
        assert_eq!(
            text(&format!("{base}/modules.softdep")),
            "softdep virtio_pci post: virtio_net\n"
        );
        // Read back the way init reads it: the same parser, the same answers.
        let image = tempfile::tempdir().unwrap();
        let image_dir = image.path().join(RELEASE);
        std::fs::create_dir_all(&image_dir).unwrap();
        for file in ["modules.dep", "modules.alias", "modules.softdep"] {
            std::fs::write(image_dir.join(file), text(&format!("{base}/{file}"))).unwrap();
        }
        let tree = ModuleTree::open(&image_dir).unwrap();
        assert_eq!(
            tree.aliases()
                .lookup("pci:v000010ECd00008139sv000010ECsd00008139bc02sc00i00"),
            ["8139cp"]
        );
        assert_eq!(
            names(tree.closure(&["virtio_pci"]).unwrap().modules()),
            ["virtio", "virtio_pci", "virtio_net"]
        );
    }

    #[test]
    fn classes_are_checked() {
        let (_tmp, dir) = full_tree();
        let tree = ModuleTree::open(&dir).unwrap();
        let err = tree.closure(&["@wifi"]).unwrap_err().to_string();
        assert_eq!(
            err,
            "module class \"@wifi\" is not one of @ethernet (every wired Ethernet driver), \
             @nftables (nf_tables and every nftables expression)"
        );
        let (_tmp, dir) = tree_without_ethernet();
        let err = ModuleTree::open(&dir)
            .unwrap()
            .closure(&["@ethernet"])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "module class @ethernet matches no module of kernel 6.1.0-test"
        );
    }

    fn tree_without_ethernet() -> (tempfile::TempDir, PathBuf) {
        tree(DEP, None)
    }

    #[test]
    fn malformed_alias_and_softdep_files_are_named() {
        let (_tmp, dir) = full_tree();
        std::fs::write(dir.join("modules.alias"), "alias a b\n\nalias x\n").unwrap();
        let err = ModuleTree::open(&dir).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{}/modules.alias:3: expected \"alias <pattern> <module>\", found \"alias x\"",
                dir.display()
            )
        );
        std::fs::write(dir.join("modules.alias"), "").unwrap();
        std::fs::write(dir.join("modules.softdep"), "softdep\n").unwrap();
        let err = ModuleTree::open(&dir).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{}/modules.softdep:1: expected \"softdep <module> pre: <modules> post: <modules>\", found \"softdep\"",
                dir.display()
            )
        );
    }
}
