//! chaos PID 1 as a library: every concern of the node's init in a module of its
//! own, so the logic is unit-tested on the host and the binary in `main.rs` only
//! strings the boot phases together.

pub mod cmdline;
