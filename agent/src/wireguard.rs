// SPDX-License-Identifier: GPL-3.0-or-later
//! The overlay interface over netlink, without the `wg` binary: the
//! WireGuard link and its address (route netlink), its key, port and peers
//! (the generic netlink "wireguard" family).
//!
//! Message layouts follow <linux/wireguard.h>, <linux/if_link.h> and
//! <linux/if_addr.h>; every request is acknowledged by the kernel, and a
//! refusal comes back as an error naming the operation.

use std::net::{Ipv4Addr, SocketAddrV4};

use anyhow::Context;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};

use crate::netlink::{attributes, Builder, Netlink, NETLINK_GENERIC, NETLINK_ROUTE};
use crate::proto::Peer;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFF_UP: u32 = 1;

const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;

const WG_GENL_NAME: &str = "wireguard";
const WG_GENL_VERSION: u8 = 1;
const WG_CMD_SET_DEVICE: u8 = 1;
const WGDEVICE_A_IFNAME: u16 = 2;
const WGDEVICE_A_PRIVATE_KEY: u16 = 3;
const WGDEVICE_A_FLAGS: u16 = 5;
const WGDEVICE_A_LISTEN_PORT: u16 = 6;
const WGDEVICE_A_PEERS: u16 = 8;
const WGDEVICE_F_REPLACE_PEERS: u32 = 1;
const WGPEER_A_PUBLIC_KEY: u16 = 1;
const WGPEER_A_FLAGS: u16 = 3;
const WGPEER_A_ENDPOINT: u16 = 4;
const WGPEER_A_ALLOWEDIPS: u16 = 9;
const WGPEER_F_REMOVE_ME: u32 = 1;
const WGPEER_F_REPLACE_ALLOWEDIPS: u32 = 2;
const WGALLOWEDIP_A_FAMILY: u16 = 1;
const WGALLOWEDIP_A_IPADDR: u16 = 2;
const WGALLOWEDIP_A_CIDR_MASK: u16 = 3;

/// Peers per set-device message: each is about 100 bytes, and a message
/// must stay well inside the socket's send buffer.
const PEERS_PER_MESSAGE: usize = 200;

pub struct WireGuard {
    route: Netlink,
    generic: Netlink,
    family: u16,
    name: String,
}

impl WireGuard {
    /// Opens the netlink sockets and finds the WireGuard family, which
    /// exists only if the kernel has WireGuard (built in or loaded).
    pub fn open(name: &str) -> anyhow::Result<Self> {
        let route = Netlink::open(NETLINK_ROUTE)?;
        let mut generic = Netlink::open(NETLINK_GENERIC)?;
        let mut lookup = Builder::new(GENL_ID_CTRL, 0).header(&[CTRL_CMD_GETFAMILY, 1, 0, 0]);
        lookup.str(CTRL_ATTR_FAMILY_NAME, WG_GENL_NAME);
        let replies = generic.request(lookup).map_err(|e| match e.errno() {
            Some(libc::ENOENT) => anyhow::anyhow!(
                "this kernel has no WireGuard: load the wireguard module \
                 (or build it in: CONFIG_WIREGUARD)"
            ),
            _ => anyhow::Error::new(e).context("looking up the WireGuard netlink family"),
        })?;
        let family = replies
            .iter()
            .flat_map(|reply| attributes(reply, 4))
            .find(|(kind, _)| *kind == CTRL_ATTR_FAMILY_ID)
            .and_then(|(_, data)| Some(u16::from_ne_bytes(data.get(..2)?.try_into().ok()?)))
            .context("the kernel's answer names no WireGuard family id")?;
        Ok(Self {
            route,
            generic,
            family,
            name: name.into(),
        })
    }

    /// Creates the interface afresh: a stale one from an earlier run is
    /// deleted first, so no old peer or address survives.
    pub fn create(&mut self) -> anyhow::Result<()> {
        self.delete();
        let mut create = Builder::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL).header(&[0; 16]);
        create
            .str(IFLA_IFNAME, &self.name)
            .begin(IFLA_LINKINFO)
            .str(IFLA_INFO_KIND, "wireguard")
            .end();
        self.route
            .request(create)
            .with_context(|| format!("creating WireGuard interface {}", self.name))?;
        Ok(())
    }

    /// Deletes the interface if it exists; its routes and peers go with it.
    pub fn delete(&mut self) {
        let mut delete = Builder::new(RTM_DELLINK, 0).header(&[0; 16]);
        delete.str(IFLA_IFNAME, &self.name);
        let _ = self.route.request(delete);
    }

    fn index(&self) -> anyhow::Result<u32> {
        nix::net::if_::if_nametoindex(self.name.as_str())
            .with_context(|| format!("finding interface {}", self.name))
    }

    /// Sets the overlay address (the prefix gives the overlay route) and
    /// brings the interface up.
    pub fn address(&mut self, address: Ipv4Addr, prefix_len: u8) -> anyhow::Result<()> {
        let index = self.index()?;
        let mut header = vec![libc::AF_INET as u8, prefix_len, 0, 0];
        header.extend_from_slice(&index.to_ne_bytes());
        let mut add = Builder::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE).header(&header);
        add.attr(IFA_LOCAL, &address.octets())
            .attr(IFA_ADDRESS, &address.octets());
        self.route
            .request(add)
            .with_context(|| format!("adding {address}/{prefix_len} to {}", self.name))?;
        let mut up = [0u8; 16];
        up[4..8].copy_from_slice(&(index as i32).to_ne_bytes());
        up[8..12].copy_from_slice(&IFF_UP.to_ne_bytes());
        up[12..16].copy_from_slice(&IFF_UP.to_ne_bytes());
        self.route
            .request(Builder::new(RTM_NEWLINK, 0).header(&up))
            .with_context(|| format!("setting {} up", self.name))?;
        Ok(())
    }

    /// Sets the private key and listen port, and replaces all peers.
    pub fn set_key(&mut self, private_key: &[u8; 32], port: u16) -> anyhow::Result<()> {
        let mut message = self.set_device();
        message
            .attr(WGDEVICE_A_PRIVATE_KEY, private_key)
            .u16(WGDEVICE_A_LISTEN_PORT, port)
            .u32(WGDEVICE_A_FLAGS, WGDEVICE_F_REPLACE_PEERS);
        self.generic
            .request(message)
            .with_context(|| format!("setting the key and port of {}", self.name))?;
        Ok(())
    }

    /// Replaces every peer with `peers`.
    pub fn replace_peers(&mut self, peers: &[Peer]) -> anyhow::Result<()> {
        let mut first = true;
        for chunk in peers
            .chunks(PEERS_PER_MESSAGE)
            .chain(peers.is_empty().then_some(&[][..]))
        {
            let mut message = self.set_device();
            if std::mem::take(&mut first) {
                message.u32(WGDEVICE_A_FLAGS, WGDEVICE_F_REPLACE_PEERS);
            }
            add_peers(&mut message, chunk, &[]);
            self.send(message)?;
        }
        Ok(())
    }

    /// Adds or updates `changed` and removes `gone`.
    pub fn update_peers(&mut self, changed: &[Peer], gone: &[Peer]) -> anyhow::Result<()> {
        for chunk in changed.chunks(PEERS_PER_MESSAGE) {
            let mut message = self.set_device();
            add_peers(&mut message, chunk, &[]);
            self.send(message)?;
        }
        for chunk in gone.chunks(PEERS_PER_MESSAGE) {
            let mut message = self.set_device();
            add_peers(&mut message, &[], chunk);
            self.send(message)?;
        }
        Ok(())
    }

    fn set_device(&self) -> Builder {
        let mut message =
            Builder::new(self.family, 0).header(&[WG_CMD_SET_DEVICE, WG_GENL_VERSION, 0, 0]);
        message.str(WGDEVICE_A_IFNAME, &self.name);
        message
    }

    fn send(&mut self, message: Builder) -> anyhow::Result<()> {
        self.generic
            .request(message)
            .with_context(|| format!("setting the peers of {}", self.name))?;
        Ok(())
    }
}

/// The peer list of a set-device message: `changed` with their endpoint
/// and overlay address as the only allowed source, `gone` removed.
fn add_peers(message: &mut Builder, changed: &[Peer], gone: &[Peer]) {
    message.begin(WGDEVICE_A_PEERS);
    for peer in changed {
        message
            .begin(0)
            .attr(WGPEER_A_PUBLIC_KEY, &peer.wireguard_key)
            .u32(WGPEER_A_FLAGS, WGPEER_F_REPLACE_ALLOWEDIPS);
        if let Some(endpoint) = peer.endpoint {
            message.attr(WGPEER_A_ENDPOINT, &sockaddr_in(endpoint));
        }
        message
            .begin(WGPEER_A_ALLOWEDIPS)
            .begin(0)
            .u16(WGALLOWEDIP_A_FAMILY, libc::AF_INET as u16)
            .attr(WGALLOWEDIP_A_IPADDR, &peer.overlay.octets())
            .u8(WGALLOWEDIP_A_CIDR_MASK, 32)
            .end()
            .end()
            .end();
    }
    for peer in gone {
        message
            .begin(0)
            .attr(WGPEER_A_PUBLIC_KEY, &peer.wireguard_key)
            .u32(WGPEER_A_FLAGS, WGPEER_F_REMOVE_ME)
            .end();
    }
    message.end();
}

/// struct sockaddr_in: family (host order), port and address (network
/// order), eight bytes of zero.
fn sockaddr_in(endpoint: SocketAddrV4) -> [u8; 16] {
    let mut bytes = [0; 16];
    bytes[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    bytes[2..4].copy_from_slice(&endpoint.port().to_be_bytes());
    bytes[4..8].copy_from_slice(&endpoint.ip().octets());
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_sockaddr_in() {
        let bytes = sockaddr_in(SocketAddrV4::new(Ipv4Addr::new(192, 168, 7, 2), 51820));
        assert_eq!(&bytes[2..8], &[0xca, 0x6c, 192, 168, 7, 2]);
        assert_eq!(&bytes[8..], &[0; 8]);
    }

    #[test]
    fn a_peer_carries_key_endpoint_and_one_allowed_address() {
        let peer = Peer {
            id: 2,
            hostname: "d".into(),
            wireguard_key: [7; 32],
            overlay: Ipv4Addr::new(10, 99, 0, 2),
            endpoint: Some(SocketAddrV4::new(Ipv4Addr::new(192, 168, 7, 2), 51820)),
        };
        let mut message = Builder::new(30, 0).header(&[1, 1, 0, 0]);
        let peers = [peer];
        add_peers(&mut message, &peers, &peers);
        let top = attributes(message.payload(), 4);
        assert_eq!(top.len(), 1);
        assert_eq!(top[0].0, WGDEVICE_A_PEERS);
        let peers = attributes(top[0].1, 0);
        assert_eq!(peers.len(), 2);
        let added = attributes(peers[0].1, 0);
        let kinds: Vec<u16> = added.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            kinds,
            [
                WGPEER_A_PUBLIC_KEY,
                WGPEER_A_FLAGS,
                WGPEER_A_ENDPOINT,
                WGPEER_A_ALLOWEDIPS
            ]
        );
        let allowed = attributes(attributes(added[3].1, 0)[0].1, 0);
        assert_eq!(allowed[1], (WGALLOWEDIP_A_IPADDR, &[10, 99, 0, 2][..]));
        assert_eq!(allowed[2], (WGALLOWEDIP_A_CIDR_MASK, &[32][..]));
        let removed = attributes(peers[1].1, 0);
        assert_eq!(
            removed[1],
            (WGPEER_A_FLAGS, &WGPEER_F_REMOVE_ME.to_ne_bytes()[..])
        );
    }
}
