// SPDX-License-Identifier: GPL-3.0-or-later
//! Membership end to end: a head and drones as tyd processes in network
//! namespaces on a test-made bridge, in control-plane-only mode (the same
//! protocol code as with WireGuard). Joining, status from head and drone,
//! expiry of a killed drone, graceful leave, rejoin after a head restart,
//! and hostile input that must not disturb the members.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use chaos_agent::keys::{self, ClusterIdentity, Keypair};
use chaos_agent::proto::{Answer, Hello, Message, State};
use common::{hosts_in, nodes, state_of, Lab};
use nix::sys::signal::Signal;

const HEAD: &str = "192.168.77.1";

/// Fast heartbeats and expiry, so that the test waits seconds, not minutes.
const TIMING: &[&str] = &["--heartbeat", "200ms", "--expire-after", "1500ms"];

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn drones_join_expire_leave_and_rejoin_a_restarted_head() {
    let mut lab = Lab::new("life");
    let keys = lab.init("keys");
    let head_ns = lab.node(1);
    let head_socket = lab.socket("head");
    let socket = head_socket.to_str().unwrap().to_string();
    let head = lab.head(&head_ns, "head", &keys, TIMING);
    let mut drones = Vec::new();
    for i in 1..=4u8 {
        let ns = lab.node(10 + i);
        let name = format!("drone{i}");
        drones.push(lab.drone(&ns, &name, &keys, Some(HEAD)));
    }
    let everyone = names(&["drone1", "drone2", "drone3", "drone4", "head"]);
    lab.wait(
        "the head and 4 drones up",
        || hosts_in(&head_socket, State::Up) == everyone,
        || format!("{:?}\n{}", nodes(&head_socket), lab.log("head")),
    );
    // Each drone hears of the head and the three others; its welcome names
    // only the head and itself, the rest comes in the head's pushes.
    for i in 1..=4 {
        lab.wait_log(&format!("drone{i}"), "mesh now has 4 peers");
    }

    // Distinct overlay addresses, every drone with its LAN address.
    let list = nodes(&head_socket).unwrap();
    let mut overlays: Vec<_> = list.iter().map(|n| n.overlay.unwrap()).collect();
    overlays.dedup();
    assert_eq!(overlays.len(), 5, "{list:?}");
    assert!(list.iter().filter(|n| !n.head).all(|n| n
        .lan
        .unwrap()
        .to_string()
        .starts_with("192.168.77.1")));

    // A drone answers status by asking the head, and the CLI renders it.
    let from_drone = lab.socket("drone1");
    lab.wait(
        "status through a drone",
        || hosts_in(&from_drone, State::Up) == everyone,
        || format!("{:?}", nodes(&from_drone)),
    );
    let output = std::process::Command::new(common::tyd())
        .args(["nodes", "--json", "--socket"])
        .arg(&from_drone)
        .output()
        .unwrap();
    let json = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success());
    assert_eq!(json.matches("\"state\":\"up\"").count(), 5, "{json}");
    assert!(json.contains("\"load\":{\"load1\":"), "{json}");
    let screen = second_top_screen(&from_drone);
    for name in &everyone {
        let row = screen
            .lines()
            .find(|l| l.starts_with(name.as_str()))
            .unwrap_or_else(|| panic!("no {name} in tyd top's screen:\n{screen}"));
        assert_eq!(
            row.matches('[').count(),
            2,
            "a load and a memory bar: {row}"
        );
        assert!(row.ends_with('%'), "{row}");
    }

    // A killed drone expires; a drone stopped properly leaves.
    lab.signal(drones[3], Signal::SIGKILL);
    lab.wait(
        "drone4 expired",
        || state_of(&head_socket, "drone4") == Some(State::Expired),
        || format!("{:?}", nodes(&head_socket)),
    );
    lab.signal(drones[2], Signal::SIGTERM);
    assert_eq!(
        state_of(&head_socket, "drone3"),
        Some(State::Left),
        "a graceful leave is known by the time the drone has exited"
    );
    assert!(lab.log("drone3").contains("leaving the cluster"));

    // A restarted head knows nobody; the drones come back by themselves.
    lab.signal(head, Signal::SIGTERM);
    lab.head(&head_ns, "head2", &keys, TIMING);
    lab.wait(
        "drones 1 and 2 back on the new head",
        || hosts_in(&head_socket, State::Up) == names(&["drone1", "drone2", "head"]),
        || format!("{:?}\n{}", nodes(&head_socket), lab.log("head2")),
    );

    // `tyd remove` ends a membership: the node leaves the list and hears
    // of it.
    let output = std::process::Command::new(common::tyd())
        .args(["remove", "drone2", "--socket", &socket])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(state_of(&head_socket, "drone2"), None);
    lab.wait(
        "drone2 told it was removed",
        || lab.log("drone2").contains("removed from the cluster"),
        || lab.log("drone2"),
    );
    assert_eq!(
        hosts_in(&head_socket, State::Up),
        names(&["drone1", "head"])
    );
}

/// Runs `tyd top` against `socket` until it has drawn its second screen,
/// and returns that screen.
fn second_top_screen(socket: &std::path::Path) -> String {
    const CLEAR: &str = "\x1b[H\x1b[2J";
    let mut top = std::process::Command::new(common::tyd())
        .args(["top", "--interval", "100ms", "--socket"])
        .arg(socket)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = top.stdout.take().unwrap();
    let (sender, screens) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut output = String::new();
        let mut chunk = [0; 4096];
        while let Ok(len @ 1..) = stdout.read(&mut chunk) {
            output.push_str(&String::from_utf8_lossy(&chunk[..len]));
            // A screen is complete once the next one starts.
            if output.matches(CLEAR).count() >= 3 {
                let _ = sender.send(output.split(CLEAR).nth(2).unwrap_or_default().to_string());
                return;
            }
        }
    });
    let screen = screens.recv_timeout(common::DEADLINE);
    let _ = top.kill();
    let _ = top.wait();
    screen.expect("tyd top drew two screens in time")
}

/// Sends `bytes` from inside `ns` to the head's join port and returns what
/// came back before the head closed the connection.
fn exchange(lab: &Lab, ns: &str, frames: &[Vec<u8>]) -> Vec<u8> {
    lab.inside(ns, || {
        let mut stream = TcpStream::connect((HEAD, 7700)).unwrap();
        stream.set_read_timeout(Some(common::DEADLINE)).unwrap();
        for frame in frames {
            stream.write_all(frame).unwrap();
        }
        let mut reply = Vec::new();
        // The head closes the connection (EOF or reset) when it is done.
        let _ = stream.read_to_end(&mut reply);
        reply
    })
}

fn frame(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

#[test]
fn hostile_input_is_rejected_while_members_keep_working() {
    let mut lab = Lab::new("hostile");
    let keys = lab.init("keys");
    let head_ns = lab.node(1);
    let head_socket = lab.socket("head");
    lab.head(&head_ns, "head", &keys, TIMING);
    let good_ns = lab.node(11);
    lab.drone(&good_ns, "good", &keys, Some(HEAD));
    lab.wait(
        "the good drone up",
        || state_of(&head_socket, "good") == Some(State::Up),
        || format!("{:?}\n{}", nodes(&head_socket), lab.log("head")),
    );

    // A drone whose image has the right head key but another cluster key.
    let other = lab.init("other");
    let wrong = lab.dir.join("wrong");
    std::fs::create_dir_all(&wrong).unwrap();
    for public in [keys::HEAD_PUB, keys::BEACON_PUB] {
        std::fs::copy(keys.join(public), wrong.join(public)).unwrap();
    }
    std::fs::copy(other.join(keys::CLUSTER_KEY), wrong.join(keys::CLUSTER_KEY)).unwrap();
    let wrong_ns = lab.node(12);
    lab.drone(&wrong_ns, "wrongkey", &wrong, Some(HEAD));
    lab.wait(
        "the head to reject the wrong cluster key",
        || lab.log("head").contains("rejected 192.168.77.12"),
        || lab.log("head"),
    );
    assert!(
        lab.log("head").contains("handshake failed"),
        "{}",
        lab.log("head")
    );
    lab.wait(
        "the drone to say why it cannot join",
        || lab.log("wrongkey").contains("cluster key"),
        || lab.log("wrongkey"),
    );

    // A replayed first handshake message: the first copy is answered, the
    // second is refused without an answer.
    let mallory = lab.node(66);
    let cluster = ClusterIdentity::load(&keys).unwrap();
    let node = Keypair::generate().unwrap();
    let mut handshake = keys::initiator(&node, &cluster).unwrap();
    let hello = Hello {
        timestamp: 1,
        wireguard_key: [7; 32],
        wireguard_port: 51820,
        hostname: "replayer".into(),
    };
    let mut first = vec![0; 512];
    let len = handshake
        .write_message(&hello.encode(), &mut first)
        .unwrap();
    let first = frame(&first[..len]);
    let answered = exchange(&lab, &mallory, std::slice::from_ref(&first));
    assert!(answered.len() > 2, "the original handshake is answered");
    let mut payload = vec![0; answered.len()];
    let len = handshake
        .read_message(&answered[2..], &mut payload)
        .unwrap();
    assert_eq!(Answer::decode(&payload[..len]), Ok(Answer::Accepted));
    let replayed = exchange(&lab, &mallory, &[first]);
    assert!(replayed.is_empty(), "a replay gets no answer: {replayed:?}");
    lab.wait(
        "the replay logged",
        || lab.log("head").contains("replayed handshake"),
        || lab.log("head"),
    );

    // Garbage: random bytes, an empty frame, a frame that is not Noise.
    let mut noise = vec![0u8; 4096];
    getrandom::getrandom(&mut noise).unwrap();
    for junk in [noise, vec![0, 0], frame(b"GET / HTTP/1.0\r\n\r\n")] {
        assert!(exchange(&lab, &mallory, &[junk]).is_empty());
    }

    // The member never noticed, and the head still admits new drones.
    assert_eq!(state_of(&head_socket, "good"), Some(State::Up));
    let late_ns = lab.node(13);
    lab.drone(&late_ns, "late", &keys, Some(HEAD));
    lab.wait(
        "a drone joining after the attacks",
        || hosts_in(&head_socket, State::Up) == names(&["good", "head", "late"]),
        || format!("{:?}\n{}", nodes(&head_socket), lab.log("head")),
    );
    assert_eq!(state_of(&head_socket, "wrongkey"), None);
    assert_eq!(state_of(&head_socket, "replayer"), None, "never confirmed");
}
