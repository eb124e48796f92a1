// SPDX-License-Identifier: GPL-3.0-or-later
//! Bench entry points for `cargo xtask bench`. The head's control plane at
//! scale: a real `tyd serve --control-plane-only` process on loopback, and
//! simulated drones running the real drone code (threads of this process,
//! control-plane-only, each with its own key, counting the peers their
//! mesh holds). A small cluster of tyd
//! processes in network namespaces, as the namespace tests run it, and a
//! drone finding its head under a flood of forged beacons
//! ([`crate::flood`], which the discovery test sends too). Measures, never
//! asserts.

use chaos_contract::cmdline::Head;
use chaos_contract::fact::{self, Fact};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::beacon::BEACON_PORT;
use crate::control;
use crate::dataplane::{Dataplane, DataplaneError, Interface};
use crate::drone::{Drone, DroneConfig, JoinError};
use crate::flood::{beacon_flood, enter_namespace, FLOOD_RATE};
use crate::keys::{ClusterIdentity, KeyError, Keypair};
use crate::proto::{Peer, Request, Response, State};
use crate::segment::{Segment, SegmentError, NETWORK};

/// Why a measurement could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("the cluster identity: {0}")]
    Keys(#[from] KeyError),
    #[error("a simulated drone: {0}")]
    Join(#[from] JoinError),
    #[error("making network namespaces (as root?): {0}")]
    Segment(#[from] SegmentError),
    #[error("{nodes} simulated drones need {need} open files; the hard limit is {limit}")]
    DescriptorLimit { nodes: usize, need: u64, limit: u64 },
    // `what` last: it may end in a log.
    #[error("only {up} of {count} nodes up after {} s: {what}", GIVE_UP.as_secs())]
    NotUp {
        what: String,
        up: usize,
        count: usize,
    },
    #[error("the drones' meshes hold {held} of {full} peers after {} s", GIVE_UP.as_secs())]
    NotMeshed { held: usize, full: usize },
    #[error("no join time in {name}'s log: {log}")]
    NoJoinTime { name: String, log: String },
    #[error("/proc/{0}/stat has no utime and stime")]
    ProcStat(u32),
}

/// Names what was being done when an I/O error came.
fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Io { what, source }
}

/// Figures of one run.
#[derive(Debug, Clone)]
pub struct ScaleReport {
    pub nodes: usize,
    /// One drone alone, from its start to the head listing it up.
    pub first_join: Duration,
    /// The other drones started at once, until the head lists all up.
    pub all_joined: Duration,
    /// From the same start until every drone's mesh holds every other
    /// member: what a lab's morning costs beyond the joins.
    pub full_mesh: Duration,
    /// The head's resident memory with every mesh full, and its peak.
    pub head_rss_kib: u64,
    pub head_peak_rss_kib: u64,
    /// The processor time the head used until every mesh was full (the
    /// simulated drones share the machine's cores with it).
    pub head_cpu: Duration,
}

/// How long the whole run may take before it counts as failed.
const GIVE_UP: Duration = Duration::from_secs(180);

/// The cluster sizes of the growth curve: from a lab to DESIGN.md's 5,000.
pub const CURVE: [usize; 4] = [500, 1000, 2000, 5000];

fn up_count(socket: &Path) -> usize {
    match control::ask(socket, &Request::Nodes) {
        Ok(Response::Nodes(nodes)) => nodes.iter().filter(|n| n.state == State::Up).count(),
        _ => 0,
    }
}

/// Waits until `count` nodes are up. Each look costs the head a table of
/// every node, so the looks are spaced at a hundredth of the wait so far
/// (10 ms to 1 s): precise to about 1%, and never the head's main work.
/// `what` says what did not happen if they are not up by `give_up`; it is
/// asked only then, so it may read a log.
fn wait_for(
    socket: &Path,
    count: usize,
    give_up: Instant,
    what: impl FnOnce() -> String,
) -> Result<(), BenchError> {
    if wait_until(|| up_count(socket) >= count, give_up) {
        return Ok(());
    }
    Err(BenchError::NotUp {
        what: what(),
        up: up_count(socket),
        count,
    })
}

/// Looks whether `done` at that spacing until `give_up`; whether it was.
fn wait_until(mut done: impl FnMut() -> bool, give_up: Instant) -> bool {
    let started = Instant::now();
    while !done() {
        if Instant::now() > give_up {
            return false;
        }
        let spacing = started.elapsed() / 100;
        std::thread::sleep(spacing.clamp(Duration::from_millis(10), Duration::from_secs(1)));
    }
    true
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

/// A simulated drone's dataplane: control plane only, as the bench runs
/// without root, but counting the peers the drone's mesh gives it (one bit
/// per node id) into a total shared by all drones, so the bench can tell
/// when every mesh is full.
struct CountingPeers {
    ids: Vec<u64>,
    total: Arc<AtomicUsize>,
}

impl CountingPeers {
    /// Marks `id` as a peer or not; whether that changed anything.
    fn mark(&mut self, id: u32, peer: bool) -> bool {
        let (word, bit) = (id as usize / 64, 1u64 << (id % 64));
        if word >= self.ids.len() {
            self.ids.resize(word + 1, 0);
        }
        let was = self.ids[word] & bit != 0;
        if peer {
            self.ids[word] |= bit;
        } else {
            self.ids[word] &= !bit;
        }
        was != peer
    }

    fn count(&mut self, peers: &[Peer], peer: bool) {
        let changed = peers.iter().filter(|p| self.mark(p.id, peer)).count();
        if peer {
            self.total.fetch_add(changed, Ordering::Relaxed);
        } else {
            self.total.fetch_sub(changed, Ordering::Relaxed);
        }
    }
}

impl Dataplane for CountingPeers {
    fn guard(&mut self, _: u16) -> Result<(), DataplaneError> {
        Ok(())
    }

    fn configure(&mut self, _: &Interface) -> Result<(), DataplaneError> {
        Ok(())
    }

    fn replace_peers(&mut self, peers: &[Peer]) -> Result<(), DataplaneError> {
        let held = self.ids.iter().map(|w| w.count_ones() as usize).sum();
        self.ids.clear();
        self.total.fetch_sub(held, Ordering::Relaxed);
        self.count(peers, true);
        Ok(())
    }

    fn update_peers(&mut self, changed: &[Peer], gone: &[Peer]) -> Result<(), DataplaneError> {
        self.count(gone, false);
        self.count(changed, true);
        Ok(())
    }

    fn teardown(&mut self) {}
}

/// Simulated drone `i`'s own address on loopback (127.0.0.2 on), as each
/// PC of a lab has its own: the head's limits per source address are for
/// one misbehaving host, not for a whole lab behind one address.
fn simulated_address(i: usize) -> Ipv4Addr {
    let [_, b, c, d] = (0x7f00_0002 + i as u32).to_be_bytes();
    Ipv4Addr::new(127, b, c, d)
}

/// Runs `nodes` simulated drones against the `tyd` binary at `tyd` as head.
pub fn control_plane_scale(tyd: &Path, nodes: usize) -> Result<ScaleReport, BenchError> {
    // Two descriptors per simulated drone: its connection and its stop pipe.
    let limit =
        crate::tcp::raise_descriptor_limit().map_err(io_error("raising the open-file limit"))?;
    let need = 2 * nodes as u64 + 64;
    if limit < need {
        return Err(BenchError::DescriptorLimit { nodes, need, limit });
    }
    let dir = std::env::temp_dir().join(format!("tyd-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let keys = dir.join("keys");
    crate::keys::init(&keys)?;
    let cluster = ClusterIdentity::load(&keys)?;
    let socket = dir.join("head.sock");
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map_err(io_error("a free port on loopback"))?
        .port();
    let head_address = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    let mut head = Command::new(tyd)
        // On loopback, and never beaconing onto the host's LANs.
        .args(["serve", "--control-plane-only", "--no-beacon"])
        .args(["--hostname", "bench-head"])
        // The simulated drones share this machine's cores, and one starved
        // for the default 10 s would expire and join again: that measures
        // the simulation, not the head.
        .args(["--expire-after", "60s"])
        .arg("--dir")
        .arg(&keys)
        .arg("--socket")
        .arg(&socket)
        .arg("--listen")
        .arg(head_address.to_string())
        .stderr(Stdio::null())
        .spawn()
        .map_err(io_error(format!("starting {}", tyd.display())))?;
    let give_up = Instant::now() + GIVE_UP;
    let result = (|| {
        wait_for(&socket, 1, give_up, || "the head never answered".into())?;
        crate::log::silence();
        let (stop, stop_writer) =
            nix::unistd::pipe().map_err(|e| io_error("the drones' stop pipe")(e.into()))?;
        // Every drone's peers: each has the head and the other drones.
        let peers = Arc::new(AtomicUsize::new(0));
        let start_drone = |i: usize| {
            let config = DroneConfig {
                head: Some(Head::at(head_address)),
                manage_node: false,
                cluster: cluster.clone(),
                node_key: Keypair::generate().expect("a key"),
                hostname: format!("sim{i}"),
                wireguard_port: 0,
                session_over_overlay: false,
                source: Some(simulated_address(i)),
            };
            let stop = stop.try_clone().expect("a descriptor");
            let total = Arc::clone(&peers);
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let mut dataplane = CountingPeers {
                        ids: Vec::new(),
                        total,
                    };
                    let mut drone = Drone::new(config, &mut dataplane, None)?;
                    drone.run(Some(stop.as_fd()))
                })
                .expect("a thread")
        };
        let started = Instant::now();
        let mut threads = vec![start_drone(0)];
        wait_for(&socket, 2, give_up, || {
            "the first drone did not join".into()
        })?;
        let first_join = started.elapsed();
        let started = Instant::now();
        threads.extend((1..nodes).map(start_drone));
        wait_for(&socket, nodes + 1, give_up, || {
            "the drones did not all join".into()
        })?;
        let all_joined = started.elapsed();
        let full = nodes * nodes;
        if !wait_until(|| peers.load(Ordering::Relaxed) >= full, give_up) {
            return Err(BenchError::NotMeshed {
                held: peers.load(Ordering::Relaxed),
                full,
            });
        }
        let full_mesh = started.elapsed();
        let report = ScaleReport {
            nodes,
            first_join,
            all_joined,
            full_mesh,
            head_rss_kib: status_kib(head.id(), "VmRSS:"),
            head_peak_rss_kib: status_kib(head.id(), "VmHWM:"),
            head_cpu: cpu_time(head.id())?,
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

/// tyd processes in the namespaces of a [`Segment`], control plane only
/// (the host's kernel may lack WireGuard), each with its socket and log in
/// a directory that holds the cluster identity in keys/. Needs root.
struct Namespaces {
    tyd: PathBuf,
    dir: PathBuf,
    // Declared before the segment, so the processes go first.
    processes: Processes,
    segment: Segment,
}

impl Namespaces {
    fn new(tyd: &Path, tag: &str, dir: &Path) -> Result<Self, BenchError> {
        Ok(Self {
            tyd: tyd.to_path_buf(),
            dir: dir.to_path_buf(),
            processes: Processes(Vec::new()),
            segment: Segment::new(tag)?,
        })
    }

    fn path(&self, name: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{name}.{ext}"))
    }

    /// `tyd ARGS` as host `name` in a new namespace at 192.168.77.`host`;
    /// its process id.
    fn spawn(&mut self, host: u8, name: &str, args: &[&str]) -> Result<u32, BenchError> {
        let ns = self.segment.node(host)?;
        let log = self.path(name, "log");
        let log =
            std::fs::File::create(&log).map_err(io_error(format!("creating {}", log.display())))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(&self.tyd)
            .args(args)
            .arg("--dir")
            .arg(self.dir.join("keys"))
            .arg("--socket")
            .arg(self.path(name, "sock"))
            .args(["--control-plane-only", "--hostname", name])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(io_error(format!("starting {}", self.tyd.display())))?;
        // `ip netns exec` execs tyd: the pid is tyd's.
        let pid = child.id();
        self.processes.0.push(child);
        Ok(pid)
    }

    /// `tyd join` as `name`, told `head` or listening for its beacon.
    fn drone(&mut self, host: u8, name: &str, head: Option<&str>) -> Result<u32, BenchError> {
        let state = self.path(name, "state").display().to_string();
        let mut args = vec!["join", "--state", &state];
        args.extend(head.iter().flat_map(|head| ["-m", head]));
        self.spawn(host, name, &args)
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name, "log")).unwrap_or_default()
    }
}

/// A fresh directory with a cluster identity in keys/, removed after `run`.
fn with_identity<T>(
    tag: &str,
    run: impl FnOnce(&Path) -> Result<T, BenchError>,
) -> Result<T, BenchError> {
    let dir = std::env::temp_dir().join(tag);
    let _ = std::fs::remove_dir_all(&dir);
    crate::keys::init(&dir.join("keys"))?;
    let result = run(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Runs a head and `drones` drones of the `tyd` binary at `tyd`, each in
/// its own network namespace on a private segment, control plane only (the
/// host's kernel may lack WireGuard). Needs root.
pub fn namespace_cluster(tyd: &Path, drones: usize) -> Result<NamespaceReport, BenchError> {
    let tag = format!("tydbench{}", std::process::id());
    with_identity(&tag, |dir| {
        let mut cluster = Namespaces::new(tyd, &tag, dir)?;
        let give_up = Instant::now() + GIVE_UP;
        cluster.spawn(1, "head", &["serve", "--no-beacon"])?;
        wait_for(&cluster.path("head", "sock"), 1, give_up, || {
            "the head never answered".into()
        })?;
        let [a, b, c] = NETWORK;
        let head = format!("{a}.{b}.{c}.1");
        let names: Vec<String> = (1..=drones).map(|i| format!("drone{i}")).collect();
        let started = Instant::now();
        for (i, name) in names.iter().enumerate() {
            cluster.drone(10 + i as u8, name, Some(&head))?;
        }
        for name in &names {
            wait_for(&cluster.path(name, "sock"), drones + 1, give_up, || {
                format!("{name} never saw the whole cluster up")
            })?;
        }
        let converged = started.elapsed();
        let joins = names
            .iter()
            .map(|name| {
                let log = cluster.log(name);
                join_time(&log).ok_or_else(|| BenchError::NoJoinTime {
                    name: name.clone(),
                    log,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(NamespaceReport {
            nodes: drones + 1,
            joins,
            converged,
        })
    })
}

/// Figures of a drone finding its head under a beacon flood.
#[derive(Debug, Clone)]
pub struct FloodReport {
    /// Forged beacons sent a second, on average.
    pub sent_per_second: f64,
    /// From starting the head to the drone listing the cluster up.
    pub joined_after: Duration,
    /// The joined drone's CPU as a share of one core, during the flood and
    /// after it.
    pub drone_cpu_flooded: f64,
    pub drone_cpu_quiet: f64,
}

/// How long the drone's CPU is measured, with and without the flood.
const CPU_WINDOW: Duration = Duration::from_secs(5);

/// A process's CPU time so far (user and system), from /proc.
fn cpu_time(pid: u32) -> Result<Duration, BenchError> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(io_error(path))?;
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = fields
        .get(11..13)
        .ok_or(BenchError::ProcStat(pid))?
        .iter()
        .map(|t| t.parse::<u64>().unwrap_or(0))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(Duration::from_secs_f64(ticks as f64 / per_second))
}

/// The share of a core `pid` uses over [`CPU_WINDOW`].
fn cpu_share(pid: u32) -> Result<f64, BenchError> {
    let before = cpu_time(pid)?;
    std::thread::sleep(CPU_WINDOW);
    Ok((cpu_time(pid)? - before).as_secs_f64() / CPU_WINDOW.as_secs_f64())
}

/// A drone given no head address, [`FLOOD_RATE`] forged beacons a second
/// from an attacker beside it, and the head starting once the flood runs:
/// how long the drone takes to join and what the flood costs it. Needs
/// root.
pub fn beacon_flood_cost(tyd: &Path) -> Result<FloodReport, BenchError> {
    let tag = format!("tydflood{}", std::process::id());
    with_identity(&tag, |dir| {
        let cluster_keys = ClusterIdentity::load(&dir.join("keys"))?;
        let mut cluster = Namespaces::new(tyd, &tag, dir)?;
        let drone = cluster.drone(10, "drone", None)?;
        let attacker = cluster.segment.node(66)?;
        let [a, b, c] = NETWORK;
        let lure = SocketAddrV4::new(Ipv4Addr::new(a, b, c, 66), 7700);
        let to = SocketAddrV4::new(Ipv4Addr::new(a, b, c, 255), BEACON_PORT);
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let flood = s.spawn(|| {
                enter_namespace(&attacker).map_err(io_error("the attacker"))?;
                let started = Instant::now();
                let sent = beacon_flood(cluster_keys.head_public, lure, to, FLOOD_RATE, &stop)
                    .map_err(io_error("the flood"))?;
                Ok::<_, BenchError>(sent as f64 / started.elapsed().as_secs_f64())
            });
            let measured = (|| {
                let started = Instant::now();
                cluster.spawn(1, "head", &["serve"])?;
                wait_for(&cluster.path("drone", "sock"), 2, started + GIVE_UP, || {
                    format!("the drone never joined; its log:\n{}", cluster.log("drone"))
                })?;
                let joined_after = started.elapsed();
                let drone_cpu_flooded = cpu_share(drone)?;
                Ok::<_, BenchError>((joined_after, drone_cpu_flooded))
            })();
            stop.store(true, Ordering::Relaxed);
            let sent_per_second = flood.join().expect("the flood thread panicked")?;
            let (joined_after, drone_cpu_flooded) = measured?;
            Ok(FloodReport {
                sent_per_second,
                joined_after,
                drone_cpu_flooded,
                drone_cpu_quiet: cpu_share(drone)?,
            })
        })
    })
}

/// The time tyd gives for its join, in its `node state=joined` fact.
fn join_time(log: &str) -> Option<Duration> {
    let joined = Fact::all(log).find(|f| f.matches(fact::NODE, &[("state", "joined")]))?;
    joined.get("ms")?.parse().ok().map(Duration::from_millis)
}
