//! fix_hosts, the CHAOS HowTo's command for a node configured by hand at
//! its console: after `ifconfig` and `route`, it names the node and makes
//! name lookup work from the addresses the operator set, through the same
//! code as the boot's hosts phase ([`crate::hosts`]). The image links it to
//! init, which runs it when started under this name.

use anyhow::Context;
use argh::FromArgs;

use crate::hosts::{self, Identity};
use crate::sys::Linux;
use chaos_contract::addresses::Addresses;

/// The command's name, as the image links it.
pub const NAME: &str = "fix_hosts";

#[derive(FromArgs)]
/// Name this node after its network configuration, as init's hosts phase
/// does at boot: the host name (the kernel's, else node-<mac>) with the LAN
/// address (on the NIC of the default route, else the first NIC's) into
/// /etc/hostname and /etc/hosts, and the current name servers and search
/// domain into /etc/resolv.conf. Run it after configuring the network by
/// hand, e.g. `ifconfig eth0 192.168.1.21` and
/// `route add -net 0.0.0.0 gw 192.168.1.1`.
#[argh(
    note = "The files live in /run/chaos (the /etc names link there), so the root stays as built."
)]
struct Args {}

/// The command: reads the arguments (only `--help`), fixes the hosts,
/// says what it wrote; the exit status.
pub fn run() -> i32 {
    let _: Args = argh::from_env();
    match fix() {
        Ok(id) => {
            let address = id.address.map_or_else(
                || "no LAN address yet (ifconfig one first)".to_string(),
                |a| a.to_string(),
            );
            println!(
                "fix_hosts: {} at {address}; wrote /etc/hostname, /etc/hosts, /etc/resolv.conf",
                id.hostname
            );
            0
        }
        Err(e) => {
            eprintln!("fix_hosts: {e:#}");
            1
        }
    }
}

fn fix() -> anyhow::Result<Identity> {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let addresses = Addresses::read().context("reading the network interfaces' addresses")?;
    let id = Identity::configured(
        &addresses,
        &read("/proc/sys/kernel/hostname"),
        &read("/proc/sys/kernel/domainname"),
        &read("/etc/resolv.conf"),
    );
    hosts::apply(&Linux, &id)?;
    Ok(id)
}
