// SPDX-License-Identifier: GPL-3.0-or-later
//! Synchronous rtnetlink for PID 1: list links, set a link up, give it an
//! IPv4 address or take it away, install the default route, and wait for
//! carrier.
//!
//! This module owns init's route netlink conversation, over the transport
//! and messages of [`chaos_netlink`] (shared with tyd): which interface to
//! pick and what to give it are the caller's decisions. It must never shell
//! out (the image has no `ip`), never sleep in a loop, never block past a
//! caller's deadline, and never send a packet anywhere but to the kernel.

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::time::Instant;

use chaos_netlink::route::{self, LinkReply};
use chaos_netlink::NETLINK_ROUTE;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

pub use chaos_netlink::route::Link;

/// What went wrong, always naming the operation and the object it was on.
#[derive(Debug, thiserror::Error)]
#[error("{op}: {error}")]
pub struct Error {
    op: String,
    error: chaos_netlink::Error,
}

impl Error {
    /// The errno the kernel refused the request with, if it did.
    pub fn errno(&self) -> Option<i32> {
        self.error.errno()
    }
}

fn during(op: impl Into<String>) -> impl FnOnce(chaos_netlink::Error) -> Error {
    move |error| Error {
        op: op.into(),
        error,
    }
}

/// A blocking route netlink socket.
pub struct Netlink {
    netlink: chaos_netlink::Netlink,
}

impl Netlink {
    pub fn open() -> Result<Self, Error> {
        let netlink = chaos_netlink::Netlink::open(NETLINK_ROUTE)
            .map_err(during("opening a route netlink socket"))?;
        Ok(Self { netlink })
    }

    /// Every link in this network namespace, in the kernel's order.
    pub fn links(&mut self) -> Result<Vec<Link>, Error> {
        let replies: Vec<LinkReply> = self
            .netlink
            .dump(route::get_link(0))
            .map_err(during("listing links"))?;
        Ok(replies.into_iter().filter_map(LinkReply::link).collect())
    }

    /// Sets the link up; a link that already is up stays so.
    pub fn set_up(&mut self, index: u32) -> Result<(), Error> {
        self.netlink
            .ack(route::set_up(index), 0)
            .map_err(|error| Error {
                op: format!("setting {} up", self.name_of(index)),
                error,
            })
    }

    /// Adds `address/prefix_len` to the link, with the subnet's broadcast
    /// address, replacing an identical address so that re-running is harmless.
    pub fn add_address(
        &mut self,
        index: u32,
        address: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), Error> {
        let request = route::address(
            libc::RTM_NEWADDR,
            index,
            address,
            prefix_len,
            broadcast(address, prefix_len),
        );
        self.netlink
            .ack(request, NLM_F_CREATE | NLM_F_REPLACE)
            .map_err(|error| Error {
                op: format!("adding {address}/{prefix_len} to {}", self.name_of(index)),
                error,
            })
    }

    /// Removes `address/prefix_len` from the link (a lost DHCP lease).
    pub fn del_address(
        &mut self,
        index: u32,
        address: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), Error> {
        let request = route::address(
            libc::RTM_DELADDR,
            index,
            address,
            prefix_len,
            broadcast(address, prefix_len),
        );
        self.netlink.ack(request, 0).map_err(|error| Error {
            op: format!(
                "removing {address}/{prefix_len} from {}",
                self.name_of(index)
            ),
            error,
        })
    }

    /// Adds the IPv4 default route via `gateway`, out of link `via` if given,
    /// replacing any default route of the same metric.
    pub fn replace_default_route(
        &mut self,
        gateway: Ipv4Addr,
        via: Option<u32>,
    ) -> Result<(), Error> {
        self.netlink
            .ack(
                route::default_route(gateway, via),
                NLM_F_CREATE | NLM_F_REPLACE,
            )
            .map_err(|error| {
                let dev = via
                    .map(|index| format!(" dev {}", self.name_of(index)))
                    .unwrap_or_default();
                Error {
                    op: format!("adding default route via {gateway}{dev}"),
                    error,
                }
            })
    }

    /// Returns the first link accepted by `among` that has carrier, waiting
    /// for link notifications until `deadline`; `None` if none got carrier in
    /// time. It looks at least once, even past the deadline. Links only get
    /// carrier once up: set the candidates up first.
    pub fn wait_for_carrier(
        &mut self,
        mut among: impl FnMut(&Link) -> bool,
        deadline: Instant,
    ) -> Result<Option<Link>, Error> {
        const OP: &str = "waiting for carrier";
        // Subscribed before the first dump, so a link that gains carrier
        // between the dump and the first poll is not missed.
        let mut monitor = chaos_netlink::Netlink::open(NETLINK_ROUTE).map_err(during(OP))?;
        monitor.subscribe(libc::RTNLGRP_LINK).map_err(during(OP))?;
        let mut resync = true;
        loop {
            if resync {
                resync = false;
                let links = self.links()?;
                if let Some(link) = links.into_iter().find(|link| link.carrier && among(link)) {
                    return Ok(Some(link));
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            // Rounded up so that we never wake just before the deadline and
            // spin; capped because poll takes an int, and the loop goes on.
            let millis = (deadline - now).as_nanos().div_ceil(1_000_000);
            let timeout = PollTimeout::from(u16::try_from(millis).unwrap_or(u16::MAX));
            let mut fds = [PollFd::new(monitor.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(0) | Err(Errno::EINTR) => continue,
                Ok(_) => {}
                Err(errno) => return Err(during(OP)(chaos_netlink::Error::Socket(errno.into()))),
            }
            match monitor.notifications::<LinkReply>() {
                Ok(replies) => {
                    let mut links = replies.into_iter().filter_map(LinkReply::link);
                    if let Some(link) = links.find(|link| link.carrier && among(link)) {
                        return Ok(Some(link));
                    }
                }
                // The kernel dropped notifications for us: only a fresh dump
                // tells what we missed.
                Err(error) if error.is_overrun() => resync = true,
                Err(error) => return Err(during(OP)(error)),
            }
        }
    }

    /// The link's name for an error message; the index when even that fails.
    fn name_of(&mut self, index: u32) -> String {
        self.netlink
            .request::<LinkReply>(route::get_link(index), 0)
            .ok()
            .and_then(|replies| replies.into_iter().find_map(LinkReply::link))
            .map_or_else(|| format!("link #{index}"), |link| link.name)
    }
}

/// The subnet's broadcast address; none for /31 and /32, which have no room
/// for one (RFC 3021), nor for lengths the kernel will reject anyway.
fn broadcast(address: Ipv4Addr, prefix_len: u8) -> Option<Ipv4Addr> {
    (prefix_len <= 30).then(|| Ipv4Addr::from(u32::from(address) | (u32::MAX >> prefix_len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_follows_the_prefix() {
        let address = Ipv4Addr::new(10, 0, 2, 15);
        let cases = [
            (24, Some(Ipv4Addr::new(10, 0, 2, 255))),
            (8, Some(Ipv4Addr::new(10, 255, 255, 255))),
            (30, Some(Ipv4Addr::new(10, 0, 2, 15))),
            (0, Some(Ipv4Addr::BROADCAST)),
            (31, None),
            (32, None),
            (33, None),
        ];
        for (prefix_len, expected) in cases {
            assert_eq!(broadcast(address, prefix_len), expected, "/{prefix_len}");
        }
    }

    #[test]
    fn errors_name_the_operation_and_the_errno() {
        let error = during("adding 10.0.2.15/24 to eth0")(chaos_netlink::Error::Kernel(
            std::io::Error::from_raw_os_error(libc::EEXIST),
        ));
        assert_eq!(
            error.to_string(),
            "adding 10.0.2.15/24 to eth0: File exists (os error 17)"
        );
    }
}
