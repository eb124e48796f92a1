// SPDX-License-Identifier: GPL-3.0-or-later
//! Finding the head by its beacon, end to end: drones given no head address
//! in network namespaces on a test-made bridge, an attacker beside them
//! sending forged, foreign, garbage and replayed beacons, the real head
//! starting late, and then moving to another address; and a drone under a
//! flood of 10,000 forged beacons a second that still finds its head.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use chaos_agent::beacon::{Beacon, BEACON_PORT};
use chaos_agent::flood::{beacon_flood, enter_namespace, FLOOD_RATE};
use chaos_agent::keys::{ClusterIdentity, HeadIdentity};
use chaos_agent::proto::State;
use common::{hosts_in, nodes, Lab, DEADLINE};
use nix::sys::signal::Signal;

const BROADCAST: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 255);
const ATTACKER: u8 = 66;

/// Broadcasts `datagram` to the beacon port from inside `ns`.
fn broadcast(lab: &Lab, ns: &str, datagram: &[u8]) {
    lab.inside(ns, || {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        socket.set_broadcast(true).unwrap();
        socket.send_to(datagram, (BROADCAST, BEACON_PORT)).unwrap();
    });
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Waits until the head logging to `head_log` lists both drones up, then
/// checks that each drone logged `how` it got there.
fn drones_up_on(lab: &Lab, head_log: &str, how: &str) {
    let socket = lab.socket("head");
    lab.wait(
        &format!("both drones up on the head logging to {head_log}"),
        || hosts_in(&socket, State::Up) == ["drone1", "drone2", "head"],
        || {
            format!(
                "{:?}\n{}\n{}",
                nodes(&socket),
                lab.log(head_log),
                lab.log("drone1")
            )
        },
    );
    for name in ["drone1", "drone2"] {
        assert!(lab.log(name).contains(how), "{}", lab.log(name));
    }
}

#[test]
fn drones_find_the_head_by_its_signed_beacon_and_ignore_forgeries() {
    let mut lab = Lab::new("beacon");
    let keys = lab.init("keys");
    let cluster = ClusterIdentity::load(&keys).unwrap();
    // Another cluster's head, as an impostor would have: a key pair of
    // its own, not the head's.
    let impostor = HeadIdentity::load(&lab.init("impostor")).unwrap();
    let drones = ["drone1", "drone2"];
    for (i, name) in drones.iter().enumerate() {
        let ns = lab.node(11 + i as u8);
        lab.drone(&ns, name, &keys, None);
    }
    for name in drones {
        lab.wait_log(name, "listening for the head's beacon on UDP port 7701");
    }

    // The attacker serves a join port of its own and announces it every way
    // it can without the head's beacon key.
    let attacker = lab.node(ATTACKER);
    let trap = lab.inside(&attacker, || {
        let trap = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 7700)).unwrap();
        trap.set_nonblocking(true).unwrap();
        trap
    });
    let lure = SocketAddrV4::new(Ipv4Addr::new(192, 168, 77, ATTACKER), 7700);
    let forged = Beacon {
        head: cluster.head_public,
        join: lure,
        timestamp: now_ns(),
    }
    .seal(&impostor.beacon_key());
    broadcast(&lab, &attacker, &forged);
    let foreign = Beacon {
        head: impostor.keypair.public,
        join: lure,
        timestamp: now_ns(),
    }
    .seal(&impostor.beacon_key());
    broadcast(&lab, &attacker, &foreign);
    broadcast(&lab, &attacker, b"hello, anyone there?");
    for name in drones {
        lab.wait_log(
            name,
            "signature does not verify against this image's beacon key (forged)",
        );
        lab.wait_log(name, "a beacon of another cluster");
        lab.wait_log(name, "not a chaos beacon (20 bytes)");
    }

    // The real head starts late; the drones find it.
    let head_ns = lab.node(1);
    let head = lab.head(&head_ns, "head", &keys, &[]);
    drones_up_on(&lab, "head", "found head 192.168.77.1:7700 by its beacon");
    lab.wait_log(
        "head",
        "beacon: 192.168.77.1:7700 on eth0 to 192.168.77.255:7701",
    );

    // A real beacon heard by the attacker and sent again is refused.
    let heard = lab.inside(&attacker, || {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, BEACON_PORT)).unwrap();
        socket.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut buffer = [0; 2048];
        let (len, _) = socket.recv_from(&mut buffer).expect("a beacon in time");
        buffer[..len].to_vec()
    });
    broadcast(&lab, &attacker, &heard);
    for name in drones {
        lab.wait_log(name, "no newer than the last one accepted (replayed)");
    }
    assert!(
        matches!(trap.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "a drone followed a forged beacon to the attacker's join port"
    );

    // The head comes back at another address; the beacon leads the drones
    // there.
    lab.signal(head, Signal::SIGKILL);
    let moved_ns = lab.node(2);
    let started = Instant::now();
    lab.head(&moved_ns, "moved", &keys, &[]);
    drones_up_on(
        &lab,
        "moved",
        "the head's beacon now names 192.168.77.2:7700 (was 192.168.77.1:7700)",
    );
    eprintln!(
        "drones rejoined the moved head {} ms after it started",
        started.elapsed().as_millis()
    );
}

/// The datagrams a drone's log says it ignored: the lines of those it
/// logged and the counts of those it did not.
fn ignored(log: &str) -> u64 {
    log.lines()
        .map(|line| {
            if line.contains("rejected ") {
                return 1;
            }
            line.split_once('(')
                .and_then(|(_, rest)| rest.strip_suffix(" more rejections not logged)"))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        })
        .sum()
}

#[test]
fn a_drone_under_a_flood_of_forged_beacons_still_finds_its_head() {
    let mut lab = Lab::new("flood");
    let keys = lab.init("keys");
    let head_key = ClusterIdentity::load(&keys).unwrap().head_public;
    let drone_ns = lab.node(11);
    lab.drone(&drone_ns, "drone", &keys, None);
    lab.wait_log("drone", "listening for the head's beacon on UDP port 7701");
    let attacker = lab.node(ATTACKER);
    let lure = SocketAddrV4::new(Ipv4Addr::new(192, 168, 77, ATTACKER), 7700);
    let to = SocketAddrV4::new(BROADCAST, BEACON_PORT);
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let sent = std::thread::scope(|s| {
        let flood = s.spawn(|| {
            enter_namespace(&attacker).unwrap();
            beacon_flood(head_key, lure, to, FLOOD_RATE, &stop).unwrap()
        });
        // The drone checked the forger's first beacons and stopped there;
        // the head starts once the drone has ignored a second's worth.
        lab.wait_log("drone", "(forged)");
        lab.wait_log("drone", "its sender keeps sending forgeries");
        lab.wait(
            "the drone to ignore a second of the flood",
            || ignored(&lab.log("drone")) >= u64::from(FLOOD_RATE),
            || lab.log("drone"),
        );
        let head_ns = lab.node(1);
        lab.head(&head_ns, "head", &keys, &[]);
        let socket = lab.socket("head");
        lab.wait(
            "the flooded drone up",
            || hosts_in(&socket, State::Up) == ["drone", "head"],
            || format!("{:?}\n{}", nodes(&socket), lab.log("drone")),
        );
        lab.wait_log("drone", "found head 192.168.77.1:7700 by its beacon");
        stop.store(true, Ordering::Relaxed);
        flood.join().unwrap()
    });
    eprintln!(
        "{sent} forged beacons in {} ms",
        started.elapsed().as_millis()
    );
    // However many forgeries, the drone's log stays short.
    let log = lab.log("drone");
    let lines = log.lines().count();
    assert!(lines < 100, "{lines} log lines:\n{log}");
}
