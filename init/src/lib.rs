//! chaos PID 1 as a library: every concern of the node's init in a module of its
//! own, so the logic is unit-tested on the host and the binary in `main.rs` only
//! strings the boot phases together.

pub mod certainty;
pub mod cmdline;
pub mod coldplug;
pub mod dhcp;
pub mod hosts;
pub mod lifecycle;
pub mod liveness;
pub mod log;
pub mod modules;
pub mod mount;
pub mod net;
pub mod power;
pub mod service;
pub mod signals;
pub mod supervise;
pub mod sys;
pub mod watchdog;
