// SPDX-License-Identifier: GPL-3.0-or-later
//! The head's membership state machine: admission (policy, replay check,
//! removal), identity (node ids and overlay addresses, stable per node key
//! for the head's lifetime), liveness (heartbeats, leave, expiry), the
//! views the status verbs show, and the change log pushes are made from:
//! every change gets the next version number, and a node changed since
//! version v is exactly what a member that has seen v still needs, whether
//! it changed once or many times meanwhile.
//!
//! Plain data and logic, driven by the head's event loop with explicit
//! times: no sockets, no clocks, no threads, so every rule is unit-tested.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::keys::fingerprint;
use crate::proto::{Admission, Hello, Load, NodeStatus, Peer, Refusal, State, MAX_NODES};

/// Who may join, beyond holding the cluster key (which everyone needs).
/// The cluster key travels in every drone image, and images are served to
/// anyone on the LAN, so the key alone proves only that a node downloaded
/// one: the default asks for more once the lab has booted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// While an enrollment window is open (`tyd serve` opens one at start,
    /// `tyd enroll --for` again); otherwise only after `tyd approve`.
    Enroll,
    /// Every holder of the cluster key: for closed networks only.
    Psk,
    /// Only while an enrollment window is open.
    Window,
    /// Only after `tyd approve <fingerprint>`.
    Approve,
}

impl Policy {
    pub fn name(self) -> &'static str {
        match self {
            Policy::Enroll => "enroll",
            Policy::Psk => "psk",
            Policy::Window => "window",
            Policy::Approve => "approve",
        }
    }

    /// Whether enrollment windows admit under this policy.
    pub fn has_windows(self) -> bool {
        matches!(self, Policy::Enroll | Policy::Window)
    }

    /// Whether refused nodes wait as pending for `tyd approve`.
    pub fn has_approval(self) -> bool {
        matches!(self, Policy::Enroll | Policy::Approve)
    }
}

/// A refused option or membership change, worded for the administrator
/// who typed it (status verbs show it as the head's answer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    #[error("admission policy {0:?}: expected enroll, psk, window or approve")]
    Policy(String),
    #[error("overlay {given:?}: {problem}; expected an IPv4 range like 10.99.0.0/16, /8 to /30")]
    Overlay { given: String, problem: String },
    #[error("overlay {given:?}: host bits are set; did you mean {aligned}/{prefix_len}?")]
    HostBits {
        given: String,
        aligned: Ipv4Addr,
        prefix_len: u8,
    },
    #[error("that is the head itself: stop it with its service manager")]
    Head,
    #[error(
        "no node {0:?}: give an id, hostname, overlay address or fingerprint from `tyd nodes`"
    )]
    NoNode(String),
    #[error("{name:?} names {} nodes (ids {ids:?}): give the id", ids.len())]
    Ambiguous { name: String, ids: Vec<u32> },
    #[error(
        "this head admits by policy {0}, which has no enrollment windows \
         (they apply to `tyd serve --admission enroll` and `window`)"
    )]
    NoWindows(&'static str),
    #[error(
        "no pending node has fingerprint {0:?}: `tyd nodes --pending` lists them, \
         and each prints its fingerprint on its console"
    )]
    NotPending(String),
    #[error("no node is pending approval")]
    NonePending,
}

impl FromStr for Policy {
    type Err = MembershipError;

    fn from_str(s: &str) -> Result<Self, MembershipError> {
        match s {
            "enroll" => Ok(Policy::Enroll),
            "psk" => Ok(Policy::Psk),
            "window" => Ok(Policy::Window),
            "approve" => Ok(Policy::Approve),
            _ => Err(MembershipError::Policy(s.into())),
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
    type Err = MembershipError;

    fn from_str(s: &str) -> Result<Self, MembershipError> {
        let refused = |problem: String| MembershipError::Overlay {
            given: s.into(),
            problem,
        };
        let (address, prefix) = s
            .split_once('/')
            .ok_or_else(|| refused("no /prefix".into()))?;
        let network: Ipv4Addr = address
            .parse()
            .map_err(|_| refused(format!("{address:?} is not an IPv4 address")))?;
        let prefix_len: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .ok_or_else(|| refused(format!("prefix /{prefix}")))?;
        let overlay = Overlay {
            network,
            prefix_len,
        };
        if overlay.mask() & u32::from(network) != u32::from(network) {
            let aligned = Ipv4Addr::from(u32::from(network) & overlay.mask());
            return Err(MembershipError::HostBits {
                given: s.into(),
                aligned,
                prefix_len,
            });
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
    /// The enrollment window open from the start (zero for none); only
    /// policies with windows have one.
    pub window_at_start: Duration,
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
    /// The key's fingerprint, made once: `tyd nodes` lists every node.
    fingerprint: String,
    hostname: String,
    overlay: Ipv4Addr,
    lan: Option<Ipv4Addr>,
    wireguard_key: [u8; 32],
    wireguard_port: u16,
    state: State,
    admitted: Admission,
    last_handshake: Instant,
    last_seen: Instant,
    load: Option<Load>,
    /// Which admission this membership is (see [`crate::proto::Welcome::join`]).
    join: u64,
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
/// Node names are cut to this (Slurm and DNS are happy with it).
const MAX_NAME: usize = 48;

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
    /// How each key admitted since its last join was admitted.
    admitted: HashMap<[u8; 32], Admission>,
    banned: HashSet<[u8; 32]>,
    pending: BTreeMap<String, Pending>,
    /// Random per head start, so admissions after a restart differ from
    /// every one before it.
    epoch: u64,
    admissions: u64,
    /// The version of the latest change; 0 before any.
    version: u64,
    /// Each node's latest change, by version: a node appears once.
    log: BTreeMap<u64, u32>,
    /// Where each node is in `log`.
    logged_at: HashMap<u32, u64>,
}

/// What changed after a version: peers to add or update, ids to drop, and
/// the version the member has then seen.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    pub changed: Vec<Peer>,
    pub gone: Vec<u32>,
    pub version: u64,
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
            window_until: (config.policy.has_windows() && !config.window_at_start.is_zero())
                .then(|| now + config.window_at_start),
            approved: HashSet::new(),
            admitted: HashMap::new(),
            banned: HashSet::new(),
            pending: BTreeMap::new(),
            epoch: crate::keys::random::<8>().map_or(0, u64::from_be_bytes),
            admissions: 0,
            version: 0,
            log: BTreeMap::new(),
            logged_at: HashMap::new(),
            config,
        }
    }

    /// The version of the latest change, which [`Membership::changes_since`]
    /// counts from.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Records that node `id` changed (joined, moved, left, expired or was
    /// removed): its entry moves to the end of the log.
    fn logged(&mut self, id: u32) {
        self.version += 1;
        if let Some(old) = self.logged_at.insert(id, self.version) {
            self.log.remove(&old);
        }
        self.log.insert(self.version, id);
    }

    /// The changes after `version`, at most `limit` nodes of them (the
    /// oldest first, so the rest follow in a later call from the returned
    /// version): up drones as peers, every other node as gone.
    pub fn changes_since(&self, version: u64, limit: usize) -> Changes {
        let mut changes = Changes {
            version: self.version,
            ..Changes::default()
        };
        for (count, (&at, &id)) in self.log.range(version + 1..).enumerate() {
            if count == limit {
                // Everything before this entry is included.
                changes.version = at - 1;
                break;
            }
            match self.nodes.get(&id).filter(|n| n.state == State::Up) {
                Some(node) => changes.changed.push(self.peer_of(id, node)),
                None => changes.gone.push(id),
            }
        }
        changes
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
        let window_open = self.window_until.is_some_and(|until| now < until);
        let admitted = match self.config.policy {
            Policy::Psk => Some(Admission::ClusterKey),
            _ if self.approved.contains(key) => Some(Admission::Approved),
            policy if policy.has_windows() && window_open => Some(Admission::Window),
            _ => None,
        };
        let Some(admitted) = admitted else {
            if !self.config.policy.has_approval() {
                return Verdict::Refuse(Refusal::WindowClosed);
            }
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
        };
        // Every list of nodes a drone or `tyd nodes` decodes (the head and
        // every node it remembers) stays within MAX_NODES.
        let listed = self.nodes.len() + 1;
        if listed >= MAX_NODES || !self.addresses.contains_key(key) && self.free_address().is_none()
        {
            return Verdict::Refuse(Refusal::Full);
        }
        self.admitted.insert(*key, admitted);
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
        // A member's later handshakes keep how it was first admitted.
        let admitted = self
            .admitted
            .remove(key)
            .or_else(|| self.nodes.get(&id).map(|n| n.admitted))
            .unwrap_or(Admission::ClusterKey);
        let before = self
            .nodes
            .get(&id)
            .map(|node| (self.peer_of(id, node), node.state));
        let name = self.unique_name(id, &hello.hostname);
        let fresh = before.as_ref().is_none_or(|(_, state)| *state != State::Up);
        if fresh {
            self.admissions += 1;
        }
        let join = self.epoch.wrapping_add(self.admissions);
        let node = self.nodes.entry(id).or_insert_with(|| Node {
            key: *key,
            fingerprint: fingerprint(key),
            hostname: String::new(),
            overlay,
            lan: None,
            wireguard_key: [0; 32],
            wireguard_port: 0,
            state: State::Up,
            admitted,
            last_handshake: now,
            last_seen: now,
            load: None,
            join,
        });
        if fresh {
            node.join = join;
        }
        node.hostname = name;
        node.overlay = overlay;
        node.lan = lan.or(node.lan);
        node.wireguard_key = hello.wireguard_key;
        node.wireguard_port = hello.wireguard_port;
        node.state = State::Up;
        node.admitted = admitted;
        node.last_handshake = now;
        node.last_seen = now;
        let node = node.clone();
        let peer = self.peer_of(id, &node);
        let changed = before != Some((peer.clone(), State::Up));
        if changed {
            self.logged(id);
        }
        Some((id, changed.then_some(peer)))
    }

    /// The name node `id` goes by: the host name it asked for, made fit for
    /// Slurm and DNS, unless the head or another member has it (two PCs
    /// that DHCP named alike), then with the node's id after it.
    fn unique_name(&self, id: u32, asked: &str) -> String {
        let mut name: String = asked
            .split('.')
            .next()
            .unwrap_or_default()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .take(MAX_NAME)
            .collect();
        name = name.trim_matches('-').to_string();
        if name.is_empty() {
            name = "node".into();
        }
        let taken = name == self.head.hostname
            || self
                .nodes
                .iter()
                .any(|(other, n)| *other != id && n.state == State::Up && n.hostname == name);
        if taken {
            format!("{name}-{id}")
        } else {
            name
        }
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
                self.logged(id);
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

    /// Once, on the first call after an open enrollment window has closed,
    /// what the head says about it in its log.
    pub fn window_closed(&mut self, now: Instant) -> Option<&'static str> {
        if self.window_until.is_none_or(|until| now < until) {
            return None;
        }
        self.window_until = None;
        Some(if self.config.policy.has_approval() {
            "enrollment window closed: new nodes wait for `tyd approve` (`tyd nodes --pending` lists them)"
        } else {
            "enrollment window closed: new nodes are refused again"
        })
    }

    /// How the member with this id was admitted.
    pub fn admission_of(&self, id: u32) -> Option<Admission> {
        self.nodes.get(&id).map(|n| n.admitted)
    }

    /// `tyd remove`: forgets the node named by id, hostname, overlay address
    /// or fingerprint, and refuses its key from now on. Returns its id and
    /// whether it was up.
    pub fn remove(&mut self, name: &str) -> Result<(u32, bool), MembershipError> {
        let wanted = normalise(name);
        let matches = self.matching(name);
        match matches.as_slice() {
            [id] => {
                let node = self.nodes.remove(id).expect("matched above");
                self.banned.insert(node.key);
                let was_up = node.state == State::Up;
                if was_up {
                    self.logged(*id);
                }
                Ok((*id, was_up))
            }
            [] => {
                let key = self
                    .pending
                    .iter()
                    .find(|(fp, p)| normalise(fp) == wanted || p.hostname == name)
                    .map(|(fp, p)| (fp.clone(), p.key));
                let (fp, key) = key.ok_or_else(|| {
                    if name == HEAD_ID.to_string() || name == self.head.hostname {
                        MembershipError::Head
                    } else {
                        MembershipError::NoNode(name.into())
                    }
                })?;
                self.pending.remove(&fp);
                self.banned.insert(key);
                Ok((0, false))
            }
            _ => Err(MembershipError::Ambiguous {
                name: name.into(),
                ids: matches,
            }),
        }
    }

    /// `tyd enroll --for`: opens (or re-opens) the enrollment window.
    pub fn enroll(&mut self, open_for: Duration, now: Instant) -> Result<String, MembershipError> {
        if !self.config.policy.has_windows() {
            return Err(MembershipError::NoWindows(self.config.policy.name()));
        }
        self.window_until = Some(now + open_for);
        Ok(format!(
            "enrollment open for {}s: holders of the cluster key may join",
            open_for.as_secs()
        ))
    }

    /// `tyd approve`: admits the pending node with this fingerprint.
    pub fn approve(&mut self, fp: &str) -> Result<String, MembershipError> {
        let wanted = normalise(fp);
        let found = self
            .pending
            .keys()
            .find(|pending_fp| normalise(pending_fp) == wanted)
            .cloned();
        let fp = found.ok_or_else(|| MembershipError::NotPending(fp.into()))?;
        let hostname = self.approve_pending(&fp);
        Ok(format!(
            "approved {hostname} ({fp}); it joins on its next try"
        ))
    }

    /// `tyd approve --all`: admits every pending node.
    pub fn approve_all(&mut self) -> Result<String, MembershipError> {
        let all: Vec<String> = self.pending.keys().cloned().collect();
        if all.is_empty() {
            return Err(MembershipError::NonePending);
        }
        let approved: Vec<String> = all
            .iter()
            .map(|fp| format!("{} ({fp})", self.approve_pending(fp)))
            .collect();
        Ok(format!(
            "approved {} pending node{}: {}; they join on their next try",
            approved.len(),
            if approved.len() == 1 { "" } else { "s" },
            approved.join(", ")
        ))
    }

    /// Moves the pending node `fp` to the approved keys; its host name.
    fn approve_pending(&mut self, fp: &str) -> String {
        let pending = self.pending.remove(fp).expect("a pending fingerprint");
        self.approved.insert(pending.key);
        pending.hostname
    }

    /// Node `id`'s welcome. It names only the head and the node itself:
    /// listing every member would make each join cost the cluster's size,
    /// and a lab's morning the square of it, before the node is even in.
    /// The others follow in push rounds, from the start of the change log.
    pub fn welcome(&self, id: u32, head_wireguard_port: u16) -> Option<crate::proto::Welcome> {
        let node = self.nodes.get(&id)?;
        Some(crate::proto::Welcome {
            id,
            overlay: node.overlay,
            prefix_len: self.config.overlay.prefix_len,
            heartbeat_ms: u32::try_from(self.config.heartbeat.as_millis()).unwrap_or(u32::MAX),
            head_wireguard_port,
            members: vec![self.head.clone(), self.peer_of(id, node)],
            name: node.hostname.clone(),
            join: node.join,
            clock_ns: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
            slurm: None,
        })
    }

    /// The id of the up member whose overlay address this is.
    pub fn member_at(&self, overlay: Ipv4Addr) -> Option<u32> {
        self.nodes
            .iter()
            .find(|(_, n)| n.overlay == overlay && n.state == State::Up)
            .map(|(id, _)| *id)
    }

    /// Node `id`'s name.
    pub fn name_of(&self, id: u32) -> Option<String> {
        self.nodes.get(&id).map(|n| n.hostname.clone())
    }

    /// The nodes `name` names: an id, host name, overlay address or
    /// fingerprint.
    fn matching(&self, name: &str) -> Vec<u32> {
        let wanted = normalise(name);
        self.nodes
            .iter()
            .filter(|(id, node)| {
                id.to_string() == name
                    || node.hostname == name
                    || node.overlay.to_string() == name
                    || normalise(&node.fingerprint) == wanted
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// The name of the one node that `name` names (as `tyd remove` reads
    /// it), if it names exactly one.
    pub fn name_of_any(&self, name: &str) -> Option<String> {
        match self.matching(name)[..] {
            [id] => self.name_of(id),
            _ => None,
        }
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
            admitted: None,
            handshake_age_ms: age(self.started),
            load: self.head_load,
            slurm: None,
        }];
        rows.extend(self.nodes.iter().map(|(id, n)| NodeStatus {
            id: *id,
            head: false,
            hostname: n.hostname.clone(),
            fingerprint: n.fingerprint.clone(),
            overlay: Some(n.overlay),
            lan: n.lan,
            state: n.state,
            admitted: Some(n.admitted),
            handshake_age_ms: age(n.last_handshake),
            load: n.load,
            slurm: None,
        }));
        rows.extend(self.pending.iter().map(|(fp, p)| NodeStatus {
            id: 0,
            head: false,
            hostname: p.hostname.clone(),
            fingerprint: fp.clone(),
            overlay: None,
            lan: p.lan,
            state: State::Pending,
            admitted: None,
            handshake_age_ms: age(p.since),
            load: None,
            slurm: None,
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
            window_at_start: Duration::ZERO,
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
                (Err(e), Err(wanted)) => assert!(e.to_string().contains(wanted), "{text}: {e}"),
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
        let peers = m.changes_since(0, usize::MAX).changed;
        assert_eq!(peers[0].endpoint.unwrap().ip(), &lan(3).unwrap());
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
        assert_eq!(m.window_closed(now + Duration::from_secs(59)), None);
        let later = now + Duration::from_secs(61);
        assert_eq!(
            m.window_closed(later),
            Some("enrollment window closed: new nodes are refused again")
        );
        assert_eq!(m.window_closed(later), None, "closing is reported once");
        assert_eq!(
            m.check_hello(&[4; 32], &hello(1, "e"), None, later),
            Verdict::Refuse(Refusal::WindowClosed)
        );
        assert_eq!(
            m.check_hello(&[3; 32], &hello(3, "d"), None, later),
            Verdict::Admit
        );
        assert_eq!(m.id_of(&[3; 32]), Some(id));
        for policy in [Policy::Psk, Policy::Approve] {
            let (mut other, _) = head(policy);
            let error = other.enroll(Duration::from_secs(1), now).unwrap_err();
            assert!(
                error.to_string().contains("has no enrollment windows"),
                "{error}"
            );
        }
    }

    /// The rows of `tyd nodes` by host name: state and admission.
    fn rows(m: &Membership, now: Instant) -> Vec<(String, State, Option<Admission>)> {
        m.status(now)
            .into_iter()
            .map(|r| (r.hostname, r.state, r.admitted))
            .collect()
    }

    #[test]
    fn enroll_admits_during_the_start_window_then_by_approval() {
        let now = Instant::now();
        let config = Config {
            window_at_start: Duration::from_secs(60),
            ..config(Policy::Enroll)
        };
        let mut m = Membership::new(config, "head".into(), &[1; 32], [2; 32], now);
        let early = hello(1, "early");
        assert_eq!(m.check_hello(&[3; 32], &early, lan(3), now), Verdict::Admit);
        m.join(&[3; 32], &early, lan(3), now).unwrap();

        let later = now + Duration::from_secs(60);
        assert_eq!(
            m.window_closed(later),
            Some(
                "enrollment window closed: new nodes wait for `tyd approve` \
                 (`tyd nodes --pending` lists them)"
            )
        );
        for (key, name) in [(4, "late"), (5, "later")] {
            assert_eq!(
                m.check_hello(&[key; 32], &hello(1, name), lan(key), later),
                Verdict::Refuse(Refusal::AwaitingApproval)
            );
        }
        // A member's new handshake is no new admission.
        assert_eq!(
            m.check_hello(&[3; 32], &hello(2, "early"), lan(3), later),
            Verdict::Admit
        );
        assert_eq!(
            rows(&m, later)[1..],
            [
                ("early".into(), State::Up, Some(Admission::Window)),
                ("late".into(), State::Pending, None),
                ("later".into(), State::Pending, None),
            ]
        );
        assert_eq!(
            m.approve_all().unwrap(),
            format!(
                "approved 2 pending nodes: late ({}), later ({}); they join on their next try",
                fingerprint(&[4; 32]),
                fingerprint(&[5; 32])
            )
        );
        assert_eq!(
            m.approve_all().unwrap_err().to_string(),
            "no node is pending approval"
        );
        let late = hello(2, "late");
        assert_eq!(
            m.check_hello(&[4; 32], &late, lan(4), later),
            Verdict::Admit
        );
        let (id, _) = m.join(&[4; 32], &late, lan(4), later).unwrap();
        assert_eq!(m.admission_of(id), Some(Admission::Approved));

        // `tyd enroll --for` opens the window again.
        m.enroll(Duration::from_secs(10), later).unwrap();
        let new = hello(1, "new");
        assert_eq!(m.check_hello(&[6; 32], &new, lan(6), later), Verdict::Admit);
        let (id, _) = m.join(&[6; 32], &new, lan(6), later).unwrap();
        assert_eq!(m.admission_of(id), Some(Admission::Window));
    }

    #[test]
    fn psk_admits_by_the_cluster_key_and_says_so() {
        let (mut m, now) = head(Policy::Psk);
        let id = admit(&mut m, [3; 32], 1, now);
        assert_eq!(m.admission_of(id), Some(Admission::ClusterKey));
        assert_eq!(m.window_closed(now + Duration::from_secs(3600)), None);
    }

    #[test]
    fn policies_are_named_as_typed() {
        for policy in [Policy::Enroll, Policy::Psk, Policy::Window, Policy::Approve] {
            assert_eq!(policy.name().parse::<Policy>(), Ok(policy));
        }
        assert_eq!(
            "open".parse::<Policy>().unwrap_err().to_string(),
            "admission policy \"open\": expected enroll, psk, window or approve"
        );
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
        assert_eq!(
            m.changes_since(0, usize::MAX).changed,
            [],
            "no drone is left"
        );
        assert_eq!(m.remove(&b.to_string()), Ok((b, false)));
        assert_eq!(
            m.check_hello(&[4; 32], &hello(2, "d"), None, now),
            Verdict::Refuse(Refusal::Removed)
        );
        assert_eq!(
            m.remove("nobody"),
            Err(MembershipError::NoNode("nobody".into()))
        );
        assert_eq!(m.remove("head"), Err(MembershipError::Head));
        // A node that asks for another's id as its name makes "4" ambiguous.
        let named = hello(1, &c.to_string());
        m.check_hello(&[6; 32], &named, lan(6), now);
        m.join(&[6; 32], &named, lan(6), now).unwrap();
        assert!(m
            .remove(&c.to_string())
            .unwrap_err()
            .to_string()
            .contains("names 2 nodes"));
    }

    #[test]
    fn members_get_names_unique_in_the_cluster() {
        let (mut m, now) = head(Policy::Psk);
        let ids: Vec<u32> = (3..6).map(|k| admit(&mut m, [k; 32], 1, now)).collect();
        let names: Vec<String> = ids.iter().map(|id| m.name_of(*id).unwrap()).collect();
        assert_eq!(names, ["drone", "drone-3", "drone-4"]);
        // The head's name is taken too; odd characters become '-', a
        // domain is cut off.
        for (key, asked, expected) in [(7, "head", "head-5"), (8, "Lab PC.lab.example", "Lab-PC")] {
            let h = hello(1, asked);
            m.check_hello(&[key; 32], &h, lan(key), now);
            let id = m.join(&[key; 32], &h, lan(key), now).unwrap().0;
            assert_eq!(m.name_of(id).unwrap(), expected);
            assert_eq!(m.welcome(id, 51820).unwrap().name, expected);
        }
        assert_eq!(m.unique_name(99, ".."), "node");
        // A fresh admission gets a new join number; a session moving into
        // the overlay does not.
        let first = m.welcome(ids[0], 51820).unwrap().join;
        m.join(&[3; 32], &hello(2, "drone"), None, now).unwrap();
        assert_eq!(m.welcome(ids[0], 51820).unwrap().join, first);
        assert!(m.leave(ids[0]));
        m.join(&[3; 32], &hello(3, "drone"), lan(3), now).unwrap();
        assert_ne!(m.welcome(ids[0], 51820).unwrap().join, first);
    }

    #[test]
    fn a_welcome_names_the_head_and_the_node_whatever_the_cluster_size() {
        let (mut m, now) = head(Policy::Psk);
        let ids: Vec<u32> = (3..7).map(|k| admit(&mut m, [k; 32], 1, now)).collect();
        let welcome = m.welcome(ids[2], 51820).unwrap();
        let named: Vec<u32> = welcome.members.iter().map(|p| p.id).collect();
        assert_eq!(named, [HEAD_ID, ids[2]]);
        // The rest is in the change log, which a new session hears from
        // its start.
        assert_eq!(m.changes_since(0, usize::MAX).changed.len(), ids.len());
    }

    #[test]
    fn the_change_log_gives_each_node_once_in_its_latest_state() {
        let (mut m, now) = head(Policy::Psk);
        let ids = |peers: &[Peer]| peers.iter().map(|p| p.id).collect::<Vec<_>>();
        assert_eq!(m.version(), 0);
        assert_eq!(m.changes_since(0, usize::MAX), Changes::default());
        let a = admit(&mut m, [3; 32], 1, now);
        let b = admit(&mut m, [4; 32], 1, now);
        let seen = m.version();
        let all = m.changes_since(0, usize::MAX);
        assert_eq!(
            (ids(&all.changed), all.gone, all.version),
            (vec![a, b], vec![], seen)
        );

        // Neither a rejoin without changes nor a heartbeat is news.
        m.join(&[3; 32], &hello(1, "drone"), lan(3), now).unwrap();
        m.heartbeat(a, Load::default(), now);
        assert_eq!(m.version(), seen);
        assert_eq!(m.changes_since(seen, usize::MAX).changed, []);

        assert!(m.leave(b));
        let c = admit(&mut m, [5; 32], 1, now);
        let since = m.changes_since(seen, usize::MAX);
        assert_eq!((ids(&since.changed), since.gone), (vec![c], vec![b]));
        // Joined and removed since: gone, and listed once.
        m.remove(&c.to_string()).unwrap();
        let since = m.changes_since(seen, usize::MAX);
        assert_eq!((ids(&since.changed), since.gone), (vec![], vec![b, c]));

        // In parts: the version returned is where the next part starts.
        let first = m.changes_since(0, 1);
        assert_eq!((ids(&first.changed), first.gone.len()), (vec![a], 0));
        assert!(first.version < m.version());
        let rest = m.changes_since(first.version, usize::MAX);
        assert_eq!(
            (rest.changed.len(), rest.gone, rest.version),
            (0, vec![b, c], m.version())
        );
    }

    #[test]
    fn a_cluster_stays_within_the_lists_a_drone_can_read() {
        let mut config = config(Policy::Psk);
        config.overlay = "10.0.0.0/8".parse().unwrap();
        let now = Instant::now();
        let mut m = Membership::new(config, "head".into(), &[1; 32], [2; 32], now);
        for n in 0..MAX_NODES as u32 - 1 {
            let mut key = [0; 32];
            key[..4].copy_from_slice(&n.to_be_bytes());
            let h = hello(1, "d");
            assert_eq!(
                m.check_hello(&key, &h, None, now),
                Verdict::Admit,
                "node {n}"
            );
            m.join(&key, &h, None, now).unwrap();
        }
        assert_eq!(m.status(now).len(), MAX_NODES);
        assert_eq!(
            m.check_hello(&[0xff; 32], &hello(1, "x"), None, now),
            Verdict::Refuse(Refusal::Full)
        );
    }
}
