//! Kernel-module closure: which `.ko` files an image needs for a list of
//! module names, in the order init must load them.
//!
//! Input is a kernel's module tree, `lib/modules/<release>/`, as depmod
//! leaves it:
//!
//! - `modules.dep`: one line per loadable module,
//!   `<path>: <dependency path> <dependency path> ...`, paths relative to
//!   the tree and ending in `.ko`, `.ko.xz`, `.ko.zst` or `.ko.gz`
//!   (compressed modules are copied as they are);
//! - `modules.builtin` (optional): one path per line of a module compiled
//!   into the kernel, which therefore needs no loading.
//!
//! A module's name is its file name without the suffix, with `-` read as
//! `_`, as modprobe does; requested names are normalised the same way.
//!
//! Output, added to a [`Spec`] by [`Closure::add_to`]:
//!
//! - each module at `/lib/modules/<release>/<path>`;
//! - `/lib/modules/<release>/modules.dep`: the input lines of just those
//!   modules, in load order;
//! - [`MODULE_LIST`] (`/etc/chaos/modules`): one module name per line in
//!   load order, dependencies before dependents. Init reads it at boot and
//!   loads the modules top to bottom.
//!
//! This module reads the tree but never loads anything.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use crate::spec::{Spec, SpecError};

/// Where the image lists the modules init loads at boot, in load order.
pub const MODULE_LIST: &str = "/etc/chaos/modules";
/// Mode of every file this module adds.
const FILE_MODE: u32 = 0o644;
const MODULE_SUFFIXES: [&str; 4] = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"];

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
}

/// One modules.dep line.
#[derive(Debug)]
struct DepLine {
    name: String,
    deps: Vec<String>,
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
}

/// The modules needed for a request, in load order.
#[derive(Debug, Clone)]
pub struct Closure {
    dir: PathBuf,
    release: String,
    modules: Vec<Module>,
    builtin: Vec<String>,
}

impl ModuleTree {
    /// Reads `dir` (`.../lib/modules/<release>`); the release is the
    /// directory's name.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, ModulesError> {
        let dir = dir.into();
        let release = dir
            .file_name()
            .and_then(|name| name.to_str())
            .ok_or_else(|| ModulesError::Release { dir: dir.clone() })?
            .to_owned();

        let dep_path = dir.join("modules.dep");
        let mut lines = BTreeMap::new();
        let mut paths = BTreeMap::new();
        for (line, text) in read_lines(&dep_path)? {
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

        let builtin_path = dir.join("modules.builtin");
        // Optional: a kernel without built-in modules may not ship one, and
        // a name it would have listed still fails loudly as unknown.
        let builtin_lines = match read_lines(&builtin_path) {
            Err(ModulesError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Vec::new()
            }
            other => other?,
        };
        let builtin = builtin_lines
            .into_iter()
            .map(|(line, text)| {
                module_name(&text).map_err(|reason| ModulesError::Syntax {
                    path: builtin_path.clone(),
                    line,
                    reason,
                })
            })
            .collect::<Result<_, _>>()?;

        Ok(ModuleTree {
            dir,
            release,
            lines,
            paths,
            builtin,
        })
    }

    pub fn release(&self) -> &str {
        &self.release
    }

    /// The named modules and everything they depend on, in load order:
    /// each module after its dependencies, otherwise in request order.
    /// Built-in names are collected apart, not loaded.
    pub fn closure<S: AsRef<str>>(&self, names: &[S]) -> Result<Closure, ModulesError> {
        let mut walk = Walk {
            tree: self,
            done: HashSet::new(),
            stack: Vec::new(),
            order: Vec::new(),
        };
        let mut builtin = Vec::new();
        for requested in names {
            let requested = requested.as_ref();
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
            walk.visit(path)?;
        }
        let modules = walk
            .order
            .into_iter()
            .map(|path| Module {
                name: self.lines[path].name.clone(),
                path: path.to_owned(),
                deps: self.lines[path].deps.clone(),
            })
            .collect();
        Ok(Closure {
            dir: self.dir.clone(),
            release: self.release.clone(),
            modules,
            builtin,
        })
    }
}

/// Depth-first walk over modules.dep, emitting each module after its
/// dependencies.
struct Walk<'t> {
    tree: &'t ModuleTree,
    done: HashSet<&'t str>,
    /// The modules being visited, for cycle reports.
    stack: Vec<&'t str>,
    order: Vec<&'t str>,
}

impl<'t> Walk<'t> {
    fn visit(&mut self, path: &'t str) -> Result<(), ModulesError> {
        if self.done.contains(path) {
            return Ok(());
        }
        let tree = self.tree;
        if let Some(start) = self.stack.iter().position(|p| *p == path) {
            let chain = self.stack[start..].iter().chain([&path]);
            return Err(ModulesError::Cycle {
                chain: chain.map(|p| tree.lines[*p].name.clone()).collect(),
                release: tree.release.clone(),
            });
        }
        self.stack.push(path);
        let line = &tree.lines[path];
        for dependency in &line.deps {
            let (dependency, _) =
                tree.lines
                    .get_key_value(dependency.as_str())
                    .ok_or_else(|| ModulesError::MissingDependency {
                        module: line.name.clone(),
                        dependency: dependency.clone(),
                        release: tree.release.clone(),
                    })?;
            self.visit(dependency)?;
        }
        self.stack.pop();
        self.done.insert(path);
        self.order.push(path);
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

    /// Adds the modules, the pruned modules.dep and [`MODULE_LIST`] to
    /// `spec`; module files are read from the tree when the image is written.
    pub fn add_to(&self, spec: &mut Spec) -> Result<(), SpecError> {
        let base = format!("/lib/modules/{}", self.release);
        let mut dep_text = String::new();
        let mut list_text = String::new();
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
            list_text.push_str(&module.name);
            list_text.push('\n');
        }
        spec.file(&format!("{base}/modules.dep"), FILE_MODE, dep_text)?;
        spec.file(MODULE_LIST, FILE_MODE, list_text)?;
        Ok(())
    }
}

/// The non-blank lines of a file, numbered from 1.
fn read_lines(path: &Path) -> Result<Vec<(usize, String)>, ModulesError> {
    let text = std::fs::read_to_string(path).map_err(|source| ModulesError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| (i + 1, line.trim().to_owned()))
        .collect())
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
fn normalise(name: &str) -> String {
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
        assert_eq!(text(MODULE_LIST), "failover\nnet_failover\n");
        let files = spec
            .iter()
            .filter(|(_, e)| matches!(e.kind, Kind::File(_)))
            .count();
        assert_eq!(files, 4);
        // The host files exist, so the image can be written.
        spec.write(std::io::sink(), 0).unwrap();
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
}
