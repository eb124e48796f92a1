//! Loading kernel modules at boot. The image builder chose the modules and
//! wrote their pruned modules.dep, modules.softdep and modules.alias; this
//! module reads them with the builder's own parser (one definition of each
//! format), checks that they belong to the running kernel, and loads what it
//! is asked for with finit_module(2), dependencies first and independent
//! modules at the same time. It never decides which modules a node needs
//! (that is the caller's: the image's list, `chaos.modules=`, coldplug) and
//! never runs modprobe.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mkimage::ModuleTree;
use nix::kmod::{finit_module, ModuleInitFlags};

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("this image was built for kernel {image}, but the running kernel is {running}: boot the kernel the image was built with, or rebuild the image for this one")]
    WrongKernel { image: String, running: String },
    #[error("reading {path}: {source}", path = path.display())]
    Release { path: PathBuf, source: io::Error },
    #[error("loading {name} ({path}): {source}", path = path.display())]
    Load {
        name: String,
        path: PathBuf,
        source: io::Error,
    },
}

/// Loads one module file; false if it was already loaded.
pub fn load(name: &str, path: &Path) -> Result<bool, ModuleError> {
    let fail = |source: io::Error| ModuleError::Load {
        name: name.to_string(),
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(fail)?;
    match finit_module(&file, c"", ModuleInitFlags::empty()) {
        Ok(()) => Ok(true),
        Err(nix::errno::Errno::EEXIST) => Ok(false),
        Err(e) => Err(fail(e.into())),
    }
}

/// The image's module directory, if the image has modules; an error if the
/// image was built for another kernel than the one running (with modules or,
/// for a kernel with every driver built in, without). `root` is `/` on the
/// node.
pub fn image_dir(root: &Path, running: &str) -> Result<Option<PathBuf>, ModuleError> {
    let record = root.join(chaos_contract::paths::KERNEL_RELEASE.trim_start_matches('/'));
    let image = match std::fs::read_to_string(&record) {
        Ok(text) => text.trim().to_string(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ModuleError::Release {
                path: record,
                source,
            })
        }
    };
    if image != running {
        return Err(ModuleError::WrongKernel {
            image,
            running: running.to_string(),
        });
    }
    let dir = root.join("lib/modules").join(running);
    Ok(dir.is_dir().then_some(dir))
}

/// One module that loaded, and how long its finit_module took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub name: String,
    pub took: Duration,
}

/// What a [`load_all`] did: the modules it loaded, and one error per module
/// that failed (its dependents are not tried and say why).
#[derive(Debug, Default)]
pub struct Outcome {
    pub loaded: Vec<Loaded>,
    pub errors: Vec<String>,
}

/// Loads `names` (and what they need) from the image's tree at `dir`, in
/// waves: the modules of one wave do not depend on each other, so each gets
/// a thread, and the kernel runs their init functions side by side. Modules
/// already in the kernel (/sys/module) are skipped.
pub fn load_all<S: AsRef<str>>(tree: &ModuleTree, dir: &Path, names: &[S]) -> Outcome {
    let mut outcome = Outcome::default();
    // A name the image lacks (a typo in chaos.modules=) is reported alone
    // instead of failing the whole closure.
    let known: Vec<&str> = names
        .iter()
        .map(AsRef::as_ref)
        .filter(|name| match tree.closure(&[name]) {
            Ok(_) => true,
            Err(e) => {
                outcome.errors.push(format!("{e} (this image's modules)"));
                false
            }
        })
        .collect();
    let closure = match tree.closure(&known) {
        Ok(closure) => closure,
        Err(e) => {
            outcome.errors.push(e.to_string());
            return outcome;
        }
    };
    let mut failed: Vec<&str> = Vec::new();
    for wave in closure.waves() {
        let results: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = wave
                .iter()
                .filter(|m| !Path::new("/sys/module").join(&m.name).exists())
                .map(|module| {
                    // Only a hard dependency blocks: a soft one is optional
                    // (crc32c_intel fails on a CPU without SSE4.2, and
                    // crc32c_generic does the work).
                    let blocked = module.deps.iter().find(|p| failed.contains(&p.as_str()));
                    let path = dir.join(&module.path);
                    scope.spawn(move || {
                        if let Some(blocked) = blocked {
                            return (
                                module,
                                Err(format!(
                                    "{}: not loaded, it needs {blocked}, which failed",
                                    module.name
                                )),
                            );
                        }
                        let started = Instant::now();
                        let result = load(&module.name, &path)
                            .map(|fresh| fresh.then(|| started.elapsed()))
                            .map_err(|e| e.to_string());
                        (module, result)
                    })
                })
                .collect();
            handles
                .into_iter()
                .filter_map(|handle| handle.join().ok())
                .collect()
        });
        for (module, result) in results {
            match result {
                Ok(Some(took)) => outcome.loaded.push(Loaded {
                    name: module.name.clone(),
                    took,
                }),
                Ok(None) => {}
                Err(e) => {
                    failed.push(&module.path);
                    outcome.errors.push(e);
                }
            }
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with(release: Option<&str>) -> tempfile_free::Dir {
        let dir = tempfile_free::Dir::new();
        if let Some(release) = release {
            let record = dir
                .0
                .join(chaos_contract::paths::KERNEL_RELEASE.trim_start_matches('/'));
            std::fs::create_dir_all(record.parent().unwrap()).unwrap();
            std::fs::write(record, format!("{release}\n")).unwrap();
        }
        dir
    }

    #[test]
    fn a_mismatched_kernel_names_both_releases() {
        let root = root_with(Some("6.1.0-56-amd64"));
        let err = image_dir(&root.0, "6.12.0-1-amd64").unwrap_err();
        assert_eq!(
            err.to_string(),
            "this image was built for kernel 6.1.0-56-amd64, but the running kernel is \
             6.12.0-1-amd64: boot the kernel the image was built with, or rebuild the image for this one"
        );
    }

    #[test]
    fn the_matching_kernel_gets_its_directory_and_no_record_means_no_modules() {
        let root = root_with(Some("6.1.0-56-amd64"));
        // Recorded but without modules: a kernel with its drivers built in.
        assert_eq!(image_dir(&root.0, "6.1.0-56-amd64").unwrap(), None);
        std::fs::create_dir_all(root.0.join("lib/modules/6.1.0-56-amd64")).unwrap();
        assert_eq!(
            image_dir(&root.0, "6.1.0-56-amd64").unwrap(),
            Some(root.0.join("lib/modules/6.1.0-56-amd64"))
        );
        let empty = root_with(None);
        assert_eq!(image_dir(&empty.0, "6.1.0-56-amd64").unwrap(), None);
    }

    /// A scratch directory removed on drop (init has no tempfile dependency).
    mod tempfile_free {
        pub struct Dir(pub std::path::PathBuf);

        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicU32, Ordering};
                static NEXT: AtomicU32 = AtomicU32::new(0);
                let path = std::env::temp_dir().join(format!(
                    "chaos-modules-{}-{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&path).unwrap();
                Dir(path)
            }
        }

        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}
