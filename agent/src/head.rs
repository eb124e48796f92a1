// SPDX-License-Identifier: GPL-3.0-or-later
//! The head's event loop: one thread, non-blocking sockets and poll(2).
//! It accepts joins, runs each connection through the handshake with a
//! deadline, feeds [`Membership`], pushes every change to all members and
//! to its own dataplane, and answers the status verbs.
//!
//! Pushes go out in rounds, at most one per [`PUSH_INTERVAL`] (longer in
//! a large cluster, see [`PUSH_INTERVAL_PER_MEMBER`]), each member
//! getting what changed since the version it last heard of (the
//! membership's change log), and only once its previous push has left
//! the output buffer. So a lab joining all at once costs a push per member
//! per round, not per join, and a member that reads slowly holds one push
//! in the head's memory, not a backlog. A welcome names only the head and
//! the node itself; a new member hears of the others in these rounds, from
//! the start of the change log, so a join costs the same at any size.
//! While connections are still joining a round sends at most
//! [`PUSH_BYTES_WHILE_JOINING`], those furthest behind first: a lab's
//! morning admits everyone, then the meshes fill.
//!
//! Nothing a peer sends may stop the loop: every connection has a deadline
//! until it is a member, bounded buffers, and is dropped on its first
//! error; addresses that keep failing are cut off at accept.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use nix::poll::PollTimeout;

use crate::beacon::{self, BeaconError};
use crate::channel::{timeout_until, Channel, ChannelError, PollSet};
use crate::control::{self, Client};
use crate::dataplane::{Dataplane, DataplaneError, Interface, Mesh};
use crate::keys::{HeadIdentity, KeyError, Keypair};
use crate::log::{fact, info, Penalties, RejectLog};
use crate::membership::{Config, Membership, Verdict};
use crate::proto::{Answer, FromDrone, Hello, Message, NodeStatus, Request, Response, ToDrone};
use crate::sysinfo;
use crate::workload::Cluster;
use chaos_contract::fact::{self, Fact, NodeState};

/// A connection that has not become a member by then is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections still in their handshake, per source address and in all.
const MAX_HANDSHAKES_PER_ADDRESS: usize = 64;
const MAX_HANDSHAKES: usize = 1024;
/// Accepts per loop turn, so that a connect flood cannot starve members.
const ACCEPT_BATCH: usize = 64;
/// Time for farewells on shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// Push rounds are at least this far apart: changes that come in between
/// (a lab's morning brings a join every few milliseconds) go out together.
const PUSH_INTERVAL: Duration = Duration::from_millis(100);
/// And further apart in a larger cluster, as a round wakes every member:
/// this much more per member keeps the rounds' cost a fixed share of the
/// head's time (and each member's wakeups a fixed rate) at any size.
const PUSH_INTERVAL_PER_MEMBER: Duration = Duration::from_micros(50);
/// What a push round may send while connections are still joining: a
/// lab's morning admits every node first, and their meshes fill in the
/// rounds after (every member hearing of every other is the square of the
/// lab's size, which would otherwise hold up each join).
const PUSH_BYTES_WHILE_JOINING: usize = 1 << 20;
/// Nodes per push, so that one fits a message whatever the host names; a
/// member further behind hears of the rest in the next rounds.
const PUSH_NODES: usize = 1024;

#[derive(Debug, Clone)]
pub struct HeadConfig {
    pub membership: Config,
    pub listen: SocketAddrV4,
    pub wireguard_port: u16,
    pub hostname: String,
    /// How often to beacon on the LAN for drones that know no head
    /// address; `None` for no beacons.
    pub beacon: Option<Duration>,
}

enum Phase {
    /// Waiting for the first handshake message.
    Hello(Box<snow::HandshakeState>),
    /// Handshake done; waiting for the drone's first transport message.
    Ready {
        key: [u8; 32],
        hello: Hello,
        lan: Option<Ipv4Addr>,
    },
    Member(u32),
    /// Refused: the answer is being written, then the connection closes.
    Closing,
}

struct Conn {
    channel: Channel<TcpStream>,
    peer: SocketAddr,
    phase: Phase,
    deadline: Instant,
}

/// Why a connection is being dropped, for the log.
enum Reason {
    /// Quietly: a closed connection, a member moving sessions.
    Quiet,
    /// Hostile or broken input: logged with the address, and counted
    /// against it.
    Reject(String),
}

impl From<ChannelError> for Reason {
    fn from(error: ChannelError) -> Self {
        match error {
            ChannelError::Closed => Reason::Quiet,
            // A drone dropping its LAN session for the overlay one resets
            // it if a push was still unread: a close, not an attack.
            ChannelError::Io(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Reason::Quiet,
            other => Reason::Reject(other.to_string()),
        }
    }
}

pub struct Head<'a> {
    identity: HeadIdentity,
    config: HeadConfig,
    membership: Membership,
    dataplane: &'a mut dyn Dataplane,
    mesh: Mesh,
    listener: TcpListener,
    control: Option<UnixListener>,
    conns: HashMap<u64, Conn>,
    clients: HashMap<u64, Client>,
    sessions: HashMap<u32, u64>,
    next_token: u64,
    rejects: RejectLog,
    penalties: Penalties,
    /// Per member session (by token), the membership version it has heard of.
    heard: HashMap<u64, u64>,
    /// The version the head's own dataplane has.
    mesh_version: u64,
    push_round: PushRound,
    next_sample: Instant,
    beacon: Option<beacon::Sender>,
    /// Slurm, with `tyd serve --slurm`.
    slurm: Option<Cluster>,
}

/// Why the head could not start or had to stop serving.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error("binding the join port {listen}: {error}")]
    Bind {
        listen: SocketAddrV4,
        error: std::io::Error,
    },
    #[error("the control socket: {0}")]
    Control(std::io::Error),
    #[error("the head's WireGuard key: {0}")]
    Key(#[from] KeyError),
    #[error("bringing up the head's overlay: {0}")]
    Overlay(DataplaneError),
    #[error("updating the head's WireGuard peers: {0}")]
    Peers(DataplaneError),
    #[error(transparent)]
    Beacon(#[from] BeaconError),
    #[error("waiting for the network: {0}")]
    Poll(std::io::Error),
}

impl<'a> Head<'a> {
    /// Binds the join port and brings up the head's own end of the overlay.
    pub fn new(
        identity: HeadIdentity,
        config: HeadConfig,
        dataplane: &'a mut dyn Dataplane,
        control: Option<UnixListener>,
    ) -> Result<Self, HeadError> {
        let bind = |error| HeadError::Bind {
            listen: config.listen,
            error,
        };
        let listener = TcpListener::bind(config.listen).map_err(bind)?;
        listener.set_nonblocking(true).map_err(bind)?;
        let wireguard = Keypair::generate()?;
        let now = Instant::now();
        let membership = Membership::new(
            config.membership.clone(),
            config.hostname.clone(),
            &identity.keypair.public,
            wireguard.public,
            now,
        );
        let overlay = config.membership.overlay;
        dataplane
            .configure(&Interface {
                overlay: overlay.head_address(),
                prefix_len: overlay.prefix_len,
                private_key: wireguard.private,
                listen_port: config.wireguard_port,
            })
            .map_err(HeadError::Overlay)?;
        let mut mesh = Mesh::default();
        mesh.replace(dataplane, crate::membership::HEAD_ID, Vec::new())
            .map_err(HeadError::Overlay)?;
        if let Some(control) = &control {
            control.set_nonblocking(true).map_err(HeadError::Control)?;
        }
        let beacon = config
            .beacon
            .map(|interval| {
                beacon::Sender::new(
                    identity.beacon_key(),
                    identity.keypair.public,
                    config.listen,
                    beacon::BEACON_PORT,
                    interval,
                )
            })
            .transpose()?;
        Ok(Self {
            identity,
            config,
            membership,
            dataplane,
            mesh,
            listener,
            control,
            conns: HashMap::new(),
            clients: HashMap::new(),
            sessions: HashMap::new(),
            next_token: 0,
            rejects: RejectLog::new(now),
            penalties: Penalties::default(),
            heard: HashMap::new(),
            mesh_version: 0,
            push_round: PushRound {
                next: now,
                version: 0,
                lagging: false,
            },
            next_sample: now,
            beacon,
            slurm: None,
        })
    }

    /// Runs Slurm with the cluster: members are granted what it needs,
    /// and it follows the membership.
    pub fn with_slurm(mut self, slurm: Cluster) -> Self {
        self.slurm = Some(slurm);
        self
    }

    /// The rows of `tyd nodes`, with each node's Slurm state.
    fn status(&self, now: Instant) -> Vec<NodeStatus> {
        let mut rows = self.membership.status(now);
        if let Some(slurm) = &self.slurm {
            for row in rows.iter_mut().filter(|r| !r.head) {
                row.slurm = slurm.worker.state(&row.hostname);
            }
        }
        rows
    }

    /// Node `id`, called `name`, is no longer a member (`state` says
    /// how): Slurm forgets it. Others hear of it from the membership's
    /// change log in the next push round.
    fn departed(&self, id: u32, name: Option<String>, state: &str, why: &str) {
        let mut member = Fact::new(fact::MEMBER).with("node", id);
        if let Some(name) = &name {
            member = member.with("name", name);
        }
        fact(member.with("state", state));
        if let (Some(slurm), Some(name)) = (&self.slurm, name) {
            slurm.worker.forget(&name, why);
        }
    }

    /// The port joins are accepted on (useful when bound to port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop` becomes readable (a signalfd), then says goodbye
    /// to every member and takes the overlay down.
    pub fn run(&mut self, stop: Option<BorrowedFd<'_>>) -> Result<(), HeadError> {
        info(format!(
            "head {} serving joins on {} (overlay {}, admission {}, fingerprint {})",
            self.config.hostname,
            self.config.listen,
            self.config.membership.overlay,
            self.config.membership.policy.name(),
            crate::keys::fingerprint(&self.identity.keypair.public),
        ));
        let overlay = self.config.membership.overlay;
        fact(
            NodeState::Serving
                .fact()
                .with("name", &self.config.hostname)
                .with(
                    "overlay",
                    format!("{}/{}", overlay.head_address(), overlay.prefix_len),
                )
                .with("listen", self.config.listen),
        );
        loop {
            if self.turn(stop)? {
                break;
            }
        }
        self.shutdown();
        Ok(())
    }

    /// One poll and what follows from it; true when asked to stop.
    fn turn(&mut self, stop: Option<BorrowedFd<'_>>) -> Result<bool, HeadError> {
        let now = Instant::now();
        let tick = now + self.tick();
        let deadline = self
            .conns
            .values()
            .filter(|c| !matches!(c.phase, Phase::Member(_)))
            .map(|c| c.deadline)
            .chain(self.clients.values().map(|c| c.deadline))
            .chain(self.beacon.as_ref().map(beacon::Sender::due))
            .chain(self.push_due())
            .fold(tick, Instant::min);
        let timeout = timeout_until(deadline).unwrap_or(PollTimeout::ZERO);

        let conn_tokens: Vec<u64> = self.conns.keys().copied().collect();
        let client_tokens: Vec<u64> = self.clients.keys().copied().collect();
        let (stopping, accepting, controlling, conn_ready, client_ready) = {
            let mut set = PollSet::default();
            let listener = set.input(self.listener.as_fd());
            let control = self.control.as_ref().map(|c| set.input(c.as_fd()));
            let stop = stop.map(|fd| set.input(fd));
            let conns: Vec<(u64, usize)> = conn_tokens
                .iter()
                .map(|t| (*t, set.add(self.conns[t].channel.poll_fd())))
                .collect();
            let clients: Vec<(u64, usize)> = client_tokens
                .iter()
                .map(|t| (*t, set.add(self.clients[t].channel.poll_fd())))
                .collect();
            set.wait(timeout).map_err(HeadError::Poll)?;
            let ready = |indexed: Vec<(u64, usize)>| -> Vec<u64> {
                indexed
                    .into_iter()
                    .filter(|(_, i)| set.ready(Some(*i)))
                    .map(|(t, _)| t)
                    .collect()
            };
            (
                set.ready(stop),
                set.ready(Some(listener)),
                set.ready(control),
                ready(conns),
                ready(clients),
            )
        };
        if stopping {
            return Ok(true);
        }
        let now = Instant::now();
        if accepting {
            self.accept(now);
        }
        if controlling {
            if let Some(client) = self.control.as_ref().and_then(control::accept) {
                self.next_token += 1;
                self.clients.insert(self.next_token, client);
            }
        }
        for token in conn_ready {
            self.service(token, now);
        }
        for token in client_ready {
            self.serve_client(token, now);
        }
        self.timers(now);
        self.publish(now)?;
        Ok(false)
    }

    /// How often the loop wakes without traffic: expiry is checked at a
    /// quarter of its interval.
    fn tick(&self) -> Duration {
        let config = &self.config.membership;
        (config.expire_after / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    fn accept(&mut self, now: Instant) {
        for _ in 0..ACCEPT_BATCH {
            let (stream, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // Out of descriptors or memory: leave the rest queued.
                    self.rejects
                        .reject("new connection", format!("accept: {e}"));
                    return;
                }
            };
            if !self.penalties.allowed(peer.ip(), now) {
                self.rejects
                    .reject(peer, "too many failed handshakes; cut off for now");
                continue;
            }
            let handshaking = |c: &&Conn| !matches!(c.phase, Phase::Member(_));
            let pending = self.conns.values().filter(handshaking).count();
            let from_peer = self
                .conns
                .values()
                .filter(handshaking)
                .filter(|c| c.peer.ip() == peer.ip())
                .count();
            if pending >= MAX_HANDSHAKES || from_peer >= MAX_HANDSHAKES_PER_ADDRESS {
                self.rejects
                    .reject(peer, "too many handshakes in progress; try again");
                continue;
            }
            let handshake = match crate::keys::responder(&self.identity) {
                Ok(handshake) => handshake,
                Err(e) => {
                    info(format!("cannot start a handshake: {e}"));
                    continue;
                }
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let _ = stream.set_nodelay(true);
            let _ = set_user_timeout(&stream, self.config.membership.expire_after);
            self.next_token += 1;
            self.conns.insert(
                self.next_token,
                Conn {
                    channel: Channel::new(stream),
                    peer,
                    phase: Phase::Hello(Box::new(handshake)),
                    deadline: now + HANDSHAKE_TIMEOUT,
                },
            );
        }
    }

    /// Reads and handles what a connection sent, and writes what is queued.
    fn service(&mut self, token: u64, now: Instant) {
        let Some(mut conn) = self.conns.remove(&token) else {
            return;
        };
        match self.advance(&mut conn, token, now) {
            Ok(()) => {
                self.conns.insert(token, conn);
            }
            Err(reason) => self.dropped(token, conn, reason, now),
        }
    }

    fn advance(&mut self, conn: &mut Conn, token: u64, now: Instant) -> Result<(), Reason> {
        conn.channel.read_available()?;
        loop {
            if matches!(conn.phase, Phase::Closing) {
                conn.channel.flush()?;
                return if conn.channel.wants_write() {
                    Ok(())
                } else {
                    Err(Reason::Quiet)
                };
            }
            if let Phase::Hello(_) = conn.phase {
                let Some(frame) = conn.channel.next_frame()? else {
                    break;
                };
                self.hello(conn, &frame, now)?;
                continue;
            }
            let Some(bytes) = conn.channel.next_message()? else {
                break;
            };
            let message = FromDrone::decode(&bytes)
                .map_err(|e| Reason::Reject(format!("undecodable session message: {e}")))?;
            self.message(conn, token, message, now)?;
        }
        conn.channel.flush()?;
        Ok(())
    }

    /// The first handshake message: decrypt, check, answer.
    fn hello(&mut self, conn: &mut Conn, frame: &[u8], now: Instant) -> Result<(), Reason> {
        let lan = self.lan_address(conn)?;
        let Phase::Hello(handshake) = &mut conn.phase else {
            unreachable!("only called in the hello phase");
        };
        let mut payload = vec![0; frame.len()];
        let len = handshake.read_message(frame, &mut payload).map_err(|_| {
            Reason::Reject(
                "handshake failed: not a tyd drone of this cluster \
                 (wrong cluster key or head key, or another protocol version)"
                    .into(),
            )
        })?;
        let hello = Hello::decode(&payload[..len])
            .map_err(|e| Reason::Reject(format!("undecodable hello: {e}")))?;
        let key: [u8; 32] = handshake
            .get_remote_static()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| Reason::Reject("handshake without a static key".into()))?;
        let answer = match self.membership.check_hello(&key, &hello, lan, now) {
            Verdict::Replay { last } => {
                return Err(Reason::Reject(format!(
                    "replayed handshake from key {} (timestamp {} not after {last})",
                    crate::keys::fingerprint(&key),
                    hello.timestamp
                )))
            }
            Verdict::Refuse(refusal) => {
                info(format!(
                    "refused {} ({}, {}): {refusal:?}",
                    hello.hostname,
                    conn.peer,
                    crate::keys::fingerprint(&key)
                ));
                Answer::Refused(refusal)
            }
            Verdict::Admit => Answer::Accepted,
        };
        let mut reply = vec![0; 128];
        let len = handshake
            .write_message(&answer.encode(), &mut reply)
            .map_err(|e| Reason::Reject(format!("writing the handshake answer: {e}")))?;
        conn.channel.send_frame(&reply[..len])?;
        let Phase::Hello(handshake) = std::mem::replace(&mut conn.phase, Phase::Closing) else {
            unreachable!("checked above");
        };
        if answer == Answer::Accepted {
            let transport = handshake
                .into_transport_mode()
                .map_err(|e| Reason::Reject(format!("finishing the handshake: {e}")))?;
            conn.channel.encrypt(transport);
            conn.phase = Phase::Ready { key, hello, lan };
        }
        Ok(())
    }

    /// The drone's LAN address, or `None` for a session over the overlay.
    /// Over the overlay WireGuard vouches for the source address, which must
    /// then be the overlay address of the node with this Noise key: checked
    /// when the session becomes a member.
    fn lan_address(&mut self, conn: &Conn) -> Result<Option<Ipv4Addr>, Reason> {
        let IpAddr::V4(ip) = conn.peer.ip() else {
            return Err(Reason::Reject("IPv6 joins are not supported".into()));
        };
        if self.config.membership.overlay.contains(ip) {
            return Ok(None);
        }
        if let Ok(SocketAddr::V4(local)) = conn.channel.stream().local_addr() {
            self.membership.set_head_lan(*local.ip());
        }
        Ok(Some(ip))
    }

    fn message(
        &mut self,
        conn: &mut Conn,
        token: u64,
        message: FromDrone,
        now: Instant,
    ) -> Result<(), Reason> {
        match (&conn.phase, message) {
            (Phase::Ready { key, hello, lan }, FromDrone::Ready) => {
                let (key, hello, lan) = (*key, hello.clone(), *lan);
                if lan.is_none() {
                    let overlay = match conn.peer.ip() {
                        IpAddr::V4(ip) => ip,
                        IpAddr::V6(_) => unreachable!("refused at hello"),
                    };
                    if self.membership.member_at(overlay) != self.membership.id_of(&key) {
                        return Err(Reason::Reject(format!(
                            "overlay session from {overlay} with the key of another node"
                        )));
                    }
                }
                let Some((id, changed)) = self.membership.join(&key, &hello, lan, now) else {
                    return Err(Reason::Reject("no overlay address left".into()));
                };
                if let Some(peer) = &changed {
                    let admitted = self.membership.admission_of(id).map_or("?", |a| a.name());
                    info(format!(
                        "{} joined as node {id} with overlay address {} from {} (admitted: {admitted})",
                        hello.hostname, peer.overlay, conn.peer
                    ));
                    fact(
                        Fact::new(fact::MEMBER)
                            .with("node", id)
                            .with("name", &peer.hostname)
                            .with("state", "up")
                            .with("overlay", peer.overlay),
                    );
                }
                let mut welcome = self
                    .membership
                    .welcome(id, self.config.wireguard_port)
                    .expect("just joined");
                welcome.slurm = self.slurm.as_ref().map(Cluster::grant);
                conn.channel
                    .send_message(&ToDrone::Welcome(welcome).encode())?;
                // The welcome names only the head and the node: the push
                // rounds bring the rest, from the start of the change log,
                // and the next round is due even if nothing changes until
                // then (its join may have been counted in the last one).
                self.heard.insert(token, 0);
                self.push_round.lagging = true;
                conn.phase = Phase::Member(id);
                if let Some(old) = self.sessions.insert(id, token) {
                    // The node moved its session (LAN to overlay, or a
                    // reconnect): the old one is stale.
                    self.conns.remove(&old);
                }
            }
            (Phase::Member(id), FromDrone::Heartbeat(load)) => {
                self.membership.heartbeat(*id, load, now);
            }
            (Phase::Member(id), FromDrone::Leave) => {
                let id = *id;
                if self.membership.leave(id) {
                    info(format!("node {id} left"));
                    let name = self.membership.name_of(id);
                    self.departed(id, name, "left", "left the cluster");
                }
                return Err(Reason::Quiet);
            }
            (Phase::Member(_), FromDrone::Status { tag }) => {
                let nodes = self.status(now);
                conn.channel
                    .send_message(&ToDrone::Status { tag, nodes }.encode())?;
            }
            (_, message) => {
                return Err(Reason::Reject(format!(
                    "unexpected {message:?} at this point of the session"
                )))
            }
        }
        Ok(())
    }

    fn dropped(&mut self, token: u64, conn: Conn, reason: Reason, now: Instant) {
        if let Phase::Member(id) = conn.phase {
            if self.sessions.get(&id) == Some(&token) {
                self.sessions.remove(&id);
            }
        }
        if let Reason::Reject(what) = reason {
            if !matches!(conn.phase, Phase::Member(_)) {
                self.penalties.failed(conn.peer.ip(), now);
            }
            self.rejects.reject(conn.peer, what);
        }
    }

    fn serve_client(&mut self, token: u64, now: Instant) {
        let Some(mut client) = self.clients.remove(&token) else {
            return;
        };
        match client.request() {
            Ok(Some(request)) => {
                let response = self.answer(&client, request, now);
                if client.respond(&response).is_ok() {
                    self.clients.insert(token, client);
                }
            }
            Ok(None) => {
                self.clients.insert(token, client);
            }
            Err(_) => {}
        }
    }

    fn answer(&mut self, client: &Client, request: Request, now: Instant) -> Response {
        if !matches!(request, Request::Nodes) && !client.is_admin() {
            return Response::Failed("only root may change membership".into());
        }
        let result = match request {
            Request::Nodes => return Response::Nodes(self.status(now)),
            Request::Join { .. } => {
                return Response::Failed(
                    "this node is the head: `tyd -m` joins a drone to it".into(),
                )
            }
            Request::Enroll { seconds } => {
                self.membership.enroll(Duration::from_secs(seconds), now)
            }
            Request::Approve { fingerprint } => self.membership.approve(&fingerprint),
            Request::ApproveAll => self.membership.approve_all(),
            Request::Remove { node } => {
                let name = self.membership.name_of_any(&node);
                self.membership.remove(&node).map(|(id, _)| {
                    if let Some(mut conn) = self
                        .sessions
                        .remove(&id)
                        .and_then(|t| self.conns.remove(&t))
                    {
                        let _ = conn.channel.send_message(&ToDrone::Removed.encode());
                        let _ = conn.channel.flush();
                    }
                    if id != 0 {
                        self.departed(id, name, "removed", "removed with tyd remove");
                    }
                    format!("removed {node}; its key is refused until it reboots")
                })
            }
        };
        match result {
            Ok(text) => {
                info(&text);
                Response::Done(text)
            }
            Err(error) => Response::Failed(error.to_string()),
        }
    }

    fn timers(&mut self, now: Instant) {
        let expired_handshakes: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| !matches!(c.phase, Phase::Member(_)) && now >= c.deadline)
            .map(|(t, _)| *t)
            .collect();
        for token in expired_handshakes {
            let conn = self.conns.remove(&token).expect("listed above");
            let what = match conn.phase {
                Phase::Closing => Reason::Quiet,
                _ => Reason::Reject("no complete handshake in time".into()),
            };
            self.dropped(token, conn, what, now);
        }
        self.clients.retain(|_, c| now < c.deadline);
        if let Some(closed) = self.membership.window_closed(now) {
            info(closed);
        }
        if let Some(beacon) = &mut self.beacon {
            beacon.send(now);
        }
        for id in self.membership.expire(now) {
            info(format!("node {id} expired (no heartbeat)"));
            if let Some(token) = self.sessions.remove(&id) {
                self.conns.remove(&token);
            }
            let name = self.membership.name_of(id);
            self.departed(id, name, "expired", "expired: no heartbeat");
        }
        if let Some(accounts) = self.slurm.as_mut().and_then(|s| s.changed_accounts(now)) {
            self.broadcast(&ToDrone::Accounts(accounts).encode());
        }
        if now >= self.next_sample {
            self.membership.set_head_load(sysinfo::sample());
            self.penalties.prune(now);
            self.next_sample = now + self.config.membership.heartbeat;
        }
    }

    /// When the next push round is due, if members have something to hear.
    fn push_due(&self) -> Option<Instant> {
        let round = &self.push_round;
        (round.lagging || round.version < self.membership.version()).then_some(round.next)
    }

    /// Applies membership changes to the head's own dataplane, and when a
    /// push round is due, sends each member that has sent its last push
    /// what changed since the version it heard of.
    fn publish(&mut self, now: Instant) -> Result<(), HeadError> {
        let version = self.membership.version();
        if self.mesh_version < version {
            let changes = self.membership.changes_since(self.mesh_version, usize::MAX);
            self.mesh
                .update(self.dataplane, changes.changed, &changes.gone)
                .map_err(HeadError::Peers)?;
            self.mesh_version = changes.version;
            // The shares reach exactly the members the mesh does.
            if let Some(exports) = self.slurm.as_mut().and_then(|s| s.exports.as_mut()) {
                let mut members: Vec<Ipv4Addr> = self.mesh.peers().map(|p| p.overlay).collect();
                members.sort_unstable();
                exports.follow(members);
            }
        }
        if self.push_due().is_none_or(|due| now < due) {
            return Ok(());
        }
        let members = u32::try_from(self.heard.len()).unwrap_or(u32::MAX);
        self.push_round = PushRound {
            next: now + PUSH_INTERVAL.max(PUSH_INTERVAL_PER_MEMBER * members),
            version,
            lagging: false,
        };
        let budget = if self.conns.len() > self.sessions.len() {
            PUSH_BYTES_WHILE_JOINING
        } else {
            usize::MAX
        };
        let conns = &mut self.conns;
        self.heard.retain(|token, _| conns.contains_key(token));
        // Those furthest behind first, so a round that ends at its budget
        // leaves behind the members that need the least.
        let mut due: Vec<(u64, u64)> = self
            .heard
            .iter()
            .filter(|(_, heard)| **heard < version)
            .map(|(token, heard)| (*heard, *token))
            .collect();
        due.sort_unstable();
        let mut sent = 0;
        // Members that heard of the same version get the same push.
        let mut pushes: HashMap<u64, (Vec<u8>, u64)> = HashMap::new();
        let mut failed = Vec::new();
        for (heard, token) in due {
            if sent >= budget {
                self.push_round.lagging = true;
                break;
            }
            let conn = conns.get_mut(&token).expect("kept above");
            if conn.channel.wants_write() {
                // Still sending the last push (or a welcome): no pile-up.
                self.push_round.lagging = true;
                continue;
            }
            let (push, upto) = pushes.entry(heard).or_insert_with(|| {
                let changes = self.membership.changes_since(heard, PUSH_NODES);
                let push = ToDrone::Members {
                    changed: changes.changed,
                    gone: changes.gone,
                };
                (push.encode(), changes.version)
            });
            if conn.channel.send_message(push).is_err() || conn.channel.flush().is_err() {
                failed.push(token);
                continue;
            }
            sent += push.len();
            self.heard.insert(token, *upto);
            self.push_round.lagging |= *upto < version;
        }
        self.end_failed(failed);
        Ok(())
    }

    /// Sends one message to every member at once (not in rounds: for what
    /// changes rarely, such as the accounts); a session that fails ends.
    fn broadcast(&mut self, message: &[u8]) {
        let mut failed = Vec::new();
        for token in self.sessions.values() {
            if let Some(conn) = self.conns.get_mut(token) {
                if conn.channel.send_message(message).is_err() || conn.channel.flush().is_err() {
                    failed.push(*token);
                }
            }
        }
        self.end_failed(failed);
    }

    /// Ends the member sessions (by token) that failed while being sent to.
    fn end_failed(&mut self, failed: Vec<u64>) {
        for token in failed {
            let Some(conn) = self.conns.remove(&token) else {
                continue;
            };
            if let Phase::Member(id) = conn.phase {
                if self.sessions.get(&id) == Some(&token) {
                    self.sessions.remove(&id);
                }
            }
            self.rejects
                .reject(conn.peer, "session failed while pushing");
        }
    }

    fn shutdown(&mut self) {
        info("stopping: telling members, taking the overlay down");
        let bye = ToDrone::Bye.encode();
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        for token in self.sessions.values() {
            if let Some(conn) = self.conns.get_mut(token) {
                let _ = conn.channel.send_message(&bye);
                let _ = conn.channel.flush_by(deadline);
            }
        }
        self.dataplane.teardown();
    }
}

/// The state of the push rounds.
struct PushRound {
    /// No round before this.
    next: Instant,
    /// The membership version the last round was for.
    version: u64,
    /// Members were left behind in the last round (busy, or further behind
    /// than one push), so another round is due even without changes.
    lagging: bool,
}

/// Unacknowledged data older than this fails the connection, so a peer that
/// vanished without a FIN is noticed.
pub(crate) fn set_user_timeout(stream: &TcpStream, timeout: Duration) -> std::io::Result<()> {
    let millis = libc::c_uint::try_from(timeout.as_millis()).unwrap_or(libc::c_uint::MAX);
    nix::sys::socket::setsockopt(stream, nix::sys::socket::sockopt::TcpUserTimeout, &millis)
        .map_err(std::io::Error::from)
}
