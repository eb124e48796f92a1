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
}

pub fn build() -> anyhow::Result<Binaries> {
    let sh = crate::shell()?;
    let target_dir = crate::build_dir().join("node-target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    cmd!(sh, "{cargo} build --quiet --release --locked --target {NODE_TARGET} --target-dir {target_dir} -p init")
        .run()
        .context("building the node binaries (is the musl target installed? `cargo xtask deps`)")?;
    let dir = target_dir.join(NODE_TARGET).join("release");
    Ok(Binaries {
        init: dir.join("init"),
        certaintyd: dir.join("certaintyd"),
    })
}
