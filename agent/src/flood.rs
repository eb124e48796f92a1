// SPDX-License-Identifier: GPL-3.0-or-later
//! What a hostile LAN sends a drone looking for its head: forged beacons
//! at a rate, from a network namespace of the caller's. The discovery test
//! asserts that a drone joins through it; the bench measures what it costs.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::beacon::Beacon;
use crate::proto::Timestamps;

/// Forged beacons a second in the flood of the discovery test and the
/// bench.
pub const FLOOD_RATE: u32 = 10_000;

/// Sends forged beacons of the cluster whose head key is `head`, naming
/// `lure` as its join address: the right size, magic and head key, each
/// newer than the last, signed by no key at all. `per_second` of them to
/// UDP `to` (a broadcast address) in even batches, from this thread's
/// network namespace, until `stop` is set; returns how many were sent.
pub fn beacon_flood(
    head: [u8; 32],
    lure: SocketAddrV4,
    to: SocketAddrV4,
    per_second: u32,
    stop: &AtomicBool,
) -> io::Result<u64> {
    const TICK: Duration = Duration::from_millis(10);
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|socket| socket.set_broadcast(true).map(|()| socket))
        .map_err(|e| in_context(e, "the flood's broadcast socket"))?;
    let batch = (per_second / 100).max(1);
    let mut stamps = Timestamps::default();
    let mut sent = 0;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..batch {
            let beacon = Beacon {
                head,
                join: lure,
                timestamp: stamps.stamp(),
            };
            let mut datagram = beacon.signed_part();
            datagram.extend_from_slice(&[0x5a; 64]);
            // A full send buffer drops the datagram, as a busy LAN would.
            if socket.send_to(&datagram, to).is_ok() {
                sent += 1;
            }
        }
        next += TICK;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    Ok(sent)
}

/// Moves this thread into network namespace `ns` (one `ip netns add` made).
pub fn enter_namespace(ns: &str) -> io::Result<()> {
    let path = format!("/run/netns/{ns}");
    let file = std::fs::File::open(&path).map_err(|e| in_context(e, &format!("opening {path}")))?;
    nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| in_context(e.into(), &format!("entering {path}")))
}

/// `error` with what was being done when it happened.
fn in_context(error: io::Error, what: &str) -> io::Error {
    io::Error::new(error.kind(), format!("{what}: {error}"))
}
