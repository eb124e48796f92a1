// SPDX-License-Identifier: GPL-3.0-or-later
//! Bench entry point for `cargo xtask bench`: the head's control plane at
//! scale. A real `tyd serve --control-plane-only` process on loopback, and
//! simulated drones running the real drone code (threads of this process,
//! control-plane-only, each with its own key). Measures, never asserts.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::control;
use crate::dataplane::ControlPlaneOnly;
use crate::drone::{Drone, DroneConfig};
use crate::keys::{ClusterIdentity, Keypair};
use crate::proto::{Request, Response, State};

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
