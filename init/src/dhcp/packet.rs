//! DHCPv4 messages (RFC 2131, options of RFC 2132): the requests the client
//! sends and the checks a reply must pass before anything of it is used.
//! dhcproto does the wire format; this module decides what goes in and what
//! a usable reply is. It does no I/O.
//!
//! Any host on the LAN can answer, so a reply is read as hostile: one that
//! is too long, repeats an option that has one value, or leases for less
//! than [`MIN_LEASE`] is refused; what a usable reply carries that the node
//! must not use (a router off its subnet, a name with control characters,
//! more servers than it needs) is left out and said so in [`Offer::ignored`].

use std::net::Ipv4Addr;
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

use chaos_contract::cmdline::is_dns_name;

/// The fixed BOOTP part plus the magic cookie: nothing shorter is DHCP.
const FIXED_LEN: usize = 240;
/// DHCP's magic cookie, after the BOOTP fields.
const COOKIE: [u8; 4] = [99, 130, 83, 99];
/// What we tell servers we can receive (RFC 2131's minimum is 576); a
/// longer reply is refused.
pub const MAX_MESSAGE_SIZE: u16 = 1500;
/// The shortest lease taken: a node would spend a shorter one renewing.
pub const MIN_LEASE: Duration = Duration::from_secs(10);
/// Servers of each kind (DNS, NTP) kept from a reply: resolv.conf's libc
/// reads three.
const MAX_SERVERS: usize = 3;
/// Options that carry one value, so a reply naming one twice is
/// contradicting itself: subnet mask, lease time, message type, server
/// identifier, T1, T2.
const SINGLE_VALUED: [u8; 6] = [1, 51, 53, 54, 58, 59];

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
    #[error("datagram of more than {MAX_MESSAGE_SIZE} bytes, the most this client takes")]
    Long,
    #[error("option {0} appears more than once, but has one value")]
    Repeated(u8),
    #[error("option {code} is {len} bytes long, expected {expected}")]
    OptionLength {
        code: u8,
        len: usize,
        expected: String,
    },
    #[error("a lease of {0} s (this client takes {min} s at least)", min = MIN_LEASE.as_secs())]
    ShortLease(u64),
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
    /// What the reply carried that is not used, and why, for the console.
    pub ignored: Vec<String>,
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
    if bytes.len() > usize::from(MAX_MESSAGE_SIZE) {
        return Err(PacketError::Long);
    }
    // dhcproto takes any cookie and stops reading options at the first bad
    // one, so the cookie is checked here and a reply missing what we need
    // is refused below.
    let cookie: [u8; 4] = [bytes[236], bytes[237], bytes[238], bytes[239]];
    if cookie != COOKIE {
        return Err(PacketError::Cookie(cookie));
    }
    // dhcproto keeps the last of repeated options (or joins adjacent ones)
    // and trusts option lengths, so both are checked on the raw bytes.
    check_options(&bytes[FIXED_LEN..])?;
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
    // From the raw bytes: dhcproto's chaddr() cuts the field at the
    // message's hardware length, and panics when a reply says more than 16.
    let chaddr = &bytes[28..34];
    if chaddr != mac {
        let shown: Vec<String> = chaddr.iter().map(|b| format!("{b:02x}")).collect();
        return Err(PacketError::OtherClient(shown.join(":")));
    }
    let opts = msg.opts();
    let kind = opts.msg_type().ok_or(PacketError::NoMessageType)?;
    let server = match opts.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(server)) => Some(*server),
        _ => None,
    };
    if kind == MessageType::Nak {
        // Shown on the console: no control characters, and not a screenful.
        let message = match opts.get(OptionCode::Message) {
            Some(DhcpOption::Message(text)) => Some(
                text.chars()
                    .take(128)
                    .map(|c| if c.is_control() { '?' } else { c })
                    .collect(),
            ),
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
    let lease = seconds(OptionCode::AddressLeaseTime);
    if let Some(lease) = lease.filter(|l| *l < MIN_LEASE) {
        return Err(PacketError::ShortLease(lease.as_secs()));
    }
    let mut ignored = Vec::new();
    let mut name = |code, what: &str| match opts.get(code) {
        Some(DhcpOption::Hostname(s) | DhcpOption::DomainName(s)) => {
            // NUL-padded by some servers.
            let trimmed = s.trim_end_matches('\0');
            if is_dns_name(trimmed) {
                return Some(trimmed.to_string());
            }
            let shown: String = trimmed.chars().take(64).collect();
            ignored.push(format!(
                "{what} {shown:?} (expected a DNS name: letters, digits, '-' and '.')"
            ));
            None
        }
        _ => None,
    };
    let hostname = name(OptionCode::Hostname, "host name");
    let domain = name(OptionCode::DomainName, "domain");
    let subnet = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    let on_link = |router: &Ipv4Addr| {
        u32::from(*router) & subnet == u32::from(address) & subnet && *router != address
    };
    let mut routers = addresses(OptionCode::Router);
    for router in routers.iter().filter(|r| !on_link(r)) {
        ignored.push(format!(
            "router {router}, outside {}/{prefix}",
            Ipv4Addr::from(u32::from(address) & subnet)
        ));
    }
    routers.retain(on_link);
    let mut servers = |code, what: &str| {
        let mut list = addresses(code);
        if list.len() > MAX_SERVERS {
            ignored.push(format!(
                "{} of {} {what} servers (the first {MAX_SERVERS} are kept)",
                list.len() - MAX_SERVERS,
                list.len()
            ));
            list.truncate(MAX_SERVERS);
        }
        list
    };
    let dns = servers(OptionCode::DomainNameServer, "DNS");
    let ntp = servers(OptionCode::NtpServers, "NTP");
    let offer = Offer {
        address,
        server,
        prefix,
        routers,
        dns,
        domain,
        hostname,
        ntp,
        lease,
        renew: seconds(OptionCode::Renewal),
        rebind: seconds(OptionCode::Rebinding),
        ignored,
    };
    Ok(match kind {
        MessageType::Offer => Reply::Offer(offer),
        _ => Reply::Ack(offer),
    })
}

/// Options whose length is fixed (or has a least), as RFC 2132 and its
/// successors give them; dhcproto assumes these lengths (asserting some
/// in debug builds, as fuzzing found), so a reply that breaks one is
/// refused before it is decoded.
const LENGTHS: &[(u8, usize, bool)] = &[
    // (code, length, whether it may be longer)
    (1, 4, false),
    (51, 4, false),
    (53, 1, false),
    (54, 4, false),
    (57, 2, false),
    (58, 4, false),
    (59, 4, false),
    (80, 0, false),
    (81, 3, true),
    (94, 3, false),
    (152, 4, false),
    (153, 4, false),
    (154, 4, false),
    (155, 4, false),
];

/// Checks `options` (the bytes after the magic cookie) as raw bytes: no
/// option among [`SINGLE_VALUED`] twice, none of [`LENGTHS`] of another
/// length.
fn check_options(options: &[u8]) -> Result<(), PacketError> {
    let mut seen = [false; 256];
    let mut at = 0;
    while let Some(&code) = options.get(at) {
        match code {
            0 => at += 1,
            255 => break,
            _ => {
                if SINGLE_VALUED.contains(&code)
                    && std::mem::replace(&mut seen[usize::from(code)], true)
                {
                    return Err(PacketError::Repeated(code));
                }
                let len = options.get(at + 1).map_or(0, |l| usize::from(*l));
                if let Some(&(_, expected, at_least)) = LENGTHS.iter().find(|(c, ..)| *c == code) {
                    if len != expected && !(at_least && len > expected) {
                        return Err(PacketError::OptionLength {
                            code,
                            len,
                            expected: format!(
                                "{}{expected}",
                                if at_least { "at least " } else { "" }
                            ),
                        });
                    }
                }
                at += 2 + len;
            }
        }
    }
    Ok(())
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
                ignored: vec![],
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

    /// An ACK to (XID, MAC) of 192.168.98.50/24 from 192.168.98.1, its
    /// options (after the message type and server) given as raw bytes.
    fn ack_with(options: &[u8]) -> Vec<u8> {
        let mut b = bytes(SLIRP_ACK)[..FIXED_LEN].to_vec();
        b[16..20].copy_from_slice(&[192, 168, 98, 50]);
        b.extend([53, 1, 5, 54, 4, 192, 168, 98, 1, 1, 4, 255, 255, 255, 0]);
        b.extend(options);
        b.push(0xff);
        b
    }

    fn ack_of(options: &[u8]) -> Offer {
        match parse(&ack_with(options), XID, MAC) {
            Ok(Reply::Ack(offer)) => offer,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hostile_replies_are_refused_with_a_reason() {
        // Vendor options (43) enough to pass 1500 bytes.
        let mut vendor = Vec::new();
        for _ in 0..6 {
            vendor.extend([43, 255]);
            vendor.extend([0; 255]);
        }
        let long = ack_with(&vendor);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                long,
                "datagram of more than 1500 bytes, the most this client takes",
            ),
            (
                ack_with(&[53, 1, 2]),
                "option 53 appears more than once, but has one value",
            ),
            (
                ack_with(&[54, 4, 10, 0, 0, 1]),
                "option 54 appears more than once, but has one value",
            ),
            (
                ack_with(&[51, 4, 0, 0, 0, 0]),
                "a lease of 0 s (this client takes 10 s at least)",
            ),
            // Lengths dhcproto would trust (or assert on), as fuzzing found.
            (
                ack_with(&[94, 2, 1, 2]),
                "option 94 is 2 bytes long, expected 3",
            ),
            (
                ack_with(&[81, 1, 0]),
                "option 81 is 1 bytes long, expected at least 3",
            ),
            (
                ack_with(&[51, 2, 0, 9]),
                "option 51 is 2 bytes long, expected 4",
            ),
            (
                ack_with(&[51, 4, 0, 0, 0, 9]),
                "a lease of 9 s (this client takes 10 s at least)",
            ),
        ];
        for (packet, want) in cases {
            let err = parse(&packet, XID, MAC).unwrap_err();
            assert_eq!(err.to_string(), want);
        }
        // Another client's transaction or hardware address: not ours.
        let mut other = ack_with(&[]);
        other[4] ^= 1;
        assert!(matches!(
            parse(&other, XID, MAC),
            Err(PacketError::OtherTransaction { .. })
        ));
        let mut other = ack_with(&[]);
        other[33] ^= 1;
        assert!(matches!(
            parse(&other, XID, MAC),
            Err(PacketError::OtherClient(_))
        ));
        // A hardware address length beyond the 16-byte field, as fuzzing
        // found: once a panic in dhcproto, now read past.
        let mut long_hlen = ack_with(&[]);
        long_hlen[2] = 205;
        assert!(matches!(parse(&long_hlen, XID, MAC), Ok(Reply::Ack(_))));
    }

    #[test]
    fn what_a_usable_reply_must_not_set_is_left_out_and_said() {
        // The longest lease is no lease end at all.
        assert_eq!(ack_of(&[51, 4, 0xff, 0xff, 0xff, 0xff]).lease, None);
        assert_eq!(
            ack_of(&[51, 4, 0xff, 0xff, 0xff, 0xfe]).lease,
            Some(Duration::from_secs(u64::from(u32::MAX - 1)))
        );

        let mut options = vec![3, 8, 10, 9, 9, 9, 192, 168, 98, 254];
        options.extend([12, 9]);
        options.extend(b"dr\x1b[2Jone");
        options.extend([15, 5]);
        options.extend(b"lab\n ");
        options.extend([6, 40]);
        for n in 1..=10 {
            options.extend([192, 168, 98, n]);
        }
        let offer = ack_of(&options);
        assert_eq!(offer.routers, [Ipv4Addr::new(192, 168, 98, 254)]);
        assert_eq!(offer.hostname, None);
        assert_eq!(offer.domain, None);
        assert_eq!(offer.dns.len(), 3);
        assert_eq!(
            offer.ignored,
            [
                "host name \"dr\\u{1b}[2Jone\" (expected a DNS name: letters, digits, '-' and '.')",
                "domain \"lab\\n \" (expected a DNS name: letters, digits, '-' and '.')",
                "router 10.9.9.9, outside 192.168.98.0/24",
                "7 of 10 DNS servers (the first 3 are kept)",
            ]
        );
        let named = ack_of(&[12, 6, b'd', b'r', b'o', b'n', b'e', 0]);
        assert_eq!(named.hostname.as_deref(), Some("drone"));
        assert!(named.ignored.is_empty());
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
        let mut b = bytes(SLIRP_ACK)[..FIXED_LEN].to_vec();
        b.extend([0x35, 1, 6, 0x38, 6]);
        b.extend(b"\x1b[2Jno");
        b.push(0xff);
        let Reply::Nak { message, .. } = parse(&b, XID, MAC).unwrap() else {
            panic!("not a NAK");
        };
        assert_eq!(message.as_deref(), Some("?[2Jno"));
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
