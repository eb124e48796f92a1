//! The contracts between chaos's crates, each defined once: what init,
//! tyd, certaintyd, mkimage and xtask must agree on. It depends on nothing
//! of theirs (no DHCP, no netlink, no image writing), so every crate can
//! use it, and it does no I/O beyond what a contract itself is about.
//!
//! - [`accounts`]: passwd and group files, and how a cluster shares them;
//! - [`addresses`]: the node's addresses as the kernel holds them, and
//!   which of them is its LAN address;
//! - [`cmdline`]: the kernel command line (`ip=`, `chaos.*`), one parser;
//! - [`duration`]: how a duration is typed and shown;
//! - [`paths`]: the well-known paths of a node;
//! - [`power`]: how a program asks PID 1 to power off or reboot;
//! - [`service`]: the service-file format and the start order;
//! - [`fact`]: the facts a node reports on its console for programs to read;
//! - [`member`]: what tyd writes for the services of a member node;
//! - [`share`]: which of the head's directories members mount, and where.

pub mod accounts;
pub mod addresses;
pub mod cmdline;
pub mod duration;
pub mod fact;
pub mod member;
pub mod paths;
pub mod power;
pub mod service;
pub mod share;
