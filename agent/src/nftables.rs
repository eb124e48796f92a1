// SPDX-License-Identifier: GPL-3.0-or-later
//! The node firewall over netfilter netlink, without the `nft` binary.
//!
//! The ruleset is data ([`ruleset`]): chains of rules built from a few
//! matches. [`Firewall::apply`] compiles it into nf_tables expressions and
//! replaces tyd's one table (`inet chaos`) in a single batch, which the
//! kernel applies atomically: never half a ruleset, and never anyone else's
//! table touched. Layouts follow <linux/netfilter/nf_tables.h>; netfilter's
//! integer attributes are big-endian. No typed crate covers nf_tables, so
//! the messages are [`Attr`] trees on [`chaos_netlink`]'s transport.

use chaos_netlink::{Attr, Netlink, NETLINK_NETFILTER};
use netlink_packet_core::{Emitable, NetlinkSerializable, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE};

use crate::membership::Overlay;
use crate::slurm;
use chaos_contract::share;

pub const TABLE: &str = "chaos";

/// TCP port ranges open on the overlay besides the join port: Slurm's
/// slurmctld and slurmd, and the ports srun listens on. On the LAN they
/// are closed, even on a head that leaves the rest of its host alone.
pub const OVERLAY_TCP_PORTS: &[(u16, u16)] = &[
    (slurm::SLURMCTLD_PORT, slurm::SLURMCTLD_PORT),
    (slurm::SLURMD_PORT, slurm::SLURMD_PORT),
    slurm::SRUN_PORTS,
];
/// ICMP echo requests accepted per second from the LAN.
const ICMP_RATE: u64 = 10;

/// How much of the node the firewall guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A chaos node: inbound default drop on every physical NIC.
    Node,
    /// An ordinary host running the head: only the overlay and the
    /// anti-spoofing rule, the host's own traffic left alone.
    Host,
}

impl std::str::FromStr for Scope {
    type Err = FirewallError;

    fn from_str(s: &str) -> Result<Self, FirewallError> {
        match s {
            "node" => Ok(Scope::Node),
            "host" => Ok(Scope::Host),
            _ => Err(FirewallError::Scope(s.into())),
        }
    }
}

/// What the ruleset depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub scope: Scope,
    /// The overlay's range; `None` on a drone not yet joined (it learns the
    /// range from the head), whose LAN is guarded all the same.
    pub overlay: Option<Overlay>,
    pub interface: String,
    pub wireguard_port: u16,
    /// The head's join port; `None` on drones.
    pub join_port: Option<u16>,
    /// The beacon port, on a drone that looks for its head by beacon.
    pub beacon_port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    InterfaceName(String),
    CtEstablishedOrRelated,
    CtInvalid,
    IpSourceIn(Overlay),
    TcpDestination(u16),
    /// A TCP destination port from the first to the second, inclusive.
    TcpDestinations(u16, u16),
    UdpDestination(u16),
    /// DHCP replies: UDP from port 67 to port 68.
    DhcpReply,
    IcmpEchoRequest,
    /// ICMPv6 neighbour discovery and router adverts (types 133-136),
    /// without which IPv6 on the LAN stops working.
    Icmpv6NeighbourDiscovery(u8),
    /// Strict reverse-path check: no route back through the interface the
    /// packet came in on.
    NoRouteBack,
    Limit(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Jump(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: &'static str,
    /// Hook number (NF_INET_LOCAL_IN...), priority and policy (accept?)
    /// for a base chain.
    pub hook: Option<(libc::c_int, i32, bool)>,
    pub rules: Vec<Rule>,
}

fn rule(matches: Vec<Match>, verdict: Verdict) -> Rule {
    Rule { matches, verdict }
}

/// One TCP port or a range of them.
fn tcp(low: u16, high: u16) -> Match {
    if low == high {
        Match::TcpDestination(low)
    } else {
        Match::TcpDestinations(low, high)
    }
}

/// The ruleset of DESIGN.md "Cluster agent: tyd".
pub fn ruleset(params: &Params) -> Vec<Chain> {
    use Match::*;
    let node = params.scope == Scope::Node;
    let wg = || InterfaceName(params.interface.clone());
    let mut overlay = vec![rule(vec![CtEstablishedOrRelated], Verdict::Accept)];
    // The head serves its shares over NFS to the overlay alone; its LAN
    // never sees the port (on a host head, an NFS service the host has
    // of its own is the host's).
    let head_ports = params
        .join_port
        .map(|port| [(port, port), (share::NFS_PORT, share::NFS_PORT)]);
    overlay.extend(
        head_ports
            .iter()
            .flatten()
            .chain(OVERLAY_TCP_PORTS)
            .map(|&(low, high)| rule(vec![tcp(low, high)], Verdict::Accept)),
    );
    overlay.push(rule(vec![IcmpEchoRequest], Verdict::Accept));
    overlay.push(rule(vec![], Verdict::Drop));

    let mut input = vec![
        rule(vec![CtEstablishedOrRelated], Verdict::Accept),
        rule(vec![wg()], Verdict::Jump("overlay")),
    ];
    // Overlay sources arriving anywhere but the overlay are forged.
    input.extend(
        params
            .overlay
            .map(|overlay| rule(vec![IpSourceIn(overlay)], Verdict::Drop)),
    );
    let mut chains = Vec::new();
    if node {
        input.splice(
            1..1,
            [
                rule(vec![CtInvalid], Verdict::Drop),
                rule(vec![InterfaceName("lo".into())], Verdict::Accept),
            ],
        );
        input.push(rule(vec![DhcpReply], Verdict::Accept));
        input.push(rule(
            vec![UdpDestination(params.wireguard_port)],
            Verdict::Accept,
        ));
        if let Some(port) = params.join_port {
            input.push(rule(vec![TcpDestination(port)], Verdict::Accept));
        }
        if let Some(port) = params.beacon_port {
            input.push(rule(vec![UdpDestination(port)], Verdict::Accept));
        }
        input.push(rule(
            vec![IcmpEchoRequest, Limit(ICMP_RATE)],
            Verdict::Accept,
        ));
        for kind in 133..=136 {
            input.push(rule(vec![Icmpv6NeighbourDiscovery(kind)], Verdict::Accept));
        }
        chains.push(Chain {
            name: "prerouting",
            hook: Some((libc::NF_INET_PRE_ROUTING, -300, true)),
            rules: vec![
                rule(vec![DhcpReply], Verdict::Accept),
                rule(vec![NoRouteBack], Verdict::Drop),
            ],
        });
        chains.push(Chain {
            name: "forward",
            hook: Some((libc::NF_INET_FORWARD, 0, false)),
            rules: vec![],
        });
    } else {
        // The host's own traffic is its own, but Slurm's ports are the
        // cluster's: reachable on the overlay and from the host itself only.
        input.push(rule(vec![InterfaceName("lo".into())], Verdict::Accept));
        input.extend(
            OVERLAY_TCP_PORTS
                .iter()
                .map(|&(low, high)| rule(vec![tcp(low, high)], Verdict::Drop)),
        );
    }
    chains.push(Chain {
        name: "overlay",
        hook: None,
        rules: overlay,
    });
    chains.push(Chain {
        name: "input",
        hook: Some((libc::NF_INET_LOCAL_IN, 0, !node)),
        rules: input,
    });
    chains
}

// nf_tables' attribute numbers and the constants libc lacks, from
// <linux/netfilter/nf_tables.h> and <linux/netfilter/nf_conntrack_common.h>;
// message types, registers, verdicts, keys and operators come from libc.
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const CT_INVALID: u32 = 1;
const CT_ESTABLISHED: u32 = 2;
const CT_RELATED: u32 = 4;
const NFTA_LIMIT_RATE: u16 = 1;
const NFTA_LIMIT_UNIT: u16 = 2;
const NFTA_LIMIT_BURST: u16 = 3;
const NFTA_LIMIT_TYPE: u16 = 4;
const NFTA_FIB_DREG: u16 = 1;
const NFTA_FIB_RESULT: u16 = 2;
const NFTA_FIB_FLAGS: u16 = 3;
const NFT_FIB_RESULT_OIF: u32 = 1;
const NFTA_FIB_F_SADDR: u32 = 1;
const NFTA_FIB_F_IIF: u32 = 8;
const NFTA_FIB_F_PRESENT: u32 = 32;

/// An integer attribute with one of libc's nf_tables constants (C ints).
fn int(kind: u16, value: libc::c_int) -> Attr {
    Attr::be32(kind, value as u32)
}

/// A value, as the nested NFTA_DATA_VALUE the kernel expects for data.
fn data(kind: u16, value: &[u8]) -> Attr {
    Attr::nested(kind, vec![Attr::bytes(NFTA_DATA_VALUE, value)])
}

/// One nf_tables expression: its name and its attributes.
fn expr(name: &str, attributes: Vec<Attr>) -> Attr {
    Attr::nested(
        NFTA_LIST_ELEM,
        vec![
            Attr::str(NFTA_EXPR_NAME, name),
            Attr::nested(NFTA_EXPR_DATA, attributes),
        ],
    )
}

fn meta(key: libc::c_int) -> Attr {
    expr(
        "meta",
        vec![
            int(NFTA_META_DREG, libc::NFT_REG_1),
            int(NFTA_META_KEY, key),
        ],
    )
}

fn cmp(op: libc::c_int, value: &[u8]) -> Attr {
    expr(
        "cmp",
        vec![
            int(NFTA_CMP_SREG, libc::NFT_REG_1),
            int(NFTA_CMP_OP, op),
            data(NFTA_CMP_DATA, value),
        ],
    )
}

fn payload(base: libc::c_int, offset: u32, len: u32) -> Attr {
    expr(
        "payload",
        vec![
            int(NFTA_PAYLOAD_DREG, libc::NFT_REG_1),
            int(NFTA_PAYLOAD_BASE, base),
            Attr::be32(NFTA_PAYLOAD_OFFSET, offset),
            Attr::be32(NFTA_PAYLOAD_LEN, len),
        ],
    )
}

fn bitwise(mask: &[u8]) -> Attr {
    expr(
        "bitwise",
        vec![
            int(NFTA_BITWISE_SREG, libc::NFT_REG_1),
            int(NFTA_BITWISE_DREG, libc::NFT_REG_1),
            Attr::be32(NFTA_BITWISE_LEN, mask.len() as u32),
            data(NFTA_BITWISE_MASK, mask),
            data(NFTA_BITWISE_XOR, &vec![0; mask.len()]),
        ],
    )
}

fn ct_state_any(bits: u32) -> Vec<Attr> {
    vec![
        expr(
            "ct",
            vec![
                int(NFTA_CT_DREG, libc::NFT_REG_1),
                int(NFTA_CT_KEY, libc::NFT_CT_STATE),
            ],
        ),
        // The kernel keeps ct state in host order.
        bitwise(&bits.to_ne_bytes()),
        cmp(libc::NFT_CMP_NEQ, &[0; 4]),
    ]
}

/// The transport header's `len` bytes at `offset` equal `value`, for
/// packets of `protocol`.
fn transport_is(protocol: libc::c_int, offset: u32, value: &[u8]) -> Vec<Attr> {
    vec![
        meta(libc::NFT_META_L4PROTO),
        cmp(libc::NFT_CMP_EQ, &[protocol as u8]),
        payload(
            libc::NFT_PAYLOAD_TRANSPORT_HEADER,
            offset,
            value.len() as u32,
        ),
        cmp(libc::NFT_CMP_EQ, value),
    ]
}

fn nfproto_is(family: libc::c_int) -> [Attr; 2] {
    [
        meta(libc::NFT_META_NFPROTO),
        cmp(libc::NFT_CMP_EQ, &[family as u8]),
    ]
}

/// The expressions that test `m`.
fn compile(m: &Match) -> Vec<Attr> {
    match m {
        Match::InterfaceName(name) => {
            // Interface names compare as 16 bytes, NUL-padded.
            let mut bytes = name.as_bytes().to_vec();
            bytes.resize(libc::IFNAMSIZ, 0);
            vec![meta(libc::NFT_META_IIFNAME), cmp(libc::NFT_CMP_EQ, &bytes)]
        }
        Match::CtEstablishedOrRelated => ct_state_any(CT_ESTABLISHED | CT_RELATED),
        Match::CtInvalid => ct_state_any(CT_INVALID),
        Match::IpSourceIn(overlay) => {
            let mask = (u32::MAX << (32 - overlay.prefix_len)).to_be_bytes();
            let mut exprs = nfproto_is(libc::NFPROTO_IPV4).to_vec();
            exprs.extend([
                payload(libc::NFT_PAYLOAD_NETWORK_HEADER, 12, 4),
                bitwise(&mask),
                cmp(libc::NFT_CMP_EQ, &overlay.network.octets()),
            ]);
            exprs
        }
        Match::TcpDestination(port) => transport_is(libc::IPPROTO_TCP, 2, &port.to_be_bytes()),
        Match::TcpDestinations(low, high) => vec![
            meta(libc::NFT_META_L4PROTO),
            cmp(libc::NFT_CMP_EQ, &[libc::IPPROTO_TCP as u8]),
            payload(libc::NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2),
            cmp(libc::NFT_CMP_GTE, &low.to_be_bytes()),
            cmp(libc::NFT_CMP_LTE, &high.to_be_bytes()),
        ],
        Match::UdpDestination(port) => transport_is(libc::IPPROTO_UDP, 2, &port.to_be_bytes()),
        Match::DhcpReply => {
            let mut exprs = transport_is(libc::IPPROTO_UDP, 0, &67u16.to_be_bytes());
            exprs.extend([
                payload(libc::NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2),
                cmp(libc::NFT_CMP_EQ, &68u16.to_be_bytes()),
            ]);
            exprs
        }
        Match::IcmpEchoRequest => {
            let mut exprs = nfproto_is(libc::NFPROTO_IPV4).to_vec();
            exprs.extend(transport_is(libc::IPPROTO_ICMP, 0, &[8]));
            exprs
        }
        Match::Icmpv6NeighbourDiscovery(kind) => {
            let mut exprs = nfproto_is(libc::NFPROTO_IPV6).to_vec();
            exprs.extend(transport_is(libc::IPPROTO_ICMPV6, 0, &[*kind]));
            exprs
        }
        Match::NoRouteBack => vec![
            expr(
                "fib",
                vec![
                    int(NFTA_FIB_DREG, libc::NFT_REG_1),
                    Attr::be32(NFTA_FIB_RESULT, NFT_FIB_RESULT_OIF),
                    Attr::be32(
                        NFTA_FIB_FLAGS,
                        NFTA_FIB_F_SADDR | NFTA_FIB_F_IIF | NFTA_FIB_F_PRESENT,
                    ),
                ],
            ),
            cmp(libc::NFT_CMP_EQ, &[0]),
        ],
        Match::Limit(per_second) => vec![expr(
            "limit",
            vec![
                Attr::be64(NFTA_LIMIT_RATE, *per_second),
                // The rate is per this many seconds.
                Attr::be64(NFTA_LIMIT_UNIT, 1),
                Attr::be32(NFTA_LIMIT_BURST, 5),
                int(NFTA_LIMIT_TYPE, libc::NFT_LIMIT_PKTS),
            ],
        )],
    }
}

fn verdict(v: &Verdict) -> Attr {
    let mut verdict = vec![int(
        NFTA_VERDICT_CODE,
        match v {
            Verdict::Accept => libc::NF_ACCEPT,
            Verdict::Drop => libc::NF_DROP,
            Verdict::Jump(_) => libc::NFT_JUMP,
        },
    )];
    if let Verdict::Jump(chain) = v {
        verdict.push(Attr::str(NFTA_VERDICT_CHAIN, chain));
    }
    expr(
        "immediate",
        vec![
            int(NFTA_IMMEDIATE_DREG, libc::NFT_REG_VERDICT),
            Attr::nested(
                NFTA_IMMEDIATE_DATA,
                vec![Attr::nested(NFTA_DATA_VERDICT, verdict)],
            ),
        ],
    )
}

/// One nfnetlink message: its type, the nfgenmsg header (protocol family,
/// version, resource id) and its attributes, with the flags it is sent
/// with.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NfMessage {
    message_type: u16,
    family: u8,
    /// Big-endian on the wire; a batch marker names its subsystem here.
    resource: u16,
    attributes: Vec<Attr>,
}

impl NetlinkSerializable for NfMessage {
    fn message_type(&self) -> u16 {
        self.message_type
    }

    fn buffer_len(&self) -> usize {
        NFGENMSG_LEN + self.attributes.as_slice().buffer_len()
    }

    fn serialize(&self, buffer: &mut [u8]) {
        buffer[0] = self.family;
        buffer[1] = libc::NFNETLINK_V0 as u8;
        buffer[2..4].copy_from_slice(&self.resource.to_be_bytes());
        self.attributes.as_slice().emit(&mut buffer[NFGENMSG_LEN..]);
    }
}

const NFGENMSG_LEN: usize = 4;

/// An nf_tables message of `kind` (NFT_MSG_NEWTABLE...) for the inet
/// family, with an ack asked for.
fn message(kind: libc::c_int, flags: u16, attributes: Vec<Attr>) -> (NfMessage, u16) {
    let message = NfMessage {
        message_type: ((libc::NFNL_SUBSYS_NFTABLES << 8) | kind) as u16,
        family: libc::NFPROTO_INET as u8,
        resource: 0,
        attributes,
    };
    (message, NLM_F_ACK | flags)
}

fn batch_marker(kind: libc::c_int) -> (NfMessage, u16) {
    let marker = NfMessage {
        message_type: kind as u16,
        family: libc::NFPROTO_UNSPEC as u8,
        resource: libc::NFNL_SUBSYS_NFTABLES as u16,
        attributes: Vec::new(),
    };
    (marker, 0)
}

/// The table cleared: created if missing, then deleted, so that deleting
/// never fails on a table that is not there.
fn clear_table() -> [(NfMessage, u16); 2] {
    [libc::NFT_MSG_NEWTABLE, libc::NFT_MSG_DELTABLE]
        .map(|kind| message(kind, NLM_F_CREATE, vec![Attr::str(NFTA_TABLE_NAME, TABLE)]))
}

/// `messages` between the markers of a batch, which the kernel applies
/// all or nothing.
fn batch(messages: impl IntoIterator<Item = (NfMessage, u16)>) -> Vec<(NfMessage, u16)> {
    let mut batch = vec![batch_marker(libc::NFNL_MSG_BATCH_BEGIN)];
    batch.extend(messages);
    batch.push(batch_marker(libc::NFNL_MSG_BATCH_END));
    batch
}

/// The batch that replaces tyd's table with `chains`.
fn replace_batch(chains: &[Chain]) -> Vec<(NfMessage, u16)> {
    let mut messages = clear_table().to_vec();
    messages.push(message(
        libc::NFT_MSG_NEWTABLE,
        NLM_F_CREATE,
        vec![Attr::str(NFTA_TABLE_NAME, TABLE)],
    ));
    // Chains first: rules may jump to any of them.
    for chain in chains {
        let mut attributes = vec![
            Attr::str(NFTA_CHAIN_TABLE, TABLE),
            Attr::str(NFTA_CHAIN_NAME, chain.name),
        ];
        if let Some((hook, priority, accept)) = chain.hook {
            attributes.extend([
                Attr::nested(
                    NFTA_CHAIN_HOOK,
                    vec![
                        int(NFTA_HOOK_HOOKNUM, hook),
                        int(NFTA_HOOK_PRIORITY, priority),
                    ],
                ),
                int(
                    NFTA_CHAIN_POLICY,
                    if accept {
                        libc::NF_ACCEPT
                    } else {
                        libc::NF_DROP
                    },
                ),
                Attr::str(NFTA_CHAIN_TYPE, "filter"),
            ]);
        }
        messages.push(message(libc::NFT_MSG_NEWCHAIN, NLM_F_CREATE, attributes));
    }
    for chain in chains {
        for rule in &chain.rules {
            let exprs = rule
                .matches
                .iter()
                .flat_map(compile)
                .chain([verdict(&rule.verdict)])
                .collect();
            messages.push(message(
                libc::NFT_MSG_NEWRULE,
                NLM_F_CREATE | NLM_F_APPEND,
                vec![
                    Attr::str(NFTA_RULE_TABLE, TABLE),
                    Attr::str(NFTA_RULE_CHAIN, chain.name),
                    Attr::nested(NFTA_RULE_EXPRESSIONS, exprs),
                ],
            ));
        }
    }
    batch(messages)
}

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("opening netfilter netlink: {0}")]
    Open(chaos_netlink::Error),
    #[error("loading the firewall (table inet {TABLE}): {0}")]
    Load(chaos_netlink::Error),
    #[error("removing the firewall (table inet {TABLE}): {0}")]
    Remove(chaos_netlink::Error),
    #[error("firewall {0:?}: expected node or host")]
    Scope(String),
}

/// tyd's firewall table in this network namespace.
pub struct Firewall {
    netlink: Netlink,
}

impl Firewall {
    pub fn open() -> Result<Self, FirewallError> {
        Ok(Self {
            netlink: Netlink::open(NETLINK_NETFILTER).map_err(FirewallError::Open)?,
        })
    }

    /// Replaces tyd's table with the ruleset for `params`, atomically.
    pub fn apply(&mut self, params: &Params) -> Result<(), FirewallError> {
        self.netlink
            .batch(replace_batch(&ruleset(params)))
            .map_err(FirewallError::Load)
    }

    /// Removes tyd's table; the host's other tables stay as they are.
    pub fn remove(&mut self) -> Result<(), FirewallError> {
        self.netlink
            .batch(batch(clear_table()))
            .map_err(FirewallError::Remove)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(scope: Scope, join_port: Option<u16>) -> Params {
        Params {
            scope,
            overlay: Some("10.99.0.0/16".parse().unwrap()),
            interface: "wg0".into(),
            wireguard_port: 51820,
            join_port,
            beacon_port: None,
        }
    }

    fn input(chains: &[Chain]) -> &Chain {
        chains.iter().find(|c| c.name == "input").unwrap()
    }

    fn accepts(chain: &Chain, m: &Match) -> bool {
        chain
            .rules
            .iter()
            .any(|r| r.matches.first() == Some(m) && r.verdict == Verdict::Accept)
    }

    #[test]
    fn a_node_drops_by_default_and_opens_only_the_documented_ports() {
        let head = ruleset(&params(Scope::Node, Some(7700)));
        let input_chain = input(&head);
        assert_eq!(
            input_chain.hook,
            Some((libc::NF_INET_LOCAL_IN, 0, false)),
            "policy drop"
        );
        assert!(accepts(input_chain, &Match::UdpDestination(51820)));
        assert!(accepts(input_chain, &Match::TcpDestination(7700)));
        assert!(accepts(input_chain, &Match::DhcpReply));
        let drone = ruleset(&params(Scope::Node, None));
        assert!(!accepts(input(&drone), &Match::TcpDestination(7700)));
        let tcp_ports: Vec<u16> = input(&drone)
            .rules
            .iter()
            .filter_map(|r| match r.matches.first() {
                Some(Match::TcpDestination(p)) => Some(*p),
                _ => None,
            })
            .collect();
        assert!(tcp_ports.is_empty(), "a drone opens no TCP port on the LAN");
        assert!(!accepts(input(&drone), &Match::UdpDestination(7701)));
        let listening = ruleset(&Params {
            beacon_port: Some(7701),
            ..params(Scope::Node, None)
        });
        assert!(accepts(input(&listening), &Match::UdpDestination(7701)));
        // Before its join a drone knows no overlay range, and its LAN is
        // closed all the same.
        let unjoined = ruleset(&Params {
            overlay: None,
            ..params(Scope::Node, None)
        });
        assert_eq!(
            input(&unjoined).hook,
            Some((libc::NF_INET_LOCAL_IN, 0, false))
        );
        assert!(accepts(input(&unjoined), &Match::UdpDestination(51820)));
        assert!(!input(&unjoined)
            .rules
            .iter()
            .any(|r| matches!(r.matches.first(), Some(Match::IpSourceIn(_)))));
        assert!(head.iter().any(|c| c.name == "forward"));
        assert!(head.iter().any(|c| c.name == "prerouting"));
        // NFS: the head's, on the overlay only.
        let nfs = Match::TcpDestination(share::NFS_PORT);
        let overlay = |chains: &[Chain]| chains.iter().find(|c| c.name == "overlay").cloned();
        assert!(accepts(&overlay(&head).unwrap(), &nfs));
        assert!(!accepts(input_chain, &nfs));
        assert!(!accepts(&overlay(&drone).unwrap(), &nfs));
    }

    #[test]
    fn a_host_head_leaves_the_hosts_traffic_alone() {
        let chains = ruleset(&params(Scope::Host, Some(7700)));
        assert_eq!(
            input(&chains).hook,
            Some((libc::NF_INET_LOCAL_IN, 0, true)),
            "policy accept"
        );
        assert!(chains
            .iter()
            .all(|c| c.name != "forward" && c.name != "prerouting"));
        // The overlay is still guarded, and forged overlay sources dropped.
        let overlay = chains.iter().find(|c| c.name == "overlay").unwrap();
        assert_eq!(overlay.rules.last().unwrap().verdict, Verdict::Drop);
        assert!(input(&chains)
            .rules
            .iter()
            .any(|r| r.verdict == Verdict::Drop
                && matches!(r.matches.first(), Some(Match::IpSourceIn(_)))));
        // Slurm's ports only on the overlay and from the host itself.
        for port in [
            Match::TcpDestination(6817),
            Match::TcpDestination(6818),
            Match::TcpDestinations(60001, 60100),
        ] {
            assert!(accepts(overlay, &port), "{port:?} on the overlay");
            let rules = &input(&chains).rules;
            let drop = rules
                .iter()
                .position(|r| r.verdict == Verdict::Drop && r.matches == [port.clone()]);
            let lo = rules.iter().position(|r| {
                r.verdict == Verdict::Accept && r.matches == [Match::InterfaceName("lo".into())]
            });
            assert!(
                lo < drop && drop.is_some(),
                "{port:?} dropped off the overlay"
            );
        }
    }

    /// The name an expression was given.
    fn name(expr: &Attr) -> &str {
        let Attr::Nested(NFTA_LIST_ELEM, attributes) = expr else {
            panic!("not an expression: {expr:?}");
        };
        let Attr::Value(NFTA_EXPR_NAME, name) = &attributes[0] else {
            panic!("an expression without its name first: {expr:?}");
        };
        std::str::from_utf8(name).unwrap().trim_end_matches('\0')
    }

    #[test]
    fn matches_compile_to_the_expressions_nft_would_load() {
        let port = compile(&Match::TcpDestination(7700));
        let names: Vec<&str> = port.iter().map(name).collect();
        assert_eq!(names, ["meta", "cmp", "payload", "cmp"]);
        assert_eq!(port[1], cmp(libc::NFT_CMP_EQ, &[6]), "TCP");
        assert_eq!(port[3], cmp(libc::NFT_CMP_EQ, &[0x1e, 0x14]), "port 7700");
        let wg = compile(&Match::InterfaceName("wg0".into()));
        let mut padded = b"wg0".to_vec();
        padded.resize(16, 0);
        assert_eq!(wg[1], cmp(libc::NFT_CMP_EQ, &padded));
        let established = compile(&Match::CtEstablishedOrRelated);
        let names: Vec<&str> = established.iter().map(name).collect();
        assert_eq!(names, ["ct", "bitwise", "cmp"]);
        assert_eq!(name(&verdict(&Verdict::Jump("overlay"))), "immediate");
    }

    #[test]
    fn the_batch_is_begin_clear_table_chains_rules_end() {
        let chains = ruleset(&params(Scope::Node, Some(7700)));
        let batch = replace_batch(&chains);
        let rules: usize = chains.iter().map(|c| c.rules.len()).sum();
        assert_eq!(batch.len(), 1 + 2 + 1 + chains.len() + rules + 1);
    }
}
