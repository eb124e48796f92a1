// SPDX-License-Identifier: GPL-3.0-or-later
//! The head's LAN beacon, for drones whose image names no head address.
//!
//! Every second the head broadcasts, on each IPv4 LAN it is on, a datagram
//! naming its join address there, signed with its beacon key
//! ([`crate::keys::beacon_key`]). A drone accepts a beacon only if it names
//! the head key pinned in its image, verifies against the beacon key pinned
//! beside it, and is newer than the last one it accepted. Anyone on the LAN
//! can send datagrams, so everything else is ignored and logged, with a rate
//! limit. A replayed beacon can only repeat the newest address the head
//! announced, and the Noise handshake, pinned to the head's key, still
//! decides whether the drone joins.
//!
//! A signature check is the one costly step, so a flood of forgeries must
//! not buy many: the cheap checks (size, magic, head key, newer than the
//! last accepted) come first, an address whose beacons fail to verify is
//! not checked again until it calms down (one that never forges, like the
//! head's, never waits), and all checks together are capped per second.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use nix::errno::Errno;
use nix::net::if_::InterfaceFlags;
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};

use crate::codec::{Reader, Writer};
use crate::keys::{fingerprint, ClusterIdentity};
use crate::log::{info, Bucket, Penalties, RejectLog};
use crate::proto::Timestamps;

/// The UDP port drones listen on for beacons.
pub const BEACON_PORT: u16 = 7701;
/// How often the head beacons unless told otherwise: a drone that has
/// just come up waits for the next beacon before it can join, so this is
/// the mean wait's double; four small datagrams a second cost a LAN nothing.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(250);
/// Protocol name and version: first in every beacon, and signed with it.
const MAGIC: &[u8] = b"chaos tyd beacon 1";
const SIGNATURE_LEN: usize = 64;
/// Magic, head key, IPv4 address, port, timestamp, signature.
const LEN: usize = MAGIC.len() + 32 + 4 + 2 + 8 + SIGNATURE_LEN;
/// Other clusters' heads a drone names once each before it stops telling
/// them apart (a LAN full of forged head keys must not grow memory).
const MAX_OTHER_CLUSTERS: usize = 16;

/// What a beacon says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beacon {
    /// The head's static public key: which cluster this is.
    pub head: [u8; 32],
    /// Where the head accepts joins on the LAN the beacon went out on.
    pub join: SocketAddrV4,
    /// Wall-clock nanoseconds, strictly increasing per head process.
    pub timestamp: u64,
}

/// Why a datagram on the beacon port was ignored, or why beacons could not
/// be sent or listened for at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BeaconError {
    #[error("not a chaos beacon ({0} bytes)")]
    Foreign(usize),
    #[error("a beacon of another cluster (head fingerprint {0})")]
    OtherCluster(String),
    #[error("a beacon whose signature does not verify against this image's beacon key (forged)")]
    Forged,
    #[error("a beacon no newer than the last one accepted (replayed)")]
    Replayed,
    #[error("a beacon left unchecked: {0}")]
    Unchecked(&'static str),
    #[error("{} is not an Ed25519 public key", crate::keys::BEACON_PUB)]
    Key,
    #[error("a socket for beacons: {0}")]
    Socket(Errno),
    #[error("listening for beacons on UDP port {port}: {error}")]
    Bind { port: u16, error: Errno },
}

/// std's socket errors as the errno they carry (they all come from a
/// system call), so that [`BeaconError`] stays comparable.
fn errno(error: std::io::Error) -> Errno {
    Errno::from_raw(error.raw_os_error().unwrap_or(libc::EIO))
}

impl Beacon {
    pub(crate) fn signed_part(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(MAGIC)
            .raw(&self.head)
            .ipv4(*self.join.ip())
            .u16(self.join.port())
            .u64(self.timestamp);
        w.finish()
    }

    /// The datagram: the beacon and its signature.
    pub fn seal(&self, key: &SigningKey) -> Vec<u8> {
        let mut bytes = self.signed_part();
        let signature = key.sign(&bytes);
        bytes.extend_from_slice(&signature.to_bytes());
        bytes
    }

    /// Reads a datagram and checks that it is a beacon of the head `head`
    /// signed with `key`; freshness is the caller's to check.
    pub fn open(datagram: &[u8], head: &[u8; 32], key: &VerifyingKey) -> Result<Self, BeaconError> {
        let beacon = Self::read(datagram, head)?;
        beacon.verify(datagram, key)?;
        Ok(beacon)
    }

    /// The cheap half of [`Beacon::open`]: what a datagram of the right
    /// size and magic says, if it names the head `head`; not verified.
    pub fn read(datagram: &[u8], head: &[u8; 32]) -> Result<Self, BeaconError> {
        let foreign = || BeaconError::Foreign(datagram.len());
        if datagram.len() != LEN || !datagram.starts_with(MAGIC) {
            return Err(foreign());
        }
        let mut r = Reader::new(&datagram[MAGIC.len()..LEN - SIGNATURE_LEN]);
        let mut read = || -> Result<Self, crate::codec::DecodeError> {
            Ok(Self {
                head: r.array("head key")?,
                join: SocketAddrV4::new(r.ipv4("join address")?, r.u16("join port")?),
                timestamp: r.u64("timestamp")?,
            })
        };
        let beacon = read().map_err(|_| foreign())?;
        if beacon.head != *head {
            return Err(BeaconError::OtherCluster(fingerprint(&beacon.head)));
        }
        Ok(beacon)
    }

    /// The costly half: whether `datagram`, which [`Beacon::read`] read as
    /// this beacon, is signed with `key`.
    fn verify(&self, datagram: &[u8], key: &VerifyingKey) -> Result<(), BeaconError> {
        let (body, signature) = datagram.split_at(LEN - SIGNATURE_LEN);
        let signature = Signature::from_slice(signature).map_err(|_| BeaconError::Forged)?;
        key.verify_strict(body, &signature)
            .map_err(|_| BeaconError::Forged)
    }
}

/// One LAN the head beacons on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Lan {
    interface: String,
    address: Ipv4Addr,
    broadcast: Ipv4Addr,
}

/// The IPv4 LANs of this host: interfaces that are up and can broadcast
/// (so not loopback, and not WireGuard), with an address on a subnet wider
/// than /31. Only `only`'s LAN if given. The broadcast address comes from
/// the netmask: an address added without `brd` has none recorded.
fn lans(only: Option<Ipv4Addr>) -> nix::Result<Vec<Lan>> {
    let mut lans = Vec::new();
    for ifaddr in nix::ifaddrs::getifaddrs()? {
        let wanted = InterfaceFlags::IFF_UP | InterfaceFlags::IFF_BROADCAST;
        if !ifaddr.flags.contains(wanted) || ifaddr.flags.contains(InterfaceFlags::IFF_LOOPBACK) {
            continue;
        }
        let ipv4 =
            |a: Option<socket::SockaddrStorage>| a.and_then(|a| a.as_sockaddr_in().map(|a| a.ip()));
        let (Some(address), Some(netmask)) = (ipv4(ifaddr.address), ipv4(ifaddr.netmask)) else {
            continue;
        };
        let host_bits = !u32::from(netmask);
        if host_bits >= 3 && only.is_none_or(|only| only == address) {
            lans.push(Lan {
                interface: ifaddr.interface_name,
                address,
                broadcast: Ipv4Addr::from(u32::from(address) | host_bits),
            });
        }
    }
    Ok(lans)
}

/// The head's side: beacons on every LAN, each naming the head's address
/// on that LAN. Interfaces are looked up afresh each time, so a head whose
/// address comes later (DHCP) or changes is announced as it is now.
pub struct Sender {
    socket: UdpSocket,
    key: SigningKey,
    head: [u8; 32],
    listen: SocketAddrV4,
    port: u16,
    interval: Duration,
    next: Instant,
    timestamps: Timestamps,
    /// What the log last said about where beacons go, so that it speaks
    /// only of changes.
    announced: String,
}

impl Sender {
    /// Beacons for a head accepting joins on `listen`, to UDP `port`.
    pub fn new(
        key: SigningKey,
        head: [u8; 32],
        listen: SocketAddrV4,
        port: u16,
        interval: Duration,
    ) -> Result<Self, BeaconError> {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
            .and_then(|socket| {
                socket.set_broadcast(true)?;
                socket.set_nonblocking(true)?;
                Ok(socket)
            })
            .map_err(|error| BeaconError::Socket(errno(error)))?;
        Ok(Self {
            socket,
            key,
            head,
            listen,
            port,
            interval,
            next: Instant::now(),
            timestamps: Timestamps::default(),
            announced: String::new(),
        })
    }

    /// When the next beacon is due.
    pub fn due(&self) -> Instant {
        self.next
    }

    /// Sends a beacon on every LAN if one is due.
    pub fn send(&mut self, now: Instant) {
        if now < self.next {
            return;
        }
        self.next = now + self.interval;
        let only = Some(*self.listen.ip()).filter(|ip| !ip.is_unspecified());
        let mut said = Vec::new();
        match lans(only) {
            Ok(lans) if lans.is_empty() => said.push("no IPv4 LAN to beacon on yet".into()),
            Ok(lans) => {
                for lan in lans {
                    let join = SocketAddrV4::new(lan.address, self.listen.port());
                    let to = SocketAddrV4::new(lan.broadcast, self.port);
                    let datagram = self.seal(join);
                    match self.socket.send_to(&datagram, to) {
                        Ok(_) => said.push(format!("{join} on {} to {to}", lan.interface)),
                        Err(e) => said.push(format!("{join} on {}: {e}", lan.interface)),
                    }
                }
            }
            Err(e) => said.push(format!("listing interfaces: {e}")),
        }
        let said = said.join(", ");
        if said != self.announced {
            info(format!("beacon: {said}"));
            self.announced = said;
        }
    }

    fn seal(&mut self, join: SocketAddrV4) -> Vec<u8> {
        Beacon {
            head: self.head,
            join,
            timestamp: self.timestamps.stamp(),
        }
        .seal(&self.key)
    }
}

/// Signature checks a drone makes at most, in a burst and then per second:
/// the head beacons four times a second on each LAN, and a flood of forgeries
/// costs at most these (a few ms of a core each second).
const CHECK_BURST: u32 = 20;
const CHECKS_PER_SECOND: f64 = 20.0;
/// Forged beacons an address may send before its beacons go unchecked, and
/// how many a second it is forgiven after that.
const FORGERY_BURST: u32 = 4;
const FORGIVEN_PER_SECOND: f64 = 0.5;
/// Datagrams read per call, so that a flood cannot keep the drone's loop
/// from its session.
const RECEIVE_BATCH: usize = 1024;

/// The drone's side: listens on the beacon port of every interface.
pub struct Listener {
    socket: UdpSocket,
    head: [u8; 32],
    key: VerifyingKey,
    last_timestamp: u64,
    rejects: RejectLog,
    others: HashSet<[u8; 32]>,
    checks: Bucket,
    forgers: Penalties,
    next_prune: Instant,
}

impl Listener {
    pub fn bind(port: u16, cluster: &ClusterIdentity) -> Result<Self, BeaconError> {
        let key = VerifyingKey::from_bytes(&cluster.beacon_public).map_err(|_| BeaconError::Key)?;
        let fd = socket::socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(BeaconError::Socket)?;
        // Broadcasts reach every socket bound with SO_REUSEADDR, so more
        // than one tyd on a host can listen.
        socket::setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(BeaconError::Socket)?;
        let address = SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
        socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &address)
            .map_err(|error| BeaconError::Bind { port, error })?;
        let now = Instant::now();
        Ok(Self {
            socket: UdpSocket::from(fd),
            head: cluster.head_public,
            key,
            last_timestamp: 0,
            rejects: RejectLog::new(now),
            others: HashSet::new(),
            checks: Bucket::new(CHECK_BURST, CHECKS_PER_SECOND, now),
            forgers: Penalties::new(FORGERY_BURST, FORGIVEN_PER_SECOND),
            next_prune: now,
        })
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    /// Reads the waiting datagrams (up to a batch): the join address of the
    /// newest good beacon among them, if any.
    pub fn receive(&mut self) -> Option<SocketAddrV4> {
        let now = Instant::now();
        if now >= self.next_prune {
            self.forgers.prune(now);
            self.next_prune = now + Duration::from_secs(1);
        }
        let mut found = None;
        let mut buffer = [0; 2048];
        for _ in 0..RECEIVE_BATCH {
            let Ok((len, from)) = self.socket.recv_from(&mut buffer) else {
                break;
            };
            match self.check(from, &buffer[..len], now) {
                Ok(join) => found = Some(join),
                Err(error) => self.ignored(from, &buffer[..len], error),
            }
        }
        found
    }

    fn check(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        now: Instant,
    ) -> Result<SocketAddrV4, BeaconError> {
        let beacon = Beacon::read(datagram, &self.head)?;
        if beacon.timestamp <= self.last_timestamp {
            return Err(BeaconError::Replayed);
        }
        if !self.forgers.allowed(from.ip(), now) {
            return Err(BeaconError::Unchecked("its sender keeps sending forgeries"));
        }
        if !self.checks.take(now) {
            return Err(BeaconError::Unchecked(
                "more beacons than a drone checks a second",
            ));
        }
        if let Err(error) = beacon.verify(datagram, &self.key) {
            self.forgers.failed(from.ip(), now);
            return Err(error);
        }
        self.last_timestamp = beacon.timestamp;
        Ok(beacon.join)
    }

    /// Another cluster's head is named once; anything else goes to the
    /// rate-limited log.
    fn ignored(&mut self, from: SocketAddr, datagram: &[u8], error: BeaconError) {
        if let BeaconError::OtherCluster(_) = &error {
            let head: [u8; 32] = datagram[MAGIC.len()..MAGIC.len() + 32]
                .try_into()
                .unwrap_or_default();
            if self.others.len() < MAX_OTHER_CLUSTERS {
                if self.others.insert(head) {
                    info(format!("ignoring beacons from {from}: {error}"));
                }
                return;
            }
        }
        self.rejects.reject(from, error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn beacon() -> Beacon {
        Beacon {
            head: [7; 32],
            join: "192.168.1.5:7700".parse().unwrap(),
            timestamp: 1_700_000_000_000_000_000,
        }
    }

    #[test]
    fn a_sealed_beacon_opens_with_the_right_keys_only() {
        let datagram = beacon().seal(&key(1));
        let verify = key(1).verifying_key();
        assert_eq!(Beacon::open(&datagram, &[7; 32], &verify), Ok(beacon()));
        assert_eq!(
            Beacon::open(&datagram, &[7; 32], &key(2).verifying_key()),
            Err(BeaconError::Forged)
        );
        assert!(matches!(
            Beacon::open(&datagram, &[8; 32], &verify),
            Err(BeaconError::OtherCluster(_))
        ));
    }

    #[test]
    fn a_forger_costs_a_few_checks_and_the_head_is_still_heard() {
        let cluster = ClusterIdentity {
            head_public: [7; 32],
            beacon_public: key(1).verifying_key().to_bytes(),
            cluster_key: [0; 32],
        };
        let mut listener = Listener::bind(0, &cluster).unwrap();
        let (forger, head): (SocketAddr, SocketAddr) = (
            "192.168.1.66:7701".parse().unwrap(),
            "192.168.1.5:40000".parse().unwrap(),
        );
        let now = Instant::now();
        let stamped = |timestamp| Beacon {
            timestamp,
            ..beacon()
        };
        let mut verdicts = Vec::new();
        for n in 1..=1000 {
            let forged = stamped(n).seal(&key(2));
            verdicts.push(listener.check(forger, &forged, now));
        }
        let forged = verdicts
            .iter()
            .filter(|v| **v == Err(BeaconError::Forged))
            .count();
        assert_eq!(
            forged, FORGERY_BURST as usize,
            "signature checks spent on the forger"
        );
        assert_eq!(
            verdicts.last().unwrap(),
            &Err(BeaconError::Unchecked("its sender keeps sending forgeries"))
        );
        // The head's own beacon, newer than every forgery, is checked.
        let real = stamped(2000).seal(&key(1));
        assert_eq!(listener.check(head, &real, now), Ok(beacon().join));
        assert_eq!(listener.check(head, &real, now), Err(BeaconError::Replayed));

        // Forgers on many addresses exhaust the checks of this second, not more.
        let mut checked = 0;
        for n in 0..200u8 {
            let from = SocketAddr::from(([10, 0, 1, n], 7701));
            let forged = stamped(3000 + u64::from(n)).seal(&key(2));
            if listener.check(from, &forged, now) == Err(BeaconError::Forged) {
                checked += 1;
            }
        }
        assert!(
            checked <= CHECK_BURST as usize,
            "{checked} checks in one instant"
        );
    }

    #[test]
    fn every_changed_byte_or_length_is_refused() {
        let datagram = beacon().seal(&key(1));
        let verify = key(1).verifying_key();
        for i in 0..datagram.len() {
            let mut bad = datagram.clone();
            bad[i] ^= 0x01;
            assert!(Beacon::open(&bad, &[7; 32], &verify).is_err(), "byte {i}");
        }
        for len in [0, 1, MAGIC.len(), LEN - 1, LEN + 1, 2000] {
            let mut bad = datagram.clone();
            bad.resize(len, 0);
            assert_eq!(
                Beacon::open(&bad, &[7; 32], &verify),
                Err(BeaconError::Foreign(len)),
                "{len} bytes"
            );
        }
    }
}
