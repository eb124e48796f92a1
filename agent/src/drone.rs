// SPDX-License-Identifier: GPL-3.0-or-later
//! A drone: finds the head (given, or by its signed beacon), joins it over
//! the LAN, brings up its overlay, moves its session inside WireGuard,
//! heartbeats, follows membership pushes, and rejoins by itself whenever the
//! session ends (head restart, network trouble), with backoff and jitter so
//! a restarted head is not stampeded.
//!
//! The handshake is blocking with a deadline; the session is driven by
//! poll(2) together with the control socket and the stop signal.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use chaos_contract::cmdline::{Head, Host};
use nix::poll::PollTimeout;

use crate::beacon::{self, BeaconError, BEACON_PORT};
use crate::channel::{timeout_until, Channel, ChannelError, PollSet};
use crate::codec::DecodeError;
use crate::control::{self, Client};
use crate::dataplane::{Dataplane, DataplaneError, Interface, Mesh};
use crate::head::{set_user_timeout, HANDSHAKE_TIMEOUT};
use crate::keys::{fingerprint, ClusterIdentity, KeyError, Keypair};
use crate::log::{fact, info};
use crate::member::{Linux, Node};
use crate::proto::{
    Answer, FromDrone, Hello, Message, Refusal, Request, Response, Timestamps, ToDrone, Welcome,
    JOIN_PORT,
};
use crate::sysinfo;
use chaos_contract::fact::{Fact, NodeState};

const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A status question forwarded to the head gets this long.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `tyd -m`, handed to the running tyd, waits for the join.
pub const JOIN_WAIT: Duration = Duration::from_secs(20);

/// The state a drone's answer to a status verb starts with, if it is not
/// a member: its [`NodeState`]'s name, then why (the console screen shows
/// both).
pub fn standing(answer: &str) -> Option<NodeState> {
    NodeState::from_name(answer.split([' ', ':']).next()?)
}

#[derive(Debug, Clone)]
pub struct DroneConfig {
    /// The head's join address on the LAN (an IPv4 address or a host
    /// name, resolved at every join attempt); `None` to listen for the
    /// head's beacon.
    pub head: Option<Head>,
    pub cluster: ClusterIdentity,
    pub node_key: Keypair,
    pub hostname: String,
    pub wireguard_port: u16,
    /// After joining, reconnect the session through the overlay. Off in
    /// control-plane-only mode, where there is no overlay.
    pub session_over_overlay: bool,
    /// The local address to connect to the head from; `None` lets the
    /// kernel choose (tyd does). Only for sessions on the LAN: one through
    /// the overlay must come from the overlay address.
    pub source: Option<std::net::Ipv4Addr>,
    /// Keep this node as a member ([`crate::member`]): clock, host name,
    /// accounts, munge key, hosts and the joined file. What a chaos image
    /// does; never on an ordinary host.
    pub manage_node: bool,
}

/// How the drone could not start, a join attempt failed, or a session
/// with the head ended.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Beacon(#[from] BeaconError),
    #[error("the node's WireGuard key: {0}")]
    Key(#[from] KeyError),
    #[error("waiting for the network: {0}")]
    Poll(std::io::Error),
    #[error("connecting to {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("{0}: {1}")]
    Channel(SocketAddr, ChannelError),
    #[error(
        "handshake with {0} failed: the head's key or the cluster key in this image \
         do not match the head, or it speaks another protocol version"
    )]
    Handshake(SocketAddr),
    #[error(
        "{0} closed the connection without answering our handshake: the cluster key \
         or the head's key in this image do not match the head's (or it is \
         rate-limiting this address)"
    )]
    Unanswered(SocketAddr),
    #[error("{0}: {1}")]
    Protocol(SocketAddr, String),
    #[error("the head refused us: {0}")]
    Refused(Refusal),
    #[error("the welcome lists no head")]
    NoHead,
    #[error("moving the session into the overlay: {0}")]
    Overlay(Box<JoinError>),
    #[error("setting up the overlay: {0}")]
    Dataplane(#[from] DataplaneError),
    #[error("updating WireGuard peers: {0}")]
    Peers(DataplaneError),
    /// The session's connection failed.
    #[error("{0}")]
    Session(#[from] ChannelError),
    #[error("a message from the head: {0}")]
    Message(DecodeError),
    #[error("the head is shutting down")]
    Bye,
    #[error("a second welcome in one session")]
    SecondWelcome,
}

/// An established session with the head.
struct Session {
    channel: Channel<TcpStream>,
    welcome: Welcome,
    /// The head's LAN address this session was joined through (an overlay
    /// session takes it over from the LAN session before it).
    head: SocketAddrV4,
}

enum State {
    Joining {
        at: Instant,
        backoff: Duration,
    },
    Joined(Box<Session>),
    /// `tyd remove`d: stays out until the node reboots with a new key.
    Removed,
}

pub struct Drone<'a> {
    config: DroneConfig,
    /// Where the head is, as far as this drone knows: the given address,
    /// the last address its name resolved to, or its beacon's.
    head: Option<SocketAddrV4>,
    /// Beacons, when the head was not given: how it is found and followed.
    beacons: Option<beacon::Listener>,
    dataplane: &'a mut dyn Dataplane,
    control: Option<UnixListener>,
    wireguard: Keypair,
    mesh: Mesh,
    state: State,
    timestamps: Timestamps,
    last_error: String,
    clients: HashMap<u64, Client>,
    waiting: HashMap<u32, u64>,
    /// Clients waiting for the join they asked for (`tyd -m`).
    joining: Vec<u64>,
    next_token: u64,
    next_heartbeat: Instant,
    configured: Option<Interface>,
    node: Option<Node<Linux>>,
    /// This node's overlay address and name, for the hosts block.
    own: Option<(Ipv4Addr, String)>,
}

impl<'a> Drone<'a> {
    pub fn new(
        config: DroneConfig,
        dataplane: &'a mut dyn Dataplane,
        control: Option<UnixListener>,
    ) -> Result<Self, JoinError> {
        let beacons = match config.head {
            Some(_) => None,
            None => Some(beacon::Listener::bind(BEACON_PORT, &config.cluster)?),
        };
        let head = config.head.as_ref().and_then(address);
        let node = config.manage_node.then(|| Node::new("/", Linux));
        Ok(Self {
            head,
            beacons,
            config,
            dataplane,
            control,
            wireguard: Keypair::generate()?,
            mesh: Mesh::default(),
            state: State::Joining {
                at: Instant::now(),
                backoff: FIRST_BACKOFF,
            },
            timestamps: Timestamps::default(),
            last_error: "not tried yet".into(),
            clients: HashMap::new(),
            waiting: HashMap::new(),
            joining: Vec::new(),
            next_token: 0,
            next_heartbeat: Instant::now(),
            configured: None,
            node,
            own: None,
        })
    }

    /// Runs until `stop` becomes readable, then leaves the cluster.
    pub fn run(&mut self, stop: Option<BorrowedFd<'_>>) -> Result<(), JoinError> {
        let fp = fingerprint(&self.config.node_key.public);
        match &self.config.head {
            Some(head) => {
                info(format!(
                    "node {} key fingerprint {fp}; joining head {head}",
                    self.config.hostname
                ));
                fact(NodeState::Joining.fact().with("head", head));
            }
            None => info(format!(
                "node {} key fingerprint {fp}; no head address given: listening for \
                 the head's beacon on UDP port {BEACON_PORT}",
                self.config.hostname
            )),
        }
        if self.config.head.is_none() {
            fact(NodeState::Listening.fact());
        }
        // The LAN is closed before the first join, not only after it.
        if let Err(error) = self.dataplane.guard(self.config.wireguard_port) {
            info(format!("loading the firewall before joining: {error:#}"));
        }
        loop {
            if let State::Joining { at, backoff } = self.state {
                if Instant::now() >= at && self.resolve(backoff) {
                    if let Some(head) = self.head {
                        self.join(head, backoff);
                        self.answer_joiners();
                    }
                }
            }
            if self.turn(stop)? {
                break;
            }
        }
        self.leave();
        Ok(())
    }

    /// One handshake over a fresh connection to `target`, up to the Welcome.
    fn connect(&mut self, target: SocketAddrV4) -> Result<Session, JoinError> {
        let peer = SocketAddr::V4(target);
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        let stream = crate::tcp::connect(self.config.source, target, HANDSHAKE_TIMEOUT)
            .map_err(|e| JoinError::Connect(peer, e))?;
        let channel_error = |e| JoinError::Channel(peer, e);
        let protocol = |what: String| JoinError::Protocol(peer, what);
        stream
            .set_nonblocking(true)
            .map_err(|e| JoinError::Connect(peer, e))?;
        let _ = stream.set_nodelay(true);
        let mut channel = Channel::new(stream);
        let mut handshake = crate::keys::initiator(&self.config.node_key, &self.config.cluster)
            .map_err(|e| protocol(e.to_string()))?;
        let hello = Hello {
            timestamp: self.timestamps.stamp(),
            wireguard_key: self.wireguard.public,
            wireguard_port: self.config.wireguard_port,
            hostname: self.config.hostname.clone(),
        };
        let mut first = vec![0; 1024];
        let len = handshake
            .write_message(&hello.encode(), &mut first)
            .map_err(|e| protocol(e.to_string()))?;
        channel.send_frame(&first[..len]).map_err(channel_error)?;
        let second = channel.frame_by(deadline).map_err(|e| match e {
            ChannelError::Closed => JoinError::Unanswered(peer),
            e => JoinError::Channel(peer, e),
        })?;
        let mut payload = vec![0; second.len()];
        let len = handshake
            .read_message(&second, &mut payload)
            .map_err(|_| JoinError::Handshake(peer))?;
        match Answer::decode(&payload[..len]).map_err(|e| protocol(e.to_string()))? {
            Answer::Accepted => {}
            Answer::Refused(refusal) => return Err(JoinError::Refused(refusal)),
        }
        let transport = handshake
            .into_transport_mode()
            .map_err(|e| protocol(e.to_string()))?;
        channel.encrypt(transport);
        channel
            .send_message(&FromDrone::Ready.encode())
            .map_err(channel_error)?;
        let bytes = channel.message_by(deadline).map_err(channel_error)?;
        match ToDrone::decode(&bytes).map_err(|e| protocol(e.to_string()))? {
            ToDrone::Welcome(welcome) => Ok(Session {
                channel,
                welcome,
                head: target,
            }),
            other => Err(protocol(format!("expected a welcome, got {other:?}"))),
        }
    }

    /// A head given by name is looked up again before every join attempt
    /// (the lease's DNS server, through /etc/resolv.conf), so a head that
    /// moves is followed and a name that does not resolve yet is retried
    /// with the join's backoff. False when there is no address to try.
    fn resolve(&mut self, backoff: Duration) -> bool {
        let Some(Head {
            host: Host::Name(name),
            port,
        }) = &self.config.head
        else {
            return self.head.is_some();
        };
        let port = port.unwrap_or(JOIN_PORT);
        let found = (name.as_str(), port).to_socket_addrs().map(|addresses| {
            addresses
                .filter_map(|a| match a {
                    SocketAddr::V4(a) => Some(a),
                    SocketAddr::V6(_) => None,
                })
                .next()
        });
        let problem = match found {
            Ok(Some(address)) => {
                if self.head != Some(address) {
                    info(format!("head {name} is at {address}"));
                    self.head = Some(address);
                }
                return true;
            }
            Ok(None) => format!("the head's name {name} has no IPv4 address"),
            Err(e) => format!("cannot resolve the head's name {name}: {e}"),
        };
        if problem != self.last_error {
            info(format!("{problem}; retrying"));
            self.last_error = problem;
        }
        self.state = State::Joining {
            at: Instant::now() + jitter(backoff),
            backoff: (backoff * 2).min(MAX_BACKOFF),
        };
        false
    }

    /// Joins over the LAN, sets up the overlay, and (with an overlay) moves
    /// the session into it. On failure, schedules the next try.
    fn join(&mut self, head: SocketAddrV4, backoff: Duration) {
        let started = Instant::now();
        match self.try_join(head) {
            Ok(session) => {
                info(format!(
                    "joined as node {} with overlay address {}/{} ({} peers) in {} ms",
                    session.welcome.id,
                    session.welcome.overlay,
                    session.welcome.prefix_len,
                    self.mesh.len(),
                    started.elapsed().as_millis()
                ));
                fact(
                    self.joined_fact(&session.welcome, head)
                        .with("ms", started.elapsed().as_millis()),
                );
                let _ = set_user_timeout(
                    session.channel.stream(),
                    Duration::from_millis(u64::from(session.welcome.heartbeat_ms) * 3)
                        .max(Duration::from_secs(2)),
                );
                self.last_error.clear();
                self.next_heartbeat = Instant::now();
                self.state = State::Joined(Box::new(session));
            }
            Err(error) => {
                let message = error.to_string();
                if let JoinError::Refused(Refusal::Removed) = error {
                    info("removed from the cluster by the head; reboot to rejoin");
                    fact(NodeState::Removed.fact());
                    if let Some(node) = &self.node {
                        node.left();
                    }
                    self.state = State::Removed;
                    return;
                }
                if message != self.last_error {
                    if let JoinError::Refused(Refusal::AwaitingApproval) = error {
                        info(format!(
                            "waiting for approval: on the head run `tyd approve {}`",
                            fingerprint(&self.config.node_key.public)
                        ));
                    } else {
                        info(format!("join failed, retrying: {message}"));
                    }
                    fact(NodeState::Retrying.fact().with("head", head));
                    self.last_error = message;
                }
                self.state = State::Joining {
                    at: Instant::now() + jitter(backoff),
                    backoff: (backoff * 2).min(MAX_BACKOFF),
                };
            }
        }
    }

    fn try_join(&mut self, head: SocketAddrV4) -> Result<Session, JoinError> {
        let lan = self.connect(head)?;
        self.apply_welcome(&lan.welcome, head)?;
        if !self.config.session_over_overlay {
            return Ok(lan);
        }
        let head_overlay = lan
            .welcome
            .members
            .iter()
            .find(|p| p.id == crate::membership::HEAD_ID)
            .map(|p| p.overlay)
            .ok_or(JoinError::NoHead)?;
        drop(lan);
        let mut session = self
            .connect(SocketAddrV4::new(head_overlay, JOIN_PORT))
            .map_err(|error| JoinError::Overlay(Box::new(error)))?;
        session.head = head;
        self.apply_welcome(&session.welcome, head)?;
        Ok(session)
    }

    fn apply_welcome(&mut self, welcome: &Welcome, head: SocketAddrV4) -> Result<(), JoinError> {
        let interface = Interface {
            overlay: welcome.overlay,
            prefix_len: welcome.prefix_len,
            private_key: self.wireguard.private,
            listen_port: self.config.wireguard_port,
        };
        if self.configured.as_ref() != Some(&interface) {
            self.dataplane.configure(&interface)?;
            self.configured = Some(interface);
        }
        let members = welcome
            .members
            .iter()
            .cloned()
            .map(|peer| with_head_endpoint(peer, head, welcome.head_wireguard_port))
            .collect();
        self.mesh.welcome(self.dataplane, welcome.id, members)?;
        self.own = Some((welcome.overlay, welcome.name.clone()));
        if let Some(node) = &mut self.node {
            let head_overlay = welcome
                .members
                .iter()
                .find(|p| p.id == crate::membership::HEAD_ID)
                .map(|p| p.overlay)
                .ok_or(JoinError::NoHead)?;
            let members = hosts(self.own.as_ref(), &self.mesh);
            // The membership stands without them; Slurm does not, and says why.
            if let Err(error) = node.admitted(welcome, head_overlay, &members) {
                info(format!("this node cannot run jobs: {error}"));
            }
        }
        Ok(())
    }

    /// The `node` fact of a member.
    fn joined_fact(&self, welcome: &Welcome, head: SocketAddrV4) -> Fact {
        NodeState::Joined
            .fact()
            .with("node", welcome.id)
            .with("name", &welcome.name)
            .with(
                "overlay",
                format!("{}/{}", welcome.overlay, welcome.prefix_len),
            )
            .with("head", head)
            .with("peers", self.mesh.len())
    }

    /// The hosts block after the mesh changed.
    fn update_members(&self) {
        let Some(node) = &self.node else {
            return;
        };
        if let Err(error) = node.members(&hosts(self.own.as_ref(), &self.mesh)) {
            info(format!("updating the cluster's hosts: {error}"));
        }
    }

    /// One poll over the session, the control socket and `stop`.
    fn turn(&mut self, stop: Option<BorrowedFd<'_>>) -> Result<bool, JoinError> {
        let wake = match &self.state {
            State::Joining { at, .. } if self.head.is_some() || self.config.head.is_some() => *at,
            State::Joining { .. } => Instant::now() + Duration::from_secs(3600),
            State::Joined(_) => self.next_heartbeat,
            State::Removed => Instant::now() + Duration::from_secs(3600),
        };
        let wake = self
            .clients
            .values()
            .map(|c| c.deadline)
            .fold(wake, Instant::min);
        let timeout = timeout_until(wake).unwrap_or(PollTimeout::ZERO);
        let client_tokens: Vec<u64> = self.clients.keys().copied().collect();
        let (stopping, session_ready, control_ready, beacon_ready, ready_clients) = {
            let mut set = PollSet::default();
            let stop_index = stop.map(|fd| set.input(fd));
            let session_index = match &self.state {
                State::Joined(session) => Some(set.add(session.channel.poll_fd())),
                _ => None,
            };
            let control_index = self.control.as_ref().map(|c| set.input(c.as_fd()));
            let beacon_index = self.beacons.as_ref().map(|b| set.input(b.as_fd()));
            let client_indexes: Vec<(u64, usize)> = client_tokens
                .iter()
                .map(|t| (*t, set.add(self.clients[t].channel.poll_fd())))
                .collect();
            set.wait(timeout).map_err(JoinError::Poll)?;
            let clients: Vec<u64> = client_indexes
                .into_iter()
                .filter(|(_, i)| set.ready(Some(*i)))
                .map(|(t, _)| t)
                .collect();
            (
                set.ready(stop_index),
                set.ready(session_index),
                set.ready(control_index),
                set.ready(beacon_index),
                clients,
            )
        };
        if stopping {
            return Ok(true);
        }
        let now = Instant::now();
        if control_ready {
            if let Some(client) = self.control.as_ref().and_then(control::accept) {
                self.next_token += 1;
                self.clients.insert(self.next_token, client);
            }
        }
        for token in ready_clients {
            self.serve_client(token);
        }
        if beacon_ready {
            self.beacon(now);
        }
        if session_ready || now >= self.next_heartbeat {
            if let Err(error) = self.session(now) {
                self.session_lost(error);
            }
        }
        let expired: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, c)| now >= c.deadline)
            .map(|(t, _)| *t)
            .collect();
        for token in expired {
            if let Some(mut client) = self.clients.remove(&token) {
                let why = if self.joining.contains(&token) {
                    self.joining.retain(|t| *t != token);
                    format!(
                        "{} head {}: not joined within {} s ({}); this node's tyd keeps trying",
                        NodeState::Joining.name(),
                        self.head.map_or_else(|| "-".into(), |h| h.to_string()),
                        JOIN_WAIT.as_secs(),
                        self.last_error
                    )
                } else {
                    "the head did not answer".into()
                };
                let _ = client.respond(&Response::Failed(why));
            }
        }
        Ok(false)
    }

    /// Answers the clients waiting for a join once it is done (or the
    /// node was removed, which no waiting mends).
    fn answer_joiners(&mut self) {
        let response = match &self.state {
            State::Joined(session) => Response::Done(format!(
                "joined head {} as node {} with overlay address {}/{}",
                session.head,
                session.welcome.id,
                session.welcome.overlay,
                session.welcome.prefix_len
            )),
            State::Removed => Response::Failed(removed()),
            State::Joining { .. } => return,
        };
        for token in std::mem::take(&mut self.joining) {
            if let Some(client) = self.clients.get_mut(&token) {
                let _ = client.respond(&response);
            }
        }
    }

    /// Heartbeats and the head's messages.
    fn session(&mut self, now: Instant) -> Result<(), JoinError> {
        let State::Joined(session) = &mut self.state else {
            return Ok(());
        };
        if now >= self.next_heartbeat {
            let heartbeat = FromDrone::Heartbeat(sysinfo::sample()).encode();
            session.channel.send_message(&heartbeat)?;
            let interval = Duration::from_millis(u64::from(session.welcome.heartbeat_ms));
            self.next_heartbeat = now + interval.max(Duration::from_millis(10));
        }
        session.channel.flush()?;
        session.channel.read_available()?;
        // Messages that arrived before an error (a farewell before the
        // close) are handled before the error ends the session.
        let mut messages = Vec::new();
        let ended = loop {
            match session.channel.next_message() {
                Ok(Some(bytes)) => messages.push(bytes),
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        for bytes in messages {
            self.handle(ToDrone::decode(&bytes).map_err(JoinError::Message)?)?;
        }
        ended.map_or(Ok(()), |e| Err(e.into()))
    }

    fn handle(&mut self, message: ToDrone) -> Result<(), JoinError> {
        match message {
            ToDrone::Members { changed, gone } => {
                let State::Joined(session) = &self.state else {
                    return Ok(());
                };
                let (head, port) = (session.head, session.welcome.head_wireguard_port);
                let changed = changed
                    .into_iter()
                    .map(|p| with_head_endpoint(p, head, port))
                    .collect();
                let before = self.mesh.len();
                self.mesh
                    .update(self.dataplane, changed, &gone)
                    .map_err(JoinError::Peers)?;
                if self.mesh.len() != before {
                    info(format!("mesh now has {} peers", self.mesh.len()));
                    if let State::Joined(session) = &self.state {
                        fact(self.joined_fact(&session.welcome, session.head));
                    }
                }
                self.update_members();
            }
            ToDrone::Accounts(accounts) => {
                if let Some(node) = &mut self.node {
                    match node.accounts(&accounts) {
                        Ok(all) => info(format!(
                            "accounts updated: {} users, {} groups",
                            all.users.len(),
                            all.groups.len()
                        )),
                        Err(error) => info(format!("updating the accounts: {error}")),
                    }
                }
            }
            ToDrone::Status { tag, nodes } => {
                let client = self
                    .waiting
                    .remove(&tag)
                    .and_then(|token| self.clients.get_mut(&token));
                if let Some(client) = client {
                    let _ = client.respond(&Response::Nodes(nodes));
                }
            }
            ToDrone::Removed => {
                info("removed from the cluster by the head; reboot to rejoin");
                fact(NodeState::Removed.fact());
                if let Some(node) = &self.node {
                    node.left();
                }
                self.dataplane.teardown();
                self.configured = None;
                self.state = State::Removed;
            }
            ToDrone::Bye => return Err(JoinError::Bye),
            ToDrone::Welcome(_) => return Err(JoinError::SecondWelcome),
        }
        Ok(())
    }

    /// Beacons heard: the head found, or found somewhere new. A drone
    /// still joining tries the new address at once; a joined one keeps its
    /// session and uses the address the next time it joins.
    fn beacon(&mut self, now: Instant) {
        let Some(found) = self.beacons.as_mut().and_then(beacon::Listener::receive) else {
            return;
        };
        match self.head {
            Some(known) if known == found => return,
            Some(known) => info(format!("the head's beacon now names {found} (was {known})")),
            None => info(format!("found head {found} by its beacon")),
        }
        fact(NodeState::Joining.fact().with("head", found));
        self.head = Some(found);
        if let State::Joining { .. } = self.state {
            self.state = State::Joining {
                at: now,
                backoff: FIRST_BACKOFF,
            };
        }
    }

    fn session_lost(&mut self, error: JoinError) {
        info(format!("session with the head ended: {error}; rejoining"));
        fact(NodeState::Rejoining.fact());
        self.last_error = error.to_string();
        self.state = State::Joining {
            at: Instant::now() + jitter(FIRST_BACKOFF),
            backoff: FIRST_BACKOFF * 2,
        };
    }

    fn serve_client(&mut self, token: u64) {
        let Some(mut client) = self.clients.remove(&token) else {
            return;
        };
        let request = match client.request() {
            Ok(Some(request)) => request,
            Ok(None) => {
                self.clients.insert(token, client);
                return;
            }
            Err(_) => return,
        };
        let response = match (&mut self.state, request) {
            (_, Request::Join { .. }) if !client.is_admin() => {
                Response::Failed("only root may have this node join a head".into())
            }
            (State::Joining { .. }, Request::Join { head }) => match parse_head(&head) {
                Err(why) => Response::Failed(why.to_string()),
                Ok(head) => {
                    info(format!("joining head {head}, as asked on this node"));
                    fact(NodeState::Joining.fact().with("head", &head));
                    // Named by hand, as with `-m`: beacons no longer move it.
                    self.head = address(&head);
                    self.config.head = Some(head);
                    self.beacons = None;
                    self.state = State::Joining {
                        at: Instant::now(),
                        backoff: FIRST_BACKOFF,
                    };
                    client.deadline = Instant::now() + JOIN_WAIT;
                    self.joining.push(token);
                    self.clients.insert(token, client);
                    return;
                }
            },
            (State::Joined(session), Request::Join { head })
                if parse_head(&head).is_ok_and(|h| {
                    address(&h) == Some(session.head) || self.config.head.as_ref() == Some(&h)
                }) =>
            {
                Response::Done(format!(
                    "already joined head {head} as node {} with overlay address {}",
                    session.welcome.id, session.welcome.overlay
                ))
            }
            (State::Joined(session), Request::Join { .. }) => Response::Failed(format!(
                "already a member through head {}: one cluster at a time",
                session.head
            )),
            (State::Removed, Request::Join { .. }) => Response::Failed(removed()),
            (State::Joined(session), Request::Nodes) => {
                // The tag only has to tell apart questions in flight.
                let tag = token as u32;
                let asked = session
                    .channel
                    .send_message(&FromDrone::Status { tag }.encode())
                    .and_then(|()| session.channel.flush());
                if asked.is_ok() {
                    client.deadline = client.deadline.min(Instant::now() + STATUS_TIMEOUT);
                    self.waiting.insert(tag, token);
                    self.clients.insert(token, client);
                    return;
                }
                Response::Failed(format!(
                    "{}: lost the session with the head; try again",
                    NodeState::Rejoining.name()
                ))
            }
            (State::Removed, Request::Nodes) => Response::Failed(removed()),
            (State::Joining { .. }, Request::Nodes) => {
                let head = match (&self.config.head, self.head) {
                    (Some(head), _) => Some(head.to_string()),
                    (None, head) => head.map(|h| h.to_string()),
                };
                Response::Failed(match head {
                    Some(head) => format!(
                        "{} head {head}: {}",
                        NodeState::Joining.name(),
                        self.last_error
                    ),
                    None => format!(
                        "{}: no beacon from the head heard yet on UDP port {BEACON_PORT}",
                        NodeState::Listening.name()
                    ),
                })
            }
            (_, _) => {
                Response::Failed("membership changes are made on the head: run this there".into())
            }
        };
        if client.respond(&response).is_ok() {
            self.clients.insert(token, client);
        }
    }

    /// Graceful leave: stop what runs only on a member, tell the head,
    /// then take the overlay down.
    fn leave(&mut self) {
        if let Some(node) = &self.node {
            node.left();
        }
        if let State::Joined(session) = &mut self.state {
            info("leaving the cluster");
            fact(NodeState::Leaving.fact());
            let _ = session.channel.send_message(&FromDrone::Leave.encode());
            // Written is not delivered: the session runs over the overlay,
            // which the teardown below ends, and closing a socket with
            // unread input (a push on its way) resets the connection, which
            // can make the head drop the Leave unread. So read until the
            // head, having it, closes the session.
            let deadline = Instant::now() + Duration::from_secs(1);
            while session.channel.message_by(deadline).is_ok() {}
        }
        self.dataplane.teardown();
    }
}

/// The hosts block's members (overlay address, name): this node and its
/// mesh.
fn hosts(own: Option<&(Ipv4Addr, String)>, mesh: &Mesh) -> Vec<(Ipv4Addr, String)> {
    own.cloned()
        .into_iter()
        .chain(mesh.peers().map(|p| (p.overlay, p.hostname.clone())))
        .collect()
}

fn removed() -> String {
    format!(
        "{} by the head; reboot to rejoin",
        NodeState::Removed.name()
    )
}

/// The head's entry has no endpoint: it is the address we joined.
fn with_head_endpoint(
    mut peer: crate::proto::Peer,
    head: SocketAddrV4,
    port: u16,
) -> crate::proto::Peer {
    if peer.id == crate::membership::HEAD_ID {
        peer.endpoint = Some(SocketAddrV4::new(*head.ip(), port));
    }
    peer
}

/// `base` plus up to half of it again, at random, so that drones restarted
/// together do not retry in lockstep.
fn jitter(base: Duration) -> Duration {
    let random = crate::keys::random::<2>().map_or(0, u16::from_be_bytes);
    base + base.mul_f64(f64::from(random) / f64::from(u16::MAX) / 2.0)
}

/// Where the head is, by precedence: `-m`, then `chaos.head=` on the
/// kernel command line (read with the same parser as init's), then the
/// address baked into the image (the file [`crate::keys::HEAD_ADDRESS`]);
/// `None` if none of them says.
pub fn find_head(
    given: Option<&str>,
    cmdline: &str,
    baked: Option<&str>,
) -> Result<Option<Head>, HeadAddressError> {
    if let Some(given) = given {
        return parse_head(given).map(Some);
    }
    // A malformed chaos.head= is ignored here as it is by init, which has
    // already said so on the console.
    if let Some(head) = chaos_contract::cmdline::parse(cmdline).chaos.head {
        return Ok(Some(head));
    }
    baked
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .map(|b| {
            parse_head(b).map_err(|e| HeadAddressError {
                in_file: Some(crate::keys::HEAD_ADDRESS),
                ..e
            })
        })
        .transpose()
}

/// A head given by address: where to join it (a name is resolved later).
fn address(head: &Head) -> Option<SocketAddrV4> {
    match head.host {
        Host::V4(ip) => Some(SocketAddrV4::new(ip, head.port.unwrap_or(JOIN_PORT))),
        Host::Name(_) => None,
    }
}

/// A head address that does not parse, and where it came from when that
/// was a file of the image rather than the command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}head address {value:?} {why}", in_file.map(|f| format!("{f}: ")).unwrap_or_default())]
pub struct HeadAddressError {
    pub value: String,
    pub why: &'static str,
    pub in_file: Option<&'static str>,
}

/// `-m`'s and the baked address's grammar: `chaos.head=`'s.
pub fn parse_head(value: &str) -> Result<Head, HeadAddressError> {
    Head::parse(value).map_err(|why| HeadAddressError {
        value: value.to_string(),
        why,
        in_file: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_is_found_by_precedence() {
        // (-m, kernel command line, baked address) -> head, or part of the error
        type Case<'a> = (
            Option<&'a str>,
            &'a str,
            Option<&'a str>,
            Result<Option<&'a str>, &'a str>,
        );
        let table: &[Case] = &[
            (
                Some("10.0.0.9"),
                "chaos.head=10.0.0.1",
                Some("10.0.0.2"),
                Ok(Some("10.0.0.9")),
            ),
            (
                None,
                "chaos.head=10.0.0.1",
                Some("10.0.0.2"),
                Ok(Some("10.0.0.1")),
            ),
            (
                None,
                "chaos.head=10.0.0.1:9000 ip=dhcp",
                None,
                Ok(Some("10.0.0.1:9000")),
            ),
            // A host name, as the ISO's options screen offers.
            (
                None,
                "quiet chaos.head=head.lab",
                None,
                Ok(Some("head.lab")),
            ),
            (Some("head.lab:7000"), "", None, Ok(Some("head.lab:7000"))),
            (
                None,
                "quiet",
                Some("10.0.0.2:9000\n"),
                Ok(Some("10.0.0.2:9000")),
            ),
            (None, "quiet", Some("\n"), Ok(None)),
            (None, "quiet", None, Ok(None)),
            (None, "chaos.mode=safe", None, Ok(None)),
            (
                None,
                "quiet",
                Some("head:x"),
                Err("head.address: head address \"head:x\" is not <addr>[:port]"),
            ),
            (
                None,
                "chaos.head=10.0.0.1:x",
                Some("10.0.0.2"),
                Ok(Some("10.0.0.2")),
            ),
            (None, "chaos.head=[fd00::1]", None, Ok(None)),
            (Some("[fd00::1]"), "", None, Err("is an IPv6 address")),
            (
                Some("x:0"),
                "",
                None,
                Err("head address \"x:0\" is not <addr>[:port]"),
            ),
        ];
        for (given, cmdline, baked, expected) in table {
            let got = find_head(*given, cmdline, *baked)
                .map(|h| h.map(|a| a.to_string()))
                .map_err(|e| e.to_string());
            match (got, expected) {
                (Ok(got), Ok(want)) => assert_eq!(got.as_deref(), *want, "{cmdline}"),
                (Err(e), Err(want)) => assert!(e.contains(want), "{cmdline}: {e}"),
                (got, _) => panic!("{given:?} {cmdline} {baked:?}: {got:?}"),
            }
        }
    }

    #[test]
    fn a_standing_is_read_back_from_the_answer_it_starts() {
        for state in [
            NodeState::Listening,
            NodeState::Joining,
            NodeState::Rejoining,
        ] {
            assert_eq!(standing(&format!("{}: because", state.name())), Some(state));
        }
        assert_eq!(
            standing("joining head 10.0.0.1:7700: refused"),
            Some(NodeState::Joining)
        );
        assert_eq!(standing(&removed()), Some(NodeState::Removed));
        assert_eq!(standing("the head did not answer"), None);
    }

    #[test]
    fn jitter_stays_within_half_again() {
        for _ in 0..100 {
            let d = jitter(Duration::from_millis(200));
            assert!(d >= Duration::from_millis(200) && d <= Duration::from_millis(300));
        }
    }
}
