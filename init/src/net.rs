// SPDX-License-Identifier: GPL-3.0-or-later
//! Synchronous rtnetlink for PID 1: list links, set a link up, give it an
//! IPv4 address or take it away, install the default route, and wait for
//! carrier.
//!
//! This module owns the route netlink conversation (requests, acks, dumps,
//! link notifications) and nothing else: which interface to pick and what to
//! give it are the caller's decisions. It must never shell out (the image has
//! no `ip`), never sleep in a loop, never block past a caller's deadline, and
//! never send a packet anywhere but to the kernel.
//!
//! Requests are built from netlink-packet-route's message types, but neither
//! sent nor read through its `RouteNetlinkMessage`: that enum links in the
//! emitters and parsers of every rtnetlink family and attribute (about 600 KB
//! of a static binary with a 1.5 MB budget). Replies are decoded only as far
//! as [`Link`] needs.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::time::Instant;

use netlink_packet_core::{
    parse_string, DecodeError, Emitable, NetlinkBuffer, NetlinkDeserializable, NetlinkHeader,
    NetlinkMessage, NetlinkPayload, NetlinkSerializable, NlasIterator, NLA_TYPE_MASK, NLM_F_ACK,
    NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkFlags, LinkHeader};
use netlink_packet_route::route::{
    RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::AddressFamily;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Kernel dumps send datagrams of up to 32 KiB; twice that leaves headroom, and
/// a datagram that still does not fit is reported rather than cut short.
const RECEIVE_BUFFER: usize = 64 * 1024;

/// A link dump is retried this often when the kernel says the link table
/// changed under it (NLM_F_DUMP_INTR) before giving up.
const DUMP_TRIES: usize = 3;

// Link attributes from <linux/if_link.h>, which the libc crate lacks on
// glibc and musl.
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_OPERSTATE: u16 = 16;

/// One network interface as the kernel last described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `None` for links without a hardware address (loopback reports zeros).
    pub mac: Option<[u8; 6]>,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// IFF_LOWER_UP or operational state up; the kernel reports neither for a
    /// link that is down, so only links that are up can have carrier.
    pub carrier: bool,
    pub loopback: bool,
}

impl Link {
    /// Reads an RTM_NEWLINK payload: the ifinfomsg header, then attributes.
    fn parse(payload: &[u8]) -> Result<Self, DecodeError> {
        let header = LinkHeader::parse(payload)?;
        let mut link = Link {
            index: header.index,
            name: String::new(),
            mac: None,
            up: header.flags.contains(LinkFlags::Up),
            carrier: header.flags.contains(LinkFlags::LowerUp),
            loopback: header.flags.contains(LinkFlags::Loopback),
        };
        let attributes = payload.get(header.buffer_len()..).unwrap_or_default();
        for attribute in NlasIterator::new(attributes) {
            let attribute = attribute?;
            let value = attribute.value();
            match attribute.kind() & NLA_TYPE_MASK {
                IFLA_IFNAME => link.name = parse_string(value)?,
                IFLA_ADDRESS => {
                    link.mac = <[u8; 6]>::try_from(value).ok().filter(|mac| *mac != [0; 6]);
                }
                IFLA_OPERSTATE if value.first() == Some(&(libc::IF_OPER_UP as u8)) => {
                    link.carrier = true;
                }
                _ => {}
            }
        }
        Ok(link)
    }
}

/// What went wrong, always naming the operation and the object it was on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Opening, sending on, receiving from or polling a netlink socket failed.
    #[error("{op}: {source}")]
    Socket {
        op: String,
        #[source]
        source: io::Error,
    },
    /// The kernel answered the request with an error.
    #[error("{op}: {source}")]
    Kernel {
        op: String,
        #[source]
        source: io::Error,
    },
    /// The kernel's reply could not be decoded.
    #[error("{op}: undecodable reply from the kernel: {reason}")]
    Decode { op: String, reason: String },
    /// Every try at a dump was interrupted by concurrent changes.
    #[error("{op}: the kernel's table kept changing during the dump ({DUMP_TRIES} tries)")]
    Interrupted { op: String },
}

/// A failure before we know which operation to blame it on.
#[derive(Debug)]
enum Failure {
    Socket(io::Error),
    Kernel(io::Error),
    Decode(String),
    Interrupted,
}

impl Failure {
    fn during(self, op: impl Into<String>) -> Error {
        let op = op.into();
        match self {
            Failure::Socket(source) => Error::Socket { op, source },
            Failure::Kernel(source) => Error::Kernel { op, source },
            Failure::Decode(reason) => Error::Decode { op, reason },
            Failure::Interrupted => Error::Interrupted { op },
        }
    }
}

/// The requests init makes.
#[derive(Debug)]
enum Request {
    /// RTM_GETLINK (one link by index, or a dump) or RTM_SETLINK: the header
    /// says it all, no attributes needed.
    Link {
        message_type: u16,
        header: LinkHeader,
    },
    NewAddress(AddressMessage),
    DelAddress(AddressMessage),
    NewRoute(RouteMessage),
}

impl NetlinkSerializable for Request {
    fn message_type(&self) -> u16 {
        match self {
            Request::Link { message_type, .. } => *message_type,
            Request::NewAddress(_) => libc::RTM_NEWADDR,
            Request::DelAddress(_) => libc::RTM_DELADDR,
            Request::NewRoute(_) => libc::RTM_NEWROUTE,
        }
    }

    fn buffer_len(&self) -> usize {
        match self {
            Request::Link { header, .. } => header.buffer_len(),
            Request::NewAddress(message) | Request::DelAddress(message) => message.buffer_len(),
            Request::NewRoute(message) => message.buffer_len(),
        }
    }

    fn serialize(&self, buffer: &mut [u8]) {
        match self {
            Request::Link { header, .. } => header.emit(buffer),
            Request::NewAddress(message) | Request::DelAddress(message) => message.emit(buffer),
            Request::NewRoute(message) => message.emit(buffer),
        }
    }
}

/// The replies and notifications init reads: links, and the rest unread.
#[derive(Debug)]
enum Reply {
    Link(Link),
    Other,
}

impl NetlinkDeserializable for Reply {
    type Error = DecodeError;

    fn deserialize(header: &NetlinkHeader, payload: &[u8]) -> Result<Self, DecodeError> {
        match header.message_type {
            libc::RTM_NEWLINK => Link::parse(payload).map(Reply::Link),
            _ => Ok(Reply::Other),
        }
    }
}

/// A blocking route netlink socket with its own sequence numbers.
pub struct Netlink {
    socket: Socket,
    seq: u32,
    buffer: Vec<u8>,
}

impl Netlink {
    pub fn open() -> Result<Self, Error> {
        let open = || -> io::Result<Socket> {
            let mut socket = Socket::new(NETLINK_ROUTE)?;
            socket.bind_auto()?;
            // Connected to the kernel, the socket refuses unicasts from other
            // processes, so every reply we read is the kernel's.
            socket.connect(&SocketAddr::new(0, 0))?;
            Ok(socket)
        };
        let socket =
            open().map_err(|e| Failure::Socket(e).during("opening a route netlink socket"))?;
        Ok(Self {
            socket,
            seq: 0,
            buffer: Vec::with_capacity(RECEIVE_BUFFER),
        })
    }

    /// Every link in this network namespace, in the kernel's order.
    pub fn links(&mut self) -> Result<Vec<Link>, Error> {
        let mut tries = 0;
        loop {
            tries += 1;
            let request = Request::Link {
                message_type: libc::RTM_GETLINK,
                header: LinkHeader::default(),
            };
            match self.request(request, NLM_F_DUMP) {
                Ok(links) => return Ok(links),
                Err(Failure::Interrupted) if tries < DUMP_TRIES => continue,
                Err(failure) => return Err(failure.during("listing links")),
            }
        }
    }

    /// Sets the link up; a link that already is up stays so.
    pub fn set_up(&mut self, index: u32) -> Result<(), Error> {
        let request = Request::Link {
            message_type: libc::RTM_SETLINK,
            header: LinkHeader {
                index,
                flags: LinkFlags::Up,
                change_mask: LinkFlags::Up,
                ..LinkHeader::default()
            },
        };
        self.request(request, 0).map(drop).map_err(|failure| {
            let name = self.name_of(index);
            failure.during(format!("setting {name} up"))
        })
    }

    /// Adds `address/prefix_len` to the link, with the subnet's broadcast
    /// address, replacing an identical address so that re-running is harmless.
    pub fn add_address(
        &mut self,
        index: u32,
        address: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), Error> {
        let request = Request::NewAddress(address_message(index, address, prefix_len));
        self.request(request, NLM_F_CREATE | NLM_F_REPLACE)
            .map(drop)
            .map_err(|failure| {
                let name = self.name_of(index);
                failure.during(format!("adding {address}/{prefix_len} to {name}"))
            })
    }

    /// Removes `address/prefix_len` from the link (a lost DHCP lease).
    pub fn del_address(
        &mut self,
        index: u32,
        address: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), Error> {
        let request = Request::DelAddress(address_message(index, address, prefix_len));
        self.request(request, 0).map(drop).map_err(|failure| {
            let name = self.name_of(index);
            failure.during(format!("removing {address}/{prefix_len} from {name}"))
        })
    }

    /// Adds the IPv4 default route via `gateway`, out of link `via` if given,
    /// replacing any default route of the same metric.
    pub fn replace_default_route(
        &mut self,
        gateway: Ipv4Addr,
        via: Option<u32>,
    ) -> Result<(), Error> {
        let request = Request::NewRoute(default_route_message(gateway, via));
        self.request(request, NLM_F_CREATE | NLM_F_REPLACE)
            .map(drop)
            .map_err(|failure| {
                let dev = via
                    .map(|index| format!(" dev {}", self.name_of(index)))
                    .unwrap_or_default();
                failure.during(format!("adding default route via {gateway}{dev}"))
            })
    }

    /// Returns the first link accepted by `among` that has carrier, waiting
    /// for link notifications until `deadline`; `None` if none got carrier in
    /// time. It looks at least once, even past the deadline. Links only get
    /// carrier once up: set the candidates up first.
    pub fn wait_for_carrier(
        &mut self,
        mut among: impl FnMut(&Link) -> bool,
        deadline: Instant,
    ) -> Result<Option<Link>, Error> {
        const OP: &str = "waiting for carrier";
        // Subscribed before the first dump, so a link that gains carrier
        // between the dump and the first poll is not missed.
        let monitor = link_monitor().map_err(|e| Failure::Socket(e).during(OP))?;
        let mut buffer = Vec::with_capacity(RECEIVE_BUFFER);
        let mut resync = true;
        loop {
            if resync {
                resync = false;
                let links = self.links()?;
                if let Some(link) = links.into_iter().find(|link| link.carrier && among(link)) {
                    return Ok(Some(link));
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            // Rounded up so that we never wake just before the deadline and
            // spin; capped because poll takes an int, and the loop goes on.
            let millis = (deadline - now).as_nanos().div_ceil(1_000_000);
            let timeout = PollTimeout::from(u16::try_from(millis).unwrap_or(u16::MAX));
            let mut fds = [PollFd::new(monitor.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(0) | Err(Errno::EINTR) => continue,
                Ok(_) => {}
                Err(errno) => return Err(Failure::Socket(errno.into()).during(OP)),
            }
            match receive(&monitor, &mut buffer) {
                Ok(()) => {}
                // The kernel dropped notifications for us: only a fresh dump
                // tells what we missed.
                Err(Failure::Socket(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    resync = true;
                    continue;
                }
                Err(failure) => return Err(failure.during(OP)),
            }
            for bytes in Messages(&buffer) {
                let message = bytes.and_then(decode).map_err(|f| f.during(OP))?;
                if let NetlinkPayload::InnerMessage(Reply::Link(link)) = message.payload {
                    if link.carrier && among(&link) {
                        return Ok(Some(link));
                    }
                }
            }
        }
    }

    /// The link's name for an error message; the index when even that fails.
    fn name_of(&mut self, index: u32) -> String {
        let request = Request::Link {
            message_type: libc::RTM_GETLINK,
            header: LinkHeader {
                index,
                ..LinkHeader::default()
            },
        };
        self.request(request, 0)
            .ok()
            .and_then(|links| links.into_iter().next())
            .map_or_else(|| format!("link #{index}"), |link| link.name)
    }

    /// Sends one request and collects the links among its replies, up to the
    /// ack (or, for a dump, NLMSG_DONE).
    fn request(&mut self, request: Request, flags: u16) -> Result<Vec<Link>, Failure> {
        // Zero is what notifications carry; never use it for a request.
        self.seq = self.seq.wrapping_add(1).max(1);
        let packet = encode(request, flags, self.seq);
        loop {
            match self.socket.send(&packet, 0) {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Failure::Socket(e)),
            }
        }
        let mut links = Vec::new();
        loop {
            receive(&self.socket, &mut self.buffer)?;
            if absorb(&self.buffer, self.seq, &mut links)? == Progress::Complete {
                return Ok(links);
            }
        }
    }
}

/// A socket subscribed to link notifications.
fn link_monitor() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.add_membership(libc::RTNLGRP_LINK)?;
    Ok(socket)
}

fn address_message(index: u32, address: Ipv4Addr, prefix_len: u8) -> AddressMessage {
    let mut message = AddressMessage::default();
    message.header.family = AddressFamily::Inet;
    message.header.prefix_len = prefix_len;
    message.header.index = index;
    // IFA_LOCAL is the address itself; IFA_ADDRESS is the peer, which on a
    // broadcast link is the same (as `ip addr add` sends it).
    message.attributes = vec![
        AddressAttribute::Local(address.into()),
        AddressAttribute::Address(address.into()),
    ];
    if let Some(broadcast) = broadcast(address, prefix_len) {
        message
            .attributes
            .push(AddressAttribute::Broadcast(broadcast));
    }
    message
}

/// The subnet's broadcast address; none for /31 and /32, which have no room
/// for one (RFC 3021), nor for lengths the kernel will reject anyway.
fn broadcast(address: Ipv4Addr, prefix_len: u8) -> Option<Ipv4Addr> {
    (prefix_len <= 30).then(|| Ipv4Addr::from(u32::from(address) | (u32::MAX >> prefix_len)))
}

fn default_route_message(gateway: Ipv4Addr, via: Option<u32>) -> RouteMessage {
    let mut message = RouteMessage::default();
    message.header.address_family = AddressFamily::Inet;
    message.header.table = RouteHeader::RT_TABLE_MAIN;
    // "boot" is what `ip route add` and the kernel's own ip= autoconfig use.
    message.header.protocol = RouteProtocol::Boot;
    message.header.scope = RouteScope::Universe;
    message.header.kind = RouteType::Unicast;
    message
        .attributes
        .push(RouteAttribute::Gateway(gateway.into()));
    if let Some(index) = via {
        message.attributes.push(RouteAttribute::Oif(index));
    }
    message
}

/// Serialises a request that asks for an ack, whatever else `flags` asks.
fn encode(request: Request, flags: u16, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    header.sequence_number = seq;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(request));
    packet.finalize();
    let mut bytes = vec![0; packet.buffer_len()];
    packet.serialize(&mut bytes);
    bytes
}

/// Reads one datagram into `buffer`, replacing what it held.
fn receive(socket: &Socket, buffer: &mut Vec<u8>) -> Result<(), Failure> {
    loop {
        buffer.clear();
        // MSG_TRUNC makes recv return the datagram's real length, so a
        // datagram larger than the buffer is detected instead of cut short.
        match socket.recv(buffer, libc::MSG_TRUNC) {
            Ok(len) if len > buffer.len() => {
                return Err(Failure::Decode(format!(
                    "a {len}-byte datagram does not fit the {}-byte buffer",
                    buffer.len()
                )))
            }
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Failure::Socket(e)),
        }
    }
}

/// The netlink messages packed into one datagram.
struct Messages<'a>(&'a [u8]);

impl<'a> Iterator for Messages<'a> {
    type Item = Result<&'a [u8], Failure>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let len = match NetlinkBuffer::new_checked(self.0) {
            Ok(buffer) => buffer.length() as usize,
            Err(e) => {
                self.0 = &[];
                return Some(Err(Failure::Decode(e.to_string())));
            }
        };
        let message = &self.0[..len];
        // Messages are padded to 4 bytes; the last one may lack its padding.
        self.0 = &self.0[len.next_multiple_of(4).min(self.0.len())..];
        Some(Ok(message))
    }
}

fn decode(bytes: &[u8]) -> Result<NetlinkMessage<Reply>, Failure> {
    NetlinkMessage::deserialize(bytes).map_err(|e| Failure::Decode(e.to_string()))
}

#[derive(Debug, PartialEq, Eq)]
enum Progress {
    Pending,
    Complete,
}

/// Takes in one datagram of replies to request `seq`: links go to `links`;
/// an ack or NLMSG_DONE completes the request; an error code from the kernel
/// fails it. Messages for other sequence numbers (late replies to a request
/// that failed half-way) are skipped.
fn absorb(datagram: &[u8], seq: u32, links: &mut Vec<Link>) -> Result<Progress, Failure> {
    for bytes in Messages(datagram) {
        let bytes = bytes?;
        let header = NetlinkBuffer::new(bytes);
        if header.sequence_number() != seq {
            continue;
        }
        if header.flags() & NLM_F_DUMP_INTR != 0 {
            return Err(Failure::Interrupted);
        }
        match decode(bytes)?.payload {
            NetlinkPayload::InnerMessage(Reply::Link(link)) => links.push(link),
            NetlinkPayload::Error(error) if error.code.is_some() => {
                return Err(Failure::Kernel(error.to_io()))
            }
            NetlinkPayload::Done(done) if done.code != 0 => {
                return Err(Failure::Kernel(io::Error::from_raw_os_error(
                    done.code.abs(),
                )))
            }
            NetlinkPayload::Error(_) | NetlinkPayload::Done(_) => return Ok(Progress::Complete),
            NetlinkPayload::Overrun(_) => {
                return Err(Failure::Decode("the kernel reports an overrun".into()))
            }
            _ => {}
        }
    }
    Ok(Progress::Pending)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{DoneMessage, ErrorMessage};
    use netlink_packet_route::link::{LinkAttribute, LinkMessage, State};
    use netlink_packet_route::RouteNetlinkMessage;
    use std::num::NonZeroI32;

    /// A reply datagram as the kernel would send it, emitted by the crate's
    /// full message types so that our decoder is checked against them.
    fn reply(seq: u32, flags: u16, payload: NetlinkPayload<RouteNetlinkMessage>) -> Vec<u8> {
        let mut header = NetlinkHeader::default();
        header.sequence_number = seq;
        header.flags = flags;
        let mut packet = NetlinkMessage::new(header, payload);
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        bytes
    }

    fn new_link(
        flags: LinkFlags,
        attributes: Vec<LinkAttribute>,
    ) -> NetlinkPayload<RouteNetlinkMessage> {
        let mut message = LinkMessage::default();
        message.header.index = 2;
        message.header.flags = flags;
        message.attributes = attributes;
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(message))
    }

    fn named(name: &str) -> NetlinkPayload<RouteNetlinkMessage> {
        new_link(LinkFlags::Up, vec![LinkAttribute::IfName(name.into())])
    }

    fn ack(code: i32) -> NetlinkPayload<RouteNetlinkMessage> {
        let mut error = ErrorMessage::default();
        error.code = NonZeroI32::new(code);
        NetlinkPayload::Error(error)
    }

    fn done(code: i32) -> NetlinkPayload<RouteNetlinkMessage> {
        let mut done = DoneMessage::default();
        done.code = code;
        NetlinkPayload::Done(done)
    }

    fn decode_link(payload: NetlinkPayload<RouteNetlinkMessage>) -> Link {
        match decode(&reply(0, 0, payload)).unwrap().payload {
            NetlinkPayload::InnerMessage(Reply::Link(link)) => link,
            other => panic!("not a link: {other:?}"),
        }
    }

    #[test]
    fn link_reads_name_mac_and_flags() {
        let link = decode_link(new_link(
            LinkFlags::Up | LinkFlags::LowerUp | LinkFlags::Broadcast,
            vec![
                LinkAttribute::Mtu(1500),
                LinkAttribute::IfName("eth0".into()),
                LinkAttribute::Address(vec![0x52, 0x54, 0, 0x12, 0x34, 0x56]),
                LinkAttribute::Broadcast(vec![0xff; 6]),
            ],
        ));
        assert_eq!(
            link,
            Link {
                index: 2,
                name: "eth0".into(),
                mac: Some([0x52, 0x54, 0, 0x12, 0x34, 0x56]),
                up: true,
                carrier: true,
                loopback: false,
            }
        );
    }

    #[test]
    fn carrier_is_lower_up_or_oper_state_up() {
        let cases = [
            (LinkFlags::Up, State::Down, false),
            (LinkFlags::Up, State::LowerLayerDown, false),
            (LinkFlags::Up | LinkFlags::LowerUp, State::Unknown, true),
            (LinkFlags::Up, State::Up, true),
            (LinkFlags::empty(), State::Down, false),
        ];
        for (flags, state, carrier) in cases {
            let link = decode_link(new_link(flags, vec![LinkAttribute::OperState(state)]));
            assert_eq!(link.carrier, carrier, "{flags:?} {state:?}");
        }
    }

    #[test]
    fn zero_or_odd_sized_hardware_addresses_are_no_mac() {
        for address in [vec![0; 6], vec![1, 2, 3, 4], vec![]] {
            let link = decode_link(new_link(
                LinkFlags::Loopback,
                vec![LinkAttribute::Address(address.clone())],
            ));
            assert_eq!(link.mac, None, "{address:?}");
            assert!(link.loopback);
        }
    }

    #[test]
    fn other_messages_are_left_unread() {
        let mut message = AddressMessage::default();
        message.header.index = 2;
        let payload = NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(message));
        assert!(matches!(
            decode(&reply(0, 0, payload)).unwrap().payload,
            NetlinkPayload::InnerMessage(Reply::Other)
        ));
    }

    #[test]
    fn broadcast_follows_the_prefix() {
        let address = Ipv4Addr::new(10, 0, 2, 15);
        let cases = [
            (24, Some(Ipv4Addr::new(10, 0, 2, 255))),
            (8, Some(Ipv4Addr::new(10, 255, 255, 255))),
            (30, Some(Ipv4Addr::new(10, 0, 2, 15))),
            (0, Some(Ipv4Addr::BROADCAST)),
            (31, None),
            (32, None),
            (33, None),
        ];
        for (prefix_len, expected) in cases {
            assert_eq!(broadcast(address, prefix_len), expected, "/{prefix_len}");
        }
    }

    /// Our requests, parsed back by the crate's full decoder.
    fn parse_request(request: Request, flags: u16) -> (NetlinkHeader, RouteNetlinkMessage) {
        let bytes = encode(request, flags, 7);
        let packet = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes).unwrap();
        assert_eq!(packet.header.length as usize, bytes.len());
        match packet.payload {
            NetlinkPayload::InnerMessage(message) => (packet.header, message),
            other => panic!("not a request: {other:?}"),
        }
    }

    #[test]
    fn link_requests_ask_for_an_ack() {
        let request = Request::Link {
            message_type: libc::RTM_GETLINK,
            header: LinkHeader::default(),
        };
        let (header, message) = parse_request(request, NLM_F_DUMP);
        assert_eq!(header.sequence_number, 7);
        assert_eq!(header.flags, NLM_F_REQUEST | NLM_F_ACK | NLM_F_DUMP);
        assert!(matches!(message, RouteNetlinkMessage::GetLink(_)));

        let link = LinkHeader {
            index: 3,
            flags: LinkFlags::Up,
            change_mask: LinkFlags::Up,
            ..LinkHeader::default()
        };
        let request = Request::Link {
            message_type: libc::RTM_SETLINK,
            header: link.clone(),
        };
        let (header, message) = parse_request(request, 0);
        assert_eq!(header.flags, NLM_F_REQUEST | NLM_F_ACK);
        let RouteNetlinkMessage::SetLink(message) = message else {
            panic!("not RTM_SETLINK: {message:?}");
        };
        assert_eq!(message.header, link);
        assert!(message.attributes.is_empty());
    }

    #[test]
    fn address_request_carries_local_address_and_broadcast() {
        let address = Ipv4Addr::new(192, 168, 77, 2);
        let request = Request::NewAddress(address_message(3, address, 24));
        let (header, message) = parse_request(request, NLM_F_CREATE | NLM_F_REPLACE);
        assert_eq!(
            header.flags,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
        );
        let RouteNetlinkMessage::NewAddress(message) = message else {
            panic!("not RTM_NEWADDR: {message:?}");
        };
        assert_eq!(message.header.family, AddressFamily::Inet);
        assert_eq!(message.header.index, 3);
        assert_eq!(message.header.prefix_len, 24);
        assert_eq!(
            message.attributes,
            vec![
                AddressAttribute::Local(address.into()),
                AddressAttribute::Address(address.into()),
                AddressAttribute::Broadcast(Ipv4Addr::new(192, 168, 77, 255)),
            ]
        );
    }

    #[test]
    fn default_route_request_goes_to_the_main_table() {
        let gateway = Ipv4Addr::new(192, 168, 77, 1);
        let request = Request::NewRoute(default_route_message(gateway, Some(4)));
        let (_, message) = parse_request(request, NLM_F_CREATE | NLM_F_REPLACE);
        let RouteNetlinkMessage::NewRoute(message) = message else {
            panic!("not RTM_NEWROUTE: {message:?}");
        };
        assert_eq!(message.header.address_family, AddressFamily::Inet);
        assert_eq!(message.header.destination_prefix_length, 0);
        assert_eq!(message.header.table, RouteHeader::RT_TABLE_MAIN);
        assert_eq!(message.header.protocol, RouteProtocol::Boot);
        assert_eq!(message.header.kind, RouteType::Unicast);
        assert_eq!(
            message.attributes,
            vec![
                RouteAttribute::Gateway(gateway.into()),
                RouteAttribute::Oif(4)
            ]
        );
        let message = default_route_message(gateway, None);
        assert_eq!(
            message.attributes,
            vec![RouteAttribute::Gateway(gateway.into())]
        );
    }

    #[test]
    fn dump_spans_datagrams_until_done() {
        let mut links = Vec::new();
        let first = [reply(5, 0, named("lo")), reply(5, 0, named("eth0"))].concat();
        assert_eq!(absorb(&first, 5, &mut links).unwrap(), Progress::Pending);
        let second = [reply(5, 0, named("eth1")), reply(5, 0, done(0))].concat();
        assert_eq!(absorb(&second, 5, &mut links).unwrap(), Progress::Complete);
        let names: Vec<&str> = links.iter().map(|link| link.name.as_str()).collect();
        assert_eq!(names, ["lo", "eth0", "eth1"]);
    }

    #[test]
    fn other_sequence_numbers_are_ignored() {
        let mut links = Vec::new();
        let datagram = [
            reply(4, 0, named("stale")),
            reply(4, 0, ack(-libc::EEXIST)),
            reply(5, 0, ack(0)),
        ]
        .concat();
        assert_eq!(
            absorb(&datagram, 5, &mut links).unwrap(),
            Progress::Complete
        );
        assert!(links.is_empty());
    }

    #[test]
    fn kernel_errors_become_os_errors() {
        let mut links = Vec::new();
        let Err(Failure::Kernel(e)) = absorb(&reply(9, 0, ack(-libc::EEXIST)), 9, &mut links)
        else {
            panic!("a nack must fail the request");
        };
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        let error = Failure::Kernel(e).during("adding 10.0.2.15/24 to eth0");
        assert_eq!(
            error.to_string(),
            "adding 10.0.2.15/24 to eth0: File exists (os error 17)"
        );

        let Err(Failure::Kernel(e)) = absorb(&reply(9, 0, done(-libc::EMSGSIZE)), 9, &mut links)
        else {
            panic!("a dump that ends in an error must fail");
        };
        assert_eq!(e.raw_os_error(), Some(libc::EMSGSIZE));
    }

    #[test]
    fn interrupted_dumps_are_reported() {
        let mut links = Vec::new();
        let datagram = reply(3, NLM_F_DUMP_INTR, named("eth0"));
        assert!(matches!(
            absorb(&datagram, 3, &mut links),
            Err(Failure::Interrupted)
        ));
    }

    #[test]
    fn truncated_datagrams_are_decode_errors() {
        let datagram = reply(3, 0, named("eth0"));
        let mut links = Vec::new();
        assert!(matches!(
            absorb(&datagram[..datagram.len() - 4], 3, &mut links),
            Err(Failure::Decode(_))
        ));
    }

    /// Needs no privilege: any namespace has a loopback link to list.
    #[test]
    fn lists_loopback_without_root() {
        let links = Netlink::open().unwrap().links().unwrap();
        assert!(links.iter().any(|link| link.loopback), "{links:?}");
    }
}
