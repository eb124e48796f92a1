//! Runs the workspace's tests and closes with one summary line over every
//! test binary, so a reader (or CI) sees the total without adding up
//! cargo's per-binary results.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
    /// The tests that failed, as cargo names them, so the last lines of a
    /// long run say which they were.
    pub failures: Vec<String>,
}

impl Totals {
    /// Adds one of cargo's `test result: ok. 3 passed; 0 failed; 1 ignored; ...`
    /// lines; other lines are not results and change nothing.
    pub fn add_line(&mut self, line: &str) {
        if let Some(name) = line
            .strip_prefix("test ")
            .and_then(|rest| rest.strip_suffix(" ... FAILED"))
        {
            self.failures.push(name.to_string());
            return;
        }
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(count)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            match what {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                "ignored" => self.ignored += count,
                _ => {}
            }
        }
    }
}

/// The QEMU test files that hold for any kernel; `run_all` runs them a
/// second time on the compact custom kernel. The others are about the
/// distribution kernel's modules.
pub const ANY_KERNEL_TESTS: &[&str] = &["boot", "certainty", "cluster", "dhcp", "image"];

/// Every test on the distribution kernel, then [`ANY_KERNEL_TESTS`] on the
/// custom one (built first, or taken from its cache), with one summary.
pub fn run_all(sh: &xshell::Shell) -> anyhow::Result<()> {
    let mut totals = Totals::default();
    println!("test: every test, QEMU boots on the distribution kernel");
    let mut failed = cargo_test(&["--workspace", "--all-targets"], None, &mut totals)?;
    println!("test: the compact custom kernel (a first build takes minutes; then cached)");
    crate::custom_kernel::build(sh, None)?;
    let mut args = vec!["--package", "chaos-tests"];
    for test in ANY_KERNEL_TESTS {
        args.extend(["--test", test]);
    }
    println!("test: the QEMU suite again on the custom kernel");
    failed |= cargo_test(&args, Some("custom"), &mut totals)?;
    let skipped = if totals.ignored > 0 {
        format!(", {} skipped", totals.ignored)
    } else {
        String::new()
    };
    println!(
        "tests: {} passed, {} failed{skipped}",
        totals.passed, totals.failed
    );
    for name in &totals.failures {
        println!("tests: failed: {name}");
    }
    if failed || totals.failed > 0 {
        bail!("cargo test failed");
    }
    if totals.passed == 0 {
        bail!("cargo test ran no test");
    }
    Ok(())
}

/// One `cargo test` with its output passed through as it comes and its
/// results added to `totals`; true if it failed.
fn cargo_test(args: &[&str], kernel: Option<&str>, totals: &mut Totals) -> anyhow::Result<bool> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut command = Command::new(cargo);
    command
        .arg("test")
        .args(args)
        // Every test binary runs even after one fails, so a run reports
        // everything that is broken and the totals cover the whole suite.
        .args(["--locked", "--no-fail-fast"])
        .current_dir(crate::root())
        .stdout(Stdio::piped());
    if let Some(kernel) = kernel {
        command.env("CHAOS_TEST_KERNEL", kernel);
    }
    let first_failure = totals.failures.len();
    let mut child = command.spawn().context("starting cargo test")?;
    let stdout = child.stdout.take().context("cargo test's stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        totals.add_line(&line);
    }
    if let Some(kernel) = kernel {
        for name in &mut totals.failures[first_failure..] {
            name.push_str(&format!(" (on the {kernel} kernel)"));
        }
    }
    Ok(!child.wait()?.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_up_result_lines_only() {
        let mut totals = Totals::default();
        for line in [
            "test result: ok. 55 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.08s",
            "running 3 tests",
            "test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1s",
            "test result: garbage",
            "test cluster::drones_mesh ... FAILED",
            "test cluster::drones_mesh ... ok",
        ] {
            totals.add_line(line);
        }
        assert_eq!(
            totals,
            Totals {
                passed: 58,
                failed: 1,
                ignored: 2,
                failures: vec!["cluster::drones_mesh".to_string()],
            }
        );
    }
}
