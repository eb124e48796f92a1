// SPDX-License-Identifier: GPL-3.0-or-later
//! A private Ethernet segment of network namespaces, for the namespace
//! tests and the bench (root only): a bridge in a namespace of its own and
//! one namespace per node plugged into it by a veth pair, on
//! 192.168.77.0/24. Traffic stays inside; everything is deleted on drop,
//! also when a run fails half-way.

use std::process::Command;

use anyhow::{bail, Context};

/// The segment's network; node `host` is 192.168.77.`host`.
pub const NETWORK: [u8; 3] = [192, 168, 77];

pub struct Segment {
    name: String,
    lan: String,
    /// Every namespace made, the bridge's first.
    namespaces: Vec<String>,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !output.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

impl Segment {
    /// A segment whose namespaces are named after `name`, which must be
    /// unique on this host (the caller's pid is a good part of it).
    pub fn new(name: &str) -> anyhow::Result<Self> {
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
    pub fn node(&mut self, host: u8) -> anyhow::Result<String> {
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
