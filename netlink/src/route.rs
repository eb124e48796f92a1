// SPDX-License-Identifier: GPL-3.0-or-later
//! The route netlink messages init and tyd send (links, addresses, the
//! default route), built from netlink-packet-route's message types, and the
//! links init reads back.
//!
//! Requests are sent as [`Request`]s of one message type each, never
//! through the crate's `RouteNetlinkMessage`: that enum links in the
//! emitters and parsers of every rtnetlink family and attribute (about
//! 600 KB of a static binary; init's budget is 1.5 MB), where a generic
//! request links only the messages a binary sends. Replies are decoded
//! only as far as [`Link`] needs, for the same reason.

use std::net::Ipv4Addr;

use netlink_packet_core::{
    parse_string, DecodeError, Emitable, NetlinkDeserializable, NetlinkHeader, NetlinkSerializable,
    NlasIterator, NLA_TYPE_MASK,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkFlags, LinkHeader};
use netlink_packet_route::route::{
    RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::AddressFamily;

use crate::Attr;

// Link attributes from <linux/if_link.h>, which the libc crate lacks on
// glibc and musl.
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_OPERSTATE: u16 = 16;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;

/// One route netlink request: a typed message sent as `message_type`
/// (RTM_NEWLINK, RTM_NEWADDR...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<M> {
    pub message_type: u16,
    pub message: M,
}

impl<M: Emitable> NetlinkSerializable for Request<M> {
    fn message_type(&self) -> u16 {
        self.message_type
    }

    fn buffer_len(&self) -> usize {
        self.message.buffer_len()
    }

    fn serialize(&self, buffer: &mut [u8]) {
        self.message.emit(buffer)
    }
}

/// RTM_GETLINK for link `index`; as a dump (index 0), every link.
pub fn get_link(index: u32) -> Request<LinkHeader> {
    Request {
        message_type: libc::RTM_GETLINK,
        message: LinkHeader {
            index,
            ..LinkHeader::default()
        },
    }
}

/// Sets link `index` up; a link that already is up stays so. The header
/// says it all, no attributes needed.
pub fn set_up(index: u32) -> Request<LinkHeader> {
    Request {
        message_type: libc::RTM_SETLINK,
        message: LinkHeader {
            index,
            flags: LinkFlags::Up,
            change_mask: LinkFlags::Up,
            ..LinkHeader::default()
        },
    }
}

/// A link request with attributes: the ifinfomsg header, then `attributes`.
///
/// The attributes are [`Attr`]s rather than the crate's `LinkAttribute`:
/// emitting a `LinkMessage` links in the emitters of every link attribute
/// and link kind (CAN timings, XDP, ...), 127 KB of tyd for the two
/// attributes it ever sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRequest {
    pub header: LinkHeader,
    pub attributes: Vec<Attr>,
}

impl Emitable for LinkRequest {
    fn buffer_len(&self) -> usize {
        self.header.buffer_len() + self.attributes.as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        let (header, attributes) = buffer.split_at_mut(self.header.buffer_len());
        self.header.emit(header);
        self.attributes.as_slice().emit(attributes);
    }
}

/// Creates a virtual link `name` of `kind` ("wireguard"; send with
/// NLM_F_CREATE).
pub fn new_link(name: &str, kind: &str) -> Request<LinkRequest> {
    Request {
        message_type: libc::RTM_NEWLINK,
        message: LinkRequest {
            header: LinkHeader::default(),
            attributes: vec![
                Attr::str(IFLA_IFNAME, name),
                Attr::nested(IFLA_LINKINFO, vec![Attr::str(IFLA_INFO_KIND, kind)]),
            ],
        },
    }
}

/// Deletes the link `name`; its addresses and routes go with it.
pub fn delete_link(name: &str) -> Request<LinkRequest> {
    Request {
        message_type: libc::RTM_DELLINK,
        message: LinkRequest {
            header: LinkHeader::default(),
            attributes: vec![Attr::str(IFLA_IFNAME, name)],
        },
    }
}

/// `address/prefix_len` on link `index`, with `broadcast` if given:
/// RTM_NEWADDR adds it (with NLM_F_REPLACE, re-adding is harmless),
/// RTM_DELADDR removes it.
pub fn address(
    message_type: u16,
    index: u32,
    address: Ipv4Addr,
    prefix_len: u8,
    broadcast: Option<Ipv4Addr>,
) -> Request<AddressMessage> {
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
    message
        .attributes
        .extend(broadcast.map(AddressAttribute::Broadcast));
    Request {
        message_type,
        message,
    }
}

/// The IPv4 default route via `gateway`, out of link `via` if given (send
/// with NLM_F_CREATE | NLM_F_REPLACE).
pub fn default_route(gateway: Ipv4Addr, via: Option<u32>) -> Request<RouteMessage> {
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
    Request {
        message_type: libc::RTM_NEWROUTE,
        message,
    }
}

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

/// A reply to a link request or a link notification: a link, or another
/// message (RTM_DELLINK...) left unread.
#[derive(Debug)]
pub enum LinkReply {
    Link(Link),
    Other,
}

impl NetlinkDeserializable for LinkReply {
    type Error = DecodeError;

    fn deserialize(header: &NetlinkHeader, payload: &[u8]) -> Result<Self, DecodeError> {
        match header.message_type {
            libc::RTM_NEWLINK => Link::parse(payload).map(LinkReply::Link),
            _ => Ok(LinkReply::Other),
        }
    }
}

impl LinkReply {
    pub fn link(self) -> Option<Link> {
        match self {
            LinkReply::Link(link) => Some(link),
            LinkReply::Other => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST};
    use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage, State};
    use netlink_packet_route::RouteNetlinkMessage;

    use crate::tests::reply;

    fn new_link_reply(
        flags: LinkFlags,
        attributes: Vec<LinkAttribute>,
    ) -> NetlinkPayload<RouteNetlinkMessage> {
        let mut message = LinkMessage::default();
        message.header.index = 2;
        message.header.flags = flags;
        message.attributes = attributes;
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(message))
    }

    fn decode(payload: NetlinkPayload<RouteNetlinkMessage>) -> LinkReply {
        match NetlinkMessage::<LinkReply>::deserialize(&reply(0, 0, payload))
            .unwrap()
            .payload
        {
            NetlinkPayload::InnerMessage(reply) => reply,
            other => panic!("not a message: {other:?}"),
        }
    }

    fn decode_link(payload: NetlinkPayload<RouteNetlinkMessage>) -> Link {
        decode(payload).link().expect("a link")
    }

    #[test]
    fn link_reads_name_mac_and_flags() {
        let link = decode_link(new_link_reply(
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
            let link = decode_link(new_link_reply(flags, vec![LinkAttribute::OperState(state)]));
            assert_eq!(link.carrier, carrier, "{flags:?} {state:?}");
        }
    }

    #[test]
    fn zero_or_odd_sized_hardware_addresses_are_no_mac() {
        for address in [vec![0; 6], vec![1, 2, 3, 4], vec![]] {
            let link = decode_link(new_link_reply(
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
        assert!(matches!(decode(payload), LinkReply::Other));
    }

    /// Our requests, parsed back by the crate's full decoder.
    fn parse(request: impl NetlinkSerializable) -> RouteNetlinkMessage {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(request));
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes)
            .unwrap()
            .payload
        {
            NetlinkPayload::InnerMessage(message) => message,
            other => panic!("not a request: {other:?}"),
        }
    }

    #[test]
    fn link_requests_are_the_header_alone() {
        assert!(matches!(
            parse(get_link(0)),
            RouteNetlinkMessage::GetLink(_)
        ));
        let RouteNetlinkMessage::SetLink(message) = parse(set_up(3)) else {
            panic!("not RTM_SETLINK");
        };
        assert_eq!(message.header.index, 3);
        assert_eq!(message.header.flags, LinkFlags::Up);
        assert_eq!(message.header.change_mask, LinkFlags::Up);
        assert!(message.attributes.is_empty());
    }

    #[test]
    fn a_new_link_names_itself_and_its_kind() {
        let RouteNetlinkMessage::NewLink(message) = parse(new_link("wg0", "wireguard")) else {
            panic!("not RTM_NEWLINK");
        };
        assert_eq!(
            message.attributes,
            vec![
                LinkAttribute::IfName("wg0".into()),
                LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Wireguard)]),
            ]
        );
        let RouteNetlinkMessage::DelLink(message) = parse(delete_link("wg0")) else {
            panic!("not RTM_DELLINK");
        };
        assert_eq!(
            message.attributes,
            vec![LinkAttribute::IfName("wg0".into())]
        );
    }

    #[test]
    fn address_request_carries_local_address_and_broadcast() {
        let local = Ipv4Addr::new(192, 168, 77, 2);
        let broadcast = Ipv4Addr::new(192, 168, 77, 255);
        let request = address(libc::RTM_NEWADDR, 3, local, 24, Some(broadcast));
        let RouteNetlinkMessage::NewAddress(message) = parse(request) else {
            panic!("not RTM_NEWADDR");
        };
        assert_eq!(message.header.family, AddressFamily::Inet);
        assert_eq!(message.header.index, 3);
        assert_eq!(message.header.prefix_len, 24);
        assert_eq!(
            message.attributes,
            vec![
                AddressAttribute::Local(local.into()),
                AddressAttribute::Address(local.into()),
                AddressAttribute::Broadcast(broadcast),
            ]
        );
        let request = address(libc::RTM_DELADDR, 3, local, 16, None);
        let RouteNetlinkMessage::DelAddress(message) = parse(request) else {
            panic!("not RTM_DELADDR");
        };
        assert_eq!(message.attributes.len(), 2, "no broadcast asked for");
    }

    #[test]
    fn default_route_request_goes_to_the_main_table() {
        let gateway = Ipv4Addr::new(192, 168, 77, 1);
        let RouteNetlinkMessage::NewRoute(message) = parse(default_route(gateway, Some(4))) else {
            panic!("not RTM_NEWROUTE");
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
        assert_eq!(
            default_route(gateway, None).message.attributes,
            vec![RouteAttribute::Gateway(gateway.into())]
        );
    }
}
