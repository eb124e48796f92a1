//! The DHCPv4 client (RFC 2131) of PID 1: gets a lease on one interface,
//! keeps it for the life of the node (renewing at T1 to the server that gave
//! it, rebinding at T2 to any server, starting over when it ends or a server
//! refuses it), and releases it at shutdown.
//!
//! It talks through a UDP socket on port 68 bound to the interface
//! (SO_BINDTODEVICE): before the interface has an address the requests go out
//! from 0.0.0.0 to the broadcast address with the broadcast flag set, so the
//! servers broadcast their replies too; once bound, renewals go unicast.
//! Every wait has a deadline; retransmissions back off from 1 s to 32 s
//! with up to a second of random jitter (RFC 2131 4.1 asks for randomised
//! backoff; it starts at 4 s, too slow for a booting node).
//!
//! This module does the protocol and says what it got; configuring the
//! interface with it is the caller's (see [`Bound`]). It never panics on
//! what arrives from the network: a bad reply is logged and ignored.

pub mod autoconf;
mod lease;
mod packet;

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use lease::Lease;
pub use packet::{parse as parse_reply, Client, Offer, PacketError, Reply};

use crate::{debug, info, warn};

const CLIENT_PORT: u16 = 68;
const SERVER_PORT: u16 = 67;
/// Seconds to wait for an answer, try after try; the last repeats.
const BACKOFF: [u64; 6] = [1, 2, 4, 8, 16, 32];
/// REQUESTs sent for one offer before starting over with a DISCOVER.
const REQUEST_TRIES: usize = 4;
/// The shortest wait between renewal (or rebinding) requests; RFC 2131
/// says 60 s, which a two-minute lab lease could not afford.
const MIN_RETRY: Duration = Duration::from_secs(4);
/// Largest datagram we read: one byte more than servers are told, so that
/// a longer one is seen to be too long rather than read cut short.
const RECEIVE_BUFFER: usize = packet::MAX_MESSAGE_SIZE as usize + 1;
/// How long a RELEASE may take to leave before power-off goes on anyway.
const DRAIN_WAIT: Duration = Duration::from_secs(1);
const DRAIN_POLL: Duration = Duration::from_millis(10);

/// A UDP socket on port 68 of one interface.
struct Socket {
    udp: UdpSocket,
    interface: String,
}

impl Socket {
    fn open(interface: &str) -> io::Result<Socket> {
        use nix::sys::socket::{
            bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
        };
        let fd = socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        // One socket per interface on the same port: each is bound to its
        // device, so the kernel hands each only its own interface's packets.
        setsockopt(&fd, sockopt::ReuseAddr, &true)?;
        setsockopt(&fd, sockopt::Broadcast, &true)?;
        setsockopt(
            &fd,
            sockopt::BindToDevice,
            &std::ffi::OsString::from(interface),
        )?;
        bind(
            fd.as_raw_fd(),
            &SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT)),
        )?;
        Ok(Socket {
            udp: UdpSocket::from(fd),
            interface: interface.to_string(),
        })
    }

    fn send(&self, bytes: &[u8], to: Ipv4Addr) -> io::Result<()> {
        self.udp
            .send_to(bytes, SocketAddrV4::new(to, SERVER_PORT))
            .map(drop)
    }

    /// Waits until what was sent has left the host (the send queue is
    /// empty), or `deadline`. A unicast may wait for the server's MAC, and
    /// a RELEASE sent just before power-off would otherwise die in the
    /// queue; true if it left.
    fn drain(&self, deadline: Instant) -> bool {
        loop {
            let mut queued: libc::c_int = 0;
            // SAFETY: SIOCOUTQ writes one int: the bytes not yet sent.
            let ok = unsafe { libc::ioctl(self.udp.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
            if ok != 0 || queued == 0 {
                return ok == 0;
            }
            if Instant::now() >= deadline {
                return false;
            }
            // The kernel has no event for "sent"; a short poll of the count.
            std::thread::sleep(DRAIN_POLL);
        }
    }

    /// The first reply to `xid` that `accept` takes, or `None` at the
    /// deadline. Replies to other clients or transactions are skipped
    /// quietly; malformed ones are logged.
    fn wait(
        &self,
        xid: u32,
        mac: [u8; 6],
        deadline: Instant,
        accept: fn(&Reply) -> bool,
    ) -> io::Result<Option<Reply>> {
        let mut buffer = [0u8; RECEIVE_BUFFER];
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            self.udp.set_read_timeout(Some(deadline - now))?;
            let (len, from) = match self.udp.recv_from(&mut buffer) {
                Ok(received) => received,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e),
            };
            match packet::parse(&buffer[..len], xid, mac) {
                Ok(reply) if accept(&reply) => return Ok(Some(reply)),
                Ok(_) => {}
                Err(PacketError::OtherTransaction { .. } | PacketError::OtherClient(_)) => {}
                Err(e) => warn!(
                    "dhcp: {}: ignoring a reply from {from}: {e}",
                    self.interface
                ),
            }
        }
    }
}

/// A random transaction id or jitter. Neither needs cryptographic strength,
/// so it does not wait for the kernel's pool to be ready (GRND_INSECURE):
/// early in a TCG boot that wait is over a second.
fn random_u32() -> u32 {
    let mut bytes = [0u8; 4];
    // SAFETY: the pointer and length describe `bytes`, which outlives the call.
    let got =
        unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), libc::GRND_INSECURE) };
    if got != 4 {
        // Kernels before 5.6 lack GRND_INSECURE: the clock's nanoseconds
        // still differ from node to node and try to try.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        return now.map_or(0, |d| d.subsec_nanos()) ^ std::process::id();
    }
    u32::from_ne_bytes(bytes)
}

/// How long to wait after try number `n` (from 0), with jitter.
fn backoff(n: usize) -> Duration {
    let base = BACKOFF[n.min(BACKOFF.len() - 1)];
    Duration::from_secs(base) + Duration::from_millis(u64::from(random_u32() % 1000))
}

/// DISCOVER, OFFER, REQUEST, ACK on `interface` until a lease is had or
/// `stop` says to give up (checked between tries). Errors are the socket's.
pub fn acquire(interface: &str, client: &Client, stop: &dyn Fn() -> bool) -> io::Result<Lease> {
    let socket = Socket::open(interface)?;
    let mut tries = 0;
    while !stop() {
        let xid = random_u32();
        socket.send(&packet::discover(client, xid), Ipv4Addr::BROADCAST)?;
        debug!("dhcp: {interface}: DISCOVER (transaction 0x{xid:08x})");
        let wait = backoff(tries);
        tries += 1;
        let offered = socket.wait(xid, client.mac, Instant::now() + wait, |r| {
            matches!(r, Reply::Offer(_))
        })?;
        let Some(Reply::Offer(offer)) = offered else {
            continue;
        };
        info!(
            "dhcp: {interface}: offer of {}/{} from {}",
            offer.address, offer.prefix, offer.server
        );
        for attempt in 0..REQUEST_TRIES {
            if stop() {
                break;
            }
            socket.send(&packet::select(client, xid, &offer), Ipv4Addr::BROADCAST)?;
            let answer = socket.wait(xid, client.mac, Instant::now() + backoff(attempt), |r| {
                matches!(r, Reply::Ack(_) | Reply::Nak { .. })
            })?;
            match answer {
                Some(Reply::Ack(acked)) => return Ok(Lease::new(interface, client.mac, acked)),
                Some(Reply::Nak { message, .. }) => {
                    warn!(
                        "dhcp: {interface}: {} refused the offered {}: {}",
                        offer.server,
                        offer.address,
                        message.as_deref().unwrap_or("no reason given")
                    );
                    break;
                }
                _ => {}
            }
        }
    }
    Err(io::Error::new(io::ErrorKind::Interrupted, "stopped"))
}

/// What happened to a lease at its renewal time.
#[derive(Debug)]
pub enum Kept {
    /// Renewed or rebound (possibly with new options).
    Extended(Box<Lease>),
    /// Refused or expired: the address must go.
    Lost(String),
}

/// Holds `lease` until it must change: waits for T1, renews with its server
/// until T2, rebinds with any server until it ends. `None` for an infinite
/// lease, which never changes.
pub fn keep(lease: &Lease, client: &Client) -> io::Result<Option<Kept>> {
    let Some((renew, rebind, length)) = lease.timers() else {
        return Ok(None);
    };
    let interface = &lease.interface;
    let address = lease.offer.address;
    // Not synchronisation: the protocol says to do nothing until T1.
    std::thread::sleep((lease.obtained + renew).saturating_duration_since(Instant::now()));
    let socket = Socket::open(interface)?;
    for (until, to, state) in [
        (lease.obtained + rebind, lease.offer.server, "renewing"),
        (lease.obtained + length, Ipv4Addr::BROADCAST, "rebinding"),
    ] {
        loop {
            let now = Instant::now();
            if now >= until {
                break;
            }
            let xid = random_u32();
            info!("dhcp: {interface}: {state} {address} with {to}");
            if let Err(e) = socket.send(&packet::extend(client, xid, address), to) {
                // The route to the server may be gone; rebinding broadcasts.
                warn!("dhcp: {interface}: {state}: sending to {to}: {e}");
            }
            let wait = ((until - now) / 2).max(MIN_RETRY).min(until - now);
            let answer = socket.wait(xid, client.mac, now + wait, |r| {
                matches!(r, Reply::Ack(_) | Reply::Nak { .. })
            })?;
            match answer {
                Some(Reply::Ack(offer)) if offer.address == address => {
                    let renewed = Lease::new(interface, client.mac, offer);
                    return Ok(Some(Kept::Extended(Box::new(renewed))));
                }
                Some(Reply::Ack(offer)) => {
                    return Ok(Some(Kept::Lost(format!(
                        "{} acknowledged {} instead of {address}",
                        offer.server, offer.address
                    ))));
                }
                Some(Reply::Nak { server, message }) => {
                    return Ok(Some(Kept::Lost(format!(
                        "{} refused it: {}",
                        server.map_or("a server".to_string(), |s| s.to_string()),
                        message.as_deref().unwrap_or("no reason given")
                    ))));
                }
                _ => {}
            }
        }
    }
    Ok(Some(Kept::Lost(format!(
        "it expired after {} s without an answer",
        length.as_secs()
    ))))
}

/// The lease in force, for [`release`] at shutdown.
static BOUND: Mutex<Option<(Lease, Client)>> = Mutex::new(None);

/// Records the lease in force (or none).
pub fn set_bound(bound: Option<(Lease, Client)>) {
    *BOUND.lock().unwrap_or_else(|p| p.into_inner()) = bound;
}

/// Gives the lease in force back to its server, so the address is free at
/// once for the next node; a no-op without one. Called once at shutdown.
pub fn release() {
    let bound = BOUND.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some((lease, client)) = bound {
        give_back(&lease, &client);
    }
}

/// Sends RELEASE for `lease`.
pub fn give_back(lease: &Lease, client: &Client) {
    let o = &lease.offer;
    let sent = Socket::open(&lease.interface).and_then(|socket| {
        socket.send(
            &packet::release(client, random_u32(), o.address, o.server),
            o.server,
        )?;
        Ok(socket.drain(Instant::now() + DRAIN_WAIT))
    });
    match sent {
        Ok(true) => info!(
            "dhcp: {}: released {} to {}",
            lease.interface, o.address, o.server
        ),
        Ok(false) => warn!(
            "dhcp: {}: release of {} to {} still queued after {} ms (no ARP reply?)",
            lease.interface,
            o.address,
            o.server,
            DRAIN_WAIT.as_millis()
        ),
        Err(e) => warn!(
            "dhcp: {}: could not release {} to {}: {e}",
            lease.interface, o.address, o.server
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_bounded() {
        for n in 0..20 {
            let wait = backoff(n);
            let base = Duration::from_secs(BACKOFF[n.min(5)]);
            assert!(
                wait >= base && wait < base + Duration::from_secs(1),
                "{n}: {wait:?}"
            );
        }
    }
}
