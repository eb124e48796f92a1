// SPDX-License-Identifier: GPL-3.0-or-later
//! The head's membership state machine: admission (policy, replay check,
//! removal), identity (node ids and overlay addresses, stable per node key
//! for the head's lifetime), liveness (heartbeats, leave, expiry) and the
//! views the status verbs show.
//!
//! Plain data and logic, driven by the head's event loop with explicit
//! times: no sockets, no clocks, no threads, so every rule is unit-tested.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::keys::fingerprint;
use crate::proto::{Hello, Load, NodeStatus, Peer, Refusal, State};

/// Who may join, beyond holding the cluster key (which everyone needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Every holder of the cluster key.
    Psk,
    /// Only while `tyd enroll --for` holds a window open.
    Window,
    /// Only after `tyd approve <fingerprint>`.
    Approve,
}

impl Policy {
    pub fn name(self) -> &'static str {
        match self {
            Policy::Psk => "psk",
            Policy::Window => "window",
            Policy::Approve => "approve",
        }
    }
}

impl FromStr for Policy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "psk" => Ok(Policy::Psk),
            "window" => Ok(Policy::Window),
            "approve" => Ok(Policy::Approve),
            _ => Err(format!(
                "admission policy {s:?}: expected psk, window or approve"
            )),
        }
    }
}

/// The overlay's IPv4 range; the head takes its first address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overlay {
    pub network: Ipv4Addr,
    pub prefix_len: u8,
}

impl FromStr for Overlay {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let expected = "expected an IPv4 range like 10.99.0.0/16, /8 to /30";
        let (address, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("overlay {s:?}: no /prefix; {expected}"))?;
        let network: Ipv4Addr = address.parse().map_err(|_| {
            format!("overlay {s:?}: {address:?} is not an IPv4 address; {expected}")
        })?;
        let prefix_len: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .ok_or_else(|| format!("overlay {s:?}: prefix /{prefix}; {expected}"))?;
        let overlay = Overlay {
            network,
            prefix_len,
        };
        if overlay.mask() & u32::from(network) != u32::from(network) {
            let aligned = Ipv4Addr::from(u32::from(network) & overlay.mask());
            return Err(format!(
                "overlay {s:?}: host bits are set; did you mean {aligned}/{prefix_len}?"
            ));
        }
        Ok(overlay)
    }
}

impl std::fmt::Display for Overlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

impl Overlay {
    fn mask(&self) -> u32 {
        u32::MAX << (32 - self.prefix_len)
    }

    /// The `n`th address of the range (0 is the network address).
    fn host(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + n)
    }

    /// Addresses 2 ..= last_host go to drones.
    fn last_host(&self) -> u32 {
        !self.mask() - 1
    }

    pub fn head_address(&self) -> Ipv4Addr {
        self.host(1)
    }

    pub fn contains(&self, address: Ipv4Addr) -> bool {
        u32::from(address) & self.mask() == u32::from(self.network)
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub overlay: Overlay,
    pub policy: Policy,
    pub heartbeat: Duration,
    pub expire_after: Duration,
}

/// The head's answer to a decrypted first handshake message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Admit,
    Refuse(Refusal),
    /// The timestamp is not newer than the last one accepted for this key.
    Replay {
        last: u64,
    },
}

#[derive(Debug, Clone)]
struct Node {
    key: [u8; 32],
    hostname: String,
    overlay: Ipv4Addr,
    lan: Option<Ipv4Addr>,
    wireguard_key: [u8; 32],
    wireguard_port: u16,
    state: State,
    last_handshake: Instant,
    last_seen: Instant,
    load: Option<Load>,
}

#[derive(Debug, Clone)]
struct Pending {
    key: [u8; 32],
    hostname: String,
    lan: Option<Ipv4Addr>,
    since: Instant,
}

/// The head's id; drones count up from the next one.
pub const HEAD_ID: u32 = 1;

#[derive(Debug)]
pub struct Membership {
    config: Config,
    head: Peer,
    head_fingerprint: String,
    head_lan: Option<Ipv4Addr>,
    head_load: Option<Load>,
    started: Instant,
    nodes: BTreeMap<u32, Node>,
    ids: HashMap<[u8; 32], u32>,
    addresses: HashMap<[u8; 32], Ipv4Addr>,
    taken: HashSet<Ipv4Addr>,
    cursor: u32,
    next_id: u32,
    timestamps: HashMap<[u8; 32], u64>,
    window_until: Option<Instant>,
    approved: HashSet<[u8; 32]>,
    banned: HashSet<[u8; 32]>,
    pending: BTreeMap<String, Pending>,
}

impl Membership {
    /// `head_key` is the head's Noise key (for its fingerprint),
    /// `wireguard_key` its WireGuard public key.
    pub fn new(
        config: Config,
        hostname: String,
        head_key: &[u8; 32],
        wireguard_key: [u8; 32],
        now: Instant,
    ) -> Self {
        let head = Peer {
            id: HEAD_ID,
            hostname,
            wireguard_key,
            overlay: config.overlay.head_address(),
            endpoint: None,
        };
        Self {
            config,
            head,
            head_fingerprint: fingerprint(head_key),
            head_lan: None,
            head_load: None,
            started: now,
            nodes: BTreeMap::new(),
            ids: HashMap::new(),
            addresses: HashMap::new(),
            taken: HashSet::new(),
            cursor: 2,
            next_id: HEAD_ID + 1,
            timestamps: HashMap::new(),
            window_until: None,
            approved: HashSet::new(),
            banned: HashSet::new(),
            pending: BTreeMap::new(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn set_head_load(&mut self, load: Load) {
        self.head_load = Some(load);
    }

    /// The head's LAN address as the drones reach it, for the status table.
    pub fn set_head_lan(&mut self, lan: Ipv4Addr) {
        self.head_lan = Some(lan);
    }

    /// Decides on a first handshake message from `key`. Records its
    /// timestamp, so the same message is refused the second time.
    pub fn check_hello(
        &mut self,
        key: &[u8; 32],
        hello: &Hello,
        lan: Option<Ipv4Addr>,
        now: Instant,
    ) -> Verdict {
        match self.timestamps.get(key) {
            Some(&last) if hello.timestamp <= last => return Verdict::Replay { last },
            _ => {
                self.timestamps.insert(*key, hello.timestamp);
            }
        }
        if self.banned.contains(key) {
            return Verdict::Refuse(Refusal::Removed);
        }
        if self.ids.contains_key(key) {
            return Verdict::Admit;
        }
        let admitted = match self.config.policy {
            Policy::Psk => true,
            Policy::Window => self.window_until.is_some_and(|until| now < until),
            Policy::Approve => self.approved.contains(key),
        };
        if !admitted {
            if self.config.policy == Policy::Approve {
                self.pending.insert(
                    fingerprint(key),
                    Pending {
                        key: *key,
                        hostname: hello.hostname.clone(),
                        lan,
                        since: now,
                    },
                );
                return Verdict::Refuse(Refusal::AwaitingApproval);
            }
            return Verdict::Refuse(Refusal::WindowClosed);
        }
        if !self.addresses.contains_key(key) && self.free_address().is_none() {
            return Verdict::Refuse(Refusal::Full);
        }
        Verdict::Admit
    }

    /// Makes an admitted key a member (or refreshes it). Returns its id and,
    /// when other nodes must hear of it, its peer entry. `lan` is `None` when
    /// the session came in over the overlay, which keeps the known address.
    pub fn join(
        &mut self,
        key: &[u8; 32],
        hello: &Hello,
        lan: Option<Ipv4Addr>,
        now: Instant,
    ) -> Option<(u32, Option<Peer>)> {
        let overlay = match self.addresses.get(key) {
            Some(&address) => address,
            None => {
                let address = self.free_address()?;
                self.addresses.insert(*key, address);
                self.taken.insert(address);
                address
            }
        };
        let next_id = &mut self.next_id;
        let id = *self.ids.entry(*key).or_insert_with(|| {
            *next_id += 1;
            *next_id - 1
        });
        self.pending.remove(&fingerprint(key));
        let before = self
            .nodes
            .get(&id)
            .map(|node| (self.peer_of(id, node), node.state));
        let node = self.nodes.entry(id).or_insert_with(|| Node {
            key: *key,
            hostname: String::new(),
            overlay,
            lan: None,
            wireguard_key: [0; 32],
            wireguard_port: 0,
            state: State::Up,
            last_handshake: now,
            last_seen: now,
            load: None,
        });
        node.hostname.clone_from(&hello.hostname);
        node.overlay = overlay;
        node.lan = lan.or(node.lan);
        node.wireguard_key = hello.wireguard_key;
        node.wireguard_port = hello.wireguard_port;
        node.state = State::Up;
        node.last_handshake = now;
        node.last_seen = now;
        let node = node.clone();
        let peer = self.peer_of(id, &node);
        let changed = before != Some((peer.clone(), State::Up));
        Some((id, changed.then_some(peer)))
    }

    /// The lowest free drone address from the cursor on; when the range is
    /// used up, one held by a key that is no longer a member.
    fn free_address(&mut self) -> Option<Ipv4Addr> {
        let last = self.config.overlay.last_host();
        for offset in (self.cursor..=last).chain(2..self.cursor) {
            let address = self.config.overlay.host(offset);
            if !self.taken.contains(&address) {
                self.cursor = offset;
                return Some(address);
            }
        }
        let reclaim = self.addresses.iter().find_map(|(key, address)| {
            let id = self.ids.get(key);
            let member = id
                .and_then(|id| self.nodes.get(id))
                .is_some_and(|node| node.state == State::Up);
            (!member).then_some((*key, *address))
        })?;
        self.addresses.remove(&reclaim.0);
        self.taken.remove(&reclaim.1);
        Some(reclaim.1)
    }

    fn peer_of(&self, id: u32, node: &Node) -> Peer {
        Peer {
            id,
            hostname: node.hostname.clone(),
            wireguard_key: node.wireguard_key,
            overlay: node.overlay,
            endpoint: node
                .lan
                .map(|lan| SocketAddrV4::new(lan, node.wireguard_port)),
        }
    }

    pub fn heartbeat(&mut self, id: u32, load: Load, now: Instant) {
        if let Some(node) = self.nodes.get_mut(&id).filter(|n| n.state == State::Up) {
            node.last_seen = now;
            node.load = Some(load);
        }
    }

    /// A graceful leave; true if the node was up (others must hear of it).
    pub fn leave(&mut self, id: u32) -> bool {
        self.depart(id, State::Left)
    }

    fn depart(&mut self, id: u32, state: State) -> bool {
        match self.nodes.get_mut(&id) {
            Some(node) if node.state == State::Up => {
                node.state = state;
                node.load = None;
                true
            }
            _ => false,
        }
    }

    /// Marks nodes not heard from within the expiry interval as expired;
    /// their ids.
    pub fn expire(&mut self, now: Instant) -> Vec<u32> {
        let limit = self.config.expire_after;
        let stale: Vec<u32> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.state == State::Up && now.duration_since(n.last_seen) > limit)
            .map(|(id, _)| *id)
            .collect();
        for id in &stale {
            self.depart(*id, State::Expired);
        }
        stale
    }

    /// True once, on the first call after an open enrollment window has
    /// closed: the head says so in its log.
    pub fn window_closed(&mut self, now: Instant) -> bool {
        let closed = self.window_until.is_some_and(|until| now >= until);
        if closed {
            self.window_until = None;
        }
        closed
    }

    /// `tyd remove`: forgets the node named by id, hostname, overlay address
    /// or fingerprint, and refuses its key from now on. Returns its id and
    /// whether it was up.
    pub fn remove(&mut self, name: &str) -> Result<(u32, bool), String> {
        let wanted = normalise(name);
        let matches: Vec<u32> = self
            .nodes
            .iter()
            .filter(|(id, node)| {
                id.to_string() == name
                    || node.hostname == name
                    || node.overlay.to_string() == name
                    || normalise(&fingerprint(&node.key)) == wanted
            })
            .map(|(id, _)| *id)
            .collect();
        match matches.as_slice() {
            [id] => {
                let node = self.nodes.remove(id).expect("matched above");
                self.banned.insert(node.key);
                Ok((*id, node.state == State::Up))
            }
            [] => {
                let key = self
                    .pending
                    .iter()
                    .find(|(fp, p)| normalise(fp) == wanted || p.hostname == name)
                    .map(|(fp, p)| (fp.clone(), p.key));
                let (fp, key) = key.ok_or_else(|| {
                    if name == HEAD_ID.to_string() || name == self.head.hostname {
                        "that is the head itself: stop it with its service manager".to_string()
                    } else {
                        format!(
                            "no node {name:?}: give an id, hostname, overlay address or \
                             fingerprint from `tyd nodes`"
                        )
                    }
                })?;
                self.pending.remove(&fp);
                self.banned.insert(key);
                Ok((0, false))
            }
            _ => Err(format!(
                "{name:?} names {} nodes (ids {matches:?}): give the id",
                matches.len()
            )),
        }
    }

    /// `tyd enroll --for`: opens (or re-opens) the enrollment window.
    pub fn enroll(&mut self, open_for: Duration, now: Instant) -> Result<String, String> {
        if self.config.policy != Policy::Window {
            return Err(format!(
                "this head admits by policy {}, not window: enrollment windows \
                 apply to `tyd serve --admission window`",
                self.config.policy.name()
            ));
        }
        self.window_until = Some(now + open_for);
        Ok(format!(
            "enrollment open for {}s: holders of the cluster key may join",
            open_for.as_secs()
        ))
    }

    /// `tyd approve`: admits the pending node with this fingerprint.
    pub fn approve(&mut self, fp: &str) -> Result<String, String> {
        let wanted = normalise(fp);
        let found = self
            .pending
            .iter()
            .find(|(pending_fp, _)| normalise(pending_fp) == wanted)
            .map(|(fp, p)| (fp.clone(), p.key, p.hostname.clone()));
        let (fp, key, hostname) = found.ok_or_else(|| {
            format!(
                "no pending node has fingerprint {fp:?}: pending nodes show in `tyd nodes` \
                 and print their fingerprint on their console"
            )
        })?;
        self.pending.remove(&fp);
        self.approved.insert(key);
        Ok(format!(
            "approved {hostname} ({fp}); it joins on its next try"
        ))
    }

    /// Every member a node's WireGuard mesh includes: the head and the up
    /// drones.
    pub fn peers(&self) -> Vec<Peer> {
        let mut peers = vec![self.head.clone()];
        peers.extend(
            self.nodes
                .iter()
                .filter(|(_, n)| n.state == State::Up)
                .map(|(id, n)| self.peer_of(*id, n)),
        );
        peers
    }

    pub fn welcome(&self, id: u32, head_wireguard_port: u16) -> Option<crate::proto::Welcome> {
        let node = self.nodes.get(&id)?;
        Some(crate::proto::Welcome {
            id,
            overlay: node.overlay,
            prefix_len: self.config.overlay.prefix_len,
            heartbeat_ms: u32::try_from(self.config.heartbeat.as_millis()).unwrap_or(u32::MAX),
            head_wireguard_port,
            members: self.peers(),
        })
    }

    /// The id of the up member whose overlay address this is.
    pub fn member_at(&self, overlay: Ipv4Addr) -> Option<u32> {
        self.nodes
            .iter()
            .find(|(_, n)| n.overlay == overlay && n.state == State::Up)
            .map(|(id, _)| *id)
    }

    pub fn id_of(&self, key: &[u8; 32]) -> Option<u32> {
        self.ids.get(key).copied()
    }

    /// The rows of `tyd nodes`: the head, drones by id, then pending nodes.
    pub fn status(&self, now: Instant) -> Vec<NodeStatus> {
        let age = |t: Instant| Some(now.saturating_duration_since(t).as_millis() as u64);
        let mut rows = vec![NodeStatus {
            id: HEAD_ID,
            head: true,
            hostname: self.head.hostname.clone(),
            fingerprint: self.head_fingerprint.clone(),
            overlay: Some(self.head.overlay),
            lan: self.head_lan,
            state: State::Up,
            handshake_age_ms: age(self.started),
            load: self.head_load,
        }];
        rows.extend(self.nodes.iter().map(|(id, n)| NodeStatus {
            id: *id,
            head: false,
            hostname: n.hostname.clone(),
            fingerprint: fingerprint(&n.key),
            overlay: Some(n.overlay),
            lan: n.lan,
            state: n.state,
            handshake_age_ms: age(n.last_handshake),
            load: n.load,
        }));
        rows.extend(self.pending.iter().map(|(fp, p)| NodeStatus {
            id: 0,
            head: false,
            hostname: p.hostname.clone(),
            fingerprint: fp.clone(),
            overlay: None,
            lan: p.lan,
            state: State::Pending,
            handshake_age_ms: age(p.since),
            load: None,
        }));
        rows
    }
}

/// Fingerprints compare without dashes and case.
fn normalise(fp: &str) -> String {
    fp.chars()
        .filter(|c| *c != '-' && *c != ':')
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(policy: Policy) -> Config {
        Config {
            overlay: "10.99.0.0/29".parse().unwrap(),
            policy,
            heartbeat: Duration::from_secs(1),
            expire_after: Duration::from_secs(3),
        }
    }

    fn hello(timestamp: u64, name: &str) -> Hello {
        Hello {
            timestamp,
            wireguard_key: [timestamp as u8; 32],
            wireguard_port: 51820,
            hostname: name.into(),
        }
    }

    fn head(policy: Policy) -> (Membership, Instant) {
        let now = Instant::now();
        (
            Membership::new(config(policy), "head".into(), &[1; 32], [2; 32], now),
            now,
        )
    }

    fn lan(last: u8) -> Option<Ipv4Addr> {
        Some(Ipv4Addr::new(192, 168, 7, last))
    }

    /// Admits and joins `key`, returning its id.
    fn admit(m: &mut Membership, key: [u8; 32], ts: u64, now: Instant) -> u32 {
        let h = hello(ts, "drone");
        assert_eq!(m.check_hello(&key, &h, lan(key[0]), now), Verdict::Admit);
        m.join(&key, &h, lan(key[0]), now).unwrap().0
    }

    #[test]
    fn overlay_ranges_are_checked() {
        type Expected = Result<(Ipv4Addr, u8), &'static str>;
        let table: &[(&str, Expected)] = &[
            ("10.99.0.0/16", Ok((Ipv4Addr::new(10, 99, 0, 0), 16))),
            (
                "10.99.0.1/16",
                Err("host bits are set; did you mean 10.99.0.0/16?"),
            ),
            ("10.99.0.0", Err("no /prefix")),
            ("10.99.0.0/31", Err("prefix /31")),
            ("10.99.0.0/x", Err("prefix /x")),
            ("tenfold/16", Err("\"tenfold\" is not an IPv4 address")),
        ];
        for (text, expected) in table {
            match (text.parse::<Overlay>(), expected) {
                (Ok(o), Ok((network, prefix))) => {
                    assert_eq!((o.network, o.prefix_len), (*network, *prefix))
                }
                (Err(e), Err(wanted)) => assert!(e.contains(wanted), "{text}: {e}"),
                (got, _) => panic!("{text}: {got:?}"),
            }
        }
    }

    #[test]
    fn replayed_and_stale_timestamps_are_refused_per_key() {
        let (mut m, now) = head(Policy::Psk);
        let key = [5; 32];
        assert_eq!(
            m.check_hello(&key, &hello(10, "a"), None, now),
            Verdict::Admit
        );
        assert_eq!(
            m.check_hello(&key, &hello(10, "a"), None, now),
            Verdict::Replay { last: 10 }
        );
        assert_eq!(
            m.check_hello(&key, &hello(9, "a"), None, now),
            Verdict::Replay { last: 10 }
        );
        assert_eq!(
            m.check_hello(&key, &hello(11, "a"), None, now),
            Verdict::Admit
        );
        // Another key has its own clock.
        assert_eq!(
            m.check_hello(&[6; 32], &hello(1, "b"), None, now),
            Verdict::Admit
        );
    }

    #[test]
    fn addresses_and_ids_are_stable_per_key_and_reclaimed_only_when_full() {
        let (mut m, now) = head(Policy::Psk);
        // A /29 has drone addresses .2 to .6.
        let a = admit(&mut m, [10; 32], 1, now);
        let b = admit(&mut m, [11; 32], 1, now);
        let addr = |m: &Membership, id| m.welcome(id, 51820).unwrap().overlay;
        assert_eq!((a, b), (2, 3));
        assert_eq!(addr(&m, a), Ipv4Addr::new(10, 99, 0, 2));
        assert_eq!(addr(&m, b), Ipv4Addr::new(10, 99, 0, 3));
        assert!(m.leave(a));
        assert_eq!(admit(&mut m, [10; 32], 2, now), a);
        assert_eq!(addr(&m, a), Ipv4Addr::new(10, 99, 0, 2));
        for key in 12..15 {
            admit(&mut m, [key; 32], 1, now);
        }
        assert_eq!(
            m.check_hello(&[20; 32], &hello(1, "x"), None, now),
            Verdict::Refuse(Refusal::Full)
        );
        assert!(m.leave(b));
        let c = admit(&mut m, [21; 32], 1, now);
        assert_eq!(addr(&m, c), Ipv4Addr::new(10, 99, 0, 3), "reclaimed from b");
    }

    #[test]
    fn a_rejoin_without_changes_is_not_pushed_to_others() {
        let (mut m, now) = head(Policy::Psk);
        let h = hello(1, "d");
        m.check_hello(&[3; 32], &h, lan(3), now);
        let (_, first) = m.join(&[3; 32], &h, lan(3), now).unwrap();
        assert!(first.is_some());
        // The same node over the overlay: LAN address kept, nothing new.
        let (_, again) = m.join(&[3; 32], &h, None, now).unwrap();
        assert_eq!(again, None);
        assert_eq!(m.peers()[1].endpoint.unwrap().ip(), &lan(3).unwrap());
    }

    #[test]
    fn window_policy_admits_only_while_open_and_members_always() {
        let (mut m, now) = head(Policy::Window);
        assert_eq!(
            m.check_hello(&[3; 32], &hello(1, "d"), None, now),
            Verdict::Refuse(Refusal::WindowClosed)
        );
        m.enroll(Duration::from_secs(60), now).unwrap();
        let id = admit(&mut m, [3; 32], 2, now);
        assert!(!m.window_closed(now + Duration::from_secs(59)));
        let later = now + Duration::from_secs(61);
        assert!(m.window_closed(later));
        assert!(!m.window_closed(later), "closing is reported once");
        assert_eq!(
            m.check_hello(&[4; 32], &hello(1, "e"), None, later),
            Verdict::Refuse(Refusal::WindowClosed)
        );
        assert_eq!(
            m.check_hello(&[3; 32], &hello(3, "d"), None, later),
            Verdict::Admit
        );
        assert_eq!(m.id_of(&[3; 32]), Some(id));
        let (mut psk, _) = head(Policy::Psk);
        assert!(psk.enroll(Duration::from_secs(1), now).is_err());
    }

    #[test]
    fn approve_policy_lists_pending_nodes_until_approved() {
        let (mut m, now) = head(Policy::Approve);
        let key = [3; 32];
        assert_eq!(
            m.check_hello(&key, &hello(1, "d"), lan(3), now),
            Verdict::Refuse(Refusal::AwaitingApproval)
        );
        let rows = m.status(now);
        assert_eq!(rows.last().unwrap().state, State::Pending);
        let fp = rows.last().unwrap().fingerprint.clone();
        assert!(m.approve("0000-0000").is_err());
        m.approve(&fp.to_uppercase()).unwrap();
        assert_eq!(
            m.check_hello(&key, &hello(2, "d"), lan(3), now),
            Verdict::Admit
        );
    }

    #[test]
    fn expiry_leave_and_remove_end_membership() {
        let (mut m, now) = head(Policy::Psk);
        let a = admit(&mut m, [3; 32], 1, now);
        let b = admit(&mut m, [4; 32], 1, now);
        let c = admit(&mut m, [5; 32], 1, now);
        m.heartbeat(a, Load::default(), now + Duration::from_secs(2));
        assert_eq!(m.expire(now + Duration::from_secs(4)), vec![b, c]);
        assert_eq!(m.expire(now + Duration::from_secs(4)), Vec::<u32>::new());
        assert!(m.leave(a));
        assert!(!m.leave(a));
        assert_eq!(m.peers().len(), 1, "only the head is left");
        assert_eq!(m.remove(&b.to_string()), Ok((b, false)));
        assert_eq!(
            m.check_hello(&[4; 32], &hello(2, "d"), None, now),
            Verdict::Refuse(Refusal::Removed)
        );
        assert!(m.remove("nobody").unwrap_err().contains("no node"));
        assert!(m.remove("head").unwrap_err().contains("head itself"));
        assert!(m.remove("drone").unwrap_err().contains("names 2 nodes"));
    }
}
