// SPDX-License-Identifier: GPL-3.0-or-later
//! A private Ethernet segment of network namespaces, for the namespace
//! tests and the bench (root only): a bridge in a namespace of its own and
//! one namespace per node plugged into it by a veth pair, on
//! 192.168.77.0/24. Traffic stays inside; everything is deleted on drop,
//! also when a run fails half-way.

use std::io;
use std::process::Command;

/// The segment's network; node `host` is 192.168.77.`host`.
pub const NETWORK: [u8; 3] = [192, 168, 77];

/// Why a namespace, bridge or veth could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("running ip (iproute2): {0}")]
    Spawn(io::Error),
    /// `ip` ran and refused: the command and what it said.
    #[error("ip {command}: {stderr}")]
    Refused { command: String, stderr: String },
}

pub struct Segment {
    name: String,
    lan: String,
    /// Every namespace made, the bridge's first.
    namespaces: Vec<String>,
}

fn ip(args: &[&str]) -> Result<(), SegmentError> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(SegmentError::Spawn)?;
    if !output.status.success() {
        return Err(SegmentError::Refused {
            command: args.join(" "),
            stderr: String::from_utf8_lossy(&output.stderr).trim().into(),
        });
    }
    Ok(())
}

impl Segment {
    /// A segment whose namespaces are named after `name`, which must be
    /// unique on this host (the caller's pid is a good part of it).
    pub fn new(name: &str) -> Result<Self, SegmentError> {
        let lan = format!("{name}-lan");
        ip(&["netns", "add", &lan])?;
        let segment = Self {
            name: name.into(),
            lan: lan.clone(),
            namespaces: vec![lan.clone()],
        };
        ip(&["-n", &lan, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &lan, "link", "set", "br0", "up"])?;
        Ok(segment)
    }

    /// A node namespace with `eth0` at 192.168.77.`host`/24; its name.
    pub fn node(&mut self, host: u8) -> Result<String, SegmentError> {
        let ns = format!("{}-n{host}", self.name);
        ip(&["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        let outside = format!("v{host}");
        let lan = self.lan.as_str();
        ip(&[
            "-n", lan, "link", "add", &outside, "type", "veth", "peer", "name", "eth0", "netns",
            &ns,
        ])?;
        ip(&["-n", lan, "link", "set", &outside, "master", "br0", "up"])?;
        let [a, b, c] = NETWORK;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{a}.{b}.{c}.{host}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}
