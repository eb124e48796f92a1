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
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::poll::PollTimeout;

use crate::beacon::{self, BEACON_PORT};
use crate::channel::{timeout_until, Channel, ChannelError, PollSet};
use crate::control::{self, Client};
use crate::dataplane::{Dataplane, Interface, Mesh};
use crate::head::{set_user_timeout, HANDSHAKE_TIMEOUT};
use crate::keys::{fingerprint, ClusterIdentity, Keypair};
use crate::log::info;
use crate::proto::{
    Answer, FromDrone, Hello, Message, Refusal, Request, Response, Timestamps, ToDrone, Welcome,
    JOIN_PORT,
};
use crate::sysinfo;

const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A status question forwarded to the head gets this long.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct DroneConfig {
    /// The head's join address on the LAN; `None` to listen for the
    /// head's beacon.
    pub head: Option<SocketAddrV4>,
    pub cluster: ClusterIdentity,
    pub node_key: Keypair,
    pub hostname: String,
    pub wireguard_port: u16,
    /// After joining, reconnect the session through the overlay. Off in
    /// control-plane-only mode, where there is no overlay.
    pub session_over_overlay: bool,
}

/// How a join attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
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
    /// Where the head is, as far as this drone knows.
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
    next_token: u64,
    next_heartbeat: Instant,
    configured: Option<Interface>,
}

impl<'a> Drone<'a> {
    pub fn new(
        config: DroneConfig,
        dataplane: &'a mut dyn Dataplane,
        control: Option<UnixListener>,
    ) -> anyhow::Result<Self> {
        let beacons = match config.head {
            Some(_) => None,
            None => Some(beacon::Listener::bind(BEACON_PORT, &config.cluster)?),
        };
        Ok(Self {
            head: config.head,
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
            next_token: 0,
            next_heartbeat: Instant::now(),
            configured: None,
        })
    }

    /// Runs until `stop` becomes readable, then leaves the cluster.
    pub fn run(&mut self, stop: Option<BorrowedFd<'_>>) -> anyhow::Result<()> {
        let fp = fingerprint(&self.config.node_key.public);
        match self.head {
            Some(head) => info(format!(
                "node {} key fingerprint {fp}; joining head {head}",
                self.config.hostname
            )),
            None => info(format!(
                "node {} key fingerprint {fp}; no head address given: listening for \
                 the head's beacon on UDP port {BEACON_PORT}",
                self.config.hostname
            )),
        }
        loop {
            if let (State::Joining { at, backoff }, Some(head)) = (&self.state, self.head) {
                if Instant::now() >= *at {
                    self.join(head, *backoff);
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
        let stream = TcpStream::connect_timeout(&peer, HANDSHAKE_TIMEOUT)
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
                if let Some(JoinError::Refused(Refusal::Removed)) = error.downcast_ref() {
                    info("removed from the cluster by the head; reboot to rejoin");
                    self.state = State::Removed;
                    return;
                }
                if message != self.last_error {
                    if let Some(JoinError::Refused(Refusal::AwaitingApproval)) =
                        error.downcast_ref()
                    {
                        info(format!(
                            "waiting for approval: on the head run `tyd approve {}`",
                            fingerprint(&self.config.node_key.public)
                        ));
                    } else {
                        info(format!("join failed, retrying: {message:#}"));
                    }
                    self.last_error = message;
                }
                self.state = State::Joining {
                    at: Instant::now() + jitter(backoff),
                    backoff: (backoff * 2).min(MAX_BACKOFF),
                };
            }
        }
    }

    fn try_join(&mut self, head: SocketAddrV4) -> anyhow::Result<Session> {
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
            .context("the welcome lists no head")?;
        drop(lan);
        let mut session = self
            .connect(SocketAddrV4::new(head_overlay, JOIN_PORT))
            .context("moving the session into the overlay")?;
        session.head = head;
        self.apply_welcome(&session.welcome, head)?;
        Ok(session)
    }

    fn apply_welcome(&mut self, welcome: &Welcome, head: SocketAddrV4) -> anyhow::Result<()> {
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
        self.mesh.replace(self.dataplane, welcome.id, members)
    }

    /// One poll over the session, the control socket and `stop`.
    fn turn(&mut self, stop: Option<BorrowedFd<'_>>) -> anyhow::Result<bool> {
        let wake = match &self.state {
            State::Joining { at, .. } if self.head.is_some() => *at,
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
            set.wait(timeout).context("waiting for the network")?;
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
                let _ = client.respond(&Response::Failed("the head did not answer".into()));
            }
        }
        Ok(false)
    }

    /// Heartbeats and the head's messages.
    fn session(&mut self, now: Instant) -> anyhow::Result<()> {
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
            self.handle(ToDrone::decode(&bytes).context("a message from the head")?)?;
        }
        ended.map_or(Ok(()), |e| Err(e.into()))
    }

    fn handle(&mut self, message: ToDrone) -> anyhow::Result<()> {
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
                    .context("updating WireGuard peers")?;
                if self.mesh.len() != before {
                    info(format!("mesh now has {} peers", self.mesh.len()));
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
                self.dataplane.teardown();
                self.configured = None;
                self.state = State::Removed;
            }
            ToDrone::Bye => anyhow::bail!("the head is shutting down"),
            ToDrone::Welcome(_) => anyhow::bail!("a second welcome in one session"),
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
        self.head = Some(found);
        if let State::Joining { .. } = self.state {
            self.state = State::Joining {
                at: now,
                backoff: FIRST_BACKOFF,
            };
        }
    }

    fn session_lost(&mut self, error: anyhow::Error) {
        info(format!("session with the head ended: {error:#}; rejoining"));
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
                Response::Failed("lost the session with the head; try again".into())
            }
            (State::Removed, Request::Nodes) => {
                Response::Failed("this node was removed from the cluster".into())
            }
            (State::Joining { .. }, Request::Nodes) => Response::Failed(match self.head {
                Some(head) => format!("not joined yet (head {head}): {}", self.last_error),
                None => format!(
                    "not joined yet: no beacon from the head heard yet on UDP port {BEACON_PORT}"
                ),
            }),
            (_, _) => {
                Response::Failed("membership changes are made on the head: run this there".into())
            }
        };
        if client.respond(&response).is_ok() {
            self.clients.insert(token, client);
        }
    }

    /// Graceful leave: tell the head, then take the overlay down.
    fn leave(&mut self) {
        if let State::Joined(session) = &mut self.state {
            info("leaving the cluster");
            let _ = session.channel.send_message(&FromDrone::Leave.encode());
            let _ = session
                .channel
                .flush_by(Instant::now() + Duration::from_secs(1));
        }
        self.dataplane.teardown();
    }
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

/// This node's head address from the kernel command line's `chaos.head=`,
/// with the join port unless one is given.
/// Where the head is, by precedence: `-m`, then `chaos.head=` on the
/// kernel command line, then the address baked into the image (the file
/// [`crate::keys::HEAD_ADDRESS`]); `None` if none of them says.
pub fn find_head(
    given: Option<&str>,
    cmdline: &str,
    baked: Option<&str>,
) -> Result<Option<SocketAddrV4>, String> {
    if let Some(given) = given {
        return parse_head(given).map(Some);
    }
    if let Some(head) = head_from_cmdline(cmdline)? {
        return Ok(Some(head));
    }
    baked
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .map(|b| parse_head(b).map_err(|e| format!("{}: {e}", crate::keys::HEAD_ADDRESS)))
        .transpose()
}

pub fn head_from_cmdline(cmdline: &str) -> Result<Option<SocketAddrV4>, String> {
    let Some(value) = cmdline
        .split_whitespace()
        .find_map(|word| word.strip_prefix("chaos.head="))
    else {
        return Ok(None);
    };
    parse_head(value).map(Some)
}

/// "192.168.1.1" or "192.168.1.1:7700".
pub fn parse_head(value: &str) -> Result<SocketAddrV4, String> {
    if let Ok(address) = value.parse::<SocketAddrV4>() {
        return Ok(address);
    }
    value
        .parse::<Ipv4Addr>()
        .map(|ip| SocketAddrV4::new(ip, JOIN_PORT))
        .map_err(|_| {
            format!("head address {value:?}: expected an IPv4 address, optionally with :port")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_addresses_from_the_command_line() {
        let table: &[(&str, Result<Option<&str>, &str>)] = &[
            ("quiet chaos.head=10.0.0.1", Ok(Some("10.0.0.1:7700"))),
            (
                "chaos.head=10.0.0.1:9000 ip=dhcp",
                Ok(Some("10.0.0.1:9000")),
            ),
            ("chaos.mode=safe", Ok(None)),
            ("chaos.head=head.lan", Err("expected an IPv4 address")),
            ("chaos.head=10.0.0.1:x", Err("expected an IPv4 address")),
        ];
        for (cmdline, expected) in table {
            let got = head_from_cmdline(cmdline);
            match (got, expected) {
                (Ok(got), Ok(want)) => {
                    assert_eq!(got.map(|a| a.to_string()).as_deref(), *want, "{cmdline}")
                }
                (Err(e), Err(want)) => assert!(e.contains(want), "{cmdline}: {e}"),
                (got, _) => panic!("{cmdline}: {got:?}"),
            }
        }
    }

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
                Ok(Some("10.0.0.9:7700")),
            ),
            (
                None,
                "chaos.head=10.0.0.1",
                Some("10.0.0.2"),
                Ok(Some("10.0.0.1:7700")),
            ),
            (
                None,
                "quiet",
                Some("10.0.0.2:9000\n"),
                Ok(Some("10.0.0.2:9000")),
            ),
            (None, "quiet", Some("\n"), Ok(None)),
            (None, "quiet", None, Ok(None)),
            (
                None,
                "quiet",
                Some("head"),
                Err("head.address: head address \"head\""),
            ),
            (Some("x"), "", None, Err("expected an IPv4 address")),
        ];
        for (given, cmdline, baked, expected) in table {
            let got = find_head(*given, cmdline, *baked).map(|h| h.map(|a| a.to_string()));
            match (got, expected) {
                (Ok(got), Ok(want)) => assert_eq!(got.as_deref(), *want, "{cmdline}"),
                (Err(e), Err(want)) => assert!(e.contains(want), "{cmdline}: {e}"),
                (got, _) => panic!("{given:?} {cmdline} {baked:?}: {got:?}"),
            }
        }
    }

    #[test]
    fn jitter_stays_within_half_again() {
        for _ in 0..100 {
            let d = jitter(Duration::from_millis(200));
            assert!(d >= Duration::from_millis(200) && d <= Duration::from_millis(300));
        }
    }
}
