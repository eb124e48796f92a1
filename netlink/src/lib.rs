// SPDX-License-Identifier: GPL-3.0-or-later
//! chaos's one netlink transport, used by init (route netlink) and tyd
//! (route, generic and netfilter netlink): a blocking socket connected to
//! the kernel, sequence numbers, requests with their acks, dumps, netfilter
//! batches and notifications. Messages are the rust-netlink family's typed
//! ones (anything [`NetlinkSerializable`]); [`route`] has the route
//! messages both binaries send and the links init reads, [`generic`] the
//! lookup of a generic netlink family, [`Attr`] the nested attributes of
//! families no typed crate covers (nf_tables).
//!
//! This crate must never block past its receive timeout, never shell out,
//! and never talk to anything but the kernel.

use std::collections::HashSet;
use std::convert::Infallible;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use netlink_packet_core::{
    NetlinkBuffer, NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    NetlinkSerializable, NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_sys::{Socket, SocketAddr};

pub use netlink_sys::protocols::{NETLINK_GENERIC, NETLINK_NETFILTER, NETLINK_ROUTE};

mod attr;
pub mod generic;
pub mod route;

pub use attr::Attr;

/// The kernel answers within microseconds; this only guards against a bug
/// turning into a hang.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Kernel dumps send datagrams of up to 32 KiB; twice that leaves headroom,
/// and a datagram that still does not fit is reported rather than cut short.
const RECEIVE_BUFFER: usize = 64 * 1024;
/// A dump is retried this often when the kernel says its table changed
/// under it (NLM_F_DUMP_INTR) before giving up.
const DUMP_TRIES: usize = 3;

/// What went wrong talking to the kernel; callers say what they were doing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Opening, sending on or receiving from the socket failed.
    #[error("netlink socket: {0}")]
    Socket(io::Error),
    /// The kernel refused the request with this errno.
    #[error("{0}")]
    Kernel(io::Error),
    #[error("undecodable reply from the kernel: {0}")]
    Decode(String),
    #[error("the kernel's table kept changing during the dump ({DUMP_TRIES} tries)")]
    Interrupted,
}

impl Error {
    /// The errno the kernel answered with, if it did.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Kernel(e) => e.raw_os_error(),
            _ => None,
        }
    }

    /// Whether the kernel dropped notifications for this socket (ENOBUFS):
    /// only a fresh dump tells what was missed.
    pub fn is_overrun(&self) -> bool {
        matches!(self, Error::Socket(e) if e.raw_os_error() == Some(libc::ENOBUFS))
    }
}

/// A reply nobody reads: the type of requests answered by an ack alone.
#[derive(Debug)]
pub struct Unread;

impl NetlinkDeserializable for Unread {
    type Error = Infallible;

    fn deserialize(_: &NetlinkHeader, _: &[u8]) -> Result<Self, Infallible> {
        Ok(Unread)
    }
}

/// A blocking netlink socket connected to the kernel, with its own
/// sequence numbers.
pub struct Netlink {
    socket: Socket,
    seq: u32,
    buffer: Vec<u8>,
}

impl Netlink {
    pub fn open(protocol: isize) -> Result<Self, Error> {
        let open = || -> io::Result<Socket> {
            let mut socket = Socket::new(protocol)?;
            socket.bind_auto()?;
            // Connected to the kernel, the socket refuses unicasts from other
            // processes, so every reply we read is the kernel's.
            socket.connect(&SocketAddr::new(0, 0))?;
            let timeout = nix::sys::time::TimeVal::new(RECEIVE_TIMEOUT.as_secs() as _, 0);
            nix::sys::socket::setsockopt(
                &socket,
                nix::sys::socket::sockopt::ReceiveTimeout,
                &timeout,
            )?;
            Ok(socket)
        };
        Ok(Self {
            socket: open().map_err(Error::Socket)?,
            seq: 0,
            buffer: Vec::with_capacity(RECEIVE_BUFFER),
        })
    }

    /// Also receive the kernel's notifications to multicast `group`
    /// (RTNLGRP_LINK...), read with [`Netlink::notifications`].
    pub fn subscribe(&mut self, group: u32) -> Result<(), Error> {
        self.socket.add_membership(group).map_err(Error::Socket)
    }

    fn next_seq(&mut self) -> u32 {
        // Zero is what notifications carry; never use it for a request.
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// Sends `message` with an ack requested (and `flags`) and returns the
    /// replies that came before the ack, or before NLMSG_DONE for a dump.
    pub fn request<R: NetlinkDeserializable>(
        &mut self,
        message: impl NetlinkSerializable,
        flags: u16,
    ) -> Result<Vec<R>, Error> {
        let seq = self.next_seq();
        self.send(&encode(message, NLM_F_ACK | flags, seq))?;
        let mut replies = Vec::new();
        loop {
            self.receive()?;
            if absorb(&self.buffer, seq, &mut replies)? == Progress::Complete {
                return Ok(replies);
            }
        }
    }

    /// [`Netlink::request`] for a request whose only answer is the ack.
    pub fn ack(&mut self, message: impl NetlinkSerializable, flags: u16) -> Result<(), Error> {
        self.request::<Unread>(message, flags).map(drop)
    }

    /// Dumps a table: `message` sent with NLM_F_DUMP, again if the table
    /// changed during the dump, a few times at most.
    pub fn dump<R: NetlinkDeserializable>(
        &mut self,
        message: impl NetlinkSerializable + Clone,
    ) -> Result<Vec<R>, Error> {
        let mut tries = 0;
        loop {
            tries += 1;
            match self.request(message.clone(), NLM_F_DUMP) {
                Err(Error::Interrupted) if tries < DUMP_TRIES => continue,
                done => return done,
            }
        }
    }

    /// Sends `messages`, each with its flags, in one datagram and waits for
    /// the acks of those that asked for one: the first error fails the whole
    /// call. Netfilter batches (begin, messages, end) go through here, the
    /// begin and end markers without acks.
    pub fn batch<M: NetlinkSerializable>(&mut self, messages: Vec<(M, u16)>) -> Result<(), Error> {
        let mut datagram = Vec::new();
        let mut pending = HashSet::new();
        for (message, flags) in messages {
            let seq = self.next_seq();
            if flags & NLM_F_ACK != 0 {
                pending.insert(seq);
            }
            datagram.extend_from_slice(&encode(message, flags, seq));
        }
        self.send(&datagram)?;
        let mut first_error = None;
        while !pending.is_empty() {
            self.receive()?;
            for bytes in Messages(&self.buffer) {
                let message = decode::<Unread>(bytes?)?;
                if let NetlinkPayload::Error(error) = message.payload {
                    if pending.remove(&message.header.sequence_number) && error.code.is_some() {
                        first_error.get_or_insert(Error::Kernel(error.to_io()));
                    }
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Reads one datagram of notifications (waiting up to the receive
    /// timeout; poll the socket first) and returns the messages in it.
    pub fn notifications<R: NetlinkDeserializable>(&mut self) -> Result<Vec<R>, Error> {
        self.receive()?;
        let mut messages = Vec::new();
        for bytes in Messages(&self.buffer) {
            if let NetlinkPayload::InnerMessage(message) = decode(bytes?)?.payload {
                messages.push(message);
            }
        }
        Ok(messages)
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), Error> {
        loop {
            match self.socket.send(bytes, 0) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Socket(e)),
            }
        }
    }

    /// Reads one datagram into the buffer, replacing what it held.
    fn receive(&mut self) -> Result<(), Error> {
        loop {
            self.buffer.clear();
            // MSG_TRUNC makes recv return the datagram's real length, so a
            // datagram larger than the buffer is detected instead of cut short.
            match self.socket.recv(&mut self.buffer, libc::MSG_TRUNC) {
                Ok(len) if len > self.buffer.capacity() => {
                    return Err(Error::Decode(format!(
                        "a {len}-byte datagram does not fit the {RECEIVE_BUFFER}-byte buffer"
                    )))
                }
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Socket(e)),
            }
        }
    }
}

impl AsFd for Netlink {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// Serialises a request; NLM_F_REQUEST is added to `flags`.
fn encode(message: impl NetlinkSerializable, flags: u16, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | flags;
    header.sequence_number = seq;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
    packet.finalize();
    let mut bytes = vec![0; packet.buffer_len()];
    packet.serialize(&mut bytes);
    bytes
}

/// The netlink messages packed into one datagram.
struct Messages<'a>(&'a [u8]);

impl<'a> Iterator for Messages<'a> {
    type Item = Result<&'a [u8], Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let len = match NetlinkBuffer::new_checked(self.0) {
            Ok(buffer) => buffer.length() as usize,
            Err(e) => {
                self.0 = &[];
                return Some(Err(Error::Decode(e.to_string())));
            }
        };
        let message = &self.0[..len];
        // Messages are padded to 4 bytes; the last one may lack its padding.
        self.0 = &self.0[len.next_multiple_of(4).min(self.0.len())..];
        Some(Ok(message))
    }
}

fn decode<R: NetlinkDeserializable>(bytes: &[u8]) -> Result<NetlinkMessage<R>, Error> {
    NetlinkMessage::deserialize(bytes).map_err(|e| Error::Decode(e.to_string()))
}

#[derive(Debug, PartialEq, Eq)]
enum Progress {
    Pending,
    Complete,
}

/// Takes in one datagram of replies to request `seq`: data messages go to
/// `replies`; an ack or NLMSG_DONE completes the request; an error code
/// from the kernel fails it. Messages for other sequence numbers (late
/// replies to a request that failed half-way) are skipped.
fn absorb<R: NetlinkDeserializable>(
    datagram: &[u8],
    seq: u32,
    replies: &mut Vec<R>,
) -> Result<Progress, Error> {
    for bytes in Messages(datagram) {
        let bytes = bytes?;
        let header = NetlinkBuffer::new(bytes);
        if header.sequence_number() != seq {
            continue;
        }
        if header.flags() & NLM_F_DUMP_INTR != 0 {
            return Err(Error::Interrupted);
        }
        match decode(bytes)?.payload {
            NetlinkPayload::InnerMessage(reply) => replies.push(reply),
            NetlinkPayload::Error(error) if error.code.is_some() => {
                return Err(Error::Kernel(error.to_io()))
            }
            NetlinkPayload::Done(done) if done.code != 0 => {
                return Err(Error::Kernel(io::Error::from_raw_os_error(done.code.abs())))
            }
            NetlinkPayload::Error(_) | NetlinkPayload::Done(_) => return Ok(Progress::Complete),
            NetlinkPayload::Overrun(_) => {
                return Err(Error::Decode("the kernel reports an overrun".into()))
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
    use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
    use netlink_packet_route::RouteNetlinkMessage;
    use std::num::NonZeroI32;

    use crate::route::{Link, LinkReply};

    /// A reply datagram as the kernel would send it, emitted by the route
    /// crate's full message types.
    pub(crate) fn reply(
        seq: u32,
        flags: u16,
        payload: NetlinkPayload<RouteNetlinkMessage>,
    ) -> Vec<u8> {
        let mut header = NetlinkHeader::default();
        header.sequence_number = seq;
        header.flags = flags;
        let mut packet = NetlinkMessage::new(header, payload);
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        bytes
    }

    fn named(name: &str) -> NetlinkPayload<RouteNetlinkMessage> {
        let mut message = LinkMessage::default();
        message.header.index = 2;
        message.header.flags = LinkFlags::Up;
        message.attributes = vec![LinkAttribute::IfName(name.into())];
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(message))
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

    fn names(links: &[LinkReply]) -> Vec<&str> {
        links
            .iter()
            .filter_map(|reply| match reply {
                LinkReply::Link(Link { name, .. }) => Some(name.as_str()),
                LinkReply::Other => None,
            })
            .collect()
    }

    #[test]
    fn dump_spans_datagrams_until_done() {
        let mut links = Vec::new();
        let first = [reply(5, 0, named("lo")), reply(5, 0, named("eth0"))].concat();
        assert_eq!(absorb(&first, 5, &mut links).unwrap(), Progress::Pending);
        let second = [reply(5, 0, named("eth1")), reply(5, 0, done(0))].concat();
        assert_eq!(absorb(&second, 5, &mut links).unwrap(), Progress::Complete);
        assert_eq!(names(&links), ["lo", "eth0", "eth1"]);
    }

    #[test]
    fn other_sequence_numbers_are_ignored() {
        let mut links = Vec::<LinkReply>::new();
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
    fn kernel_errors_carry_the_errno() {
        let mut links = Vec::<LinkReply>::new();
        let error = absorb(&reply(9, 0, ack(-libc::EEXIST)), 9, &mut links).unwrap_err();
        assert_eq!(error.errno(), Some(libc::EEXIST));
        assert_eq!(error.to_string(), "File exists (os error 17)");
        let error = absorb(&reply(9, 0, done(-libc::EMSGSIZE)), 9, &mut links).unwrap_err();
        assert_eq!(
            error.errno(),
            Some(libc::EMSGSIZE),
            "a dump that ends in an error fails"
        );
    }

    #[test]
    fn interrupted_dumps_are_reported() {
        let mut links = Vec::<LinkReply>::new();
        let datagram = reply(3, NLM_F_DUMP_INTR, named("eth0"));
        assert!(matches!(
            absorb(&datagram, 3, &mut links),
            Err(Error::Interrupted)
        ));
    }

    #[test]
    fn truncated_datagrams_are_decode_errors() {
        let datagram = reply(3, 0, named("eth0"));
        let mut links = Vec::<LinkReply>::new();
        assert!(matches!(
            absorb(&datagram[..datagram.len() - 4], 3, &mut links),
            Err(Error::Decode(_))
        ));
    }

    #[test]
    fn requests_ask_for_an_ack_with_their_own_flags() {
        let bytes = encode(crate::route::get_link(3), NLM_F_ACK | NLM_F_DUMP, 7);
        let packet = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes).unwrap();
        assert_eq!(packet.header.length as usize, bytes.len());
        assert_eq!(packet.header.sequence_number, 7);
        assert_eq!(packet.header.flags, NLM_F_REQUEST | NLM_F_ACK | NLM_F_DUMP);
    }

    /// Needs no privilege: any namespace has a loopback link to list.
    #[test]
    fn lists_loopback_without_root() {
        let mut netlink = Netlink::open(NETLINK_ROUTE).unwrap();
        let links: Vec<LinkReply> = netlink.dump(crate::route::get_link(0)).unwrap();
        assert!(
            links
                .iter()
                .any(|reply| matches!(reply, LinkReply::Link(link) if link.loopback)),
            "{links:?}"
        );
    }
}
