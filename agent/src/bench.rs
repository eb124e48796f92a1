// SPDX-License-Identifier: GPL-3.0-or-later
//! Bench entry points for `cargo xtask bench`. The head's control plane at
//! scale: a real `tyd serve --control-plane-only` process on loopback, and
//! simulated drones running the real drone code (threads of this process,
//! control-plane-only, each with its own key). And a small cluster of tyd
//! processes in network namespaces, as the namespace tests run it.
//! Measures, never asserts.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::control;
use crate::dataplane::ControlPlaneOnly;
use crate::drone::{Drone, DroneConfig};
use crate::keys::{ClusterIdentity, Keypair};
use crate::proto::{Request, Response, State};
use crate::segment::{Segment, NETWORK};

/// Figures of one run.
#[derive(Debug, Clone)]
pub struct ScaleReport {
    pub nodes: usize,
    /// One drone alone, from its start to the head listing it up.
    pub first_join: Duration,
    /// The other drones started at once, until the head lists all up.
    pub all_joined: Duration,
    /// The head's resident memory with every drone joined, and its peak.
    pub head_rss_kib: u64,
    pub head_peak_rss_kib: u64,
}

/// How long the whole run may take before it counts as failed.
const GIVE_UP: Duration = Duration::from_secs(120);

fn up_count(socket: &Path) -> usize {
    match control::ask(socket, &Request::Nodes) {
        Ok(Response::Nodes(nodes)) => nodes.iter().filter(|n| n.state == State::Up).count(),
        _ => 0,
    }
}

fn wait_for(socket: &Path, count: usize, give_up: Instant) -> anyhow::Result<()> {
    while up_count(socket) < count {
        if Instant::now() > give_up {
            bail!("only {} of {count} nodes up", up_count(socket));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            line.strip_prefix(field)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Runs `nodes` simulated drones against the `tyd` binary at `tyd` as head.
pub fn control_plane_scale(tyd: &Path, nodes: usize) -> anyhow::Result<ScaleReport> {
    let dir = std::env::temp_dir().join(format!("tyd-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let keys = dir.join("keys");
    crate::keys::init(&keys)?;
    let cluster = ClusterIdentity::load(&keys)?;
    let socket = dir.join("head.sock");
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port();
    let head_address = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    let mut head = Command::new(tyd)
        // On loopback, and never beaconing onto the host's LANs.
        .args(["serve", "--control-plane-only", "--no-beacon"])
        .args(["--hostname", "bench-head"])
        .arg("--dir")
        .arg(&keys)
        .arg("--socket")
        .arg(&socket)
        .arg("--listen")
        .arg(head_address.to_string())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", tyd.display()))?;
    let give_up = Instant::now() + GIVE_UP;
    let result = (|| {
        wait_for(&socket, 1, give_up).context("the head never answered")?;
        crate::log::silence();
        let (stop, stop_writer) = nix::unistd::pipe()?;
        let start_drone = |i: usize| {
            let config = DroneConfig {
                head: Some(head_address),
                cluster: cluster.clone(),
                node_key: Keypair::generate().expect("a key"),
                hostname: format!("sim{i}"),
                wireguard_port: 0,
                session_over_overlay: false,
            };
            let stop = stop.try_clone().expect("a descriptor");
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let mut dataplane = ControlPlaneOnly;
                    let mut drone = Drone::new(config, &mut dataplane, None)?;
                    drone.run(Some(stop.as_fd()))
                })
                .expect("a thread")
        };
        let started = Instant::now();
        let mut threads = vec![start_drone(0)];
        wait_for(&socket, 2, give_up)?;
        let first_join = started.elapsed();
        let started = Instant::now();
        threads.extend((1..nodes).map(start_drone));
        wait_for(&socket, nodes + 1, give_up)?;
        let all_joined = started.elapsed();
        let report = ScaleReport {
            nodes,
            first_join,
            all_joined,
            head_rss_kib: status_kib(head.id(), "VmRSS:"),
            head_peak_rss_kib: status_kib(head.id(), "VmHWM:"),
        };
        // Closing the pipe's write end makes every drone leave.
        drop(stop_writer);
        for thread in threads {
            let _ = thread.join();
        }
        Ok(report)
    })();
    let _ = head.kill();
    let _ = head.wait();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Figures of a cluster of tyd processes in network namespaces.
#[derive(Debug, Clone)]
pub struct NamespaceReport {
    pub nodes: usize,
    /// Per drone, its successful join as tyd timed it: handshake to welcome.
    pub joins: Vec<Duration>,
    /// From starting every drone at once until each one's own `tyd nodes`
    /// lists every node up.
    pub converged: Duration,
}

/// Processes killed when dropped, also on an early return.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs a head and `drones` drones of the `tyd` binary at `tyd`, each in
/// its own network namespace on a private segment, control plane only (the
/// host's kernel may lack WireGuard). Needs root.
pub fn namespace_cluster(tyd: &Path, drones: usize) -> anyhow::Result<NamespaceReport> {
    let tag = format!("tydbench{}", std::process::id());
    let dir = std::env::temp_dir().join(&tag);
    let _ = std::fs::remove_dir_all(&dir);
    let keys = dir.join("keys");
    crate::keys::init(&keys)?;
    let result = run_namespace_cluster(tyd, drones, &tag, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_namespace_cluster(
    tyd: &Path,
    drones: usize,
    tag: &str,
    dir: &Path,
) -> anyhow::Result<NamespaceReport> {
    let mut segment = Segment::new(tag).context("making network namespaces (as root?)")?;
    // Declared after the segment, so dropped before it.
    let mut processes = Processes(Vec::new());
    let path = |name: &str, ext: &str| dir.join(format!("{name}.{ext}"));
    let mut spawn = |host: u8, name: &str, args: &[&str]| -> anyhow::Result<()> {
        let ns = segment.node(host)?;
        let child = Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(tyd)
            .args(args)
            .arg("--dir")
            .arg(dir.join("keys"))
            .arg("--socket")
            .arg(path(name, "sock"))
            .args(["--control-plane-only", "--hostname", name])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(path(name, "log"))?)
            .spawn()
            .with_context(|| format!("starting {}", tyd.display()))?;
        processes.0.push(child);
        Ok(())
    };
    let give_up = Instant::now() + GIVE_UP;
    spawn(1, "head", &["serve", "--no-beacon"])?;
    wait_for(&path("head", "sock"), 1, give_up).context("the head never answered")?;
    let [a, b, c] = NETWORK;
    let head = format!("{a}.{b}.{c}.1");
    let names: Vec<String> = (1..=drones).map(|i| format!("drone{i}")).collect();
    let started = Instant::now();
    for (i, name) in names.iter().enumerate() {
        let state = path(name, "state");
        let state = state.to_str().context("a temporary path that is UTF-8")?;
        spawn(10 + i as u8, name, &["join", "-m", &head, "--state", state])?;
    }
    for name in &names {
        wait_for(&path(name, "sock"), drones + 1, give_up)
            .with_context(|| format!("{name} never saw the whole cluster up"))?;
    }
    let converged = started.elapsed();
    let joins = names
        .iter()
        .map(|name| {
            let log = std::fs::read_to_string(path(name, "log")).unwrap_or_default();
            join_time(&log).with_context(|| format!("no join time in {name}'s log: {log}"))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(NamespaceReport {
        nodes: drones + 1,
        joins,
        converged,
    })
}

/// The time tyd gives for its join: "joined as node 2 with overlay address
/// 10.99.0.2/16 (1 peers) in 9 ms".
pub fn join_time(log: &str) -> Option<Duration> {
    let line = log.lines().find(|l| l.contains("joined as node"))?;
    let ms = line.rsplit(" in ").next()?.trim_end().strip_suffix(" ms")?;
    ms.parse().ok().map(Duration::from_millis)
}
