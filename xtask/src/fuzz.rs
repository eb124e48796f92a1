//! `cargo xtask fuzz [TARGET] [--seconds N]`: the targets of fuzz/ under
//! libFuzzer, on stable Rust. libfuzzer-sys compiles libFuzzer from its
//! C++ sources (g++, from build-essential) and rustc instruments the code
//! for coverage through the stable `-C passes` and `-C llvm-args` flags
//! that cargo-fuzz passes too; without a sanitizer, which needs nightly,
//! and which Rust's own bounds and overflow checks stand in for here. Each
//! target starts from its corpus in fuzz/corpus/<target>/; inputs that
//! reach new coverage are merged back into it (libFuzzer's -merge keeps
//! only those), and a crash fails the run with the input that caused it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// Where the instrumented build goes, apart from the ordinary one.
fn target_dir() -> PathBuf {
    crate::build_dir().join("fuzz-target")
}

/// The instrumentation cargo-fuzz uses (its sanitizer apart).
const RUSTFLAGS: &str = "-Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    --cfg fuzzing";

/// An input that takes longer than this is reported as a hang.
const HANG_SECONDS: u32 = 10;
/// Memory an input may take before libFuzzer reports it.
const RSS_LIMIT_MB: u32 = 512;

/// What one target's run found.
#[derive(Debug)]
pub struct Run {
    pub target: &'static str,
    pub seconds: u64,
    pub executions: u64,
    pub corpus_before: usize,
    pub corpus_after: usize,
    /// The input that crashed or hung the target, if one did.
    pub crash: Option<PathBuf>,
}

fn corpus(target: &str) -> PathBuf {
    crate::root().join("fuzz/corpus").join(target)
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

/// Builds the libFuzzer binary; its path.
fn build() -> anyhow::Result<PathBuf> {
    println!("fuzz: building the targets with libFuzzer's coverage instrumentation");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let host = "x86_64-unknown-linux-gnu";
    // With --target, RUSTFLAGS reach the targets only, not build scripts.
    let status = Command::new(cargo)
        .args(["build", "--release", "--locked", "--target", host])
        .arg("--manifest-path")
        .arg(crate::root().join("fuzz/libfuzzer/Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir())
        .env("RUSTFLAGS", RUSTFLAGS)
        .status()
        .context("running cargo build for fuzz/libfuzzer")?;
    if !status.success() {
        bail!(
            "building fuzz/libfuzzer failed ({status}); libFuzzer needs g++ (`cargo xtask deps`)"
        );
    }
    Ok(target_dir().join(host).join("release/fuzz"))
}

/// Runs `target` for `seconds` seconds.
fn run_one(binary: &Path, target: &'static str, seconds: u64) -> anyhow::Result<Run> {
    let corpus = corpus(target);
    let scratch = crate::build_dir().join("fuzz").join(target);
    let _ = std::fs::remove_dir_all(&scratch);
    let (found, artifacts) = (scratch.join("new"), scratch.join("artifacts"));
    std::fs::create_dir_all(&found)?;
    std::fs::create_dir_all(&artifacts)?;
    let corpus_before = count(&corpus);
    println!("fuzz: {target} for {seconds} s from {corpus_before} inputs");
    let started = std::time::Instant::now();
    let output = Command::new(binary)
        .env("CHAOS_FUZZ_TARGET", target)
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={HANG_SECONDS}"))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1")
        .arg(&found)
        .arg(&corpus)
        .output()
        .with_context(|| format!("running {}", binary.display()))?;
    let log = String::from_utf8_lossy(&output.stderr);
    std::fs::write(scratch.join("log"), log.as_bytes())?;
    let executions = log
        .lines()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    let crash = std::fs::read_dir(&artifacts)?
        .flatten()
        .map(|e| e.path())
        .next();
    if crash.is_none() && !output.status.success() {
        bail!("{target}: libFuzzer failed ({}):\n{log}", output.status);
    }
    minimise(binary, target, &corpus, &found, &scratch.join("minimal"))?;
    Ok(Run {
        target,
        seconds: started.elapsed().as_secs(),
        executions,
        corpus_before,
        corpus_after: count(&corpus),
        crash,
    })
}

/// Replaces `corpus` with the smallest set of its inputs and `found`'s that
/// reaches every edge they reach (libFuzzer's merge into an empty
/// directory, counting edges rather than hit counts and comparisons), so
/// the corpus in the repository stays small.
fn minimise(
    binary: &Path,
    target: &str,
    corpus: &Path,
    found: &Path,
    minimal: &Path,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(minimal)?;
    let merged = Command::new(binary)
        .env("CHAOS_FUZZ_TARGET", target)
        .args(["-merge=1", "-use_counters=0", "-use_cmp=0"])
        .arg(minimal)
        .arg(corpus)
        .arg(found)
        .output()
        .context("minimising the corpus")?;
    if !merged.status.success() {
        bail!(
            "{target}: minimising the corpus failed:\n{}",
            String::from_utf8_lossy(&merged.stderr)
        );
    }
    std::fs::remove_dir_all(corpus)?;
    std::fs::create_dir_all(corpus)?;
    for entry in std::fs::read_dir(minimal)? {
        let entry = entry?;
        std::fs::copy(entry.path(), corpus.join(entry.file_name()))?;
    }
    Ok(())
}

/// Fuzzes `only` (or every target) for `seconds` each and prints what each
/// run found; fails if any target crashed or hung.
pub fn run(only: Option<&str>, seconds: u64) -> anyhow::Result<Vec<Run>> {
    let targets: Vec<&'static str> = match only {
        Some(name) => vec![
            chaos_fuzz::target(name)
                .with_context(|| {
                    let names: Vec<&str> = chaos_fuzz::TARGETS.iter().map(|t| t.name).collect();
                    format!("no fuzz target {name:?} (there are: {})", names.join(", "))
                })?
                .name,
        ],
        None => chaos_fuzz::TARGETS.iter().map(|t| t.name).collect(),
    };
    let binary = build()?;
    let mut runs = Vec::new();
    for target in targets {
        let run = run_one(&binary, target, seconds)?;
        println!(
            "fuzz: {}: {} s, {} executions, corpus {} -> {} inputs, {}",
            run.target,
            run.seconds,
            run.executions,
            run.corpus_before,
            run.corpus_after,
            run.crash
                .as_ref()
                .map_or("no crash".to_string(), |c| format!(
                    "CRASH: {}",
                    c.display()
                ))
        );
        runs.push(run);
    }
    let crashed: Vec<String> = runs
        .iter()
        .filter_map(|r| Some(format!("{}: {}", r.target, r.crash.as_ref()?.display())))
        .collect();
    if !crashed.is_empty() {
        bail!(
            "fuzzing found crashes (replay one with CHAOS_FUZZ_TARGET=<target> {} <input>):\n{}",
            target_dir()
                .join("x86_64-unknown-linux-gnu/release/fuzz")
                .display(),
            crashed.join("\n")
        );
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    /// fuzz/libfuzzer is a workspace of its own with its own lock file,
    /// which no other build reads: a crate the targets came to depend on
    /// would otherwise first show up as a failed `cargo xtask fuzz`.
    #[test]
    fn the_libfuzzer_workspace_lock_file_is_current() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let output = std::process::Command::new(cargo)
            .args([
                "metadata",
                "--locked",
                "--format-version",
                "1",
                "--manifest-path",
            ])
            .arg(crate::root().join("fuzz/libfuzzer/Cargo.toml"))
            .output()
            .expect("running cargo metadata");
        assert!(
            output.status.success(),
            "fuzz/libfuzzer/Cargo.lock is out of date (cd fuzz/libfuzzer && cargo update --workspace):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
