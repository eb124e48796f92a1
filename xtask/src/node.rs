//! The node's own programs, built as static musl executables in a target
//! directory of their own under build/, so building them from inside a
//! running `cargo test` never waits on the outer cargo's lock.

use std::path::PathBuf;

use anyhow::Context;
use xshell::cmd;

pub const NODE_TARGET: &str = "x86_64-unknown-linux-musl";

#[derive(Clone, Debug)]
pub struct Binaries {
    pub init: PathBuf,
    pub certaintyd: PathBuf,
    pub tyd: PathBuf,
    /// The demonstration job of `qemu-cluster` (never in a shipped image).
    pub primes: PathBuf,
}

pub fn build() -> anyhow::Result<Binaries> {
    let dir = cargo_build("node-target", &["-p", "agent", "-p", "demo"])?;
    Ok(Binaries {
        init: dir.join("init"),
        certaintyd: dir.join("certaintyd"),
        tyd: dir.join("tyd"),
        primes: dir.join("primes"),
    })
}

/// certaintyd with SHA-256 in portable code whatever the CPU offers, for
/// the bench's comparison; never shipped.
pub fn build_soft_sha() -> anyhow::Result<PathBuf> {
    let dir = cargo_build("node-target-soft-sha", &["--features", "soft-sha"])?;
    Ok(dir.join("certaintyd"))
}

/// Builds the init package, with `extra` cargo arguments (more packages,
/// features), for the node into build/<target_dir>; returns the directory
/// the executables are in.
fn cargo_build(target_dir: &str, extra: &[&str]) -> anyhow::Result<PathBuf> {
    let sh = crate::shell()?;
    let target_dir = crate::build_dir().join(target_dir);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    cmd!(sh, "{cargo} build --quiet --release --locked --target {NODE_TARGET} --target-dir {target_dir} -p init {extra...}")
        .run()
        .context("building the node binaries (is the musl target installed? `cargo xtask deps`)")?;
    Ok(target_dir.join(NODE_TARGET).join("release"))
}
