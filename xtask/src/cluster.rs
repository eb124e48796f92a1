//! chaos nodes as one cluster: what makes an image a head or a drone (tyd,
//! the cluster identity made by `tyd init`, tyd's service), and `cargo xtask
//! qemu-cluster`, which boots a head and drones on a private Ethernet
//! segment on loopback and shows them join.
//!
//! Secrets travel only inside images, never on a kernel command line
//! (PXE configs and /proc/cmdline are world-readable), and the head's
//! private key only ever goes into the head's own image.

use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chaos_agent::keys::{self, ClusterIdentity, HeadIdentity};
use chaos_agent::keys::{BEACON_PUB, CLUSTER_KEY, HEAD_ADDRESS, HEAD_KEY, HEAD_PUB};
use chaos_init::service::{Restart, Service};
use mkimage::Spec;

use crate::image::{self, KernelChoice, Written};
use crate::kernel::Kernel;
use crate::node::Binaries;
use crate::vm::{Config, Hub, Vm};

/// Where the image carries tyd.
pub const TYD: &str = "/sbin/tyd";
/// Where tyd looks for the cluster identity (its default `--dir`).
pub const IDENTITY_DIR: &str = "/etc/chaos/tyd";

/// What a node image does in its cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Runs `tyd serve`; carries the head's private key, so it is for the
    /// head's own machine and never for serving to the lab.
    Head,
    /// Runs `tyd join`; carries the head's public keys, the cluster key and
    /// optionally the head's LAN address (`addr[:port]`), which a
    /// `chaos.head=` on the kernel command line overrides. Without either,
    /// the drone finds the head by its signed beacon.
    Drone { head: Option<String> },
}

/// A cluster identity (a directory made by `tyd init`) and the role an
/// image plays in that cluster.
#[derive(Clone, Debug)]
pub struct Membership {
    pub dir: PathBuf,
    pub role: Role,
}

/// Adds the membership's identity files and the service that runs tyd
/// (which every image carries, see [`image::moduleless_spec`]) in its
/// role. An image without a membership starts no tyd: a node has no
/// cluster to join until an identity is baked in.
pub fn add(spec: &mut Spec, membership: &Membership) -> anyhow::Result<()> {
    let Membership { dir, role } = membership;
    let context = || {
        format!(
            "reading the cluster identity in {} (make one with `tyd init --dir {}`)",
            dir.display(),
            dir.display()
        )
    };
    let cluster = ClusterIdentity::load(dir).with_context(context)?;
    let path = |name: &str| format!("{IDENTITY_DIR}/{name}");
    let key_file = |key: &[u8; 32]| format!("{}\n", keys::hex(key));
    spec.dir(IDENTITY_DIR, 0o700)?;
    spec.file(&path(HEAD_PUB), 0o644, key_file(&cluster.head_public))?;
    spec.file(&path(BEACON_PUB), 0o644, key_file(&cluster.beacon_public))?;
    spec.file(&path(CLUSTER_KEY), 0o600, key_file(&cluster.cluster_key))?;
    let mut service = Service::new("tyd", TYD);
    match role {
        Role::Head => {
            let head = HeadIdentity::load(dir).with_context(context)?;
            if head.keypair.public != cluster.head_public {
                bail!(
                    "{}: {HEAD_PUB} is not the public half of {HEAD_KEY}",
                    dir.display()
                );
            }
            if head.beacon_key().verifying_key().to_bytes() != cluster.beacon_public {
                bail!(
                    "{}: {BEACON_PUB} is not the beacon key of {HEAD_KEY}",
                    dir.display()
                );
            }
            spec.file(&path(HEAD_KEY), 0o600, key_file(&head.keypair.private))?;
            service.args = vec!["serve".into()];
        }
        Role::Drone { head } => {
            if let Some(head) = head {
                let head = chaos_agent::drone::parse_head(head).map_err(anyhow::Error::msg)?;
                spec.file(&path(HEAD_ADDRESS), 0o644, format!("{head}\n"))?;
            }
            service.args = vec!["join".into()];
            // tyd join ends by itself only when stopped.
            service.restart = Restart::OnFailure;
        }
    }
    image::add_service(spec, &service)
}

/// The private segment's address plan: the head at 10.77.0.1, drone `i`
/// (counting from 1) at 10.77.0.(i+1).
pub const MAX_DRONES: usize = 253;

/// Node `index`: 0 is the head, 1.. the drones.
pub fn lan_address(index: usize) -> Ipv4Addr {
    assert!(index <= MAX_DRONES, "no address for node {index}");
    Ipv4Addr::new(10, 77, 0, index as u8 + 1)
}

pub fn node_name(index: usize) -> String {
    match index {
        0 => "head".into(),
        i => format!("drone{i}"),
    }
}

/// The static `ip=` of node `index` (address, netmask, host name; no
/// gateway: the segment leads nowhere).
pub fn ip_arg(index: usize) -> String {
    format!(
        "ip={}:::255.255.255.0:{}::off",
        lan_address(index),
        node_name(index)
    )
}

/// Makes a cluster identity in `dir` unless one is there already (one
/// from before beacons gains its beacon.pub); a directory only its owner
/// can read, since it holds the head's key.
pub fn identity(dir: &Path) -> anyhow::Result<()> {
    if !dir.join(HEAD_KEY).exists() || !dir.join(BEACON_PUB).exists() {
        for written in keys::init(dir)
            .with_context(|| format!("creating a cluster identity in {}", dir.display()))?
        {
            println!("cluster: wrote {}", written.display());
        }
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}

/// The two images of a QEMU cluster.
pub struct Images {
    pub head: Written,
    pub drone: Written,
}

/// Builds build/cluster's head and drone images from `dir`'s identity.
/// The drones carry no head address: they find the head by its beacon,
/// as a lab's PCs do.
pub fn images(kernel: &Kernel, binaries: &Binaries, dir: &Path) -> anyhow::Result<Images> {
    let build = |role: Role, name: &str| -> anyhow::Result<Written> {
        let mut spec = image::base_spec(kernel, binaries)?;
        let membership = Membership {
            dir: dir.to_path_buf(),
            role,
        };
        add(&mut spec, &membership)?;
        let written = image::write(&spec, &dir.join(format!("{name}.cpio.gz")))?;
        // The images hold the cluster's keys.
        std::fs::set_permissions(&written.path, std::fs::Permissions::from_mode(0o600))?;
        Ok(written)
    };
    Ok(Images {
        head: build(Role::Head, "head")?,
        drone: build(Role::Drone { head: None }, "drone")?,
    })
}

/// The VM of node `index` on `hub`, booting `image` with its static
/// address and `extra` kernel arguments.
pub fn node_config(
    kernel: &Kernel,
    image: &Written,
    hub: &Hub,
    index: usize,
    extra: &str,
) -> anyhow::Result<Config> {
    let append = format!("{} {} {extra}", ip_arg(index), image.root_digest_arg());
    Config::new(&kernel.vmlinuz, &image.path, append.trim()).hub_net(hub)
}

/// A node of a running QEMU cluster.
struct Node {
    name: String,
    lan: Ipv4Addr,
    vm: Vm,
    log: std::fs::File,
    logged: usize,
}

impl Node {
    /// Appends what the console printed since the last call to the log.
    fn log_console(&mut self, console: &str) -> anyhow::Result<()> {
        self.log.write_all(&console.as_bytes()[self.logged..])?;
        self.logged = console.len();
        Ok(())
    }
}

/// One node as the live table shows it, read from its console.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Row {
    pub state: String,
    pub overlay: String,
    pub peers: Option<usize>,
}

/// What a node's console says about it: the last word of init and tyd
/// on its state, its overlay address, and how many peers its mesh has
/// (for the head: how many drones are members).
pub fn row(console: &str) -> Row {
    let mut row = Row {
        state: "booting".into(),
        overlay: "-".into(),
        peers: None,
    };
    let mut members = std::collections::BTreeSet::new();
    let number_after = |line: &str, before: &str| -> Option<usize> {
        let rest = &line[line.find(before)? + before.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    for line in console.lines() {
        if line.contains("init: ready") {
            row.state = "up".into();
        } else if line.contains("service tyd exited") {
            row.state = "tyd exited".into();
        } else if let Some(at) = line.rfind("tyd: ") {
            // init prefixes each service's lines with its name; tyd's own
            // prefix follows.
            let rest = &line[at + "tyd: ".len()..];
            if rest.contains("serving joins on") {
                row.state = "serving".into();
                row.peers = Some(0);
            } else if rest.contains("; joining head") || rest.starts_with("found head") {
                row.state = "joining".into();
            } else if rest.contains("listening for the head's beacon") {
                row.state = "listening".into();
            } else if rest.starts_with("join failed") {
                row.state = "retrying".into();
            } else if rest.starts_with("session with the head ended") {
                row.state = "rejoining".into();
            } else if rest.starts_with("joined as node") {
                row.state = "joined".into();
                row.peers = number_after(rest, "(");
            } else if rest.starts_with("mesh now has") {
                row.peers = number_after(rest, "has ");
            } else if let Some(address) = rest.strip_prefix("wg0 up with ") {
                row.overlay = address.split('/').next().unwrap_or("-").to_string();
            } else if rest.contains(" joined as node ") {
                members.extend(number_after(rest, "as node "));
                row.peers = Some(members.len());
            } else if let Some(id) = rest
                .strip_prefix("node ")
                .filter(|r| r.ends_with(" left") || r.contains(" expired"))
            {
                members.remove(&number_after(id, "").unwrap_or(0));
                row.peers = Some(members.len());
            }
        }
    }
    row
}

/// Set by SIGINT and SIGTERM: `qemu-cluster` stops its VMs and returns.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// `cargo xtask qemu-cluster`: a head and `drones` drones under QEMU on a
/// private segment on loopback, a live table of their state until Ctrl-C,
/// then every VM stopped.
pub fn run(choice: KernelChoice, drones: usize) -> anyhow::Result<()> {
    if !(1..=MAX_DRONES).contains(&drones) {
        bail!("-n {drones}: expected 1 to {MAX_DRONES} drones");
    }
    let sh = crate::shell()?;
    let dir = crate::build_dir().join("cluster");
    identity(&dir)?;
    println!("qemu-cluster: building the node binaries (static musl)");
    let binaries = crate::node::build()?;
    let kernel = choice.get(&sh)?;
    let images = images(&kernel, &binaries, &dir)?;
    println!(
        "qemu-cluster: images {} and {} (kernel {})",
        images.head.path.display(),
        images.drone.path.display(),
        kernel.release
    );
    // Handlers only set a flag; QEMU gets its own default dispositions
    // back at exec, and the VMs are killed below in any case.
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe { libc::signal(signal, request_stop as *const () as libc::sighandler_t) };
    }
    let hub = Hub::start()?;
    let mut nodes = Vec::new();
    for index in 0..=drones {
        let image = if index == 0 {
            &images.head
        } else {
            &images.drone
        };
        let name = node_name(index);
        let log = dir.join(format!("{name}.log"));
        nodes.push(Node {
            vm: Vm::start(&node_config(&kernel, image, &hub, index, "")?)?,
            name,
            lan: lan_address(index),
            log: std::fs::File::create(&log)
                .with_context(|| format!("creating {}", log.display()))?,
            logged: 0,
        });
    }
    println!(
        "qemu-cluster: booting 1 head and {drones} drones on 10.77.0.0/24 \
         (consoles in {}/*.log); Ctrl-C stops them",
        dir.display()
    );
    let result = watch(&mut nodes, drones);
    let count = nodes.len();
    drop(nodes);
    drop(hub);
    println!("qemu-cluster: stopped {count} VMs");
    result
}

/// Prints the table whenever it changes, until asked to stop.
fn watch(nodes: &mut [Node], drones: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut shown = Vec::new();
    let mut converged = false;
    while !STOP.load(Ordering::Relaxed) {
        let mut rows = Vec::new();
        for node in nodes.iter_mut() {
            let console = node.vm.console();
            node.log_console(&console)?;
            rows.push(row(&console));
        }
        if rows != shown {
            println!("\n{:.1} s", started.elapsed().as_secs_f64());
            print!("{}", table(nodes, &rows));
            if !converged && rows.iter().all(|r| r.peers == Some(drones)) {
                converged = true;
                println!(
                    "qemu-cluster: all {drones} drones joined, full mesh, after {:.1} s",
                    started.elapsed().as_secs_f64()
                );
            }
            shown = rows;
        }
        // A display refresh, not a synchronisation: the consoles are
        // re-read a few times a second.
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(())
}

fn table(nodes: &[Node], rows: &[Row]) -> String {
    let mut out = format!(
        "{:<8} {:<12} {:<12} {:<16} {}\n",
        "NODE", "LAN", "OVERLAY", "STATE", "PEERS"
    );
    for (node, row) in nodes.iter().zip(rows) {
        let peers = row.peers.map_or_else(|| "-".into(), |p| p.to_string());
        out.push_str(&format!(
            "{:<8} {:<12} {:<12} {:<16} {peers}\n",
            node.name,
            node.lan.to_string(),
            row.overlay,
            row.state
        ));
    }
    out
}

/// Join and convergence times of a QEMU cluster, as the host saw them on
/// the consoles (TCG, every VM started at once but the head, which is
/// serving first).
#[derive(Clone, Debug)]
pub struct Convergence {
    pub drones: usize,
    /// Per drone, from tyd's start to its welcome over the overlay.
    pub joins: Vec<Duration>,
    /// Per drone, the join attempt that succeeded as tyd timed it: LAN
    /// handshake, firewall and wg0 up, session moved into the overlay.
    pub tyd_joins: Vec<Duration>,
    /// From the last drone's init starting to the last drone's mesh
    /// holding every other node (DESIGN.md's "converged" budget).
    pub converged: Duration,
}

/// Boots build/cluster's head and `drones` drones and measures how they
/// join and converge; for `cargo xtask bench`.
pub fn measure(choice: KernelChoice, drones: usize) -> anyhow::Result<Convergence> {
    const BOOT: Duration = Duration::from_secs(300);
    const STEP: Duration = Duration::from_secs(60);
    if !(1..=MAX_DRONES).contains(&drones) {
        bail!("{drones} drones: expected 1 to {MAX_DRONES}");
    }
    let dir = crate::build_dir().join("cluster");
    identity(&dir)?;
    let binaries = crate::node::build()?;
    let kernel = choice.get(&crate::shell()?)?;
    let images = images(&kernel, &binaries, &dir)?;
    let hub = Hub::start()?;
    let mut head = Vm::start(&node_config(&kernel, &images.head, &hub, 0, "")?)?;
    head.expect("serving joins on", BOOT)?;
    let mut vms = (1..=drones)
        .map(|i| Vm::start(&node_config(&kernel, &images.drone, &hub, i, "")?))
        .collect::<anyhow::Result<Vec<Vm>>>()?;
    // One thread per drone, so each event is timed as its line arrives.
    let drones_seen = std::thread::scope(|scope| {
        let threads: Vec<_> = vms
            .iter_mut()
            .map(|vm| scope.spawn(move || watch_drone(vm, drones, BOOT, STEP)))
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a timing thread panicked")))
            })
            .collect::<anyhow::Result<Vec<DroneTimes>>>()
    })?;
    drop(vms);
    drop(head);
    let last = |pick: fn(&DroneTimes) -> Instant| {
        drones_seen
            .iter()
            .map(pick)
            .max()
            .expect("at least one drone")
    };
    Ok(Convergence {
        drones,
        joins: drones_seen.iter().map(|d| d.joined - d.tyd).collect(),
        tyd_joins: drones_seen.iter().map(|d| d.tyd_join).collect(),
        converged: last(|d| d.meshed) - last(|d| d.init),
    })
}

/// When a drone's console showed each step of its way into the cluster.
struct DroneTimes {
    init: Instant,
    tyd: Instant,
    joined: Instant,
    meshed: Instant,
    tyd_join: Duration,
}

fn watch_drone(
    vm: &mut Vm,
    drones: usize,
    boot: Duration,
    step: Duration,
) -> anyhow::Result<DroneTimes> {
    vm.expect("Run /init as init process", boot)?;
    let init = Instant::now();
    // tyd's first line, whether it was told the head or listens for it.
    vm.expect(" key fingerprint ", boot)?;
    let tyd = Instant::now();
    // "joined as node 3 with overlay address 10.99.0.3/16 (2 peers) in 626 ms"
    let line = vm.expect_line("joined as node", step)?;
    let joined = Instant::now();
    let peers = line
        .split(" (")
        .nth(1)
        .and_then(|rest| rest.split(' ').next()?.parse::<usize>().ok());
    let tyd_join = chaos_agent::bench::join_time(&line)
        .with_context(|| format!("no join time in {line:?}"))?;
    if peers != Some(drones) {
        vm.expect(&format!("mesh now has {drones} peers"), step)?;
    }
    Ok(DroneTimes {
        init,
        tyd,
        joined,
        meshed: Instant::now(),
        tyd_join,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_plan() {
        assert_eq!(ip_arg(0), "ip=10.77.0.1:::255.255.255.0:head::off");
        assert_eq!(ip_arg(2), "ip=10.77.0.3:::255.255.255.0:drone2::off");
        assert_eq!(lan_address(MAX_DRONES), Ipv4Addr::new(10, 77, 0, 254));
    }

    #[test]
    fn rows_follow_the_console() {
        let drone = "\
            [ 1.0] init: ready: drone1 as pid 1\n\
            [ 1.1] tyd: node drone1 key fingerprint 1234; no head address given: \
            listening for the head's beacon on UDP port 7701\n\
            [ 1.2] tyd: found head 10.77.0.1:7700 by its beacon\n\
            [ 1.2] tyd: join failed, retrying: connecting to 10.77.0.1:7700: refused\n\
            [ 2.0] tyd: wg0 up with 10.99.0.2/16, firewall table inet chaos loaded\n\
            [ 2.1] tyd: tyd: joined as node 2 with overlay address 10.99.0.2/16 (1 peers) in 80 ms\n\
            [ 3.0] tyd: mesh now has 2 peers\n";
        let want = Row {
            state: "joined".into(),
            overlay: "10.99.0.2".into(),
            peers: Some(2),
        };
        assert_eq!(row(drone), want);
        let head = "\
            tyd: head head serving joins on 0.0.0.0:7700 (overlay 10.99.0.0/16)\n\
            tyd: drone1 joined as node 2 with overlay address 10.99.0.2 from 10.77.0.2:4000\n\
            tyd: drone2 joined as node 3 with overlay address 10.99.0.3 from 10.77.0.3:4000\n\
            tyd: node 2 expired (no heartbeat)\n";
        assert_eq!(row(head).peers, Some(1));
        assert_eq!(row(head).state, "serving");
        assert_eq!(row("").state, "booting");
        let listening = "tyd: node d key fingerprint 1; no head address given: \
                         listening for the head's beacon on UDP port 7701\n";
        assert_eq!(row(listening).state, "listening");
        assert_eq!(
            row("init: ready\ninit: service tyd exited with status 1 after 5 ms").state,
            "tyd exited"
        );
    }
}
