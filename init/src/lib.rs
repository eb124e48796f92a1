//! chaos PID 1 as a library: every concern of the node's init in a module of its
//! own, so the logic is unit-tested on the host and the binary in `main.rs` only
//! strings the boot phases together.

pub mod certainty;
pub mod coldplug;
pub mod dhcp;
pub mod fix_hosts;
pub mod hosts;
pub mod lifecycle;
pub mod liveness;
pub mod log;
pub mod modules;
pub mod mount;
pub mod net;
pub mod power;
pub mod signals;
pub mod supervise;
pub mod sys;
pub mod watchdog;

/// Whether this process was started as `name` (by the name of the link it
/// was run through): the image links some commands to init.
pub fn invoked_as(name: &str) -> bool {
    std::env::args_os()
        .next()
        .as_deref()
        .map(std::path::Path::new)
        .and_then(std::path::Path::file_name)
        .is_some_and(|invoked| invoked == name)
}
