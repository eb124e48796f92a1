//! DHCPv4 messages (RFC 2131, options of RFC 2132): the requests the client
//! sends and the checks a reply must pass before anything of it is used.
//! dhcproto does the wire format; this module decides what goes in and what
//! a usable reply is. It does no I/O.

use std::net::Ipv4Addr;
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

/// The fixed BOOTP part plus the magic cookie: nothing shorter is DHCP.
const FIXED_LEN: usize = 240;
/// DHCP's magic cookie, after the BOOTP fields.
const COOKIE: [u8; 4] = [99, 130, 83, 99];
/// What we tell servers we can receive (RFC 2131's minimum is 576).
const MAX_MESSAGE_SIZE: u16 = 1500;

/// What identifies this client in every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub mac: [u8; 6],
    /// Sent as option 12 (`ip=`'s hostname field).
    pub hostname: Option<String>,
    /// Option 61, type byte first (`ip=dhcp,<type>,<value>`).
    pub client_id: Option<Vec<u8>>,
}

/// Why a datagram on port 68 is not a reply we can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("{0}-byte datagram is shorter than a DHCP message ({FIXED_LEN} bytes at least)")]
    Short(usize),
    #[error("undecodable DHCP message: {0}")]
    Decode(String),
    #[error("op {0} is not BOOTREPLY (2)")]
    NotReply(u8),
    #[error("magic cookie {0:02x?} is not DHCP's 63 82 53 63")]
    Cookie([u8; 4]),
    #[error("transaction 0x{got:08x} is not ours (0x{want:08x})")]
    OtherTransaction { got: u32, want: u32 },
    #[error("for hardware address {0}, not ours")]
    OtherClient(String),
    #[error("no DHCP message type (option 53): a BOOTP reply, which this client does not take")]
    NoMessageType,
    #[error("message type {0:?}, expected OFFER, ACK or NAK")]
    UnexpectedType(MessageType),
    #[error("{0:?} without a server identifier (option 54)")]
    NoServer(MessageType),
    #[error("{0:?} offers no usable address (yiaddr {1})")]
    NoAddress(MessageType, Ipv4Addr),
    #[error("subnet mask {0} (option 1) is not contiguous")]
    Netmask(Ipv4Addr),
}

/// A reply to one of our requests, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Offer(Offer),
    Ack(Offer),
    /// The server refuses; its message (option 56), if any.
    Nak {
        server: Option<Ipv4Addr>,
        message: Option<String>,
    },
}

/// What a server offers or acknowledges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub address: Ipv4Addr,
    pub server: Ipv4Addr,
    /// Prefix length from option 1, else the address's class default.
    pub prefix: u8,
    pub routers: Vec<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub hostname: Option<String>,
    pub ntp: Vec<Ipv4Addr>,
    /// `None`: infinite (0xffffffff) or not given.
    pub lease: Option<Duration>,
    pub renew: Option<Duration>,
    pub rebind: Option<Duration>,
}

/// An empty BOOTREQUEST: the fixed part zeroed, the cookie, no options.
/// Messages start from it rather than from dhcproto's constructors, which
/// draw a transaction id from the blocking system RNG: early in boot, before
/// the kernel's pool is ready, that stalls the first DISCOVER for seconds.
fn empty() -> Message {
    let mut bytes = [0u8; FIXED_LEN + 1];
    bytes[0] = 1;
    bytes[236..240].copy_from_slice(&COOKIE);
    bytes[FIXED_LEN] = 0xff;
    // A well-formed fixed part always decodes.
    Message::decode(&mut Decoder::new(&bytes)).unwrap_or_default()
}

fn message(client: &Client, xid: u32, kind: MessageType) -> Message {
    let mut msg = empty();
    msg.set_htype(HType::Eth)
        .set_opcode(Opcode::BootRequest)
        .set_xid(xid)
        .set_chaddr(&client.mac)
        // Until it has an address the client cannot take unicast replies,
        // so it asks servers to broadcast them (RFC 2131 4.1).
        .set_flags(Flags::default().set_broadcast());
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::MaxMessageSize(MAX_MESSAGE_SIZE));
    if let Some(id) = &client.client_id {
        opts.insert(DhcpOption::ClientIdentifier(id.clone()));
    }
    if let Some(name) = &client.hostname {
        opts.insert(DhcpOption::Hostname(name.clone()));
    }
    if kind != MessageType::Release {
        opts.insert(DhcpOption::ParameterRequestList(vec![
            OptionCode::SubnetMask,
            OptionCode::Router,
            OptionCode::DomainNameServer,
            OptionCode::Hostname,
            OptionCode::DomainName,
            OptionCode::NtpServers,
            OptionCode::AddressLeaseTime,
            OptionCode::Renewal,
            OptionCode::Rebinding,
        ]));
    }
    msg
}

fn encode(msg: &Message) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(300);
    // Encoding our own well-formed message into a Vec cannot fail.
    let _ = msg.encode(&mut Encoder::new(&mut bytes));
    bytes
}

pub fn discover(client: &Client, xid: u32) -> Vec<u8> {
    encode(&message(client, xid, MessageType::Discover))
}

/// REQUEST in SELECTING state: takes `offer` from its server.
pub fn select(client: &Client, xid: u32, offer: &Offer) -> Vec<u8> {
    let mut msg = message(client, xid, MessageType::Request);
    msg.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(offer.address));
    msg.opts_mut()
        .insert(DhcpOption::ServerIdentifier(offer.server));
    encode(&msg)
}

/// REQUEST in RENEWING (unicast to the server) or REBINDING (broadcast)
/// state: the address goes in ciaddr, and replies come unicast to it.
pub fn extend(client: &Client, xid: u32, address: Ipv4Addr) -> Vec<u8> {
    let mut msg = message(client, xid, MessageType::Request);
    msg.set_ciaddr(address).set_flags(Flags::default());
    encode(&msg)
}

pub fn release(client: &Client, xid: u32, address: Ipv4Addr, server: Ipv4Addr) -> Vec<u8> {
    let mut msg = message(client, xid, MessageType::Release);
    msg.set_ciaddr(address).set_flags(Flags::default());
    msg.opts_mut().insert(DhcpOption::ServerIdentifier(server));
    encode(&msg)
}

/// Checks a datagram received on port 68 and reads it, if it answers our
/// transaction `xid` for our `mac`.
pub fn parse(bytes: &[u8], xid: u32, mac: [u8; 6]) -> Result<Reply, PacketError> {
    if bytes.len() < FIXED_LEN {
        return Err(PacketError::Short(bytes.len()));
    }
    // dhcproto takes any cookie and stops reading options at the first bad
    // one, so the cookie is checked here and a reply missing what we need
    // is refused below.
    let cookie: [u8; 4] = [bytes[236], bytes[237], bytes[238], bytes[239]];
    if cookie != COOKIE {
        return Err(PacketError::Cookie(cookie));
    }
    let msg = Message::decode(&mut Decoder::new(bytes))
        .map_err(|e| PacketError::Decode(e.to_string()))?;
    if msg.opcode() != Opcode::BootReply {
        return Err(PacketError::NotReply(u8::from(msg.opcode())));
    }
    if msg.xid() != xid {
        return Err(PacketError::OtherTransaction {
            got: msg.xid(),
            want: xid,
        });
    }
    if msg.chaddr().get(..6) != Some(&mac[..]) {
        let shown: Vec<String> = msg
            .chaddr()
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect();
        return Err(PacketError::OtherClient(shown.join(":")));
    }
    let opts = msg.opts();
    let kind = opts.msg_type().ok_or(PacketError::NoMessageType)?;
    let server = match opts.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(server)) => Some(*server),
        _ => None,
    };
    if kind == MessageType::Nak {
        let message = match opts.get(OptionCode::Message) {
            Some(DhcpOption::Message(text)) => Some(text.clone()),
            _ => None,
        };
        return Ok(Reply::Nak { server, message });
    }
    if kind != MessageType::Offer && kind != MessageType::Ack {
        return Err(PacketError::UnexpectedType(kind));
    }
    let server = server.ok_or(PacketError::NoServer(kind))?;
    let address = msg.yiaddr();
    let Some(class_prefix) = class_prefix(address) else {
        return Err(PacketError::NoAddress(kind, address));
    };
    if address.is_unspecified() || address.is_broadcast() || address.is_loopback() {
        return Err(PacketError::NoAddress(kind, address));
    }
    let prefix = match opts.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(mask)) => {
            let bits = u32::from(*mask);
            if bits.leading_ones() + bits.trailing_zeros() != 32 {
                return Err(PacketError::Netmask(*mask));
            }
            bits.leading_ones() as u8
        }
        _ => class_prefix,
    };
    let addresses = |code| match opts.get(code) {
        Some(
            DhcpOption::Router(list)
            | DhcpOption::DomainNameServer(list)
            | DhcpOption::NtpServers(list),
        ) => list
            .iter()
            .copied()
            .filter(|a| !a.is_unspecified())
            .collect(),
        _ => Vec::new(),
    };
    let seconds = |code| match opts.get(code) {
        Some(
            DhcpOption::AddressLeaseTime(s) | DhcpOption::Renewal(s) | DhcpOption::Rebinding(s),
        ) if *s != u32::MAX => Some(Duration::from_secs(u64::from(*s))),
        _ => None,
    };
    let text = |code| match opts.get(code) {
        Some(DhcpOption::Hostname(s) | DhcpOption::DomainName(s)) => {
            // NUL-padded by some servers; a name is printable or not used.
            let s = s.trim_end_matches('\0').trim();
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic())).then(|| s.to_string())
        }
        _ => None,
    };
    let offer = Offer {
        address,
        server,
        prefix,
        routers: addresses(OptionCode::Router),
        dns: addresses(OptionCode::DomainNameServer),
        domain: text(OptionCode::DomainName),
        hostname: text(OptionCode::Hostname),
        ntp: addresses(OptionCode::NtpServers),
        lease: seconds(OptionCode::AddressLeaseTime),
        renew: seconds(OptionCode::Renewal),
        rebind: seconds(OptionCode::Rebinding),
    };
    Ok(match kind {
        MessageType::Offer => Reply::Offer(offer),
        _ => Reply::Ack(offer),
    })
}

/// The class default prefix, as the kernel's ipconfig uses without option 1;
/// `None` for class D and E.
fn class_prefix(address: Ipv4Addr) -> Option<u8> {
    match address.octets()[0] {
        0..=127 => Some(8),
        128..=191 => Some(16),
        192..=223 => Some(24),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    const XID: u32 = 0xcd05_4a48;

    /// A DHCPACK from QEMU 7.2's user network (slirp), captured with QEMU's
    /// filter-dump (`-netdev user,hostname=drone9,domainname=lab.test`):
    /// 10.0.2.15/24 from 10.0.2.2, router 10.0.2.2, DNS 10.0.2.3, one day;
    /// 548 bytes, zero-padded after the End option.
    const SLIRP_ACK: &str = "\
        02 01 06 00 cd 05 4a 48 00 00 00 00 00 00 00 00 0a 00 02 0f 0a 00 02 02 00 00 00 00 \
        52 54 00 12 34 56 {zeros:10} \
        {zeros:192} \
        63 82 53 63 35 01 05 36 04 0a 00 02 02 01 04 ff ff ff 00 03 04 0a 00 02 02 06 04 0a \
        00 02 03 33 04 00 01 51 80 0c 06 64 72 6f 6e 65 39 0f 08 6c 61 62 2e 74 65 73 74 ff \
        {zeros:256}";

    /// A DHCPOFFER from dnsmasq 2.90, captured with tcpdump on the bridge of
    /// the two-NIC integration test: 192.168.99.54 for 2 minutes, T1 60 s,
    /// T2 105 s, domain "lab", host name "drone3", NTP 192.168.99.1, to a
    /// client that asked for a broadcast reply.
    const DNSMASQ_OFFER: &str = "\
        02 01 06 00 b7 a0 e2 85 00 00 80 00 00 00 00 00 c0 a8 63 36 c0 a8 63 01 00 00 00 00 \
        52 54 00 00 00 02 {zeros:10} \
        {zeros:192} \
        63 82 53 63 35 01 02 36 04 c0 a8 63 01 33 04 00 00 00 78 3a 04 00 00 00 3c 3b 04 00 \
        00 00 69 01 04 ff ff ff 00 1c 04 c0 a8 63 ff 0c 06 64 72 6f 6e 65 33 2a 04 c0 a8 63 \
        01 0f 03 6c 61 62 06 04 c0 a8 63 01 03 04 c0 a8 63 01 ff";
    const DNSMASQ_XID: u32 = 0xb7a0_e285;
    const DNSMASQ_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];

    fn bytes(hex: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for word in hex.split_whitespace() {
            if let Some(n) = word
                .strip_prefix("{zeros:")
                .and_then(|w| w.strip_suffix('}'))
            {
                out.extend(std::iter::repeat_n(0, n.parse().unwrap()));
            } else {
                out.push(u8::from_str_radix(word, 16).unwrap());
            }
        }
        out
    }

    #[test]
    fn reads_a_captured_slirp_ack() {
        let reply = parse(&bytes(SLIRP_ACK), XID, MAC).unwrap();
        assert_eq!(
            reply,
            Reply::Ack(Offer {
                address: Ipv4Addr::new(10, 0, 2, 15),
                server: Ipv4Addr::new(10, 0, 2, 2),
                prefix: 24,
                routers: vec![Ipv4Addr::new(10, 0, 2, 2)],
                dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
                domain: Some("lab.test".into()),
                hostname: Some("drone9".into()),
                ntp: vec![],
                lease: Some(Duration::from_secs(86400)),
                renew: None,
                rebind: None,
            })
        );
    }

    #[test]
    fn reads_a_captured_dnsmasq_offer() {
        let packet = bytes(DNSMASQ_OFFER);
        let Reply::Offer(offer) = parse(&packet, DNSMASQ_XID, DNSMASQ_MAC).unwrap() else {
            panic!("not an offer");
        };
        assert_eq!(offer.address, Ipv4Addr::new(192, 168, 99, 54));
        assert_eq!(offer.server, Ipv4Addr::new(192, 168, 99, 1));
        assert_eq!(offer.prefix, 24);
        assert_eq!(offer.routers, [Ipv4Addr::new(192, 168, 99, 1)]);
        assert_eq!(offer.dns, [Ipv4Addr::new(192, 168, 99, 1)]);
        assert_eq!(offer.domain.as_deref(), Some("lab"));
        assert_eq!(offer.hostname.as_deref(), Some("drone3"));
        assert_eq!(offer.ntp, [Ipv4Addr::new(192, 168, 99, 1)]);
        assert_eq!(offer.lease, Some(Duration::from_secs(120)));
        assert_eq!(offer.renew, Some(Duration::from_secs(60)));
        assert_eq!(offer.rebind, Some(Duration::from_secs(105)));
    }

    #[test]
    fn malformed_or_foreign_replies_are_refused_with_a_reason() {
        let good = bytes(SLIRP_ACK);
        let with = |at: usize, value: &[u8]| {
            let mut b = good.clone();
            b[at..at + value.len()].copy_from_slice(value);
            b
        };
        // Options end at the message type: 53, 1, 5, then End.
        let only_type = {
            let mut b = good[..FIXED_LEN].to_vec();
            b.extend([0x35, 1, 5, 0xff]);
            b
        };
        let no_options = {
            let mut b = good[..FIXED_LEN].to_vec();
            b.push(0xff);
            b
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                good[..100].to_vec(),
                "100-byte datagram is shorter than a DHCP message (240 bytes at least)",
            ),
            (with(0, &[1]), "op 1 is not BOOTREPLY (2)"),
            (
                with(236, &[1, 2, 3, 4]),
                "magic cookie [01, 02, 03, 04] is not DHCP's 63 82 53 63",
            ),
            (
                with(4, &[0, 0, 0, 1]),
                "transaction 0x00000001 is not ours (0xcd054a48)",
            ),
            (
                with(28, &[0xaa]),
                "for hardware address aa:54:00:12:34:56, not ours",
            ),
            (
                no_options,
                "no DHCP message type (option 53): a BOOTP reply, which this client does not take",
            ),
            (
                with(FIXED_LEN + 2, &[3]),
                "message type Request, expected OFFER, ACK or NAK",
            ),
            (only_type, "Ack without a server identifier (option 54)"),
            (
                with(16, &[0, 0, 0, 0]),
                "Ack offers no usable address (yiaddr 0.0.0.0)",
            ),
            (
                with(16, &[224, 0, 0, 1]),
                "Ack offers no usable address (yiaddr 224.0.0.1)",
            ),
            (
                with(FIXED_LEN + 11, &[0xff, 0x00, 0xff, 0x00]),
                "subnet mask 255.0.255.0 (option 1) is not contiguous",
            ),
        ];
        for (packet, want) in cases {
            let err = parse(&packet, XID, MAC).unwrap_err();
            assert_eq!(err.to_string(), want);
        }
    }

    #[test]
    fn a_nak_carries_the_servers_message() {
        let mut b = bytes(SLIRP_ACK)[..FIXED_LEN].to_vec();
        b.extend([0x35, 1, 6, 0x38, 5]);
        b.extend(b"wrong");
        b.push(0xff);
        assert_eq!(
            parse(&b, XID, MAC).unwrap(),
            Reply::Nak {
                server: None,
                message: Some("wrong".into())
            }
        );
    }

    #[test]
    fn requests_carry_identity_and_what_the_state_needs() {
        let client = Client {
            mac: MAC,
            hostname: Some("drone7".into()),
            client_id: Some(vec![1, 0x52, 0x54, 0, 0x12, 0x34, 0x56]),
        };
        let decode = |b: Vec<u8>| Message::decode(&mut Decoder::new(&b)).unwrap();
        let msg = decode(discover(&client, XID));
        assert_eq!(msg.xid(), XID);
        assert_eq!(msg.chaddr(), &MAC);
        assert!(msg.flags().broadcast());
        assert_eq!(msg.opts().msg_type(), Some(MessageType::Discover));
        assert_eq!(
            msg.opts().get(OptionCode::Hostname),
            Some(&DhcpOption::Hostname("drone7".into()))
        );
        assert_eq!(
            msg.opts().get(OptionCode::ClientIdentifier),
            Some(&DhcpOption::ClientIdentifier(vec![
                1, 0x52, 0x54, 0, 0x12, 0x34, 0x56
            ]))
        );

        let Reply::Ack(offer) = parse(&bytes(SLIRP_ACK), XID, MAC).unwrap() else {
            panic!("not an ack");
        };
        let msg = decode(select(&client, XID, &offer));
        assert_eq!(msg.opts().msg_type(), Some(MessageType::Request));
        assert_eq!(msg.ciaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(
            msg.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(offer.address))
        );
        assert_eq!(
            msg.opts().get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(offer.server))
        );

        let msg = decode(extend(&client, XID, offer.address));
        assert_eq!(msg.ciaddr(), offer.address);
        assert!(!msg.flags().broadcast());
        assert!(msg.opts().get(OptionCode::RequestedIpAddress).is_none());
        assert!(msg.opts().get(OptionCode::ServerIdentifier).is_none());

        let msg = decode(release(&client, XID, offer.address, offer.server));
        assert_eq!(msg.opts().msg_type(), Some(MessageType::Release));
        assert_eq!(msg.ciaddr(), offer.address);
        assert!(msg.opts().get(OptionCode::ParameterRequestList).is_none());
    }
}
