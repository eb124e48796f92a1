//! Network namespaces that a test or a bench makes and removes, and a
//! child's output read line by line, so a caller waits for an event
//! rather than for time: shared by netboot's tests, the PXE and lab QEMU
//! tests and `cargo xtask bench`.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// A child's stdout and stderr, line by line as they come, so that a
/// caller waits for an event rather than for time.
pub struct Output {
    lines: mpsc::Receiver<String>,
    /// The lines so far.
    pub seen: Vec<String>,
}

/// `child`'s piped stdout and stderr (those it has), each as a reader.
pub fn streams(child: &mut Child) -> Vec<Box<dyn Read + Send>> {
    let stdout = child
        .stdout
        .take()
        .map(|s| Box::new(s) as Box<dyn Read + Send>);
    let stderr = child
        .stderr
        .take()
        .map(|s| Box::new(s) as Box<dyn Read + Send>);
    stdout.into_iter().chain(stderr).collect()
}

impl Output {
    /// Reads `child`'s piped stdout and stderr.
    pub fn of(child: &mut Child) -> Output {
        let (tx, lines) = mpsc::channel();
        for stream in streams(child) {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        Output {
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing every one of `needles`.
    pub fn expect(&mut self, needles: &[&str], timeout: Duration) -> anyhow::Result<String> {
        self.expect_where(
            |l| needles.iter().all(|n| l.contains(n)),
            &format!("with {needles:?}"),
            timeout,
        )
    }

    /// Waits for a line that `wanted` accepts; `what` describes it.
    pub fn expect_where(
        &mut self,
        wanted: impl Fn(&str) -> bool,
        what: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.seen.iter().find(|l| wanted(l)) {
                return Ok(line.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => bail!(
                    "no line {what} in {} s; output:\n{}",
                    timeout.as_secs(),
                    self.seen.join("\n")
                ),
            }
        }
    }
}

/// Network namespaces made for one run, `ID-PID-ROLE` for each role, and
/// removed when dropped with every interface in them.
pub struct Namespaces {
    names: Vec<(String, String)>,
}

impl Namespaces {
    pub fn new(id: &str, roles: &[&str]) -> anyhow::Result<Namespaces> {
        let pid = std::process::id();
        let mut namespaces = Namespaces { names: Vec::new() };
        for role in roles {
            let ns = format!("{id}-{pid}-{role}");
            // A namespace left by an earlier run of this pid; usually none.
            let _ = Command::new("ip")
                .args(["netns", "del", &ns])
                .stderr(Stdio::null())
                .status();
            ip(&["netns", "add", &ns])?;
            namespaces.names.push((role.to_string(), ns));
        }
        Ok(namespaces)
    }

    /// The name of `role`'s namespace (a role given to [`Namespaces::new`]).
    pub fn get(&self, role: &str) -> &str {
        self.names
            .iter()
            .find(|(r, _)| r == role)
            .map(|(_, ns)| ns.as_str())
            .unwrap_or_else(|| panic!("no namespace for {role:?}"))
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for (_, ns) in &self.names {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `ip ARGS` (iproute2), with its complaint in the error.
pub fn ip(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("running ip {}", args.join(" ")))?;
    if !output.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
