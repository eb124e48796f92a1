// SPDX-License-Identifier: GPL-3.0-or-later
//! The seam between the protocol and the kernel: what a node does with its
//! membership. The kernel implementation brings up WireGuard and the
//! firewall over netlink; the control-plane-only one does nothing, so the
//! scale bench runs the very same protocol code without root.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::membership::HEAD_ID;
use crate::nftables::FirewallError;
use crate::proto::Peer;
use crate::wireguard::WireGuardError;

/// Why the kernel's dataplane refused: the overlay interface or the
/// firewall, each naming what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(transparent)]
    WireGuard(#[from] WireGuardError),
    #[error(transparent)]
    Firewall(#[from] FirewallError),
}

/// This node's end of the overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub overlay: Ipv4Addr,
    pub prefix_len: u8,
    pub private_key: [u8; 32],
    pub listen_port: u16,
}

pub trait Dataplane {
    /// Loads the firewall of a node that has no overlay yet (a drone before
    /// its join), so its LAN is closed from the start.
    fn guard(&mut self, wireguard_port: u16) -> Result<(), DataplaneError>;
    /// Brings up (or re-addresses) the overlay and loads the firewall.
    fn configure(&mut self, interface: &Interface) -> Result<(), DataplaneError>;
    /// Makes `peers` the whole mesh.
    fn replace_peers(&mut self, peers: &[Peer]) -> Result<(), DataplaneError>;
    /// Adds or updates `changed` and drops `gone`.
    fn update_peers(&mut self, changed: &[Peer], gone: &[Peer]) -> Result<(), DataplaneError>;
    /// Removes the overlay and the firewall table; best effort, on exit.
    fn teardown(&mut self);
}

/// Control-plane-only mode: membership without WireGuard or nftables.
#[derive(Debug, Default)]
pub struct ControlPlaneOnly;

impl Dataplane for ControlPlaneOnly {
    fn guard(&mut self, _: u16) -> Result<(), DataplaneError> {
        Ok(())
    }

    fn configure(&mut self, _: &Interface) -> Result<(), DataplaneError> {
        Ok(())
    }

    fn replace_peers(&mut self, _: &[Peer]) -> Result<(), DataplaneError> {
        Ok(())
    }

    fn update_peers(&mut self, _: &[Peer], _: &[Peer]) -> Result<(), DataplaneError> {
        Ok(())
    }

    fn teardown(&mut self) {}
}

/// The peers a node has put into its dataplane, by node id, so that a
/// removal by id finds the key to remove and unchanged peers are not
/// rewritten.
#[derive(Debug, Default)]
pub struct Mesh {
    peers: BTreeMap<u32, Peer>,
    own: u32,
}

impl Mesh {
    /// Starts over from a full member list; `own` (this node) is left out.
    pub fn replace(
        &mut self,
        dataplane: &mut dyn Dataplane,
        own: u32,
        members: Vec<Peer>,
    ) -> Result<(), DataplaneError> {
        self.own = own;
        self.peers = members
            .into_iter()
            .filter(|p| p.id != own)
            .map(|p| (p.id, p))
            .collect();
        let all: Vec<Peer> = self.peers.values().cloned().collect();
        dataplane.replace_peers(&all)
    }

    /// Takes the members a welcome names. From the head incarnation this
    /// mesh came from (the same head WireGuard key, made afresh at every
    /// head start, and the same id for this node) they are merged in: the
    /// pushes after a welcome replay that head's whole change log, which
    /// drops whoever left meanwhile, so a session that moves or reconnects
    /// keeps its peers up. From any other head the mesh starts over.
    pub fn welcome(
        &mut self,
        dataplane: &mut dyn Dataplane,
        own: u32,
        members: Vec<Peer>,
    ) -> Result<(), DataplaneError> {
        let known = self.peers.get(&HEAD_ID).map(|p| p.wireguard_key);
        let welcoming = members
            .iter()
            .find(|p| p.id == HEAD_ID)
            .map(|p| p.wireguard_key);
        if known.is_some() && known == welcoming && own == self.own {
            self.update(dataplane, members, &[])
        } else {
            self.replace(dataplane, own, members)
        }
    }

    pub fn update(
        &mut self,
        dataplane: &mut dyn Dataplane,
        changed: Vec<Peer>,
        gone: &[u32],
    ) -> Result<(), DataplaneError> {
        let changed: Vec<Peer> = changed
            .into_iter()
            .filter(|p| p.id != self.own && self.peers.get(&p.id) != Some(p))
            .collect();
        let gone: Vec<Peer> = gone.iter().filter_map(|id| self.peers.remove(id)).collect();
        for peer in &changed {
            self.peers.insert(peer.id, peer.clone());
        }
        if changed.is_empty() && gone.is_empty() {
            return Ok(());
        }
        dataplane.update_peers(&changed, &gone)
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Every peer but this node.
    pub fn peers(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what the mesh asked of the dataplane.
    #[derive(Default)]
    struct Recorder {
        calls: Vec<String>,
    }

    impl Dataplane for Recorder {
        fn guard(&mut self, _: u16) -> Result<(), DataplaneError> {
            Ok(())
        }
        fn configure(&mut self, _: &Interface) -> Result<(), DataplaneError> {
            Ok(())
        }
        fn replace_peers(&mut self, peers: &[Peer]) -> Result<(), DataplaneError> {
            let ids: Vec<u32> = peers.iter().map(|p| p.id).collect();
            self.calls.push(format!("replace {ids:?}"));
            Ok(())
        }
        fn update_peers(&mut self, changed: &[Peer], gone: &[Peer]) -> Result<(), DataplaneError> {
            let changed: Vec<u32> = changed.iter().map(|p| p.id).collect();
            let gone: Vec<u32> = gone.iter().map(|p| p.id).collect();
            self.calls.push(format!("update {changed:?} gone {gone:?}"));
            Ok(())
        }
        fn teardown(&mut self) {}
    }

    fn peer(id: u32, port: u16) -> Peer {
        Peer {
            id,
            hostname: String::new(),
            wireguard_key: [id as u8; 32],
            overlay: Ipv4Addr::new(10, 99, 0, id as u8),
            endpoint: Some(std::net::SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)),
        }
    }

    #[test]
    fn only_real_changes_reach_the_dataplane_and_self_is_left_out() {
        let mut mesh = Mesh::default();
        let mut dp = Recorder::default();
        mesh.replace(&mut dp, 2, vec![peer(1, 1), peer(2, 1), peer(3, 1)])
            .unwrap();
        mesh.update(&mut dp, vec![peer(3, 1), peer(2, 9)], &[])
            .unwrap();
        mesh.update(&mut dp, vec![peer(3, 2), peer(4, 1)], &[1, 7])
            .unwrap();
        assert_eq!(dp.calls, ["replace [1, 3]", "update [3, 4] gone [1]"],);
        assert_eq!(mesh.len(), 2);
    }

    #[test]
    fn a_welcome_from_the_same_head_keeps_the_mesh_and_another_head_replaces_it() {
        let mut mesh = Mesh::default();
        let mut dp = Recorder::default();
        mesh.welcome(&mut dp, 2, vec![peer(1, 1), peer(2, 1)])
            .unwrap();
        mesh.update(&mut dp, vec![peer(3, 1), peer(4, 1)], &[])
            .unwrap();
        // A new session with the same head: nothing is rewritten.
        mesh.welcome(&mut dp, 2, vec![peer(1, 1), peer(2, 1)])
            .unwrap();
        assert_eq!(mesh.len(), 3);
        // A restarted head has a new WireGuard key, and its own ids.
        let mut restarted = peer(1, 1);
        restarted.wireguard_key = [9; 32];
        mesh.welcome(&mut dp, 2, vec![restarted, peer(2, 1)])
            .unwrap();
        assert_eq!(
            dp.calls,
            ["replace [1]", "update [3, 4] gone []", "replace [1]"]
        );
    }
}
