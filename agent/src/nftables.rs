// SPDX-License-Identifier: GPL-3.0-or-later
//! The node firewall over netfilter netlink, without the `nft` binary.
//!
//! The ruleset is data ([`ruleset`]): chains of rules built from a few
//! matches. [`Firewall::apply`] compiles it into nf_tables expressions and
//! replaces tyd's one table (`inet chaos`) in a single batch, which the
//! kernel applies atomically: never half a ruleset, and never anyone else's
//! table touched. Layouts follow <linux/netfilter/nf_tables.h>; netfilter's
//! integer attributes are big-endian.

use netlink_packet_core::{NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE};

use crate::membership::Overlay;
use crate::netlink::{Builder, Netlink, NETLINK_NETFILTER};

pub const TABLE: &str = "chaos";

/// TCP ports open on the overlay besides the join port: Slurm's
/// slurmctld (6817), slurmd (6818) and slurmdbd (6819).
pub const OVERLAY_TCP_PORTS: &[u16] = &[6817, 6818, 6819];
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
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "node" => Ok(Scope::Node),
            "host" => Ok(Scope::Host),
            _ => Err(format!("firewall {s:?}: expected node or host")),
        }
    }
}

/// What the ruleset depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub scope: Scope,
    pub overlay: Overlay,
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
    /// Hook number, priority and policy (accept?) for a base chain.
    pub hook: Option<(u32, i32, bool)>,
    pub rules: Vec<Rule>,
}

const HOOK_PREROUTING: u32 = 0;
const HOOK_INPUT: u32 = 1;
const HOOK_FORWARD: u32 = 2;

fn rule(matches: Vec<Match>, verdict: Verdict) -> Rule {
    Rule { matches, verdict }
}

/// The ruleset of DESIGN.md "Cluster agent: tyd".
pub fn ruleset(params: &Params) -> Vec<Chain> {
    use Match::*;
    let node = params.scope == Scope::Node;
    let wg = || InterfaceName(params.interface.clone());
    let mut overlay = vec![rule(vec![CtEstablishedOrRelated], Verdict::Accept)];
    overlay.extend(
        params
            .join_port
            .iter()
            .chain(OVERLAY_TCP_PORTS)
            .map(|port| rule(vec![TcpDestination(*port)], Verdict::Accept)),
    );
    overlay.push(rule(vec![IcmpEchoRequest], Verdict::Accept));
    overlay.push(rule(vec![], Verdict::Drop));

    let mut input = vec![
        rule(vec![CtEstablishedOrRelated], Verdict::Accept),
        rule(vec![wg()], Verdict::Jump("overlay")),
        // Overlay sources arriving anywhere but the overlay are forged.
        rule(vec![IpSourceIn(params.overlay)], Verdict::Drop),
    ];
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
            hook: Some((HOOK_PREROUTING, -300, true)),
            rules: vec![
                rule(vec![DhcpReply], Verdict::Accept),
                rule(vec![NoRouteBack], Verdict::Drop),
            ],
        });
        chains.push(Chain {
            name: "forward",
            hook: Some((HOOK_FORWARD, 0, false)),
            rules: vec![],
        });
    }
    chains.push(Chain {
        name: "overlay",
        hook: None,
        rules: overlay,
    });
    chains.push(Chain {
        name: "input",
        hook: Some((HOOK_INPUT, 0, !node)),
        rules: input,
    });
    chains
}

// nf_tables message and attribute numbers.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFPROTO_INET: u8 = 1;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
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
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const NFT_JUMP: i32 = -3;
// meta
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFT_META_IIFNAME: u32 = 6;
const NFT_META_NFPROTO: u32 = 15;
const NFT_META_L4PROTO: u32 = 16;
// cmp
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
// payload
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
// bitwise
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;
// ct
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFT_CT_STATE: u32 = 0;
const CT_INVALID: u32 = 1;
const CT_ESTABLISHED: u32 = 2;
const CT_RELATED: u32 = 4;
// limit
const NFTA_LIMIT_RATE: u16 = 1;
const NFTA_LIMIT_UNIT: u16 = 2;
const NFTA_LIMIT_BURST: u16 = 3;
const NFTA_LIMIT_TYPE: u16 = 4;
// fib
const NFTA_FIB_DREG: u16 = 1;
const NFTA_FIB_RESULT: u16 = 2;
const NFTA_FIB_FLAGS: u16 = 3;
const NFT_FIB_RESULT_OIF: u32 = 1;
const NFTA_FIB_F_SADDR: u32 = 1;
const NFTA_FIB_F_IIF: u32 = 8;
const NFTA_FIB_F_PRESENT: u32 = 32;

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;

/// One nf_tables expression: its name and how to write its attributes.
struct Expr {
    name: &'static str,
    data: Box<dyn Fn(&mut Builder)>,
}

fn expr(name: &'static str, data: impl Fn(&mut Builder) + 'static) -> Expr {
    Expr {
        name,
        data: Box::new(data),
    }
}

fn meta(key: u32) -> Expr {
    expr("meta", move |b| {
        b.be32(NFTA_META_DREG, NFT_REG_1).be32(NFTA_META_KEY, key);
    })
}

fn cmp(op: u32, value: Vec<u8>) -> Expr {
    expr("cmp", move |b| {
        b.be32(NFTA_CMP_SREG, NFT_REG_1)
            .be32(NFTA_CMP_OP, op)
            .begin(NFTA_CMP_DATA)
            .attr(NFTA_DATA_VALUE, &value)
            .end();
    })
}

fn payload(base: u32, offset: u32, len: u32) -> Expr {
    expr("payload", move |b| {
        b.be32(NFTA_PAYLOAD_DREG, NFT_REG_1)
            .be32(NFTA_PAYLOAD_BASE, base)
            .be32(NFTA_PAYLOAD_OFFSET, offset)
            .be32(NFTA_PAYLOAD_LEN, len);
    })
}

fn bitwise(mask: Vec<u8>) -> Expr {
    expr("bitwise", move |b| {
        b.be32(NFTA_BITWISE_SREG, NFT_REG_1)
            .be32(NFTA_BITWISE_DREG, NFT_REG_1)
            .be32(NFTA_BITWISE_LEN, mask.len() as u32)
            .begin(NFTA_BITWISE_MASK)
            .attr(NFTA_DATA_VALUE, &mask)
            .end()
            .begin(NFTA_BITWISE_XOR)
            .attr(NFTA_DATA_VALUE, &vec![0; mask.len()])
            .end();
    })
}

fn ct_state_any(bits: u32) -> [Expr; 3] {
    [
        expr("ct", |b| {
            b.be32(NFTA_CT_DREG, NFT_REG_1)
                .be32(NFTA_CT_KEY, NFT_CT_STATE);
        }),
        // The kernel keeps ct state in host order.
        bitwise(bits.to_ne_bytes().to_vec()),
        cmp(NFT_CMP_NEQ, vec![0; 4]),
    ]
}

fn l4proto(protocol: u8) -> [Expr; 2] {
    [meta(NFT_META_L4PROTO), cmp(NFT_CMP_EQ, vec![protocol])]
}

fn port(protocol: u8, offset: u32, port: u16) -> Vec<Expr> {
    let [a, b] = l4proto(protocol);
    vec![
        a,
        b,
        payload(NFT_PAYLOAD_TRANSPORT_HEADER, offset, 2),
        cmp(NFT_CMP_EQ, port.to_be_bytes().to_vec()),
    ]
}

fn icmp_type(protocol: u8, kind: u8) -> Vec<Expr> {
    let [a, b] = l4proto(protocol);
    vec![
        a,
        b,
        payload(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1),
        cmp(NFT_CMP_EQ, vec![kind]),
    ]
}

/// The expressions that test `m`.
fn compile(m: &Match) -> Vec<Expr> {
    match m {
        Match::InterfaceName(name) => {
            // Interface names compare as 16 bytes, NUL-padded.
            let mut bytes = name.as_bytes().to_vec();
            bytes.resize(libc::IFNAMSIZ, 0);
            vec![meta(NFT_META_IIFNAME), cmp(NFT_CMP_EQ, bytes)]
        }
        Match::CtEstablishedOrRelated => ct_state_any(CT_ESTABLISHED | CT_RELATED).into(),
        Match::CtInvalid => ct_state_any(CT_INVALID).into(),
        Match::IpSourceIn(overlay) => {
            let mask = (u32::MAX << (32 - overlay.prefix_len)).to_be_bytes();
            vec![
                meta(NFT_META_NFPROTO),
                cmp(NFT_CMP_EQ, vec![NFPROTO_IPV4]),
                payload(NFT_PAYLOAD_NETWORK_HEADER, 12, 4),
                bitwise(mask.to_vec()),
                cmp(NFT_CMP_EQ, overlay.network.octets().to_vec()),
            ]
        }
        Match::TcpDestination(p) => port(IPPROTO_TCP, 2, *p),
        Match::UdpDestination(p) => port(IPPROTO_UDP, 2, *p),
        Match::DhcpReply => {
            let mut exprs = port(IPPROTO_UDP, 0, 67);
            exprs.push(payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2));
            exprs.push(cmp(NFT_CMP_EQ, 68u16.to_be_bytes().to_vec()));
            exprs
        }
        Match::IcmpEchoRequest => {
            let mut exprs = vec![meta(NFT_META_NFPROTO), cmp(NFT_CMP_EQ, vec![NFPROTO_IPV4])];
            exprs.extend(icmp_type(IPPROTO_ICMP, 8));
            exprs
        }
        Match::Icmpv6NeighbourDiscovery(kind) => {
            let mut exprs = vec![meta(NFT_META_NFPROTO), cmp(NFT_CMP_EQ, vec![NFPROTO_IPV6])];
            exprs.extend(icmp_type(IPPROTO_ICMPV6, *kind));
            exprs
        }
        Match::NoRouteBack => vec![
            expr("fib", |b| {
                b.be32(NFTA_FIB_DREG, NFT_REG_1)
                    .be32(NFTA_FIB_RESULT, NFT_FIB_RESULT_OIF)
                    .be32(
                        NFTA_FIB_FLAGS,
                        NFTA_FIB_F_SADDR | NFTA_FIB_F_IIF | NFTA_FIB_F_PRESENT,
                    );
            }),
            cmp(NFT_CMP_EQ, vec![0]),
        ],
        Match::Limit(per_second) => {
            let rate = *per_second;
            vec![expr("limit", move |b| {
                b.attr(NFTA_LIMIT_RATE, &rate.to_be_bytes())
                    .attr(NFTA_LIMIT_UNIT, &1u64.to_be_bytes())
                    .be32(NFTA_LIMIT_BURST, 5)
                    .be32(NFTA_LIMIT_TYPE, 0);
            })]
        }
    }
}

fn verdict(v: Verdict) -> Expr {
    expr("immediate", move |b| {
        let code = match &v {
            Verdict::Accept => NF_ACCEPT,
            Verdict::Drop => NF_DROP,
            Verdict::Jump(_) => NFT_JUMP as u32,
        };
        b.be32(1, NFT_REG_VERDICT)
            .begin(2)
            .begin(NFTA_DATA_VERDICT)
            .be32(NFTA_VERDICT_CODE, code);
        if let Verdict::Jump(chain) = &v {
            b.str(NFTA_VERDICT_CHAIN, chain);
        }
        b.end().end();
    })
}

fn message(kind: u16, flags: u16, family: u8) -> Builder {
    Builder::new(NFNL_SUBSYS_NFTABLES << 8 | kind, flags).header(&[family, 0, 0, 0])
}

fn batch_marker(kind: u16) -> Builder {
    // The marker's resource id names the subsystem the batch is for.
    let id = NFNL_SUBSYS_NFTABLES.to_be_bytes();
    Builder::new(kind, 0).header(&[0, 0, id[0], id[1]])
}

/// The table cleared: created if missing, then deleted, so that deleting
/// never fails on a table that is not there.
fn clear_table(messages: &mut Vec<Builder>) {
    for kind in [NFT_MSG_NEWTABLE, NFT_MSG_DELTABLE] {
        let mut m = message(kind, NLM_F_ACK | NLM_F_CREATE, NFPROTO_INET);
        m.str(NFTA_TABLE_NAME, TABLE);
        messages.push(m);
    }
}

/// The batch that replaces tyd's table with `chains`.
fn replace_batch(chains: &[Chain]) -> Vec<Builder> {
    let mut messages = vec![batch_marker(NFNL_MSG_BATCH_BEGIN)];
    clear_table(&mut messages);
    let mut table = message(NFT_MSG_NEWTABLE, NLM_F_ACK | NLM_F_CREATE, NFPROTO_INET);
    table.str(NFTA_TABLE_NAME, TABLE);
    messages.push(table);
    // Chains first: rules may jump to any of them.
    for chain in chains {
        let mut m = message(NFT_MSG_NEWCHAIN, NLM_F_ACK | NLM_F_CREATE, NFPROTO_INET);
        m.str(NFTA_CHAIN_TABLE, TABLE)
            .str(NFTA_CHAIN_NAME, chain.name);
        if let Some((hook, priority, accept)) = chain.hook {
            m.begin(NFTA_CHAIN_HOOK)
                .be32(NFTA_HOOK_HOOKNUM, hook)
                .be32(NFTA_HOOK_PRIORITY, priority as u32)
                .end()
                .be32(NFTA_CHAIN_POLICY, if accept { NF_ACCEPT } else { NF_DROP })
                .str(NFTA_CHAIN_TYPE, "filter");
        }
        messages.push(m);
    }
    for chain in chains {
        for rule in &chain.rules {
            let mut m = message(
                NFT_MSG_NEWRULE,
                NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND,
                NFPROTO_INET,
            );
            m.str(NFTA_RULE_TABLE, TABLE)
                .str(NFTA_RULE_CHAIN, chain.name)
                .begin(NFTA_RULE_EXPRESSIONS);
            let exprs = rule
                .matches
                .iter()
                .flat_map(compile)
                .chain([verdict(rule.verdict.clone())]);
            for e in exprs {
                m.begin(NFTA_LIST_ELEM).str(NFTA_EXPR_NAME, e.name);
                m.begin(NFTA_EXPR_DATA);
                (e.data)(&mut m);
                m.end().end();
            }
            m.end();
            messages.push(m);
        }
    }
    messages.push(batch_marker(NFNL_MSG_BATCH_END));
    messages
}

/// tyd's firewall table in this network namespace.
pub struct Firewall {
    netlink: Netlink,
}

impl Firewall {
    pub fn open() -> anyhow::Result<Self> {
        Ok(Self {
            netlink: Netlink::open(NETLINK_NETFILTER)?,
        })
    }

    /// Replaces tyd's table with the ruleset for `params`, atomically.
    pub fn apply(&mut self, params: &Params) -> anyhow::Result<()> {
        self.netlink
            .batch(replace_batch(&ruleset(params)))
            .map_err(|e| anyhow::anyhow!("loading the firewall (table inet {TABLE}): {e}"))
    }

    /// Removes tyd's table; the host's other tables stay as they are.
    pub fn remove(&mut self) -> anyhow::Result<()> {
        let mut messages = vec![batch_marker(NFNL_MSG_BATCH_BEGIN)];
        clear_table(&mut messages);
        messages.push(batch_marker(NFNL_MSG_BATCH_END));
        self.netlink
            .batch(messages)
            .map_err(|e| anyhow::anyhow!("removing the firewall (table inet {TABLE}): {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(scope: Scope, join_port: Option<u16>) -> Params {
        Params {
            scope,
            overlay: "10.99.0.0/16".parse().unwrap(),
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
            Some((HOOK_INPUT, 0, false)),
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
        assert!(head.iter().any(|c| c.name == "forward"));
        assert!(head.iter().any(|c| c.name == "prerouting"));
    }

    #[test]
    fn a_host_head_leaves_the_hosts_traffic_alone() {
        let chains = ruleset(&params(Scope::Host, Some(7700)));
        assert_eq!(
            input(&chains).hook,
            Some((HOOK_INPUT, 0, true)),
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
    }

    #[test]
    fn the_batch_is_begin_clear_table_chains_rules_end() {
        let chains = ruleset(&params(Scope::Node, Some(7700)));
        let batch = replace_batch(&chains);
        let rules: usize = chains.iter().map(|c| c.rules.len()).sum();
        assert_eq!(batch.len(), 1 + 2 + 1 + chains.len() + rules + 1);
    }
}
