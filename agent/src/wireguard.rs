// SPDX-License-Identifier: GPL-3.0-or-later
//! The overlay interface over netlink, without the `wg` binary: the
//! WireGuard link and its address (route netlink), its key, port and peers
//! (the generic netlink "wireguard" family), as netlink-packet-route's and
//! netlink-packet-wireguard's typed messages on [`chaos_netlink`]'s
//! transport.
//!
//! Every request is acknowledged by the kernel, and a refusal comes back as
//! an error naming the operation.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use chaos_netlink::route;
use chaos_netlink::{generic, Netlink, NETLINK_GENERIC, NETLINK_ROUTE};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_wireguard::{
    WireguardAddressFamily, WireguardAllowedIp, WireguardAllowedIpAttr, WireguardAttribute,
    WireguardCmd, WireguardDeviceFlags, WireguardMessage, WireguardPeer, WireguardPeerAttribute,
    WireguardPeerFlags,
};

use crate::proto::Peer;

/// Peers per set-device message: each is about 100 bytes, and a message
/// must stay well inside the socket's send buffer.
const PEERS_PER_MESSAGE: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum WireGuardError {
    #[error(
        "this kernel has no WireGuard: load the wireguard module \
         (or build it in: CONFIG_WIREGUARD)"
    )]
    Missing,
    #[error("finding interface {name}: {error}")]
    NoInterface { name: String, error: nix::Error },
    /// A netlink request failed; `op` says what it was for.
    #[error("{op}: {error}")]
    Netlink {
        op: String,
        error: chaos_netlink::Error,
    },
}

/// The error of the netlink operation `op`.
fn during(op: impl Into<String>) -> impl FnOnce(chaos_netlink::Error) -> WireGuardError {
    move |error| WireGuardError::Netlink {
        op: op.into(),
        error,
    }
}

pub struct WireGuard {
    route: Netlink,
    generic: Netlink,
    family: u16,
    name: String,
}

impl WireGuard {
    /// Opens the netlink sockets and finds the WireGuard family, which
    /// exists only if the kernel has WireGuard (built in or loaded).
    pub fn open(name: &str) -> Result<Self, WireGuardError> {
        let route = Netlink::open(NETLINK_ROUTE).map_err(during("opening route netlink"))?;
        let mut generic =
            Netlink::open(NETLINK_GENERIC).map_err(during("opening generic netlink"))?;
        let family =
            generic::family_id::<WireguardMessage>(&mut generic).map_err(|e| match e.errno() {
                Some(libc::ENOENT) => WireGuardError::Missing,
                _ => during("looking up the WireGuard netlink family")(e),
            })?;
        Ok(Self {
            route,
            generic,
            family,
            name: name.into(),
        })
    }

    /// Creates the interface afresh: a stale one from an earlier run is
    /// deleted first, so no old peer or address survives.
    pub fn create(&mut self) -> Result<(), WireGuardError> {
        self.delete();
        self.route
            .ack(
                route::new_link(&self.name, "wireguard"),
                NLM_F_CREATE | NLM_F_EXCL,
            )
            .map_err(during(format!(
                "creating WireGuard interface {}",
                self.name
            )))
    }

    /// Deletes the interface if it exists; its routes and peers go with it.
    pub fn delete(&mut self) {
        let _ = self.route.ack(route::delete_link(&self.name), 0);
    }

    fn index(&self) -> Result<u32, WireGuardError> {
        nix::net::if_::if_nametoindex(self.name.as_str()).map_err(|error| {
            WireGuardError::NoInterface {
                name: self.name.clone(),
                error,
            }
        })
    }

    /// Sets the overlay address (the prefix gives the overlay route) and
    /// brings the interface up.
    pub fn address(&mut self, address: Ipv4Addr, prefix_len: u8) -> Result<(), WireGuardError> {
        let index = self.index()?;
        // No broadcast address: the overlay is point to point.
        let add = route::address(libc::RTM_NEWADDR, index, address, prefix_len, None);
        self.route
            .ack(add, NLM_F_CREATE | NLM_F_REPLACE)
            .map_err(during(format!(
                "adding {address}/{prefix_len} to {}",
                self.name
            )))?;
        self.route
            .ack(route::set_up(index), 0)
            .map_err(during(format!("setting {} up", self.name)))
    }

    /// Sets the private key and listen port, and replaces all peers.
    pub fn set_key(&mut self, private_key: &[u8; 32], port: u16) -> Result<(), WireGuardError> {
        let op = format!("setting the key and port of {}", self.name);
        self.set_device(
            vec![
                WireguardAttribute::PrivateKey(*private_key),
                WireguardAttribute::ListenPort(port),
                WireguardAttribute::Flags(WireguardDeviceFlags::ReplacePeers),
            ],
            op,
        )
    }

    /// Replaces every peer with `peers`.
    pub fn replace_peers(&mut self, peers: &[Peer]) -> Result<(), WireGuardError> {
        let mut first = true;
        for chunk in peers
            .chunks(PEERS_PER_MESSAGE)
            .chain(peers.is_empty().then_some(&[][..]))
        {
            let mut attributes = Vec::new();
            if std::mem::take(&mut first) {
                attributes.push(WireguardAttribute::Flags(
                    WireguardDeviceFlags::ReplacePeers,
                ));
            }
            attributes.push(WireguardAttribute::Peers(peer_list(chunk, &[])));
            self.set_peers(attributes)?;
        }
        Ok(())
    }

    /// Adds or updates `changed` and removes `gone`.
    pub fn update_peers(&mut self, changed: &[Peer], gone: &[Peer]) -> Result<(), WireGuardError> {
        for chunk in changed.chunks(PEERS_PER_MESSAGE) {
            self.set_peers(vec![WireguardAttribute::Peers(peer_list(chunk, &[]))])?;
        }
        for chunk in gone.chunks(PEERS_PER_MESSAGE) {
            self.set_peers(vec![WireguardAttribute::Peers(peer_list(&[], chunk))])?;
        }
        Ok(())
    }

    fn set_peers(&mut self, attributes: Vec<WireguardAttribute>) -> Result<(), WireGuardError> {
        let op = format!("setting the peers of {}", self.name);
        self.set_device(attributes, op)
    }

    /// One set-device request for this interface with `attributes`.
    fn set_device(
        &mut self,
        attributes: Vec<WireguardAttribute>,
        op: String,
    ) -> Result<(), WireGuardError> {
        let message = generic::message(self.family, set_device(&self.name, attributes));
        self.generic.ack(message, 0).map_err(during(op))
    }
}

/// WG_CMD_SET_DEVICE for interface `name`, which comes first.
fn set_device(name: &str, attributes: Vec<WireguardAttribute>) -> WireguardMessage {
    let mut all = vec![WireguardAttribute::IfName(name.into())];
    all.extend(attributes);
    WireguardMessage {
        cmd: WireguardCmd::SetDevice,
        attributes: all,
    }
}

/// The peer list of a set-device message: `changed` with their endpoint
/// and overlay address as the only allowed source, `gone` removed.
fn peer_list(changed: &[Peer], gone: &[Peer]) -> Vec<WireguardPeer> {
    let added = changed.iter().map(|peer| {
        let mut attributes = vec![
            WireguardPeerAttribute::PublicKey(peer.wireguard_key),
            WireguardPeerAttribute::Flags(WireguardPeerFlags::ReplaceAllowedIps),
        ];
        if let Some(endpoint) = peer.endpoint {
            attributes.push(WireguardPeerAttribute::Endpoint(SocketAddr::V4(endpoint)));
        }
        attributes.push(WireguardPeerAttribute::AllowedIps(vec![
            WireguardAllowedIp(vec![
                WireguardAllowedIpAttr::Family(WireguardAddressFamily::Ipv4),
                WireguardAllowedIpAttr::IpAddr(IpAddr::V4(peer.overlay)),
                WireguardAllowedIpAttr::Cidr(32),
            ]),
        ]));
        WireguardPeer(attributes)
    });
    let removed = gone.iter().map(|peer| {
        WireguardPeer(vec![
            WireguardPeerAttribute::PublicKey(peer.wireguard_key),
            WireguardPeerAttribute::Flags(WireguardPeerFlags::RemoveMe),
        ])
    });
    added.chain(removed).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{Emitable, ParseableParametrized};
    use netlink_packet_generic::GenlHeader;
    use std::net::SocketAddrV4;

    fn peer() -> Peer {
        Peer {
            id: 2,
            hostname: "d".into(),
            wireguard_key: [7; 32],
            overlay: Ipv4Addr::new(10, 99, 0, 2),
            endpoint: Some(SocketAddrV4::new(Ipv4Addr::new(192, 168, 7, 2), 51820)),
        }
    }

    #[test]
    fn a_peer_carries_key_endpoint_and_one_allowed_address() {
        let peers = [peer()];
        let message = set_device(
            "wg0",
            vec![WireguardAttribute::Peers(peer_list(&peers, &peers))],
        );
        // Emitted and read back by the crate's own parser, as the kernel
        // would see it.
        let mut bytes = vec![0; message.buffer_len()];
        message.emit(&mut bytes);
        let header = GenlHeader {
            cmd: WireguardCmd::SetDevice.into(),
            version: 1,
        };
        let parsed = WireguardMessage::parse_with_param(&bytes[..], header).unwrap();
        assert_eq!(parsed, message);
        let [WireguardAttribute::IfName(name), WireguardAttribute::Peers(list)] =
            &parsed.attributes[..]
        else {
            panic!("not the interface and its peers: {parsed:?}");
        };
        assert_eq!(name, "wg0");
        assert_eq!(
            list[0].0,
            [
                WireguardPeerAttribute::PublicKey([7; 32]),
                WireguardPeerAttribute::Flags(WireguardPeerFlags::ReplaceAllowedIps),
                WireguardPeerAttribute::Endpoint("192.168.7.2:51820".parse().unwrap()),
                WireguardPeerAttribute::AllowedIps(vec![WireguardAllowedIp(vec![
                    WireguardAllowedIpAttr::Family(WireguardAddressFamily::Ipv4),
                    WireguardAllowedIpAttr::IpAddr("10.99.0.2".parse().unwrap()),
                    WireguardAllowedIpAttr::Cidr(32),
                ])]),
            ]
        );
        assert_eq!(
            list[1].0,
            [
                WireguardPeerAttribute::PublicKey([7; 32]),
                WireguardPeerAttribute::Flags(WireguardPeerFlags::RemoveMe),
            ]
        );
    }
}
