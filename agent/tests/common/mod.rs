// SPDX-License-Identifier: GPL-3.0-or-later
//! The namespace lab for tyd's integration tests: a LAN namespace with a
//! bridge, one namespace per node joined to it by a veth pair, tyd
//! processes inside them, and waits with deadlines. Everything is removed
//! on drop, also when a test fails half-way.

#![allow(dead_code)]

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chaos_agent::control;
use chaos_agent::proto::{NodeStatus, Request, Response, State};
use chaos_agent::segment::Segment;

/// Generous bounds for a loaded 2-core machine: an event later than this is
/// a failure, not slowness.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test makes network namespaces: run it as root (CI does)"
    );
}

pub fn tyd() -> &'static str {
    env!("CARGO_BIN_EXE_tyd")
}

/// A [`Segment`] of node namespaces, the tyd processes in them, and a
/// directory for keys, logs and sockets.
pub struct Lab {
    pub dir: PathBuf,
    segment: Segment,
    processes: Vec<Child>,
}

impl Lab {
    pub fn new(name: &str) -> Lab {
        require_root();
        let tag = format!("tyd{}-{name}", std::process::id());
        let dir = std::env::temp_dir().join(&tag);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Lab {
            segment: Segment::new(&tag).unwrap(),
            dir,
            processes: Vec::new(),
        }
    }

    /// A node namespace with `eth0` at 192.168.77.<host>/24.
    pub fn node(&mut self, host: u8) -> String {
        self.segment.node(host).unwrap()
    }

    /// A cluster identity made by `tyd init`.
    pub fn init(&self, name: &str) -> PathBuf {
        let dir = self.dir.join(name);
        let status = Command::new(tyd())
            .args(["init", "--dir"])
            .arg(&dir)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "tyd init");
        dir
    }

    /// Starts tyd in `ns`; its stderr goes to <dir>/<log>.log. Returns the
    /// index for [`Lab::signal`].
    pub fn spawn(&mut self, ns: &str, log: &str, args: &[&str]) -> usize {
        let file = File::create(self.log_path(log)).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns, tyd()])
            .args(args)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        self.processes.push(child);
        self.processes.len() - 1
    }

    /// Starts `tyd serve` in `ns`, control plane only, as host "head" with
    /// the control socket [`Lab::socket`]`("head")`, plus `extra` options.
    pub fn head(&mut self, ns: &str, log: &str, keys: &Path, extra: &[&str]) -> usize {
        let socket = self.socket("head");
        let mut args = vec![
            "serve",
            "--dir",
            keys.to_str().unwrap(),
            "--control-plane-only",
            "--socket",
            socket.to_str().unwrap(),
            "--hostname",
            "head",
        ];
        args.extend_from_slice(extra);
        self.spawn(ns, log, &args)
    }

    /// Starts `tyd join` in `ns`, control plane only, as host `name`
    /// (also its log and socket name), told the head's address `head`
    /// or, with `None`, listening for its beacon.
    pub fn drone(&mut self, ns: &str, name: &str, keys: &Path, head: Option<&str>) -> usize {
        let state = self.dir.join(format!("{name}.state"));
        let socket = self.socket(name);
        let mut args = vec![
            "join",
            "--dir",
            keys.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
            "--control-plane-only",
            "--socket",
            socket.to_str().unwrap(),
            "--hostname",
            name,
        ];
        if let Some(head) = head {
            args.extend(["-m", head]);
        }
        self.spawn(ns, name, &args)
    }

    /// Waits until log `log` contains `text`.
    pub fn wait_log(&self, log: &str, text: &str) {
        self.wait(
            &format!("{log} to log {text:?}"),
            || self.log(log).contains(text),
            || self.log(log),
        );
    }

    pub fn log_path(&self, log: &str) -> PathBuf {
        self.dir.join(format!("{log}.log"))
    }

    pub fn log(&self, log: &str) -> String {
        std::fs::read_to_string(self.log_path(log)).unwrap_or_default()
    }

    pub fn socket(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.sock"))
    }

    /// Sends `signal` to process `index` and, for a stop signal, reaps it.
    pub fn signal(&mut self, index: usize, signal: nix::sys::signal::Signal) {
        let child = &mut self.processes[index];
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
        let deadline = Instant::now() + DEADLINE;
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "process {index} did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for process `index` to end by itself; its status.
    pub fn exit_status(&mut self, index: usize) -> std::process::ExitStatus {
        let child = &mut self.processes[index];
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "process {index} did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `f` on a thread inside namespace `ns` (sockets it opens stay
    /// in that namespace).
    pub fn inside<T: Send>(&self, ns: &str, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{ns}");
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = File::open(&path).unwrap();
                nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                f()
            })
            .join()
            .unwrap()
        })
    }

    /// Waits for `what` to hold, polling; panics with `describe()` at the
    /// deadline.
    pub fn wait(&self, what: &str, mut check: impl FnMut() -> bool, describe: impl Fn() -> String) {
        let deadline = Instant::now() + DEADLINE;
        while !check() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\n{}\nlogs in {}",
                describe(),
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Lab {
    /// The processes go before their namespaces (the segment's own drop).
    fn drop(&mut self) {
        for child in &mut self.processes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The node list from the tyd behind `socket`, or why not.
pub fn nodes(socket: &Path) -> Result<Vec<NodeStatus>, String> {
    match control::ask(socket, &Request::Nodes) {
        Ok(Response::Nodes(nodes)) => Ok(nodes),
        Ok(other) => Err(format!("{other:?}")),
        Err(e) => Err(format!("{e:#}")),
    }
}

/// Host names in state `state`, sorted.
pub fn hosts_in(socket: &Path, state: State) -> Vec<String> {
    let mut names: Vec<String> = nodes(socket)
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.state == state)
        .map(|n| n.hostname)
        .collect();
    names.sort();
    names
}

pub fn state_of(socket: &Path, hostname: &str) -> Option<State> {
    nodes(socket)
        .ok()?
        .into_iter()
        .find(|n| n.hostname == hostname)
        .map(|n| n.state)
}
