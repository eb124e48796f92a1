// SPDX-License-Identifier: GPL-3.0-or-later
//! tyd, the cluster agent: cluster identity, the Noise join protocol (its
//! messages are defined in [`proto`] and nowhere else), membership,
//! WireGuard and nftables over netlink, and the status verbs.

pub mod beacon;
pub mod bench;
pub mod channel;
pub mod codec;
pub mod control;
pub mod dataplane;
pub mod drone;
pub mod files;
pub mod flood;
pub mod head;
pub mod kernel;
pub mod keys;
pub mod log;
pub mod member;
pub mod membership;
pub mod nftables;
pub mod proto;
pub mod screen;
pub mod segment;
pub mod shares;
pub mod slurm;
pub mod sysinfo;
pub mod tcp;
pub mod wireguard;
pub mod workload;
