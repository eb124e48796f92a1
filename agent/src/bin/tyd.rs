// SPDX-License-Identifier: GPL-3.0-or-later
//! tyd, the chaos cluster agent: the command line. Every verb is a thin
//! layer over the chaos_agent library.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use argh::FromArgs;
use chaos_agent::beacon::{self, BEACON_PORT};
use chaos_agent::control::{self, DEFAULT_SOCKET};
use chaos_agent::dataplane::{ControlPlaneOnly, Dataplane};
use chaos_agent::drone::{self, Drone, DroneConfig};
use chaos_agent::head::{Head, HeadConfig};
use chaos_agent::kernel::{Kernel, Role};
use chaos_agent::keys::{self, ClusterIdentity, HeadIdentity};
use chaos_agent::log::parse_duration;
use chaos_agent::membership::{Config, Overlay, Policy};
use chaos_agent::nftables::Scope as Firewall;
use chaos_agent::proto::{Request, Response, JOIN_PORT, WIREGUARD_PORT};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

const DEFAULT_DIR: &str = "/etc/chaos/tyd";
const DEFAULT_STATE: &str = "/run/chaos/tyd";

#[derive(FromArgs)]
/// tyd, the chaos cluster agent: cluster identity, join, membership,
/// WireGuard mesh, firewall and status.
///
/// Ports: the head accepts joins on TCP 7700 (on the LAN; members also use
/// it over the overlay) and broadcasts a signed beacon to UDP 7701 every
/// second, for drones that are given no head address; every node runs
/// WireGuard on UDP 51820.
/// Seed forms: `tyd -f init` is `tyd init`, `tyd` alone is `tyd serve`,
/// `tyd -m <ip>` is `tyd join -m <ip>`.
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
}

#[derive(FromArgs)]
#[argh(subcommand, name = "init")]
/// create a cluster identity: the head's key pair and the cluster key
/// (head.key and cluster.key 0600; head.pub and beacon.pub, the public
/// half of the head's beacon key, 0644). Refuses to overwrite.
struct Init {
    /// directory for the key files (default /etc/chaos/tyd)
    #[argh(option, default = "DEFAULT_DIR.into()")]
    dir: PathBuf,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "serve")]
/// run the head: accept joins on TCP 7700, beacon on the LAN, hand out
/// overlay addresses, push membership to every node, expire silent nodes.
struct Serve {
    /// directory with head.key and cluster.key (default /etc/chaos/tyd)
    #[argh(option, default = "DEFAULT_DIR.into()")]
    dir: PathBuf,
    /// address and port to accept joins on (default 0.0.0.0:7700)
    #[argh(option, default = "default_listen()")]
    listen: std::net::SocketAddrV4,
    /// overlay range; the head takes its first address (default 10.99.0.0/16)
    #[argh(option, default = "\"10.99.0.0/16\".parse().expect(\"valid\")")]
    overlay: Overlay,
    /// who may join: psk (anyone with the cluster key, default), window
    /// (only during `tyd enroll --for`), approve (after `tyd approve`)
    #[argh(option, default = "Policy::Psk")]
    admission: Policy,
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
    /// do not broadcast the signed beacon (by default once a second to
    /// UDP 7701 on every IPv4 LAN, or only --listen's); drones then need
    /// the head's address
    #[argh(switch)]
    no_beacon: bool,
    /// firewall scope: node (default drop on the LAN, for chaos nodes) or
    /// host (only the overlay and tyd's ports, leaving the host's traffic
    /// alone); default node inside a chaos image, host elsewhere
    #[argh(option)]
    firewall: Option<Firewall>,
    /// control socket for the status verbs (default /run/chaos/tyd.sock)
    #[argh(option, default = "DEFAULT_SOCKET.into()")]
    socket: PathBuf,
    /// host name to show (default: the kernel's)
    #[argh(option)]
    hostname: Option<String>,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "join")]
/// join a cluster as a drone and stay in it: WireGuard mesh, firewall,
/// heartbeats; rejoins by itself after a head restart. Without a head
/// address it listens on UDP 7701 for the head's beacon, signed with the
/// key in <dir>/beacon.pub, and follows the head if it moves.
struct Join {
    /// the head's address[:port] (default: chaos.head= from the kernel
    /// command line, else the address in <dir>/head.address, else the
    /// address in the head's beacon)
    #[argh(option, short = 'm')]
    head: Option<String>,
    /// directory with head.pub, beacon.pub, cluster.key and optionally
    /// head.address (default /etc/chaos/tyd)
    #[argh(option, default = "DEFAULT_DIR.into()")]
    dir: PathBuf,
    /// RAM directory for this boot's node key (default /run/chaos/tyd)
    #[argh(option, default = "DEFAULT_STATE.into()")]
    state: PathBuf,
    #[argh(option, default = "WIREGUARD_PORT")]
    /// the WireGuard UDP port (default 51820)
    wireguard_port: u16,
    /// membership only: no WireGuard, no firewall
    #[argh(switch)]
    control_plane_only: bool,
    /// firewall scope: node or host (see `tyd serve --help`)
    #[argh(option)]
    firewall: Option<Firewall>,
    /// control socket for the status verbs (default /run/chaos/tyd.sock)
    #[argh(option, default = "DEFAULT_SOCKET.into()")]
    socket: PathBuf,
    /// host name to announce (default: the kernel's)
    #[argh(option)]
    hostname: Option<String>,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "nodes")]
/// list the cluster's nodes: id (* marks the head), host name, overlay and
/// LAN address, state, time since handshake, load, CPUs, memory.
struct Nodes {
    /// machine-readable output
    #[argh(switch)]
    json: bool,
    /// control socket of the local tyd (default /run/chaos/tyd.sock)
    #[argh(option, default = "DEFAULT_SOCKET.into()")]
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
    #[argh(option, default = "DEFAULT_SOCKET.into()")]
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
    #[argh(option, default = "DEFAULT_SOCKET.into()")]
    socket: PathBuf,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "enroll")]
/// open the enrollment window (admission policy window). On the head, as
/// root.
struct Enroll {
    /// how long the window stays open, like 15m
    #[argh(option, long = "for", from_str_fn(duration))]
    open_for: Duration,
    /// control socket of the local tyd (default /run/chaos/tyd.sock)
    #[argh(option, default = "DEFAULT_SOCKET.into()")]
    socket: PathBuf,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "approve")]
/// admit a pending node by the fingerprint it shows on its console
/// (admission policy approve). On the head, as root.
struct Approve {
    #[argh(positional)]
    fingerprint: String,
    /// control socket of the local tyd (default /run/chaos/tyd.sock)
    #[argh(option, default = "DEFAULT_SOCKET.into()")]
    socket: PathBuf,
}

fn default_listen() -> std::net::SocketAddrV4 {
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, JOIN_PORT)
}

fn duration(text: &str) -> Result<Duration, String> {
    parse_duration(text)
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
            let list = ask_nodes(&nodes.socket)?;
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
        Verb::Remove(remove) => change(&remove.socket, Request::Remove { node: remove.node }),
        Verb::Enroll(enroll) => change(
            &enroll.socket,
            Request::Enroll {
                seconds: enroll.open_for.as_secs().max(1),
            },
        ),
        Verb::Approve(approve) => change(
            &approve.socket,
            Request::Approve {
                fingerprint: approve.fingerprint,
            },
        ),
    }
}

fn ask_nodes(socket: &Path) -> anyhow::Result<Vec<chaos_agent::proto::NodeStatus>> {
    match control::ask(socket, &Request::Nodes)? {
        Response::Nodes(list) => Ok(list),
        Response::Failed(why) => bail!("{why}"),
        Response::Done(text) => bail!("unexpected answer: {text}"),
    }
}

fn change(socket: &Path, request: Request) -> anyhow::Result<()> {
    match control::ask(socket, &request)? {
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

/// Inside a chaos image the firewall guards the whole node; on an ordinary
/// host it must leave the host's own traffic alone.
fn firewall(given: Option<Firewall>) -> Firewall {
    given.unwrap_or(if Path::new("/etc/chaos/services").is_dir() {
        Firewall::Node
    } else {
        Firewall::Host
    })
}

fn dataplane(
    control_plane_only: bool,
    role: Role,
    scope: Option<Firewall>,
) -> anyhow::Result<Box<dyn Dataplane>> {
    if control_plane_only {
        return Ok(Box::new(ControlPlaneOnly));
    }
    Ok(Box::new(
        Kernel::open(role, firewall(scope))
            .context("opening netlink for WireGuard and nftables")?,
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
            heartbeat: serve.heartbeat,
            expire_after: serve.expire_after,
        },
        listen: serve.listen,
        wireguard_port: serve.wireguard_port,
        hostname: hostname(serve.hostname),
        beacon: (!serve.no_beacon).then_some(beacon::DEFAULT_INTERVAL),
    };
    let result = Head::new(identity, config, dataplane.as_mut(), Some(control))
        .and_then(|mut head| head.run(Some(stop.as_fd())));
    let _ = std::fs::remove_file(&serve.socket);
    result
}

fn join_cluster(join: Join) -> anyhow::Result<()> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let baked = std::fs::read_to_string(join.dir.join(keys::HEAD_ADDRESS)).ok();
    let head = drone::find_head(join.head.as_deref(), &cmdline, baked.as_deref())
        .map_err(anyhow::Error::msg)?;
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
    };
    let result = Drone::new(config, dataplane.as_mut(), Some(control))
        .and_then(|mut drone| drone.run(Some(stop.as_fd())));
    let _ = std::fs::remove_file(&join.socket);
    result
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
}
