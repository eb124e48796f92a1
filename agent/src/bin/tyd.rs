// SPDX-License-Identifier: GPL-3.0-or-later
//! tyd, the chaos cluster agent: the command line. Every verb is a thin
//! layer over the chaos_agent library.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use argh::FromArgs;
use chaos_agent::beacon::{self, BEACON_PORT};
use chaos_agent::control;
use chaos_agent::dataplane::{ControlPlaneOnly, Dataplane};
use chaos_agent::drone::{self, Drone, DroneConfig};
use chaos_agent::head::{Head, HeadConfig};
use chaos_agent::kernel::{Kernel, Role};
use chaos_agent::keys::{self, ClusterIdentity, HeadIdentity};
use chaos_agent::membership::{Config, Overlay, Policy};
use chaos_agent::nftables::Scope as Firewall;
use chaos_agent::proto::{Request, Response, JOIN_PORT, MAX_NODES, WIREGUARD_PORT};
use chaos_agent::screen::console;
use chaos_agent::slurm::Settings;
use chaos_agent::workload::{Cluster, Setup, Start};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

#[derive(FromArgs)]
/// tyd, the chaos cluster agent: cluster identity, join, membership,
/// WireGuard mesh, firewall and status.
///
/// Ports: the head accepts joins on TCP 7700 (on the LAN; members also use
/// it over the overlay) and broadcasts a signed beacon to UDP 7701 every
/// second, for drones that are given no head address; every node runs
/// WireGuard on UDP 51820.
/// Seed forms, as the CHAOS HowTo types them: `tyd -f init` is `tyd init`
/// (on a drone: prepare this node's key and firewall), `tyd` alone is `tyd
/// serve`, `tyd -m <ip>` is `tyd join -m <ip>` (handed to the node's
/// running tyd, if there is one).
struct Tyd {
    #[argh(subcommand)]
    verb: Verb,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Verb {
    Init(Init),
    Serve(Serve),
    Join(Join),
    Nodes(Nodes),
    Top(Top),
    Remove(Remove),
    Enroll(Enroll),
    Approve(Approve),
    Screen(Screen),
}

#[derive(FromArgs)]
#[argh(subcommand, name = "init")]
/// create a cluster identity: the head's key pair and the cluster key
/// (head.key and cluster.key 0600; head.pub and beacon.pub, the public
/// half of the head's beacon key, 0644). Refuses to overwrite. On a drone,
/// whose directory holds the cluster's public keys but no head.key (as a
/// drone image does), it prepares this node instead: its key for this boot
/// (the fingerprint the head approves) and its firewall, which closes the
/// LAN until the join (the running tyd, if any, has done both).
struct Init {
    /// directory for the key files (default /etc/chaos/tyd)
    #[argh(option, default = "chaos_contract::paths::IDENTITY.into()")]
    dir: PathBuf,
    /// on a drone: RAM directory for this boot's node key (default
    /// /run/chaos/tyd)
    #[argh(option, default = "chaos_contract::paths::TYD_STATE.into()")]
    state: PathBuf,
    /// on a drone: control socket of the node's tyd, if it runs (default
    /// /run/chaos/tyd.sock)
    #[argh(option, default = "chaos_contract::paths::TYD_SOCKET.into()")]
    socket: PathBuf,
    /// on a drone: firewall scope, node (default: a drone is a chaos node,
    /// its LAN closed) or host (see `tyd serve --help`)
    #[argh(option, default = "Firewall::Node")]
    firewall: Firewall,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "serve")]
/// run the head: accept joins on TCP 7700, beacon on the LAN, hand out
/// overlay addresses, push membership to every node, expire silent nodes.
struct Serve {
    /// directory with head.key and cluster.key (default /etc/chaos/tyd)
    #[argh(option, default = "chaos_contract::paths::IDENTITY.into()")]
    dir: PathBuf,
    /// address and port to accept joins on (default 0.0.0.0:7700)
    #[argh(option, default = "default_listen()")]
    listen: std::net::SocketAddrV4,
    /// overlay range; the head takes its first address (default 10.99.0.0/16)
    #[argh(option, default = "\"10.99.0.0/16\".parse().expect(\"valid\")")]
    overlay: Overlay,
    /// who may join, beyond holding the cluster key: enroll (default:
    /// anyone during an enrollment window, which opens at start for
    /// --enroll-for and again with `tyd enroll --for`; later nodes wait as
    /// pending for `tyd approve`), window (only during a window), approve
    /// (only after `tyd approve`), psk (anyone with the cluster key, which
    /// every drone image carries: for closed networks only)
    #[argh(option, default = "Policy::Enroll")]
    admission: Policy,
    /// how long the enrollment window opened at start stays open, with
    /// --admission enroll or window (default 15m; 0s opens none)
    #[argh(option, from_str_fn(duration))]
    enroll_for: Option<Duration>,
    /// heartbeat interval the nodes use (default 2s)
    #[argh(option, default = "Duration::from_secs(2)", from_str_fn(duration))]
    heartbeat: Duration,
    /// a node not heard from for this long expires (default 10s)
    #[argh(option, default = "Duration::from_secs(10)", from_str_fn(duration))]
    expire_after: Duration,
    #[argh(option, default = "WIREGUARD_PORT")]
    /// the WireGuard UDP port (default 51820)
    wireguard_port: u16,
    /// membership only: no WireGuard, no firewall (for tests of scale)
    #[argh(switch)]
    control_plane_only: bool,
    /// do not broadcast the signed beacon (by default four times a second to
    /// UDP 7701 on every IPv4 LAN, or only --listen's); drones then need
    /// the head's address
    #[argh(switch)]
    no_beacon: bool,
    /// firewall scope: host (default: only the overlay and tyd's ports,
    /// leaving the host's own traffic alone) or node (default drop on the
    /// LAN: what a chaos image's service asks for)
    #[argh(option, default = "Firewall::Host")]
    firewall: Firewall,
    /// control socket for the status verbs (default /run/chaos/tyd.sock)
    #[argh(option, default = "chaos_contract::paths::TYD_SOCKET.into()")]
    socket: PathBuf,
    /// host name to show (default: the kernel's)
    #[argh(option)]
    hostname: Option<String>,
    /// run Slurm with the cluster: make the munge key (munge.key beside the
    /// identity) on first use, write slurm.conf and cgroup.conf for dynamic
    /// nodes, have munged and slurmctld (re)started by systemd where it runs,
    /// grant members the key and this host's users, share /home with them
    /// over NFS (see --share), and drain and delete nodes in Slurm as they
    /// leave
    #[argh(switch)]
    slurm: bool,
    /// with --slurm: where slurm.conf and cgroup.conf go (default /etc/slurm)
    #[argh(option, default = "\"/etc/slurm\".into()")]
    slurm_conf: PathBuf,
    /// with --slurm: where munged reads the key (default /etc/munge/munge.key)
    #[argh(option, default = "\"/etc/munge/munge.key\".into()")]
    munge_key: PathBuf,
    /// with --slurm: slurmctld's state directory (default
    /// /var/lib/slurm/slurmctld)
    #[argh(option, default = "\"/var/lib/slurm/slurmctld\".into()")]
    slurm_state: PathBuf,
    /// with --slurm: a directory members mount at the same path over NFS
    /// version 4, to run jobs in (repeatable; /home unless given; it must be
    /// /home or /srv or lie below them); exported to the members' overlay
    /// addresses only, root squashed, following the membership
    #[argh(option)]
    share: Vec<String>,
    /// with --slurm: share nothing (no NFS server needed)
    #[argh(switch)]
    no_share: bool,
    /// with --slurm: tyd's own exports file, which it rewrites as members
    /// come and go (default /etc/exports.d/chaos.exports)
    #[argh(option, default = "\"/etc/exports.d/chaos.exports\".into()")]
    exports: PathBuf,
    /// this head is a chaos node: its own init starts munged, slurmctld and
    /// the NFS server (what the head image's service asks for)
    #[argh(switch)]
    manage_node: bool,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "join")]
/// join a cluster as a drone and stay in it: WireGuard mesh, firewall,
/// heartbeats; rejoins by itself after a head restart. Without a head
/// address it listens on UDP 7701 for the head's beacon, signed with the
/// key in <dir>/beacon.pub, and follows the head if it moves. With -m on
/// a node whose tyd already runs (a drone image's service), it has that
/// tyd join the head and returns once it has.
struct Join {
    /// the head's address[:port] (default: chaos.head= from the kernel
    /// command line, else the address in <dir>/head.address, else the
    /// address in the head's beacon)
    #[argh(option, short = 'm')]
    head: Option<String>,
    /// directory with head.pub, beacon.pub, cluster.key and optionally
    /// head.address (default /etc/chaos/tyd)
    #[argh(option, default = "chaos_contract::paths::IDENTITY.into()")]
    dir: PathBuf,
    /// RAM directory for this boot's node key (default /run/chaos/tyd)
    #[argh(option, default = "chaos_contract::paths::TYD_STATE.into()")]
    state: PathBuf,
    #[argh(option, default = "WIREGUARD_PORT")]
    /// the WireGuard UDP port (default 51820)
    wireguard_port: u16,
    /// membership only: no WireGuard, no firewall
    #[argh(switch)]
    control_plane_only: bool,
    /// firewall scope: host (default) or node (see `tyd serve --help`)
    #[argh(option, default = "Firewall::Host")]
    firewall: Firewall,
    /// control socket for the status verbs (default /run/chaos/tyd.sock)
    #[argh(option, default = "chaos_contract::paths::TYD_SOCKET.into()")]
    socket: PathBuf,
    /// host name to announce (default: the kernel's)
    #[argh(option)]
    hostname: Option<String>,
    /// this is a chaos node: set its clock and host name from the head, lay
    /// the cluster's accounts over the image's, install the munge key and
    /// write /run/chaos/joined, which starts munged and slurmd (what the
    /// drone image's service asks for; never on an ordinary host)
    #[argh(switch)]
    manage_node: bool,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "nodes")]
/// list the cluster's nodes: id (* marks the head), host name, overlay and
/// LAN address, state, how it was admitted (psk, window or approved), time
/// since handshake, load, CPUs, memory.
struct Nodes {
    /// machine-readable output
    #[argh(switch)]
    json: bool,
    /// only the nodes waiting for `tyd approve`
    #[argh(switch)]
    pending: bool,
    /// control socket of the local tyd (default /run/chaos/tyd.sock)
    #[argh(option, default = "chaos_contract::paths::TYD_SOCKET.into()")]
    socket: PathBuf,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "top")]
/// live load and memory bars per node; Ctrl-C quits.
struct Top {
    /// one JSON line per refresh instead of bars
    #[argh(switch)]
    json: bool,
    /// refresh interval (default 1s)
    #[argh(option, default = "Duration::from_secs(1)", from_str_fn(duration))]
    interval: Duration,
    /// control socket of the local tyd (default /run/chaos/tyd.sock)
    #[argh(option, default = "chaos_contract::paths::TYD_SOCKET.into()")]
    socket: PathBuf,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "remove")]
/// remove a node (id, host name, overlay address or fingerprint); its key is
/// refused until it reboots. On the head, as root.
struct Remove {
    #[argh(positional)]
    node: String,
    /// control socket of the local tyd (default /run/chaos/tyd.sock)
    #[argh(option, default = "chaos_contract::paths::TYD_SOCKET.into()")]
    socket: PathBuf,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "enroll")]
/// open the enrollment window again (admission policies enroll and
/// window). On the head, as root.
struct Enroll {
    /// how long the window stays open, like 15m
    #[argh(option, long = "for", from_str_fn(duration))]
    open_for: Duration,
    /// control socket of the local tyd (default /run/chaos/tyd.sock)
    #[argh(option, default = "chaos_contract::paths::TYD_SOCKET.into()")]
    socket: PathBuf,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "approve")]
/// admit a pending node by the fingerprint it shows on its console, or
/// every pending node with --all (admission policies enroll and approve).
/// On the head, as root.
struct Approve {
    #[argh(positional)]
    fingerprint: Option<String>,
    /// every node `tyd nodes --pending` lists
    #[argh(switch)]
    all: bool,
    /// control socket of the local tyd (default /run/chaos/tyd.sock)
    #[argh(option, default = "chaos_contract::paths::TYD_SOCKET.into()")]
    socket: PathBuf,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "screen")]
/// the cluster as a live full-screen view: this node's name, addresses and
/// state, and every node's load, CPUs, memory and Slurm state; l shows the
/// last log lines. In a terminal, Esc or q quits.
struct Screen {
    /// be the node's console screen (the image's service): draw on
    /// /dev/console, stand aside in chaos.mode=expert (the console is the
    /// shell's), and on Esc or r, confirmed with y, leave the cluster and
    /// power the node off or reboot it through PID 1
    #[argh(switch)]
    console: bool,
    /// how often the cluster is asked for (default 1s)
    #[argh(option, default = "Duration::from_secs(1)", from_str_fn(duration))]
    interval: Duration,
    /// control socket of the local tyd (default /run/chaos/tyd.sock)
    #[argh(option, default = "chaos_contract::paths::TYD_SOCKET.into()")]
    socket: PathBuf,
    /// RAM directory with this boot's node key (default /run/chaos/tyd)
    #[argh(option, default = "chaos_contract::paths::TYD_STATE.into()")]
    state: PathBuf,
}

fn default_listen() -> std::net::SocketAddrV4 {
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, JOIN_PORT)
}

fn duration(text: &str) -> Result<Duration, String> {
    chaos_contract::duration::parse(text).map_err(|e| e.to_string())
}

/// The seed's forms, rewritten into verbs: `tyd -f init`, bare `tyd`,
/// `tyd -m <ip>`.
fn seed_aliases(mut args: Vec<String>) -> Vec<String> {
    match args.first().map(String::as_str) {
        None => args.push("serve".into()),
        Some("-f") if args.get(1).map(String::as_str) == Some("init") => {
            args.remove(0);
        }
        Some("-m") => args.insert(0, "join".into()),
        _ => {}
    }
    args
}

fn main() {
    let args = seed_aliases(std::env::args().skip(1).collect());
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    let tyd = match Tyd::from_args(&["tyd"], &strs) {
        Ok(tyd) => tyd,
        Err(early) => match early.status {
            Ok(()) => {
                println!("{}", early.output);
                std::process::exit(0);
            }
            Err(()) => {
                eprintln!("{}", early.output);
                std::process::exit(2);
            }
        },
    };
    if let Err(error) = run(tyd.verb) {
        eprintln!("tyd: {error:#}");
        std::process::exit(1);
    }
}

fn run(verb: Verb) -> anyhow::Result<()> {
    match verb {
        Verb::Init(init) if is_drone(&init.dir) => prepare_drone(&init),
        Verb::Init(init) => {
            let written = keys::init(&init.dir)?;
            for path in &written {
                println!("wrote {}", path.display());
            }
            let identity = HeadIdentity::load(&init.dir)?;
            println!(
                "cluster identity ready; head fingerprint {}.\n\
                 Start the head with `tyd serve --dir {}`; bake head.pub and cluster.key \
                 into the drone image with `cargo xtask image --cluster {}`. \
                 Keep head.key and cluster.key secret.",
                keys::fingerprint(&identity.keypair.public),
                init.dir.display(),
                init.dir.display()
            );
            Ok(())
        }
        Verb::Serve(serve) => serve_head(serve),
        Verb::Join(join) => join_cluster(join),
        Verb::Nodes(nodes) => {
            let mut list = ask_nodes(&nodes.socket)?;
            if nodes.pending {
                list.retain(|n| n.state == chaos_agent::proto::State::Pending);
                if list.is_empty() && !nodes.json {
                    println!("no node is pending approval");
                    return Ok(());
                }
            }
            if nodes.json {
                println!("{}", control::json(&list));
            } else {
                print!("{}", control::table(&list));
            }
            Ok(())
        }
        Verb::Top(top) => loop {
            let list = ask_nodes(&top.socket)?;
            if top.json {
                println!("{}", control::json(&list));
            } else {
                // Clear the screen and home the cursor, like top(1).
                print!("\x1b[H\x1b[2J{}", control::top(&list));
            }
            use std::io::Write;
            std::io::stdout().flush()?;
            std::thread::sleep(top.interval);
        },
        Verb::Remove(remove) => change(
            &remove.socket,
            Request::Remove { node: remove.node },
            control::CLIENT_TIMEOUT,
        ),
        Verb::Enroll(enroll) => change(
            &enroll.socket,
            Request::Enroll {
                seconds: enroll.open_for.as_secs().max(1),
            },
            control::CLIENT_TIMEOUT,
        ),
        Verb::Approve(approve) => {
            let request = match (approve.fingerprint, approve.all) {
                (Some(fingerprint), false) => Request::Approve { fingerprint },
                (None, true) => Request::ApproveAll,
                _ => bail!(
                    "give the fingerprint of one pending node, or --all (`tyd nodes --pending` lists them)"
                ),
            };
            change(&approve.socket, request, control::CLIENT_TIMEOUT)
        }
        Verb::Screen(screen) => {
            let stop = stop_signals()?;
            let options = console::Options {
                socket: screen.socket,
                state: screen.state,
                console: screen.console,
                interval: screen.interval,
            };
            Ok(console::run(&options, stop.as_fd())?)
        }
    }
}

/// A drone's identity directory: the cluster's public keys, no head key.
fn is_drone(dir: &Path) -> bool {
    !dir.join(keys::HEAD_KEY).exists()
        && [keys::HEAD_PUB, keys::CLUSTER_KEY]
            .iter()
            .all(|name| dir.join(name).exists())
}

/// `tyd -f init` on a drone: this boot's node key, and the firewall that
/// closes the LAN until the join (left to the node's tyd if one runs).
fn prepare_drone(init: &Init) -> anyhow::Result<()> {
    ClusterIdentity::load(&init.dir).with_context(|| {
        format!(
            "loading the cluster's head key and cluster key from {}",
            init.dir.display()
        )
    })?;
    let node_key = keys::node_key(&init.state).context("this node's key")?;
    println!(
        "this node's key fingerprint is {} (when the head holds this node as pending, \
         `tyd approve` with this fingerprint admits it)",
        keys::fingerprint(&node_key.public)
    );
    if control::answers(&init.socket) {
        println!("the node's tyd runs and keeps its firewall; join with `tyd -m <head address>`");
        return Ok(());
    }
    let mut kernel = Kernel::open(
        Role::Drone {
            beacon_port: Some(BEACON_PORT),
        },
        init.firewall,
    )
    .context("opening netlink for the firewall")?;
    kernel.guard(WIREGUARD_PORT)?;
    println!("join with `tyd -m <head address>`");
    Ok(())
}

fn ask_nodes(socket: &Path) -> anyhow::Result<Vec<chaos_agent::proto::NodeStatus>> {
    match control::ask(socket, &Request::Nodes)? {
        Response::Nodes(list) => Ok(list),
        Response::Failed(why) => bail!("{why}"),
        Response::Done(text) => bail!("unexpected answer: {text}"),
    }
}

fn change(socket: &Path, request: Request, timeout: Duration) -> anyhow::Result<()> {
    match control::ask_within(socket, &request, timeout)? {
        Response::Done(text) => {
            println!("{text}");
            Ok(())
        }
        Response::Failed(why) => bail!("{why}"),
        Response::Nodes(_) => bail!("unexpected answer to {request:?}"),
    }
}

/// SIGTERM, SIGINT and SIGHUP as a file descriptor the event loops poll:
/// blocked first, so they never interrupt anything.
fn stop_signals() -> anyhow::Result<SignalFd> {
    let mut mask = SigSet::empty();
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        mask.add(signal);
    }
    mask.thread_block().context("blocking stop signals")?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).context("signalfd")
}

fn hostname(given: Option<String>) -> String {
    given.unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into())
    })
}

fn dataplane(
    control_plane_only: bool,
    role: Role,
    scope: Firewall,
) -> anyhow::Result<Box<dyn Dataplane>> {
    if control_plane_only {
        return Ok(Box::new(ControlPlaneOnly));
    }
    Ok(Box::new(
        Kernel::open(role, scope).context("opening netlink for WireGuard and nftables")?,
    ))
}

fn serve_head(serve: Serve) -> anyhow::Result<()> {
    if serve.expire_after <= serve.heartbeat {
        bail!(
            "--expire-after ({:?}) must be longer than --heartbeat ({:?})",
            serve.expire_after,
            serve.heartbeat
        );
    }
    let identity = HeadIdentity::load(&serve.dir).with_context(|| {
        format!(
            "loading the cluster identity (create one with `tyd init --dir {}`)",
            serve.dir.display()
        )
    })?;
    chaos_agent::tcp::raise_descriptor_limit()
        .context("raising the limit on open files for a connection per member")?;
    let (window_at_start, said) = window_at_start(serve.admission, serve.enroll_for)?;
    chaos_agent::log::info(said);
    let stop = stop_signals()?;
    let control = control::listen(&serve.socket)?;
    let role = Role::Head {
        join_port: serve.listen.port(),
    };
    let mut dataplane = dataplane(serve.control_plane_only, role, serve.firewall)?;
    let config = HeadConfig {
        membership: Config {
            overlay: serve.overlay,
            policy: serve.admission,
            window_at_start,
            heartbeat: serve.heartbeat,
            expire_after: serve.expire_after,
        },
        listen: serve.listen,
        wireguard_port: serve.wireguard_port,
        hostname: hostname(serve.hostname),
        beacon: (!serve.no_beacon).then_some(beacon::DEFAULT_INTERVAL),
    };
    let slurm = if serve.slurm {
        let (key, made) = keys::munge_key(&serve.dir).context("the cluster's munge key")?;
        if made {
            println!(
                "made the cluster's munge key {}",
                serve.dir.join(keys::MUNGE_KEY).display()
            );
        }
        let setup = Setup {
            conf_dir: serve.slurm_conf,
            munge_key: serve.munge_key,
            settings: Settings {
                // slurmctld insists on running where the configuration says.
                controller: hostname(None)
                    .split('.')
                    .next()
                    .unwrap_or("head")
                    .to_string(),
                controller_address: serve.overlay.head_address(),
                state_dir: serve.slurm_state,
                log_file: None,
                max_nodes: MAX_NODES,
            },
            start: if serve.manage_node {
                Start::Init
            } else {
                Start::on_this_host()
            },
            shares: match (serve.no_share, serve.share.is_empty()) {
                (true, true) => Vec::new(),
                (true, false) => bail!("--share and --no-share contradict each other"),
                (false, true) => vec![chaos_contract::share::DEFAULT.to_string()],
                (false, false) => serve.share,
            },
            exports: serve.exports,
        };
        setup.apply(&key).context("setting up Slurm")?;
        Some(Cluster::new(&setup, key))
    } else {
        None
    };
    let result = Head::new(identity, config, dataplane.as_mut(), Some(control))
        .map(|head| match slurm {
            Some(slurm) => head.with_slurm(slurm),
            None => head,
        })
        .and_then(|mut head| head.run(Some(stop.as_fd())));
    let _ = std::fs::remove_file(&serve.socket);
    Ok(result?)
}

/// The enrollment window a head opens at start when no --enroll-for says
/// otherwise: the morning a lab boots.
const ENROLL_AT_START: Duration = Duration::from_secs(15 * 60);

/// The window `tyd serve` opens at start, and the line that tells the
/// administrator what the policy admits (a warning for psk).
fn window_at_start(
    policy: Policy,
    enroll_for: Option<Duration>,
) -> anyhow::Result<(Duration, String)> {
    let outside = if policy.has_approval() {
        "new nodes wait for `tyd approve`"
    } else {
        "new nodes are refused until `tyd enroll --for`"
    };
    if !policy.has_windows() {
        if enroll_for.is_some() {
            bail!(
                "--enroll-for opens an enrollment window, which --admission {} does not have \
                 (windows are for --admission enroll and window)",
                policy.name()
            );
        }
        let said = if policy == Policy::Psk {
            "warning: --admission psk admits anyone who holds the cluster key, and every \
             drone image carries it to whoever downloads the image: use psk only on a \
             closed network"
                .to_string()
        } else {
            format!("admission approve: {outside}")
        };
        return Ok((Duration::ZERO, said));
    }
    let open_for = enroll_for.unwrap_or(ENROLL_AT_START);
    let said = if open_for.is_zero() {
        format!("no enrollment window at start: {outside}")
    } else {
        format!(
            "enrollment window open for {}s: holders of the cluster key join until it \
             closes, then {outside}",
            open_for.as_secs()
        )
    };
    Ok((open_for, said))
}

fn join_cluster(join: Join) -> anyhow::Result<()> {
    if let Some(given) = &join.head {
        // The node's own tyd (the image's service) runs: it joins, so the
        // membership stays supervised and this shell stays free.
        if control::answers(&join.socket) {
            let head = drone::parse_head(given)?;
            println!("tyd: this node's tyd runs; asking it to join head {head}");
            return change(
                &join.socket,
                Request::Join {
                    head: head.to_string(),
                },
                drone::JOIN_WAIT + Duration::from_secs(5),
            );
        }
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let baked = std::fs::read_to_string(join.dir.join(keys::HEAD_ADDRESS)).ok();
    let head = drone::find_head(join.head.as_deref(), &cmdline, baked.as_deref())?;
    let cluster = ClusterIdentity::load(&join.dir).with_context(|| {
        format!(
            "loading the cluster's head key and cluster key from {}",
            join.dir.display()
        )
    })?;
    let node_key = keys::node_key(&join.state).context("this node's key")?;
    let stop = stop_signals()?;
    let control = control::listen(&join.socket)?;
    let role = Role::Drone {
        beacon_port: head.is_none().then_some(BEACON_PORT),
    };
    let mut dataplane = dataplane(join.control_plane_only, role, join.firewall)?;
    let config = DroneConfig {
        head,
        cluster,
        node_key,
        hostname: hostname(join.hostname),
        wireguard_port: join.wireguard_port,
        session_over_overlay: !join.control_plane_only,
        source: None,
        manage_node: join.manage_node,
    };
    let result = Drone::new(config, dataplane.as_mut(), Some(control))
        .and_then(|mut drone| drone.run(Some(stop.as_fd())));
    let _ = std::fs::remove_file(&join.socket);
    Ok(result?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_forms_become_verbs() {
        let table: &[(&[&str], &[&str])] = &[
            (&[], &["serve"]),
            (&["-f", "init"], &["init"]),
            (&["-m", "10.0.0.1"], &["join", "-m", "10.0.0.1"]),
            (&["nodes", "--json"], &["nodes", "--json"]),
            (&["-f"], &["-f"]),
        ];
        for (given, expected) in table {
            let args = given.iter().map(|s| s.to_string()).collect();
            assert_eq!(seed_aliases(args), *expected, "{given:?}");
        }
    }

    #[test]
    fn each_policy_says_what_it_admits_at_start() {
        let minutes = |m: u64| Some(Duration::from_secs(m * 60));
        // The seconds opened and how the line starts, or the error.
        type Expected = Result<(u64, &'static str), &'static str>;
        let table: &[(Policy, Option<Duration>, Expected)] = &[
            (
                Policy::Enroll,
                None,
                Ok((900, "enrollment window open for 900s: holders of the cluster key join until it closes, then new nodes wait for `tyd approve`")),
            ),
            (
                Policy::Enroll,
                Some(Duration::ZERO),
                Ok((0, "no enrollment window at start: new nodes wait for `tyd approve`")),
            ),
            (
                Policy::Window,
                minutes(1),
                Ok((60, "enrollment window open for 60s: holders of the cluster key join until it closes, then new nodes are refused until `tyd enroll --for`")),
            ),
            (
                Policy::Psk,
                None,
                Ok((0, "warning: --admission psk admits anyone who holds the cluster key")),
            ),
            (
                Policy::Approve,
                None,
                Ok((0, "admission approve: new nodes wait for `tyd approve`")),
            ),
            (
                Policy::Psk,
                minutes(15),
                Err("--enroll-for opens an enrollment window, which --admission psk does not have"),
            ),
        ];
        for (policy, enroll_for, expected) in table {
            match (window_at_start(*policy, *enroll_for), expected) {
                (Ok((open, said)), Ok((seconds, start))) => {
                    assert_eq!(open.as_secs(), *seconds, "{policy:?}");
                    assert!(said.starts_with(start), "{policy:?}: {said}");
                }
                (Err(e), Err(start)) => assert!(e.to_string().starts_with(start), "{e}"),
                (got, _) => panic!("{policy:?} {enroll_for:?}: {got:?}"),
            }
        }
    }
}
