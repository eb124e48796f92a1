// SPDX-License-Identifier: GPL-3.0-or-later
//! The few netlink conversations tyd needs (route, generic and netfilter
//! netlink): messages built as bytes with nested attributes, sent on a
//! netlink-sys socket, and the kernel's acks and errors read back.
//!
//! tyd builds its requests itself rather than through the typed message
//! crates: it sends a handful of message kinds, and the typed enums would
//! link in every family's parsers (a static binary with a size budget).
//! This module must never block past its receive timeout and never talk to
//! anything but the kernel.

use std::io;
use std::time::Duration;

use netlink_packet_core::{NetlinkBuffer, NLM_F_ACK, NLM_F_REQUEST};
use netlink_sys::{Socket, SocketAddr};

pub use netlink_sys::protocols::{NETLINK_GENERIC, NETLINK_NETFILTER, NETLINK_ROUTE};

const HEADER_LEN: usize = 16;
const NLA_F_NESTED: u16 = 1 << 15;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// The kernel answers within microseconds; this only guards against a bug
/// turning into a hang.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(5);
const RECEIVE_BUFFER: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("netlink socket: {0}")]
    Socket(#[source] io::Error),
    #[error("the kernel refused: {0}")]
    Kernel(#[source] io::Error),
    #[error("undecodable reply from the kernel: {0}")]
    Decode(String),
}

impl Error {
    /// The errno the kernel answered with, if it did.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Kernel(e) => e.raw_os_error(),
            _ => None,
        }
    }
}

/// One netlink message under construction.
#[derive(Debug, Clone)]
pub struct Builder {
    bytes: Vec<u8>,
    nests: Vec<usize>,
}

impl Builder {
    /// A request of `kind`; `flags` beyond NLM_F_REQUEST.
    pub fn new(kind: u16, flags: u16) -> Self {
        let mut bytes = vec![0; HEADER_LEN];
        bytes[4..6].copy_from_slice(&kind.to_ne_bytes());
        bytes[6..8].copy_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        Self {
            bytes,
            nests: Vec::new(),
        }
    }

    /// The family header after the netlink header (ifinfomsg, genlmsghdr,
    /// nfgenmsg...).
    pub fn header(mut self, bytes: &[u8]) -> Self {
        self.raw(bytes);
        self
    }

    fn raw(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
        self.bytes.resize(self.bytes.len().next_multiple_of(4), 0);
    }

    pub fn attr(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        let len = u16::try_from(4 + data.len()).expect("attributes are small");
        self.bytes.extend_from_slice(&len.to_ne_bytes());
        self.bytes.extend_from_slice(&kind.to_ne_bytes());
        self.raw(data);
        self
    }

    pub fn u8(&mut self, kind: u16, value: u8) -> &mut Self {
        self.attr(kind, &[value])
    }

    pub fn u16(&mut self, kind: u16, value: u16) -> &mut Self {
        self.attr(kind, &value.to_ne_bytes())
    }

    pub fn u32(&mut self, kind: u16, value: u32) -> &mut Self {
        self.attr(kind, &value.to_ne_bytes())
    }

    /// Netfilter's attributes are big-endian.
    pub fn be32(&mut self, kind: u16, value: u32) -> &mut Self {
        self.attr(kind, &value.to_be_bytes())
    }

    /// A NUL-terminated string.
    pub fn str(&mut self, kind: u16, value: &str) -> &mut Self {
        let mut data = value.as_bytes().to_vec();
        data.push(0);
        self.attr(kind, &data)
    }

    /// Opens a nested attribute; close it with [`Builder::end`].
    pub fn begin(&mut self, kind: u16) -> &mut Self {
        self.nests.push(self.bytes.len());
        self.bytes.extend_from_slice(&[0, 0]);
        self.bytes
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    pub fn end(&mut self) -> &mut Self {
        let start = self.nests.pop().expect("end() after begin()");
        let len = u16::try_from(self.bytes.len() - start).expect("nests fit 64 KiB");
        self.bytes[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    /// The message with its length and sequence number filled in.
    fn finish(mut self, seq: u32) -> Vec<u8> {
        assert!(self.nests.is_empty(), "unbalanced nested attributes");
        let len = self.bytes.len() as u32;
        self.bytes[0..4].copy_from_slice(&len.to_ne_bytes());
        self.bytes[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.bytes
    }

    /// What follows the netlink header, for checking built messages.
    #[cfg(test)]
    pub fn payload(&self) -> &[u8] {
        &self.bytes[HEADER_LEN..]
    }

    fn flags(&self) -> u16 {
        u16::from_ne_bytes([self.bytes[6], self.bytes[7]])
    }
}

/// A blocking netlink socket connected to the kernel.
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

    fn next_seq(&mut self) -> u32 {
        // Zero is what notifications carry; never use it for a request.
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// Sends one request with an ack requested and returns the payloads
    /// (after the netlink header) of the replies that came before the ack.
    pub fn request(&mut self, mut message: Builder) -> Result<Vec<Vec<u8>>, Error> {
        let flags = message.flags() | NLM_F_ACK;
        message.bytes[6..8].copy_from_slice(&flags.to_ne_bytes());
        let seq = self.next_seq();
        self.send(&message.finish(seq))?;
        let mut replies = Vec::new();
        loop {
            self.receive()?;
            for reply in parse(&self.buffer)? {
                if reply.seq != seq {
                    continue;
                }
                match reply.kind {
                    NLMSG_ERROR => return ack(&reply.payload).map(|()| replies),
                    NLMSG_DONE => return Ok(replies),
                    _ => replies.push(reply.payload),
                }
            }
        }
    }

    /// Sends `messages` in one datagram, each with an ack requested, and
    /// waits for all acks: the first error fails the whole call. Netfilter
    /// batches (begin, messages, end) go through here, with the begin and
    /// end markers built by the caller without acks.
    pub fn batch(&mut self, messages: Vec<Builder>) -> Result<(), Error> {
        let mut datagram = Vec::new();
        let mut pending = std::collections::HashSet::new();
        for message in messages {
            let seq = self.next_seq();
            if message.flags() & NLM_F_ACK != 0 {
                pending.insert(seq);
            }
            datagram.extend_from_slice(&message.finish(seq));
        }
        self.send(&datagram)?;
        let mut first_error = None;
        while !pending.is_empty() {
            self.receive()?;
            for reply in parse(&self.buffer)? {
                if reply.kind == NLMSG_ERROR && pending.remove(&reply.seq) {
                    if let Err(e) = ack(&reply.payload) {
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        first_error.map_or(Ok(()), Err)
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

    fn receive(&mut self) -> Result<(), Error> {
        loop {
            self.buffer.clear();
            match self.socket.recv(&mut self.buffer, libc::MSG_TRUNC) {
                Ok(len) if len > self.buffer.capacity() => {
                    return Err(Error::Decode(format!(
                        "a {len}-byte reply does not fit the {RECEIVE_BUFFER}-byte buffer"
                    )))
                }
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Socket(e)),
            }
        }
    }
}

/// A reply message: kind, sequence number and payload.
struct Reply {
    kind: u16,
    seq: u32,
    payload: Vec<u8>,
}

fn parse(mut datagram: &[u8]) -> Result<Vec<Reply>, Error> {
    let mut replies = Vec::new();
    while !datagram.is_empty() {
        let buffer =
            NetlinkBuffer::new_checked(datagram).map_err(|e| Error::Decode(e.to_string()))?;
        let len = buffer.length() as usize;
        replies.push(Reply {
            kind: buffer.message_type(),
            seq: buffer.sequence_number(),
            payload: datagram[HEADER_LEN..len].to_vec(),
        });
        datagram = &datagram[len.next_multiple_of(4).min(datagram.len())..];
    }
    Ok(replies)
}

/// An NLMSG_ERROR payload: zero is the ack, anything else the errno.
fn ack(payload: &[u8]) -> Result<(), Error> {
    let code = payload
        .get(..4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| Error::Decode("a truncated error message".into()))?;
    match code {
        0 => Ok(()),
        code => Err(Error::Kernel(io::Error::from_raw_os_error(-code))),
    }
}

/// The attributes of a payload from `offset` on: (kind without flags, data).
pub fn attributes(payload: &[u8], offset: usize) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut rest = payload.get(offset..).unwrap_or_default();
    while rest.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & !(NLA_F_NESTED | 1 << 14);
        if len < 4 || len > rest.len() {
            break;
        }
        out.push((kind, &rest[4..len]));
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_are_sized_and_padded() {
        let mut message = Builder::new(16, 0).header(&[1, 2, 3]);
        message.begin(5).str(1, "wg0").u8(2, 9).end();
        let bytes = message.finish(7);
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(
            u32::from_ne_bytes(bytes[0..4].try_into().unwrap()),
            bytes.len() as u32
        );
        assert_eq!(u32::from_ne_bytes(bytes[8..12].try_into().unwrap()), 7);
        let attrs = attributes(&bytes[HEADER_LEN..], 4);
        assert_eq!(attrs.len(), 1);
        let (kind, nested) = attrs[0];
        assert_eq!(kind, 5);
        let inner = attributes(nested, 0);
        assert_eq!(inner, vec![(1, &b"wg0\0"[..]), (2, &[9][..])]);
    }

    #[test]
    fn acks_and_errors() {
        assert!(ack(&[0; 20]).is_ok());
        let error = ack(&(-17i32).to_ne_bytes()).unwrap_err();
        assert_eq!(error.errno(), Some(17));
        assert!(ack(&[0, 0]).is_err());
    }
}
