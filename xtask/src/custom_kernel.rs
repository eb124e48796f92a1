//! `cargo xtask kernel --custom`: the compact, module-free kernel, built
//! from Debian's linux-source package (or a tree given with `--source`) and
//! the kernel-config fragments: tinyconfig, the fragments merged over it,
//! `make olddefconfig`, then a check that every requested option survived,
//! and only then the bzImage.
//!
//! Results are cached under build/custom-kernel/<key>/, the key naming the
//! source version and hashing the source's identity, the fragments and the
//! recipe here. A cached kernel is checked again before it is reused, and
//! anything short of a complete one is rebuilt. The source tree is only
//! read: objects go to an `O=` directory, so the shared unpacked source and
//! a user's `--source` tree stay clean.

use std::collections::{BTreeSet, VecDeque};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chaos_kernel_config::fragments::{self, Fnv, FRAGMENTS};
use chaos_kernel_config::{check_survival, declared_symbols, Config, Missing};
use xshell::{cmd, Shell};

use crate::kernel::Kernel;

/// Debian's kernel source package: the 6.1 LTS the distribution kernel is.
pub const SOURCE_PACKAGE: &str = "linux-source-6.1";
const SOURCE_TARBALL: &str = "/usr/src/linux-source-6.1.tar.xz";
/// Named on every make call: tinyconfig under the host's default
/// `ARCH=x86` would give a 32-bit kernel.
const ARCH: &str = "ARCH=x86_64";
/// Part of the cache key; change it when the steps below change what a
/// given source and fragments produce.
const RECIPE: &str = "tinyconfig + fragments, olddefconfig, bzImage (1)";
/// How often the compile step reports that it is still going.
const PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// The kernel source to build from.
struct Source {
    /// The top of the tree (where its Makefile is).
    tree: PathBuf,
    /// The version in the cache key's readable part.
    version: String,
    /// What else tells two trees of the same version apart.
    identity: String,
}

/// Builds the custom kernel, or reuses the cached one for this source and
/// these fragments.
pub fn build(sh: &Shell, source: Option<&Path>) -> anyhow::Result<Kernel> {
    let requested = fragments::requested().context("the kernel-config fragments")?;
    let source = match source {
        Some(tree) => given_source(sh, tree)?,
        None => debian_source(sh)?,
    };
    let key = cache_key(&source);
    let dir = crate::build_dir().join("custom-kernel").join(&key);
    if let Some(kernel) = cached(&dir, &requested) {
        println!("kernel: reusing {}", dir.display());
        report(&kernel, None)?;
        return Ok(kernel);
    }
    println!(
        "kernel: building {key} from {} ({} fragments: {})",
        source.tree.display(),
        FRAGMENTS.len(),
        FRAGMENTS
            .iter()
            .map(|f| f.name)
            .collect::<Vec<_>>()
            .join(", ")
    );
    // Kept across interrupted runs, so make picks up where it stopped; the
    // key already pins the source and fragments it was started with.
    let work = crate::partial(&dir);
    let obj = work.join("obj");
    std::fs::create_dir_all(&obj).with_context(|| format!("creating {}", obj.display()))?;

    let started = Instant::now();
    let final_config = configure(sh, &source.tree, &obj, &requested)?;
    println!(
        "kernel: configured, {} requested options all survived olddefconfig ({} ms)",
        requested.len(),
        started.elapsed().as_millis()
    );

    let started = Instant::now();
    compile(sh, &source.tree, &obj)?;
    let took = started.elapsed();

    let tree = &source.tree;
    let release = cmd!(sh, "make -s -C {tree} O={obj} {ARCH} kernelrelease")
        .quiet()
        .read()
        .context("make kernelrelease")?;
    std::fs::copy(obj.join("arch/x86/boot/bzImage"), work.join("bzImage"))
        .context("copying the bzImage")?;
    std::fs::write(work.join("config"), final_config.to_string())?;
    std::fs::write(work.join("release"), format!("{release}\n"))?;
    // The objects have done their job; the cache keeps only what is used.
    std::fs::remove_dir_all(&obj).with_context(|| format!("removing {}", obj.display()))?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&work, &dir)?;
    let kernel = kernel_in(&dir, release);
    report(&kernel, Some(took))?;
    Ok(kernel)
}

/// Debian's source package, unpacked once per version into build/.
fn debian_source(sh: &Shell) -> anyhow::Result<Source> {
    let format = "${Version}";
    let version = cmd!(sh, "dpkg-query -W --showformat {format} {SOURCE_PACKAGE}")
        .quiet()
        .ignore_stderr()
        .read()
        .ok()
        .filter(|v| !v.is_empty() && Path::new(SOURCE_TARBALL).exists())
        .with_context(|| {
            format!("{SOURCE_PACKAGE} is not installed (`cargo xtask deps` installs it)")
        })?;
    let dir = crate::build_dir()
        .join("custom-kernel/source")
        .join(format!("{SOURCE_PACKAGE}_{version}"));
    if !dir.join(".complete").exists() {
        println!("kernel: unpacking {SOURCE_TARBALL} ({SOURCE_PACKAGE} {version})");
        let partial = crate::partial(&dir);
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&partial)?;
        cmd!(sh, "tar -xf {SOURCE_TARBALL} -C {partial}")
            .run()
            .with_context(|| format!("unpacking {SOURCE_TARBALL}"))?;
        std::fs::write(
            partial.join(".complete"),
            format!("{SOURCE_PACKAGE} {version}\n"),
        )?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&partial, &dir)?;
    }
    Ok(Source {
        tree: dir.join(SOURCE_PACKAGE),
        identity: format!("{SOURCE_PACKAGE} {version}"),
        version,
    })
}

/// A kernel tree given with `--source`.
fn given_source(sh: &Shell, tree: &Path) -> anyhow::Result<Source> {
    let tree = tree
        .canonicalize()
        .with_context(|| format!("--source {}", tree.display()))?;
    if !tree.join("Makefile").exists() || !tree.join("Kconfig").exists() {
        bail!(
            "--source {}: no Makefile and Kconfig, not a kernel source tree",
            tree.display()
        );
    }
    let version = cmd!(sh, "make -s -C {tree} kernelversion")
        .quiet()
        .read()
        .with_context(|| format!("make kernelversion in {}", tree.display()))?;
    Ok(Source {
        // Two trees of one version may differ, so the path is in the key;
        // edits inside one tree are not, and need `rm -r build/custom-kernel`.
        identity: format!("{} {version}", tree.display()),
        tree,
        version,
    })
}

/// `<version>-<hash>`: readable, and new whenever the source, the fragments
/// or the recipe change.
fn cache_key(source: &Source) -> String {
    let mut hash = Fnv::default();
    for part in [RECIPE, &source.identity, &fragments::digest(FRAGMENTS)] {
        hash.write(part.as_bytes());
        hash.write(&[0]);
    }
    let version: String = source
        .version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{version}-{:016x}", hash.0)
}

/// The cached kernel in `dir`, if it is complete and still satisfies the
/// request; anything else is rebuilt rather than trusted.
fn cached(dir: &Path, requested: &Config) -> Option<Kernel> {
    let release = std::fs::read_to_string(dir.join("release")).ok()?;
    let kernel = kernel_in(dir, release.trim().to_string());
    let bzimage_ok = std::fs::metadata(&kernel.vmlinuz).is_ok_and(|m| m.len() > 0);
    let config = std::fs::read_to_string(dir.join("config")).ok()?;
    let config = Config::parse(&config).ok()?;
    (bzimage_ok && check_survival(requested, &config).is_ok()).then_some(kernel)
}

/// The kernel in a cache directory: its bzImage, and its final .config
/// beside it (`# CONFIG_MODULES is not set`). Every driver is built in, so
/// an image for it carries no module tree and no module list.
fn kernel_in(dir: &Path, release: String) -> Kernel {
    Kernel {
        release,
        vmlinuz: dir.join("bzImage"),
        modules: None,
    }
}

/// tinyconfig, the fragments over it, olddefconfig, and the survival check.
fn configure(sh: &Shell, tree: &Path, obj: &Path, requested: &Config) -> anyhow::Result<Config> {
    println!("kernel: make tinyconfig, merge the fragments, make olddefconfig");
    // tinyconfig narrates its own merge of tiny.config; errors still show.
    cmd!(sh, "make -s -C {tree} O={obj} {ARCH} tinyconfig")
        .quiet()
        .ignore_stdout()
        .run()
        .context("make tinyconfig")?;
    let dot_config = obj.join(".config");
    let mut config = read_config(&dot_config)?;
    // Overrides of tinyconfig are the point (it turns nearly everything
    // off), so they are not reported; the survival check is what matters.
    config.merge(requested);
    std::fs::write(&dot_config, config.to_string())?;
    cmd!(sh, "make -s -C {tree} O={obj} {ARCH} olddefconfig")
        .quiet()
        .ignore_stdout()
        .run()
        .context("make olddefconfig")?;
    let final_config = read_config(&dot_config)?;
    if let Err(missing) = check_survival(requested, &final_config) {
        let declared = declared_in(tree);
        let lines: Vec<String> = missing
            .iter()
            .map(|m| format!("  {}", explain(m, &declared)))
            .collect();
        bail!(
            "{} requested options did not survive make olddefconfig (final config: {}):\n{}",
            missing.len(),
            dot_config.display(),
            lines.join("\n")
        );
    }
    Ok(final_config)
}

/// One missing option, with the fragment that asked for it and, when no
/// Kconfig declares it, the likely reason.
fn explain(missing: &Missing, declared: &BTreeSet<String>) -> String {
    let origins = fragments::origins(&missing.name)
        .iter()
        .map(|f| format!("{f}.config"))
        .collect::<Vec<_>>()
        .join(", ");
    let unknown = if declared.contains(&missing.name) {
        ""
    } else {
        "; no Kconfig file in this source declares it"
    };
    format!("{missing} [{origins}]{unknown}")
}

/// Every symbol the tree's Kconfig files declare.
fn declared_in(tree: &Path) -> BTreeSet<String> {
    let mut declared = BTreeSet::new();
    let mut dirs = vec![tree.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                dirs.push(path);
            } else if entry.file_name().to_string_lossy().starts_with("Kconfig") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                declared.extend(declared_symbols(&text).map(String::from));
            }
        }
    }
    declared
}

fn read_config(path: &Path) -> anyhow::Result<Config> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Config::parse(&text).with_context(|| format!("parsing {}", path.display()))
}

/// `make bzImage` on every core, its chatter counted rather than printed;
/// errors still reach the terminal (stderr), with make's last lines.
fn compile(sh: &Shell, tree: &Path, obj: &Path) -> anyhow::Result<()> {
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("kernel: make -j{jobs} bzImage (a few minutes)");
    let mut make = Command::new("make");
    make.arg("-C")
        .arg(tree)
        .arg(format!("O={}", obj.display()))
        .arg(ARCH)
        .arg(format!("-j{jobs}"))
        .arg("bzImage")
        .stdout(Stdio::piped());
    for (name, value) in build_identity(sh)? {
        make.env(name, value);
    }
    let mut child = make
        .spawn()
        .context("starting make (is build-essential installed? `cargo xtask deps`)")?;
    let stdout = child.stdout.take().context("make's stdout")?;
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut steps = 0usize;
    let mut tail = VecDeque::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        steps += 1;
        if tail.len() == 20 {
            tail.pop_front();
        }
        tail.push_back(line);
        if last_report.elapsed() >= PROGRESS_EVERY {
            println!(
                "kernel: compiling, {steps} steps in {} s",
                started.elapsed().as_secs()
            );
            last_report = Instant::now();
        }
    }
    let status = child.wait()?;
    if !status.success() {
        for line in &tail {
            println!("  {line}");
        }
        bail!("make bzImage failed ({status}); its last output is above");
    }
    Ok(())
}

/// The user, host and time the kernel records about its build, fixed so
/// that two builds of one source and config give the same bzImage.
fn build_identity(sh: &Shell) -> anyhow::Result<[(&'static str, String); 3]> {
    let epoch = crate::mtime()?.to_string();
    let date = format!("@{epoch}");
    let timestamp = cmd!(sh, "date -u -d {date}")
        .quiet()
        .read()
        .context("formatting the build timestamp")?;
    Ok([
        ("KBUILD_BUILD_USER", "chaos".to_string()),
        ("KBUILD_BUILD_HOST", "chaos".to_string()),
        ("KBUILD_BUILD_TIMESTAMP", timestamp),
    ])
}

fn report(kernel: &Kernel, took: Option<Duration>) -> anyhow::Result<()> {
    let size = std::fs::metadata(&kernel.vmlinuz)?.len();
    let took = took
        .map(|t| format!(", built in {}m{:02}s", t.as_secs() / 60, t.as_secs() % 60))
        .unwrap_or_default();
    println!(
        "kernel: {} at {}: {} KiB ({:.2} MB){took}; no modules",
        kernel.release,
        kernel.vmlinuz.display(),
        size / 1024,
        size as f64 / 1_000_000.0
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_key_names_the_version_and_follows_the_source() {
        let source = |identity: &str| Source {
            tree: PathBuf::from("/src"),
            version: "6.1.192-2".to_string(),
            identity: identity.to_string(),
        };
        let a = cache_key(&source("linux-source-6.1 6.1.192-2"));
        let b = cache_key(&source("/home/me/linux 6.1.192"));
        assert!(a.starts_with("6.1.192-2-"), "{a}");
        assert_eq!(a.len(), "6.1.192-2-".len() + 16);
        assert_eq!(a, cache_key(&source("linux-source-6.1 6.1.192-2")));
        assert_ne!(a, b);
    }
}
