// SPDX-License-Identifier: GPL-3.0-or-later
//! The real dataplane: WireGuard interface `wg0` and tyd's nftables table,
//! both over netlink, kept in step with the membership.

use crate::dataplane::{Dataplane, DataplaneError, Interface};
use crate::log::info;
use crate::membership::Overlay;
use crate::nftables::{Firewall, Params, Scope};
use crate::proto::Peer;
use crate::wireguard::WireGuard;

pub const INTERFACE: &str = "wg0";

/// Which ports a node's firewall opens besides WireGuard's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Head {
        join_port: u16,
    },
    /// A drone that found its head by beacon keeps listening for beacons,
    /// in case the head comes back elsewhere.
    Drone {
        beacon_port: Option<u16>,
    },
}

pub struct Kernel {
    role: Role,
    scope: Scope,
    wireguard: WireGuard,
    firewall: Firewall,
    interface: Option<Interface>,
    /// The firewall is loaded (before the join, or with the overlay).
    guarded: bool,
}

impl Kernel {
    /// Fails early, with the reason, when the kernel lacks WireGuard.
    pub fn open(role: Role, scope: Scope) -> Result<Self, DataplaneError> {
        Ok(Self {
            role,
            scope,
            wireguard: WireGuard::open(INTERFACE)?,
            firewall: Firewall::open()?,
            interface: None,
            guarded: false,
        })
    }

    fn params(&self, overlay: Option<Overlay>, wireguard_port: u16) -> Params {
        Params {
            scope: self.scope,
            overlay,
            interface: INTERFACE.into(),
            wireguard_port,
            join_port: match self.role {
                Role::Head { join_port } => Some(join_port),
                Role::Drone { .. } => None,
            },
            beacon_port: match self.role {
                Role::Head { .. } => None,
                Role::Drone { beacon_port } => beacon_port,
            },
        }
    }
}

impl Dataplane for Kernel {
    fn configure(&mut self, interface: &Interface) -> Result<(), DataplaneError> {
        // The firewall goes up first, so the overlay is never unguarded.
        let overlay = Overlay {
            network: std::net::Ipv4Addr::from(
                u32::from(interface.overlay) & (u32::MAX << (32 - interface.prefix_len)),
            ),
            prefix_len: interface.prefix_len,
        };
        self.firewall
            .apply(&self.params(Some(overlay), interface.listen_port))?;
        self.guarded = true;
        self.wireguard.create()?;
        self.wireguard
            .set_key(&interface.private_key, interface.listen_port)?;
        self.wireguard
            .address(interface.overlay, interface.prefix_len)?;
        info(format!(
            "{INTERFACE} up with {}/{}, firewall table inet {} loaded",
            interface.overlay,
            interface.prefix_len,
            crate::nftables::TABLE
        ));
        self.interface = Some(interface.clone());
        Ok(())
    }

    fn guard(&mut self, wireguard_port: u16) -> Result<(), DataplaneError> {
        self.firewall.apply(&self.params(None, wireguard_port))?;
        self.guarded = true;
        info(format!(
            "firewall table inet {} loaded: the LAN is closed but for WireGuard{}",
            crate::nftables::TABLE,
            match self.role {
                Role::Drone {
                    beacon_port: Some(port),
                } => format!(", the beacon (UDP {port})"),
                _ => String::new(),
            }
        ));
        Ok(())
    }

    fn replace_peers(&mut self, peers: &[Peer]) -> Result<(), DataplaneError> {
        Ok(self.wireguard.replace_peers(peers)?)
    }

    fn update_peers(&mut self, changed: &[Peer], gone: &[Peer]) -> Result<(), DataplaneError> {
        Ok(self.wireguard.update_peers(changed, gone)?)
    }

    fn teardown(&mut self) {
        if self.interface.take().is_some() {
            self.wireguard.delete();
        }
        if std::mem::take(&mut self.guarded) {
            if let Err(e) = self.firewall.remove() {
                info(e.to_string());
            }
        }
    }
}
