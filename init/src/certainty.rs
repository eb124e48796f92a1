//! certaintyd as a library: the RAM root's integrity watchdog.
//!
//! The image's manifest (mkimage's [`mkimage::manifest`], the one definition
//! of the format) is the baseline. [`verify`] walks a root directory and
//! names every difference from it ([`Change`]); [`Daemon`] applies the
//! `chaos.watchdog=` policy on a schedule, honouring maintenance windows
//! ([`pause`]) and asking PID 1 to reboot or power off; [`command`] only
//! wires these to the real system.
//!
//! This module owns the verification and the decision to respond. It never
//! writes to the root it verifies, never reboots the machine itself (PID 1
//! does, so services stop in order and the node leaves the cluster first),
//! and never treats a difference as acceptable: a maintenance window
//! suspends checking, it does not bless what changed during it.

mod change;
pub mod command;
mod daemon;
#[cfg(test)]
mod fixture;
pub mod pause;
mod verify;

pub use change::{Change, Difference};
pub use daemon::{ask_signal, Config, Daemon, Linux, Node, MAX_LISTED};
pub use verify::{verify, Baseline, BaselineError, Report, VerifyError};

/// The mounts that are not part of the root: the kernel's API filesystems and
/// the writable tmpfs mounts. A path here is skipped only while something is
/// mounted on it; unmounted, it is plain root directory and verified like the
/// rest, because a write there lands in the RAM root. Any other mount inside
/// the root is a violation.
pub const WRITABLE_MOUNTS: &[&str] = &[
    "/dev", "/home", "/proc", "/root", "/run", "/srv", "/sys", "/tmp", "/var",
];

#[cfg(target_arch = "x86_64")]
cpufeatures::new!(sha_ni, "sha", "sse2", "ssse3", "sse4.1");

/// Which SHA-256 implementation the `sha2` crate picks on this CPU: it
/// detects SHA-NI at run time with the same feature list, so this names
/// what actually runs (QEMU's default CPU models lack SHA-NI; `-cpu max`
/// or a host CPU with it has it).
pub fn sha256_backend() -> &'static str {
    if cfg!(feature = "soft-sha") {
        return "portable code (soft-sha build)";
    }
    #[cfg(target_arch = "x86_64")]
    if sha_ni::get() {
        return "SHA-NI";
    }
    "software"
}
