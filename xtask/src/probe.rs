//! A port scanner on the LAN, for tests of what a node exposes to it: a
//! TCP SYN to one port of a VM on the [`Hub`], sent from a LAN address
//! that belongs to no VM (not a cluster member), and what came back.
//!
//! The probe is a station of its own on the segment with a made-up MAC.
//! No host stack owns its address, so it speaks the little ARP and TCP it
//! needs by hand: it resolves the VM's MAC, answers the VM's ARP for its
//! own address (the VM asks before it can reply), and resets the
//! connection a SYN+ACK half-opened, as a SYN scan does.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::ErrorKind::{Interrupted, TimedOut, WouldBlock};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::vm::Hub;

/// What a port answered a SYN with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// SYN+ACK: something listens and accepts the prober.
    Open,
    /// RST: nothing listens, or a firewall rejects the prober.
    Closed,
    /// Nothing within the wait: the SYN was dropped.
    Silent,
}

/// Whether `to:port` answers a TCP SYN from `from`, an address on the
/// hub's segment that no VM has. `wait` bounds each exchange: the ARP
/// request for `to` (an error if unanswered: no such host, so no verdict)
/// and then the SYN (unanswered, [`Verdict::Silent`]).
pub fn tcp(
    hub: &Hub,
    from: Ipv4Addr,
    to: Ipv4Addr,
    port: u16,
    wait: Duration,
) -> anyhow::Result<Verdict> {
    let station = Station {
        socket: hub.station()?,
        address: from,
    };
    let mac = station.resolve(to, wait)?;
    station.knock(mac, SocketAddrV4::new(to, port), wait)
}

type Mac = [u8; 6];

/// The probe's MAC: locally administered (the 0x02 bit), so no NIC's.
const MAC: Mac = [0x02, 0, 0, 0, 0, 0xfe];
const BROADCAST: Mac = [0xff; 6];

/// How long a request goes unanswered before it is sent again, as a real
/// scanner retries: even on loopback a frame is lost when a buffer is full.
const RESEND: Duration = Duration::from_secs(1);

const IPV4: u16 = 0x0800;
const ARP: u16 = 0x0806;
const TCP: u8 = 6;
const REQUEST: u16 = 1;
const REPLY: u16 = 2;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// The probe's port on the hub and the address it answers ARP for.
struct Station {
    socket: UdpSocket,
    address: Ipv4Addr,
}

impl Station {
    /// `ip`'s MAC, from its ARP reply.
    fn resolve(&self, ip: Ipv4Addr, wait: Duration) -> anyhow::Result<Mac> {
        let request = Arp {
            operation: REQUEST,
            sender_mac: MAC,
            sender_ip: self.address,
            target_mac: [0; 6],
            target_ip: ip,
        };
        let reply = |frame: &[u8]| {
            let arp = Arp::parse(frame)?;
            let ours = arp.operation == REPLY && arp.sender_ip == ip;
            (ours && arp.target_ip == self.address).then_some(arp.sender_mac)
        };
        self.exchange(&request.frame(BROADCAST), wait, reply)?
            .with_context(|| {
                format!(
                    "no ARP reply from {ip} to {} within {wait:?}: no host has that address \
                     on the segment",
                    self.address
                )
            })
    }

    /// Sends a SYN to `to` (at `mac`) and tells its answer.
    fn knock(&self, mac: Mac, to: SocketAddrV4, wait: Duration) -> anyhow::Result<Verdict> {
        let syn = Segment {
            source: SocketAddrV4::new(self.address, ephemeral_port()),
            destination: to,
            seq: random() as u32,
            ack: 0,
            flags: SYN,
        };
        let Some(reply) = self.exchange(&syn.frame(MAC, mac), wait, |f| answer(f, &syn))? else {
            return Ok(Verdict::Silent);
        };
        if reply.flags & RST != 0 {
            return Ok(Verdict::Closed);
        }
        // Nothing here will complete the handshake: without a reset the VM
        // keeps the half-open connection and retransmits its SYN+ACK.
        let reset = Segment {
            seq: reply.ack,
            ack: 0,
            flags: RST,
            ..syn
        };
        self.send(&reset.frame(MAC, mac))?;
        Ok(Verdict::Open)
    }

    /// Sends `request`, again every [`RESEND`], until a frame read gives
    /// `reply`'s `Some` or `wait` has passed (`None`); answers ARP for the
    /// station's address meanwhile.
    fn exchange<T>(
        &self,
        request: &[u8],
        wait: Duration,
        mut reply: impl FnMut(&[u8]) -> Option<T>,
    ) -> anyhow::Result<Option<T>> {
        let deadline = later(wait)?;
        // A jumbo frame's worth, as the hub reads.
        let mut buf = vec![0u8; 65536];
        loop {
            self.send(request)?;
            let round = later(RESEND)?.min(deadline);
            while let Some(len) = self.receive(&mut buf, round)? {
                let frame = &buf[..len];
                self.answer_arp(frame)?;
                if let Some(answer) = reply(frame) {
                    return Ok(Some(answer));
                }
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    /// Tells whoever asks for the station's address that it is at [`MAC`].
    fn answer_arp(&self, frame: &[u8]) -> anyhow::Result<()> {
        match Arp::parse(frame) {
            Some(arp) if arp.operation == REQUEST && arp.target_ip == self.address => {
                let reply = Arp {
                    operation: REPLY,
                    sender_mac: MAC,
                    sender_ip: self.address,
                    target_mac: arp.sender_mac,
                    target_ip: arp.sender_ip,
                };
                self.send(&reply.frame(arp.sender_mac))
            }
            _ => Ok(()),
        }
    }

    fn send(&self, frame: &[u8]) -> anyhow::Result<()> {
        self.socket
            .send(frame)
            .context("sending a frame to the L2 hub")?;
        Ok(())
    }

    /// The next frame's length, or `None` once `until` has passed first.
    fn receive(&self, buf: &mut [u8], until: Instant) -> anyhow::Result<Option<usize>> {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        self.socket
            .set_read_timeout(Some(left))
            .context("setting a station's read timeout")?;
        match self.socket.recv(buf) {
            Ok(len) => Ok(Some(len)),
            // A timeout, or a signal: the caller's deadline decides.
            Err(e) if matches!(e.kind(), WouldBlock | TimedOut | Interrupted) => Ok(None),
            Err(e) => Err(e).context("receiving a frame from the L2 hub"),
        }
    }
}

/// The segment in `frame` if it is `syn`'s answer: from its destination
/// to its source, acknowledging it, a SYN+ACK or a RST.
fn answer(frame: &[u8], syn: &Segment) -> Option<Segment> {
    let reply = Segment::parse(frame)?;
    let ours = reply.source == syn.destination && reply.destination == syn.source;
    let acknowledges = reply.flags & ACK != 0 && reply.ack == syn.seq.wrapping_add(1);
    let decisive = reply.flags & (SYN | RST) != 0;
    (ours && acknowledges && decisive).then_some(reply)
}

fn later(wait: Duration) -> anyhow::Result<Instant> {
    Instant::now()
        .checked_add(wait)
        .with_context(|| format!("a wait of {wait:?} is past any clock"))
}

/// 64 bits no other probe shares: each `RandomState` has its own keys.
fn random() -> u64 {
    RandomState::new().build_hasher().finish()
}

/// A source port in the dynamic range (49152-65535), as a host's stack
/// picks: a fresh one per probe, so no answer to an earlier probe counts.
fn ephemeral_port() -> u16 {
    49152 + (random() % 16384) as u16
}

/// An ARP packet for IPv4 over Ethernet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Arp {
    operation: u16,
    sender_mac: Mac,
    sender_ip: Ipv4Addr,
    target_mac: Mac,
    target_ip: Ipv4Addr,
}

impl Arp {
    /// Reads an Ethernet frame carrying ARP for IPv4; `None` for anything else.
    fn parse(frame: &[u8]) -> Option<Arp> {
        let (ARP, arp) = ethernet(frame)? else {
            return None;
        };
        // Ethernet (1), IPv4, 6-byte and 4-byte addresses.
        if arp.get(..6)? != [0, 1, 8, 0, 6, 4] {
            return None;
        }
        Some(Arp {
            operation: u16::from_be_bytes(bytes(arp, 6)?),
            sender_mac: bytes(arp, 8)?,
            sender_ip: bytes(arp, 14)?.into(),
            target_mac: bytes(arp, 18)?,
            target_ip: bytes(arp, 24)?.into(),
        })
    }

    /// The Ethernet frame to `destination` from the sender's MAC.
    fn frame(&self, destination: Mac) -> Vec<u8> {
        let mut arp = vec![0, 1, 8, 0, 6, 4];
        arp.extend(self.operation.to_be_bytes());
        arp.extend(self.sender_mac);
        arp.extend(self.sender_ip.octets());
        arp.extend(self.target_mac);
        arp.extend(self.target_ip.octets());
        ethernet_frame(destination, self.sender_mac, ARP, &arp)
    }
}

/// The TCP header fields a probe looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Segment {
    source: SocketAddrV4,
    destination: SocketAddrV4,
    seq: u32,
    ack: u32,
    flags: u8,
}

impl Segment {
    /// Reads an Ethernet frame carrying an unfragmented IPv4 packet with a
    /// TCP header; `None` for anything else. Checksums are not checked: the
    /// hub's loopback corrupts nothing.
    fn parse(frame: &[u8]) -> Option<Segment> {
        let (IPV4, ip) = ethernet(frame)? else {
            return None;
        };
        let header = usize::from(ip.first()? & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes(bytes(ip, 2)?));
        let fragment = u16::from_be_bytes(bytes(ip, 6)?) & 0x1fff;
        let version = ip[0] >> 4;
        if version != 4 || header < 20 || total < header || ip.get(9)? != &TCP || fragment != 0 {
            return None;
        }
        // Past `total` is the Ethernet frame's padding.
        let tcp = ip.get(header..total)?;
        let offset = usize::from(tcp.get(12)? >> 4) * 4;
        if offset < 20 || offset > tcp.len() {
            return None;
        }
        let address = |at| -> Option<Ipv4Addr> { Some(bytes(ip, at)?.into()) };
        let port = |at| -> Option<u16> { Some(u16::from_be_bytes(bytes(tcp, at)?)) };
        Some(Segment {
            source: SocketAddrV4::new(address(12)?, port(0)?),
            destination: SocketAddrV4::new(address(16)?, port(2)?),
            seq: u32::from_be_bytes(bytes(tcp, 4)?),
            ack: u32::from_be_bytes(bytes(tcp, 8)?),
            flags: *tcp.get(13)?,
        })
    }

    /// The Ethernet frame to `destination` from `source`; a SYN carries an
    /// MSS option, as every real stack's does.
    fn frame(&self, source: Mac, destination: Mac) -> Vec<u8> {
        let (from, to) = (*self.source.ip(), *self.destination.ip());
        let ip = ipv4_packet(from, to, TCP, &self.bytes());
        ethernet_frame(destination, source, IPV4, &ip)
    }

    /// The TCP header, with its checksum over the IPv4 pseudo-header.
    fn bytes(&self) -> Vec<u8> {
        let options: &[u8] = match self.flags & SYN {
            0 => &[],
            _ => &[2, 4, 0x05, 0xb4], // MSS 1460: Ethernet's MTU less 40.
        };
        let words = (20 + options.len()) / 4;
        let mut tcp = Vec::with_capacity(words * 4);
        tcp.extend(self.source.port().to_be_bytes());
        tcp.extend(self.destination.port().to_be_bytes());
        tcp.extend(self.seq.to_be_bytes());
        tcp.extend(self.ack.to_be_bytes());
        tcp.extend([(words as u8) << 4, self.flags]);
        tcp.extend(64240u16.to_be_bytes()); // The window Linux offers.
        tcp.extend([0, 0, 0, 0]); // Checksum, urgent pointer.
        tcp.extend(options);
        let mut pseudo = Vec::with_capacity(12 + tcp.len());
        pseudo.extend(self.source.ip().octets());
        pseudo.extend(self.destination.ip().octets());
        pseudo.extend([0, TCP]);
        pseudo.extend((tcp.len() as u16).to_be_bytes());
        pseudo.extend(&tcp);
        tcp[16..18].copy_from_slice(&checksum(&pseudo).to_be_bytes());
        tcp
    }
}

/// An IPv4 packet (no options, don't fragment, TTL 64) around `payload`.
fn ipv4_packet(source: Ipv4Addr, destination: Ipv4Addr, protocol: u8, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend(total.to_be_bytes());
    ip.extend([0, 0, 0x40, 0, 64, protocol, 0, 0]);
    ip.extend(source.octets());
    ip.extend(destination.octets());
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip.extend(payload);
    ip
}

/// An Ethernet frame, padded to the 60-byte minimum as a NIC pads it.
fn ethernet_frame(destination: Mac, source: Mac, kind: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(14 + payload.len());
    frame.extend(destination);
    frame.extend(source);
    frame.extend(kind.to_be_bytes());
    frame.extend(payload);
    frame.resize(frame.len().max(60), 0);
    frame
}

/// An Ethernet frame's EtherType and payload.
fn ethernet(frame: &[u8]) -> Option<(u16, &[u8])> {
    Some((u16::from_be_bytes(bytes(frame, 12)?), frame.get(14..)?))
}

/// The `N` bytes at `at`, if there are that many.
fn bytes<const N: usize>(data: &[u8], at: usize) -> Option<[u8; N]> {
    data.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// The Internet checksum (RFC 1071): the ones' complement of the ones'
/// complement sum of the 16-bit words, an odd last byte padded with zero.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|word| u32::from(word[0]) << 8 | u32::from(*word.get(1).unwrap_or(&0)))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::mpsc::{channel, Receiver, Sender};

    const PROBE_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 200);
    const VM_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
    const VM_MAC: Mac = [0x52, 0x54, 0, 0x77, 0, 3];

    /// The ones' complement sum of big-endian words, folded in a u64 at
    /// the end: another way to the same arithmetic as [`checksum`].
    fn ones_sum(data: &[u8]) -> u16 {
        let mut padded = data.to_vec();
        if padded.len() % 2 == 1 {
            padded.push(0);
        }
        let mut sum: u64 = padded
            .chunks_exact(2)
            .map(|w| u64::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        sum as u16
    }

    fn syn() -> Segment {
        Segment {
            source: SocketAddrV4::new(PROBE_IP, 50000),
            destination: SocketAddrV4::new(VM_IP, 22),
            seq: 0x1234_5678,
            ack: 0,
            flags: SYN,
        }
    }

    /// `syn`'s answer with `flags`, as the VM would send it.
    fn reply_to(syn: &Segment, flags: u8) -> Segment {
        Segment {
            source: syn.destination,
            destination: syn.source,
            seq: 0xdead_beef,
            ack: syn.seq.wrapping_add(1),
            flags,
        }
    }

    #[test]
    fn the_checksum_is_rfc_1071s() {
        // RFC 1071's example words sum to 0xddf2.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
        // A well-known IPv4 header (192.168.0.1 to .199, UDP) with its
        // checksum, 0xb861, zeroed; whole, it checks out.
        let mut header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&header), 0);
        header[10..12].fill(0);
        assert_eq!(checksum(&header), 0xb861);
        // An odd byte counts as the high half of a last word.
        assert_eq!(checksum(&[0x12, 0x34, 0x56]), !0x6834);
    }

    #[test]
    fn a_syn_frame_checks_out() {
        let frame = syn().frame(MAC, VM_MAC);
        assert_eq!(frame.len(), 60, "58 bytes padded to Ethernet's minimum");
        assert_eq!(&frame[..12], [VM_MAC, MAC].concat());
        assert_eq!(frame[12..14], [0x08, 0x00]);
        let ip = &frame[14..];
        assert_eq!(ip[..4], [0x45, 0, 0, 44]);
        assert_eq!(ip[9], 6);
        assert_eq!(ones_sum(&ip[..20]), 0xffff, "the IPv4 header's checksum");
        let tcp = &ip[20..];
        assert_eq!(tcp[12] >> 4, 6, "a 24-byte header");
        assert_eq!(tcp[13], SYN);
        assert_eq!(tcp[20..24], [2, 4, 0x05, 0xb4], "the MSS option");
        let mut pseudo = [ip[12..20].to_vec(), vec![0, 6, 0, 24]].concat();
        pseudo.extend(&tcp[..24]);
        assert_eq!(ones_sum(&pseudo), 0xffff, "the TCP checksum");
        assert_eq!(Segment::parse(&frame), Some(syn()));
    }

    #[test]
    fn a_reset_frame_is_padded_and_checks_out() {
        let reset = Segment {
            flags: RST,
            seq: 7,
            ..syn()
        };
        let frame = reset.frame(MAC, VM_MAC);
        assert_eq!(frame.len(), 60, "54 bytes padded to Ethernet's minimum");
        let ip = &frame[14..34];
        assert_eq!(ones_sum(ip), 0xffff);
        let mut pseudo = [ip[12..20].to_vec(), vec![0, 6, 0, 20]].concat();
        pseudo.extend(&frame[34..54]);
        assert_eq!(ones_sum(&pseudo), 0xffff);
        assert_eq!(
            Segment::parse(&frame),
            Some(reset),
            "the padding is not TCP"
        );
    }

    #[test]
    fn an_arp_reply_is_read() {
        let request = Arp {
            operation: REQUEST,
            sender_mac: MAC,
            sender_ip: PROBE_IP,
            target_mac: [0; 6],
            target_ip: VM_IP,
        };
        let frame = request.frame(BROADCAST);
        assert_eq!(frame.len(), 60);
        assert_eq!(frame[..6], BROADCAST);
        assert_eq!(frame[12..14], [0x08, 0x06]);
        assert_eq!(Arp::parse(&frame), Some(request));
        let reply = Arp {
            operation: REPLY,
            sender_mac: VM_MAC,
            sender_ip: VM_IP,
            target_mac: MAC,
            target_ip: PROBE_IP,
        };
        assert_eq!(Arp::parse(&reply.frame(MAC)), Some(reply));
        assert_eq!(Segment::parse(&reply.frame(MAC)), None);
    }

    #[test]
    fn answers_to_a_syn_are_read() {
        let syn = syn();
        for flags in [SYN | ACK, RST | ACK] {
            let reply = reply_to(&syn, flags);
            let frame = reply.frame(VM_MAC, MAC);
            assert_eq!(Segment::parse(&frame), Some(reply));
            assert_eq!(answer(&frame, &syn), Some(reply));
            assert_eq!(Arp::parse(&frame), None);
        }
        let not_ours = [
            Segment {
                ack: syn.seq,
                ..reply_to(&syn, RST | ACK)
            },
            Segment {
                source: SocketAddrV4::new(VM_IP, 23),
                ..reply_to(&syn, SYN | ACK)
            },
            Segment {
                destination: SocketAddrV4::new(PROBE_IP, 50001),
                ..reply_to(&syn, SYN | ACK)
            },
            reply_to(&syn, ACK),
            reply_to(&syn, RST),
            syn,
        ];
        for reply in not_ours {
            assert_eq!(answer(&reply.frame(VM_MAC, MAC), &syn), None, "{reply:?}");
        }
    }

    #[test]
    fn garbage_is_ignored() {
        let segment = reply_to(&syn(), SYN | ACK).frame(VM_MAC, MAC);
        let arp = Arp {
            operation: REPLY,
            sender_mac: VM_MAC,
            sender_ip: VM_IP,
            target_mac: MAC,
            target_ip: PROBE_IP,
        }
        .frame(MAC);
        // 14 + 20 + 24 bytes, then padding.
        for len in 0..58 {
            assert_eq!(Segment::parse(&segment[..len]), None, "{len} bytes");
        }
        for len in 0..42 {
            assert_eq!(Arp::parse(&arp[..len]), None, "{len} bytes");
        }
        let mut bad = segment.clone();
        bad[14] = 0x44; // A 16-byte IPv4 header.
        assert_eq!(Segment::parse(&bad), None);
        let mut bad = segment.clone();
        bad[14 + 20 + 12] = 0x40; // A 16-byte TCP header.
        assert_eq!(Segment::parse(&bad), None);
        let mut bad = segment.clone();
        bad[14 + 20 + 12] = 0xf0; // A TCP header past the packet.
        assert_eq!(Segment::parse(&bad), None);
        let mut bad = segment.clone();
        bad[14 + 9] = 17; // UDP.
        assert_eq!(Segment::parse(&bad), None);
        let mut bad = segment.clone();
        bad[14 + 6..14 + 8].copy_from_slice(&[0, 1]); // A later fragment.
        assert_eq!(Segment::parse(&bad), None);
        let mut bad = segment.clone();
        bad[14 + 2..14 + 4].copy_from_slice(&[0xff, 0xff]); // Longer than the frame.
        assert_eq!(Segment::parse(&bad), None);
        let mut bad = arp.clone();
        bad[14 + 5] = 16; // IPv6-sized protocol addresses.
        assert_eq!(Arp::parse(&bad), None);
        let noise: Vec<u8> = (0..=255u8).cycle().take(1500).collect();
        assert_eq!(Segment::parse(&noise), None);
        assert_eq!(Arp::parse(&noise), None);
        assert_eq!(Segment::parse(&[0xff; 60]), None);
        assert_eq!(Arp::parse(&[]), None);
    }

    /// A stand-in VM on a hub at [`VM_IP`]: answers ARP for its address;
    /// to a SYN to port 1, SYN+ACK, to port 2, RST, else nothing. Like a
    /// real stack it ARPs for the sender before it answers (learning
    /// nothing from requests), and it reports every segment it gets.
    struct FakeVm {
        stop: UdpSocket,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    /// The EtherType of the frame that ends a [`FakeVm`] (IEEE's for local
    /// experiments).
    const STOP: u16 = 0x88b5;

    impl FakeVm {
        fn start(hub: &Hub) -> (FakeVm, Receiver<Segment>) {
            let socket = hub.station().unwrap();
            // A safety net only: the stop frame ends it.
            socket
                .set_read_timeout(Some(Duration::from_secs(120)))
                .unwrap();
            let (seen, segments) = channel();
            let thread = std::thread::spawn(move || serve(&socket, &seen));
            let vm = FakeVm {
                stop: hub.station().unwrap(),
                thread: Some(thread),
            };
            (vm, segments)
        }
    }

    impl Drop for FakeVm {
        fn drop(&mut self) {
            let _ = self.stop.send(&ethernet_frame(BROADCAST, MAC, STOP, &[]));
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    fn serve(socket: &UdpSocket, seen: &Sender<Segment>) {
        let send = |frame: Vec<u8>| socket.send(&frame).unwrap();
        let mut neighbours: HashMap<Ipv4Addr, Mac> = HashMap::new();
        let mut pending: Vec<Segment> = Vec::new();
        let mut buf = vec![0u8; 65536];
        while let Ok(len) = socket.recv(&mut buf) {
            let frame = &buf[..len];
            if ethernet(frame).is_some_and(|(kind, _)| kind == STOP) {
                return;
            }
            if let Some(arp) = Arp::parse(frame).filter(|a| a.target_ip == VM_IP) {
                if arp.operation == REQUEST {
                    let reply = Arp {
                        operation: REPLY,
                        sender_mac: VM_MAC,
                        sender_ip: VM_IP,
                        target_mac: arp.sender_mac,
                        target_ip: arp.sender_ip,
                    };
                    send(reply.frame(arp.sender_mac));
                } else {
                    neighbours.insert(arp.sender_ip, arp.sender_mac);
                }
            }
            if let Some(segment) = Segment::parse(frame).filter(|s| *s.destination.ip() == VM_IP) {
                let _ = seen.send(segment);
                let to = *segment.source.ip();
                if let Some(reply) = fake_answer(&segment) {
                    pending.push(reply);
                    if !neighbours.contains_key(&to) {
                        let request = Arp {
                            operation: REQUEST,
                            sender_mac: VM_MAC,
                            sender_ip: VM_IP,
                            target_mac: [0; 6],
                            target_ip: to,
                        };
                        send(request.frame(BROADCAST));
                    }
                }
            }
            pending.retain(|reply| match neighbours.get(reply.destination.ip()) {
                Some(&mac) => {
                    send(reply.frame(VM_MAC, mac));
                    false
                }
                None => true,
            });
        }
    }

    fn fake_answer(segment: &Segment) -> Option<Segment> {
        let flags = match segment.destination.port() {
            _ if segment.flags != SYN => return None,
            1 => SYN | ACK,
            2 => RST | ACK,
            _ => return None,
        };
        Some(reply_to(segment, flags))
    }

    /// The next segment the fake VM got that passes `test`, within 5 s.
    fn next(segments: &Receiver<Segment>, test: impl Fn(&Segment) -> bool) -> Segment {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let segment = segments.recv_timeout(left).expect("no such segment");
            if test(&segment) {
                return segment;
            }
        }
    }

    #[test]
    fn a_vm_on_the_hub_is_probed() {
        let hub = Hub::start().unwrap();
        let (_vm, segments) = FakeVm::start(&hub);
        let wait = Duration::from_secs(5);

        assert_eq!(tcp(&hub, PROBE_IP, VM_IP, 1, wait).unwrap(), Verdict::Open);
        let syn = next(&segments, |s| s.flags == SYN);
        assert_eq!(syn.destination, SocketAddrV4::new(VM_IP, 1));
        assert!(syn.source.port() >= 49152);
        let reset = next(&segments, |s| s.flags & RST != 0);
        assert_eq!(
            reset,
            Segment {
                seq: syn.seq.wrapping_add(1),
                flags: RST,
                ..syn
            },
            "the half-open connection is reset"
        );

        assert_eq!(
            tcp(&hub, PROBE_IP, VM_IP, 2, wait).unwrap(),
            Verdict::Closed
        );
        let quiet = Duration::from_millis(300);
        assert_eq!(
            tcp(&hub, PROBE_IP, VM_IP, 3, quiet).unwrap(),
            Verdict::Silent
        );
        let syn = next(&segments, |s| s.destination.port() == 3);
        assert_eq!(syn.flags, SYN);
    }

    #[test]
    fn no_host_no_verdict() {
        let hub = Hub::start().unwrap();
        let (_vm, _segments) = FakeVm::start(&hub);
        let nobody = Ipv4Addr::new(10, 77, 0, 9);
        let wait = Duration::from_millis(200);
        let error = tcp(&hub, PROBE_IP, nobody, 22, wait).unwrap_err();
        assert!(error.to_string().contains("10.77.0.9"), "{error:#}");
    }
}
