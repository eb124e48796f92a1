// SPDX-License-Identifier: GPL-3.0-or-later
//! The firewall on the kernel's real nftables, in test-made namespaces: a
//! port probe from a namespace that is not a member finds only the
//! documented open port, and the host scope leaves the host's traffic
//! alone but for Slurm's ports, which are the cluster's.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use chaos_agent::nftables::{Firewall, Params, Scope};
use chaos_agent::proto::{JOIN_PORT, WIREGUARD_PORT};
use common::Lab;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    connect, getsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
};

const TARGET: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
/// Ports probed at once; each gets this long to answer. A filtered port
/// never answers, so the probe of a whole range takes ranges/batch times
/// this.
const BATCH: usize = 8192;
const PROBE_WAIT: Duration = Duration::from_millis(1500);

/// The TCP ports of `ports` that accept a connection from here.
fn open_ports(ports: &[u16]) -> Vec<u16> {
    let limit = (BATCH + 64) as u64;
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, limit, limit)
        .expect("raising the descriptor limit for the probe");
    let mut open = Vec::new();
    for batch in ports.chunks(BATCH) {
        let mut pending: Vec<(u16, OwnedFd)> = batch
            .iter()
            .map(|&port| {
                let fd = socket(
                    AddressFamily::Inet,
                    SockType::Stream,
                    SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
                    None,
                )
                .unwrap();
                let address = SockaddrIn::from(SocketAddrV4::new(TARGET, port));
                match connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &address) {
                    Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => {}
                    Err(e) => panic!("connect to port {port}: {e}"),
                }
                (port, fd)
            })
            .collect();
        let deadline = Instant::now() + PROBE_WAIT;
        while !pending.is_empty() && Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut fds: Vec<PollFd> = pending
                .iter()
                .map(|(_, fd)| PollFd::new(fd.as_fd(), PollFlags::POLLOUT))
                .collect();
            let millis = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
            poll(&mut fds, PollTimeout::from(millis)).unwrap();
            let done: Vec<bool> = fds
                .iter()
                .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            drop(fds);
            let mut index = 0;
            pending.retain(|(port, fd)| {
                let finished = done[index];
                index += 1;
                if finished && getsockopt(fd, sockopt::SocketError).unwrap() == 0 {
                    open.push(*port);
                }
                !finished
            });
        }
    }
    open.sort();
    open
}

fn params(scope: Scope) -> Params {
    Params {
        scope,
        overlay: Some("10.99.0.0/16".parse().unwrap()),
        interface: "wg0".into(),
        wireguard_port: WIREGUARD_PORT,
        join_port: Some(JOIN_PORT),
        beacon_port: None,
    }
}

/// Listeners a node might have: the join port, ssh, slurmd and an srun
/// (which are meant for the overlay only).
const SRUN: u16 = 60050;

fn listeners() -> Vec<TcpListener> {
    [JOIN_PORT, 22, 6818, SRUN]
        .iter()
        .map(|port| TcpListener::bind((Ipv4Addr::UNSPECIFIED, *port)).unwrap())
        .collect()
}

#[test]
fn a_probe_from_outside_finds_only_the_documented_ports() {
    let mut lab = Lab::new("probe");
    let node = lab.node(1);
    let outsider = lab.node(66);

    // Before the firewall, everything listening is reachable: the probe
    // can see open ports at all.
    let _listening = lab.inside(&node, listeners);
    let all: Vec<u16> = (1..=u16::MAX).collect();
    assert_eq!(
        lab.inside(&outsider, || open_ports(&all)),
        [22, 6818, JOIN_PORT, SRUN]
    );

    // A chaos node: only the join port is open on the LAN.
    lab.inside(&node, || {
        Firewall::open()
            .unwrap()
            .apply(&params(Scope::Node))
            .unwrap()
    });
    assert_eq!(lab.inside(&outsider, || open_ports(&all)), [JOIN_PORT]);

    // Loaded again (as on every membership change), still one table and
    // the same result: the replacement is whole.
    lab.inside(&node, || {
        Firewall::open()
            .unwrap()
            .apply(&params(Scope::Node))
            .unwrap()
    });
    assert_eq!(
        lab.inside(&outsider, || open_ports(&[22, 6818, JOIN_PORT, SRUN])),
        [JOIN_PORT]
    );

    // A head on an ordinary host leaves the host's services reachable,
    // but not Slurm's.
    lab.inside(&node, || {
        Firewall::open()
            .unwrap()
            .apply(&params(Scope::Host))
            .unwrap()
    });
    assert_eq!(
        lab.inside(&outsider, || open_ports(&[22, 6818, JOIN_PORT, SRUN])),
        [22, JOIN_PORT]
    );

    // Removing tyd's table (twice: removal is idempotent) restores what
    // was there before.
    lab.inside(&node, || Firewall::open().unwrap().remove().unwrap());
    lab.inside(&node, || Firewall::open().unwrap().remove().unwrap());
    assert_eq!(
        lab.inside(&outsider, || open_ports(&[22, 6818, JOIN_PORT, SRUN])),
        [22, 6818, JOIN_PORT, SRUN]
    );
}
