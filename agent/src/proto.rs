// SPDX-License-Identifier: GPL-3.0-or-later
//! The join protocol's messages, defined here and nowhere else: what a drone
//! says in its handshake, what the head answers, what flows in a session, and
//! the local control requests of the status verbs.
//!
//! Each message is a tag byte followed by its fields in the [`codec`] format.
//! Decoding rejects unknown tags, trailing bytes and oversized lists; it never
//! panics and never allocates more than the input could hold.

use std::net::{Ipv4Addr, SocketAddrV4};

use chaos_contract::accounts::{Accounts, Group, User};
use chaos_contract::share;

use crate::codec::{DecodeError, Reader, Writer};

/// The TCP port the head accepts joins on (LAN) and sessions on (overlay).
pub const JOIN_PORT: u16 = 7700;
/// The UDP port of WireGuard on every node.
pub const WIREGUARD_PORT: u16 = 51820;
/// Noise pattern: the drone knows the head's static key (pinned in the image,
/// so IK), and the cluster key is mixed in after the first message's static
/// key (psk1), so a wrong cluster key fails the very first message.
pub const NOISE_PATTERN: &str = "Noise_IKpsk1_25519_ChaChaPoly_BLAKE2s";
/// Bound into the handshake hash: a peer speaking another protocol or
/// version fails the handshake instead of being downgraded.
pub const PROLOGUE: &[u8] = b"chaos tyd protocol 2";

/// Hostnames are DNS labels plus domain; longer ones are refused.
pub const MAX_HOSTNAME: usize = 253;
/// A cluster bigger than this is not a lab; it bounds every list we decode
/// (the head refuses the node that would take its lists past it).
pub const MAX_NODES: usize = 8192;
const MAX_TEXT: usize = 1024;
/// Users or groups a head may share.
pub const MAX_ACCOUNTS: usize = 1 << 16;
/// munge keys are 1 KiB as `mungekey` makes them; more is refused.
pub const MAX_MUNGE_KEY: usize = 8192;

/// Timestamps for messages a receiver must see increase (handshakes,
/// beacons): wall-clock nanoseconds, so that they also increase across
/// restarts of the sender, and strictly increasing within this process
/// even if the clock stands still or steps back.
#[derive(Debug, Default)]
pub struct Timestamps {
    last: u64,
}

impl Timestamps {
    pub fn stamp(&mut self) -> u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        self.last = now.max(self.last + 1);
        self.last
    }
}

/// What a drone sends inside the first handshake message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Strictly increasing per node key: the head refuses any handshake whose
    /// timestamp is not newer than the last one it accepted for that key.
    pub timestamp: u64,
    pub wireguard_key: [u8; 32],
    pub wireguard_port: u16,
    pub hostname: String,
}

/// The head's answer inside the second handshake message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Accepted,
    Refused(Refusal),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("waiting for the administrator's approval")]
    /// Admission policy `approve`: waiting for `tyd approve <fingerprint>`.
    AwaitingApproval,
    /// Admission policy `window`, and no enrollment window is open.
    #[error("no enrollment window is open (on the head: `tyd enroll --for 15m`)")]
    WindowClosed,
    /// `tyd remove` removed this node key; a reboot brings a new one.
    #[error("this node was removed with `tyd remove`")]
    Removed,
    /// No overlay address is left in the head's range.
    #[error("no overlay address is left in the head's range")]
    Full,
}

/// One member as every node needs it for its WireGuard mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: u32,
    pub hostname: String,
    pub wireguard_key: [u8; 32],
    pub overlay: Ipv4Addr,
    /// Where to send WireGuard packets; `None` for the head, whose address
    /// each drone already knows (it joined through it).
    pub endpoint: Option<SocketAddrV4>,
}

/// Load figures from procfs, carried by heartbeats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    /// Load averages over 1, 5 and 15 minutes, in hundredths.
    pub average: [u32; 3],
    pub cpus: u32,
    pub memory_total_kib: u64,
    pub memory_available_kib: u64,
    pub uptime_secs: u64,
}

/// Where a node is in its membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Up,
    /// Refused under admission policy `approve` until approved.
    Pending,
    Left,
    Expired,
}

impl State {
    /// Each state's tag on the wire and its name, once.
    const TABLE: &'static [(u8, State, &'static str)] = &[
        (0, State::Up, "up"),
        (1, State::Pending, "pending"),
        (2, State::Left, "left"),
        (3, State::Expired, "expired"),
    ];

    pub fn name(self) -> &'static str {
        Self::TABLE
            .iter()
            .find(|(_, s, _)| *s == self)
            .map_or("unknown", |(_, _, name)| name)
    }

    fn tag(self) -> u8 {
        Self::TABLE
            .iter()
            .find(|(_, s, _)| *s == self)
            .map_or(u8::MAX, |(tag, _, _)| *tag)
    }

    fn from_tag(tag: u8) -> Option<State> {
        Self::TABLE
            .iter()
            .find(|(t, _, _)| *t == tag)
            .map(|(_, s, _)| *s)
    }
}

/// How a member was admitted, for `tyd nodes` and the head's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// By the cluster key alone (admission policy psk).
    ClusterKey,
    /// While an enrollment window was open.
    Window,
    /// By `tyd approve`.
    Approved,
}

impl Admission {
    /// Each way's tag on the wire (0 is none) and its name, once.
    const TABLE: &'static [(u8, Admission, &'static str)] = &[
        (1, Admission::ClusterKey, "psk"),
        (2, Admission::Window, "window"),
        (3, Admission::Approved, "approved"),
    ];

    pub fn name(self) -> &'static str {
        Self::TABLE
            .iter()
            .find(|(_, a, _)| *a == self)
            .map_or("unknown", |(_, _, name)| name)
    }

    fn tag(admitted: Option<Admission>) -> u8 {
        Self::TABLE
            .iter()
            .find(|(_, a, _)| Some(*a) == admitted)
            .map_or(0, |(tag, _, _)| *tag)
    }

    fn from_tag(tag: u8) -> Result<Option<Admission>, DecodeError> {
        match Self::TABLE.iter().find(|(t, _, _)| *t == tag) {
            Some((_, a, _)) => Ok(Some(*a)),
            None if tag == 0 => Ok(None),
            None => Err(unknown("node admission", tag)),
        }
    }
}

/// One row of `tyd nodes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub id: u32,
    pub head: bool,
    pub hostname: String,
    pub fingerprint: String,
    pub overlay: Option<Ipv4Addr>,
    pub lan: Option<Ipv4Addr>,
    pub state: State,
    /// Milliseconds since the node's last accepted handshake.
    pub handshake_age_ms: Option<u64>,
    pub load: Option<Load>,
    /// The node's state in Slurm (`idle`, `alloc`, `drain`, `down`...),
    /// when the head runs Slurm and slurmctld knows the node.
    pub slurm: Option<String>,
    /// How a member was admitted; `None` for the head and pending nodes.
    pub admitted: Option<Admission>,
}

/// Messages a drone sends in an established session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromDrone {
    /// The drone completed the handshake (proving it holds its keys); only
    /// now does the head count it as a member.
    Ready,
    Heartbeat(Load),
    Leave,
    /// A status verb run on the drone, answered with [`ToDrone::Status`].
    Status {
        tag: u32,
    },
}

/// Messages the head sends in an established session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToDrone {
    Welcome(Welcome),
    /// Membership changes since the last push.
    Members {
        changed: Vec<Peer>,
        gone: Vec<u32>,
    },
    Status {
        tag: u32,
        nodes: Vec<NodeStatus>,
    },
    /// `tyd remove` removed this node.
    Removed,
    /// The head is shutting down; rejoin when it is back.
    Bye,
    /// The head's cluster users and groups changed.
    Accounts(Accounts),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    pub id: u32,
    pub overlay: Ipv4Addr,
    pub prefix_len: u8,
    pub heartbeat_ms: u32,
    pub head_wireguard_port: u16,
    /// The head and this node; the other members follow in pushes.
    pub members: Vec<Peer>,
    /// This node's name in the cluster: the one it asked for, unless
    /// another member has it.
    pub name: String,
    /// Changes whenever the head admits this node afresh (see
    /// [`chaos_contract::member::JOIN`]).
    pub join: u64,
    /// The head's wall clock when it sent this, in nanoseconds since the
    /// epoch: munge refuses credentials from a clock 5 minutes off.
    pub clock_ns: u64,
    /// What Slurm needs, when the head runs it.
    pub slurm: Option<SlurmGrant>,
}

/// What a member needs to run Slurm jobs, which no image may carry (anyone
/// on the LAN can download one): it travels only inside the session.
#[derive(Clone, PartialEq, Eq)]
pub struct SlurmGrant {
    pub munge_key: Vec<u8>,
    pub accounts: Accounts,
    /// The head's shares (see [`chaos_contract::share`]), which the member
    /// mounts at the same paths before its services start.
    pub shares: Vec<String>,
}

/// The key stays out of logs.
impl std::fmt::Debug for SlurmGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlurmGrant")
            .field(
                "munge_key",
                &format_args!("<{} bytes>", self.munge_key.len()),
            )
            .field("accounts", &self.accounts)
            .field("shares", &self.shares)
            .finish()
    }
}

/// Requests from the status verbs to the local tyd (unix socket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Nodes,
    Remove {
        node: String,
    },
    Enroll {
        seconds: u64,
    },
    Approve {
        fingerprint: String,
    },
    /// `tyd approve --all`: every pending node.
    ApproveAll,
    /// On a drone (`tyd -m` while the node's tyd runs): join this head
    /// (`-m`'s text: an address or a name, and a port) now, answered once
    /// joined or with why not yet.
    Join {
        head: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Nodes(Vec<NodeStatus>),
    Done(String),
    Failed(String),
}

/// A message type with a byte encoding.
pub trait Message: Sized {
    fn write(&self, w: &mut Writer);
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError>;

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.write(&mut w);
        w.finish()
    }

    /// Decodes a whole message: trailing bytes are an error.
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let message = Self::read(&mut r)?;
        r.end()?;
        Ok(message)
    }
}

fn unknown(field: &'static str, tag: u8) -> DecodeError {
    DecodeError::Invalid {
        field,
        reason: format!("unknown kind {tag}"),
    }
}

impl Message for Hello {
    fn write(&self, w: &mut Writer) {
        w.u64(self.timestamp)
            .raw(&self.wireguard_key)
            .u16(self.wireguard_port)
            .str(&self.hostname);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Hello {
            timestamp: r.u64("hello timestamp")?,
            wireguard_key: r.array("hello wireguard key")?,
            wireguard_port: r.u16("hello wireguard port")?,
            hostname: r.str("hello hostname", MAX_HOSTNAME)?,
        })
    }
}

impl Answer {
    /// Each answer's tag on the wire, once.
    const TABLE: &'static [(u8, Answer)] = &[
        (0, Answer::Accepted),
        (1, Answer::Refused(Refusal::AwaitingApproval)),
        (2, Answer::Refused(Refusal::WindowClosed)),
        (3, Answer::Refused(Refusal::Removed)),
        (4, Answer::Refused(Refusal::Full)),
    ];
}

impl Message for Answer {
    fn write(&self, w: &mut Writer) {
        let tag = Self::TABLE.iter().find(|(_, a)| a == self).map(|(t, _)| *t);
        w.u8(tag.unwrap_or(u8::MAX));
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let tag = r.u8("answer")?;
        Self::TABLE
            .iter()
            .find(|(t, _)| *t == tag)
            .map(|(_, a)| a.clone())
            .ok_or_else(|| unknown("answer", tag))
    }
}

/// Peer entries are at least this long (id, empty hostname, key, overlay,
/// no endpoint).
const MIN_PEER: usize = 4 + 2 + 32 + 4 + 1;

impl Message for Peer {
    fn write(&self, w: &mut Writer) {
        w.u32(self.id)
            .str(&self.hostname)
            .raw(&self.wireguard_key)
            .ipv4(self.overlay)
            .endpoint(self.endpoint);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Peer {
            id: r.u32("peer id")?,
            hostname: r.str("peer hostname", MAX_HOSTNAME)?,
            wireguard_key: r.array("peer wireguard key")?,
            overlay: r.ipv4("peer overlay address")?,
            endpoint: r.endpoint("peer endpoint")?,
        })
    }
}

impl Message for Load {
    fn write(&self, w: &mut Writer) {
        for average in self.average {
            w.u32(average);
        }
        w.u32(self.cpus)
            .u64(self.memory_total_kib)
            .u64(self.memory_available_kib)
            .u64(self.uptime_secs);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Load {
            average: [
                r.u32("load average")?,
                r.u32("load average")?,
                r.u32("load average")?,
            ],
            cpus: r.u32("cpus")?,
            memory_total_kib: r.u64("memory total")?,
            memory_available_kib: r.u64("memory available")?,
            uptime_secs: r.u64("uptime")?,
        })
    }
}

fn write_option<T: Message>(w: &mut Writer, value: &Option<T>) {
    match value {
        None => {
            w.u8(0);
        }
        Some(value) => {
            w.u8(1);
            value.write(w);
        }
    }
}

fn read_option<T: Message>(
    r: &mut Reader<'_>,
    field: &'static str,
) -> Result<Option<T>, DecodeError> {
    if r.bool(field)? {
        T::read(r).map(Some)
    } else {
        Ok(None)
    }
}

/// A grant's shares, each one a member may mount.
fn read_shares(r: &mut Reader) -> Result<Vec<String>, DecodeError> {
    let count = r.count("shares", share::MAX_SHARES, 4)?;
    (0..count)
        .map(|_| {
            let path = r.str("share", share::MAX_PATH)?;
            share::check(&path).map_err(|reason| DecodeError::Invalid {
                field: "share",
                reason,
            })?;
            Ok(path)
        })
        .collect()
}

fn write_list<T: Message>(w: &mut Writer, items: &[T]) {
    w.count(items.len());
    for item in items {
        item.write(w);
    }
}

fn read_list<T: Message>(
    r: &mut Reader<'_>,
    field: &'static str,
    min_entry: usize,
) -> Result<Vec<T>, DecodeError> {
    let count = r.count(field, MAX_NODES, min_entry)?;
    (0..count).map(|_| T::read(r)).collect()
}

/// Status rows are at least this long (id, head, empty hostname and
/// fingerprint, state, no addresses, age, load or Slurm state).
const MIN_STATUS: usize = 4 + 1 + 2 + 2 + 1 + 1 + 1 + 1 + 1 + 1;

impl Message for NodeStatus {
    fn write(&self, w: &mut Writer) {
        w.u32(self.id)
            .u8(u8::from(self.head))
            .str(&self.hostname)
            .str(&self.fingerprint)
            .u8(self.state.tag());
        for address in [self.overlay, self.lan] {
            match address {
                None => w.u8(0),
                Some(address) => w.u8(1).ipv4(address),
            };
        }
        match self.handshake_age_ms {
            None => w.u8(0),
            Some(age) => w.u8(1).u64(age),
        };
        write_option(w, &self.load);
        match &self.slurm {
            None => w.u8(0),
            Some(state) => w.u8(1).str(state),
        };
        w.u8(Admission::tag(self.admitted));
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let id = r.u32("node id")?;
        let head = r.bool("node is head")?;
        let hostname = r.str("node hostname", MAX_HOSTNAME)?;
        let fingerprint = r.str("node fingerprint", MAX_HOSTNAME)?;
        let tag = r.u8("node state")?;
        let state = State::from_tag(tag).ok_or_else(|| unknown("node state", tag))?;
        let mut address = |field| -> Result<Option<Ipv4Addr>, DecodeError> {
            if r.bool(field)? {
                r.ipv4(field).map(Some)
            } else {
                Ok(None)
            }
        };
        let overlay = address("node overlay address")?;
        let lan = address("node LAN address")?;
        let handshake_age_ms = if r.bool("node handshake age")? {
            Some(r.u64("node handshake age")?)
        } else {
            None
        };
        let load = read_option(r, "node load")?;
        let slurm = if r.bool("node Slurm state")? {
            Some(r.str("node Slurm state", MAX_HOSTNAME)?)
        } else {
            None
        };
        let admitted = Admission::from_tag(r.u8("node admission")?)?;
        Ok(NodeStatus {
            id,
            head,
            hostname,
            fingerprint,
            overlay,
            lan,
            state,
            handshake_age_ms,
            load,
            slurm,
            admitted,
        })
    }
}

/// The tags of the messages that carry data, each written once and used
/// by both the writer and the reader.
mod tag {
    pub mod from_drone {
        pub const READY: u8 = 0;
        pub const HEARTBEAT: u8 = 1;
        pub const LEAVE: u8 = 2;
        pub const STATUS: u8 = 3;
    }
    pub mod to_drone {
        pub const WELCOME: u8 = 0;
        pub const MEMBERS: u8 = 1;
        pub const STATUS: u8 = 2;
        pub const REMOVED: u8 = 3;
        pub const BYE: u8 = 4;
        pub const ACCOUNTS: u8 = 5;
    }
    pub mod request {
        pub const NODES: u8 = 0;
        pub const REMOVE: u8 = 1;
        pub const ENROLL: u8 = 2;
        pub const APPROVE: u8 = 3;
        pub const APPROVE_ALL: u8 = 4;
        pub const JOIN: u8 = 5;
    }
    pub mod response {
        pub const NODES: u8 = 0;
        pub const DONE: u8 = 1;
        pub const FAILED: u8 = 2;
    }
}

impl Message for FromDrone {
    fn write(&self, w: &mut Writer) {
        use tag::from_drone::*;
        match self {
            FromDrone::Ready => {
                w.u8(READY);
            }
            FromDrone::Heartbeat(load) => {
                w.u8(HEARTBEAT);
                load.write(w);
            }
            FromDrone::Leave => {
                w.u8(LEAVE);
            }
            FromDrone::Status { tag } => {
                w.u8(STATUS).u32(*tag);
            }
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        use tag::from_drone::*;
        Ok(match r.u8("drone message")? {
            READY => FromDrone::Ready,
            HEARTBEAT => FromDrone::Heartbeat(Load::read(r)?),
            LEAVE => FromDrone::Leave,
            STATUS => FromDrone::Status {
                tag: r.u32("status tag")?,
            },
            tag => return Err(unknown("drone message", tag)),
        })
    }
}

impl Message for Accounts {
    fn write(&self, w: &mut Writer) {
        w.count(self.users.len());
        for u in &self.users {
            w.str(&u.name)
                .u32(u.uid)
                .u32(u.gid)
                .str(&u.gecos)
                .str(&u.home)
                .str(&u.shell);
        }
        w.count(self.groups.len());
        for g in &self.groups {
            w.str(&g.name).u32(g.gid).count(g.members.len());
            for m in &g.members {
                w.str(m);
            }
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let users = (0..r.count("users", MAX_ACCOUNTS, 2 + 4 + 4 + 6)?)
            .map(|_| {
                Ok(User {
                    name: r.str("user name", MAX_HOSTNAME)?,
                    uid: r.u32("uid")?,
                    gid: r.u32("user gid")?,
                    gecos: r.str("user gecos", MAX_TEXT)?,
                    home: r.str("user home", MAX_TEXT)?,
                    shell: r.str("user shell", MAX_TEXT)?,
                })
            })
            .collect::<Result<_, DecodeError>>()?;
        let groups = (0..r.count("groups", MAX_ACCOUNTS, 2 + 4 + 4)?)
            .map(|_| {
                let name = r.str("group name", MAX_HOSTNAME)?;
                let gid = r.u32("gid")?;
                let members = (0..r.count("group members", MAX_ACCOUNTS, 2)?)
                    .map(|_| r.str("group member", MAX_HOSTNAME))
                    .collect::<Result<_, _>>()?;
                Ok(Group { name, gid, members })
            })
            .collect::<Result<_, DecodeError>>()?;
        Ok(Accounts { users, groups })
    }
}

impl Message for ToDrone {
    fn write(&self, w: &mut Writer) {
        use tag::to_drone::*;
        match self {
            ToDrone::Welcome(welcome) => {
                w.u8(WELCOME)
                    .u32(welcome.id)
                    .ipv4(welcome.overlay)
                    .u8(welcome.prefix_len)
                    .u32(welcome.heartbeat_ms)
                    .u16(welcome.head_wireguard_port);
                write_list(w, &welcome.members);
                w.str(&welcome.name).u64(welcome.join).u64(welcome.clock_ns);
                match &welcome.slurm {
                    None => {
                        w.u8(0);
                    }
                    Some(grant) => {
                        w.u8(1).blob(&grant.munge_key);
                        grant.accounts.write(w);
                        w.count(grant.shares.len());
                        for share in &grant.shares {
                            w.str(share);
                        }
                    }
                }
            }
            ToDrone::Members { changed, gone } => {
                w.u8(MEMBERS);
                write_list(w, changed);
                w.count(gone.len());
                for id in gone {
                    w.u32(*id);
                }
            }
            ToDrone::Status { tag, nodes } => {
                w.u8(STATUS).u32(*tag);
                write_list(w, nodes);
            }
            ToDrone::Removed => {
                w.u8(REMOVED);
            }
            ToDrone::Bye => {
                w.u8(BYE);
            }
            ToDrone::Accounts(accounts) => {
                w.u8(ACCOUNTS);
                accounts.write(w);
            }
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        use tag::to_drone::*;
        Ok(match r.u8("head message")? {
            WELCOME => {
                let id = r.u32("welcome id")?;
                let overlay = r.ipv4("welcome overlay address")?;
                let prefix_len = r.u8("welcome prefix length")?;
                if !(8..=30).contains(&prefix_len) {
                    return Err(DecodeError::Invalid {
                        field: "welcome prefix length",
                        reason: format!("/{prefix_len} is not between /8 and /30"),
                    });
                }
                ToDrone::Welcome(Welcome {
                    id,
                    overlay,
                    prefix_len,
                    heartbeat_ms: r.u32("welcome heartbeat")?,
                    head_wireguard_port: r.u16("welcome head port")?,
                    members: read_list(r, "welcome members", MIN_PEER)?,
                    name: r.str("welcome name", MAX_HOSTNAME)?,
                    join: r.u64("welcome join")?,
                    clock_ns: r.u64("welcome clock")?,
                    slurm: if r.bool("welcome Slurm")? {
                        Some(SlurmGrant {
                            munge_key: r.blob("munge key", MAX_MUNGE_KEY)?,
                            accounts: Accounts::read(r)?,
                            shares: read_shares(r)?,
                        })
                    } else {
                        None
                    },
                })
            }
            MEMBERS => {
                let changed = read_list(r, "changed members", MIN_PEER)?;
                let count = r.count("gone members", MAX_NODES, 4)?;
                let gone = (0..count)
                    .map(|_| r.u32("gone member"))
                    .collect::<Result<_, _>>()?;
                ToDrone::Members { changed, gone }
            }
            STATUS => ToDrone::Status {
                tag: r.u32("status tag")?,
                nodes: read_list(r, "status nodes", MIN_STATUS)?,
            },
            REMOVED => ToDrone::Removed,
            BYE => ToDrone::Bye,
            ACCOUNTS => ToDrone::Accounts(Accounts::read(r)?),
            tag => return Err(unknown("head message", tag)),
        })
    }
}

impl Message for Request {
    fn write(&self, w: &mut Writer) {
        use tag::request::*;
        match self {
            Request::Nodes => {
                w.u8(NODES);
            }
            Request::Remove { node } => {
                w.u8(REMOVE).str(node);
            }
            Request::Enroll { seconds } => {
                w.u8(ENROLL).u64(*seconds);
            }
            Request::Approve { fingerprint } => {
                w.u8(APPROVE).str(fingerprint);
            }
            Request::ApproveAll => {
                w.u8(APPROVE_ALL);
            }
            Request::Join { head } => {
                w.u8(JOIN).str(head);
            }
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        use tag::request::*;
        Ok(match r.u8("request")? {
            NODES => Request::Nodes,
            REMOVE => Request::Remove {
                node: r.str("node", MAX_HOSTNAME)?,
            },
            ENROLL => Request::Enroll {
                seconds: r.u64("seconds")?,
            },
            APPROVE => Request::Approve {
                fingerprint: r.str("fingerprint", MAX_HOSTNAME)?,
            },
            APPROVE_ALL => Request::ApproveAll,
            JOIN => Request::Join {
                // A host name and a port.
                head: r.str("head", MAX_HOSTNAME + 6)?,
            },
            tag => return Err(unknown("request", tag)),
        })
    }
}

impl Message for Response {
    fn write(&self, w: &mut Writer) {
        use tag::response::*;
        match self {
            Response::Nodes(nodes) => {
                w.u8(NODES);
                write_list(w, nodes);
            }
            Response::Done(text) => {
                w.u8(DONE).str(text);
            }
            Response::Failed(text) => {
                w.u8(FAILED).str(text);
            }
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        use tag::response::*;
        Ok(match r.u8("response")? {
            NODES => Response::Nodes(read_list(r, "nodes", MIN_STATUS)?),
            DONE => Response::Done(r.str("text", MAX_TEXT)?),
            FAILED => Response::Failed(r.str("text", MAX_TEXT)?),
            tag => return Err(unknown("response", tag)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_increase_even_within_one_clock_tick() {
        let mut timestamps = Timestamps::default();
        let stamps: Vec<u64> = (0..1000).map(|_| timestamps.stamp()).collect();
        assert!(stamps.windows(2).all(|w| w[0] < w[1]));
    }

    fn peer(id: u32) -> Peer {
        Peer {
            id,
            hostname: format!("node{id}"),
            wireguard_key: [id as u8; 32],
            overlay: Ipv4Addr::new(10, 99, 0, id as u8),
            endpoint: (id > 1).then(|| SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 9), 51820)),
        }
    }

    fn status(id: u32) -> NodeStatus {
        NodeStatus {
            id,
            head: id == 1,
            hostname: "drone".into(),
            fingerprint: "abcd-ef01".into(),
            overlay: Some(Ipv4Addr::new(10, 99, 0, 2)),
            lan: None,
            state: State::Expired,
            handshake_age_ms: Some(1234),
            load: Some(Load {
                average: [12, 34, 56],
                cpus: 4,
                memory_total_kib: 1 << 20,
                memory_available_kib: 1 << 19,
                uptime_secs: 99,
            }),
            slurm: (id > 1).then(|| "alloc".into()),
            admitted: Some(Admission::Window),
        }
    }

    /// Every message kind survives a round trip, and every proper prefix of
    /// its encoding is rejected rather than misread.
    fn check<T: Message + PartialEq + std::fmt::Debug>(message: T) {
        let bytes = message.encode();
        assert_eq!(T::decode(&bytes).as_ref(), Ok(&message));
        for cut in 0..bytes.len() {
            assert!(
                T::decode(&bytes[..cut]).is_err(),
                "{message:?} cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(T::decode(&longer), Err(DecodeError::Trailing { extra: 1 }));
    }

    #[test]
    fn every_message_round_trips_and_rejects_truncation() {
        check(Hello {
            timestamp: 42,
            wireguard_key: [9; 32],
            wireguard_port: 51820,
            hostname: "drone-1".into(),
        });
        check(Answer::Accepted);
        check(Answer::Refused(Refusal::AwaitingApproval));
        check(Answer::Refused(Refusal::WindowClosed));
        check(Answer::Refused(Refusal::Removed));
        check(Answer::Refused(Refusal::Full));
        check(FromDrone::Ready);
        check(FromDrone::Heartbeat(status(2).load.unwrap()));
        check(FromDrone::Leave);
        check(FromDrone::Status { tag: 7 });
        check(ToDrone::Welcome(Welcome {
            id: 3,
            overlay: Ipv4Addr::new(10, 99, 0, 3),
            prefix_len: 16,
            heartbeat_ms: 2000,
            head_wireguard_port: 51820,
            members: vec![peer(1), peer(3)],
            name: "drone-3".into(),
            join: 0x1234,
            clock_ns: 1_700_000_000_000_000_000,
            slurm: None,
        }));
        let accounts = Accounts::parse(
            "alice:x:1000:1000:Alice:/home/alice:/bin/sh\n",
            "lab:x:1500:alice,bob\nempty:x:1501:\n",
        )
        .unwrap();
        check(ToDrone::Welcome(Welcome {
            id: 4,
            overlay: Ipv4Addr::new(10, 99, 0, 4),
            prefix_len: 24,
            heartbeat_ms: 500,
            head_wireguard_port: 51821,
            members: vec![peer(1)],
            name: "drone-4".into(),
            join: u64::MAX,
            clock_ns: 1,
            slurm: Some(SlurmGrant {
                munge_key: vec![0xa5; 1024],
                accounts: accounts.clone(),
                shares: vec!["/home".into(), "/srv/data".into()],
            }),
        }));
        check(ToDrone::Accounts(accounts));
        check(ToDrone::Accounts(Accounts::default()));
        check(ToDrone::Members {
            changed: vec![peer(4)],
            gone: vec![2, 5],
        });
        check(ToDrone::Status {
            tag: 1,
            nodes: vec![status(1), status(2)],
        });
        check(ToDrone::Removed);
        check(ToDrone::Bye);
        check(Request::Nodes);
        check(Request::Remove { node: "3".into() });
        check(Request::Enroll { seconds: 900 });
        check(Request::Approve {
            fingerprint: "ab".into(),
        });
        check(Request::ApproveAll);
        check(Request::Join {
            head: "192.168.1.11".into(),
        });
        check(Response::Nodes(vec![status(1)]));
        check(Response::Done("ok".into()));
        check(Response::Failed("no".into()));
    }

    #[test]
    fn hostile_input_is_rejected_with_the_field_named() {
        let table: &[(&[u8], &str)] = &[
            (&[9], "head message: unknown kind 9"),
            (&[0xff], "head message: unknown kind 255"),
            (
                &[1, 0xff, 0xff, 0xff, 0xff],
                "changed members: 4294967295 entries",
            ),
            (
                &[1, 0, 0, 0x20, 1],
                "changed members: 8193 entries, at most",
            ),
            (&[1, 0, 0, 0, 200], "changed members: message ends early"),
            (
                &[0, 0, 0, 0, 1, 10, 99, 0, 1, 33],
                "welcome prefix length: /33",
            ),
        ];
        for (bytes, expected) in table {
            let error = ToDrone::decode(bytes).unwrap_err().to_string();
            assert!(error.starts_with(expected), "{bytes:?}: {error}");
        }
    }

    /// A share the head names must be one a member may mount: a welcome
    /// that would have a drone mount over its guarded root is refused.
    #[test]
    fn a_welcome_sharing_the_root_is_refused() {
        for (share, expected) in [
            ("/etc", "share: /etc: a share must be"),
            ("/home/../etc", "share: /home/../etc: not a plain"),
        ] {
            let welcome = ToDrone::Welcome(Welcome {
                id: 2,
                overlay: Ipv4Addr::new(10, 99, 0, 2),
                prefix_len: 16,
                heartbeat_ms: 1000,
                head_wireguard_port: 51820,
                members: vec![],
                name: "drone".into(),
                join: 1,
                clock_ns: 1,
                slurm: Some(SlurmGrant {
                    munge_key: vec![1; 1024],
                    accounts: Accounts::default(),
                    shares: vec![share.into()],
                }),
            });
            let error = ToDrone::decode(&welcome.encode()).unwrap_err().to_string();
            assert!(error.starts_with(expected), "{share}: {error}");
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        // A fixed xorshift sequence: the same inputs every run.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..2000 {
            let bytes: Vec<u8> = (0..len % 300)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = ToDrone::decode(&bytes);
            let _ = FromDrone::decode(&bytes);
            let _ = Hello::decode(&bytes);
            let _ = Request::decode(&bytes);
            let _ = Response::decode(&bytes);
        }
    }
}
