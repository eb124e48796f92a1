//! PID 1's signals and children. The handled signals are blocked and read
//! from a signalfd in the main loop (no async handlers); every child,
//! service or orphan, is reaped here by draining `waitpid(-1, WNOHANG)`.
//! SIGCHLD is never forwarded, and synchronous fault signals (SIGSEGV,
//! SIGBUS, ...) stay unblocked so a real fault is not silently spun on.

use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

pub use chaos_contract::power::Power;

/// The request a signal makes of PID 1 ([`chaos_contract::power::REQUESTS`]).
pub fn request_for(signal: Signal) -> Option<Power> {
    chaos_contract::power::request_for(signal as libc::c_int)
}

#[derive(Debug)]
pub struct Signals {
    fd: SignalFd,
}

impl Signals {
    /// Blocks SIGCHLD and the request signals and opens the signalfd that
    /// receives them; Ctrl-Alt-Del then arrives as SIGINT instead of an
    /// immediate hard reboot.
    pub fn take_over() -> nix::Result<Self> {
        let mut set = SigSet::empty();
        set.add(Signal::SIGCHLD);
        for (number, _) in chaos_contract::power::REQUESTS {
            set.add(Signal::try_from(*number)?);
        }
        set.thread_block()?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        // Not fatal: off PID 1 or in a container the call is refused.
        let _ = nix::sys::reboot::set_cad_enabled(false);
        Ok(Signals { fd })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Every signal waiting on the fd.
    pub fn pending(&mut self) -> Vec<Signal> {
        let mut signals = Vec::new();
        while let Ok(Some(info)) = self.fd.read_signal() {
            if let Ok(signal) = Signal::try_from(info.ssi_signo as i32) {
                signals.push(signal);
            }
        }
        signals
    }
}

/// A reaped child: its pid, a description of how it ended and whether that
/// was a clean exit.
#[derive(Debug, PartialEq, Eq)]
pub struct Exit {
    pub pid: Pid,
    pub status: String,
    pub success: bool,
}

/// Reaps every child that has ended, without blocking.
pub fn reap() -> Vec<Exit> {
    let mut exits = Vec::new();
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => exits.push(Exit {
                pid,
                status: format!("exited with status {code}"),
                success: code == 0,
            }),
            Ok(WaitStatus::Signaled(pid, signal, _)) => exits.push(Exit {
                pid,
                status: format!("killed by {signal}"),
                success: false,
            }),
            Ok(WaitStatus::StillAlive) | Err(_) => return exits,
            // Stops and continues are not ends; keep draining.
            Ok(_) => continue,
        }
    }
}

/// Waits until one of `fds` is readable or `deadline` passes; returns the
/// readable ones. An interrupted wait returns none, which callers treat like
/// a timeout and simply loop.
pub fn wait_readable(fds: &[RawFd], deadline: Option<Instant>) -> Vec<RawFd> {
    let mut polls: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let timeout = deadline.map_or(-1, |d| {
        let left = d.saturating_duration_since(Instant::now());
        // Round up so a deadline a fraction of a millisecond away is not a busy loop.
        (left + Duration::from_micros(999))
            .as_millis()
            .min(i32::MAX as u128) as i32
    });
    // SAFETY: the pointer and length describe the live `polls` vector.
    let n = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, timeout) };
    if n <= 0 {
        return Vec::new();
    }
    polls
        .iter()
        .filter(|p| p.revents != 0)
        .map(|p| p.fd)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_read_from_nix_signals() {
        assert_eq!(request_for(Signal::SIGUSR2), Some(Power::Off));
        assert_eq!(request_for(Signal::SIGINT), Some(Power::Reboot));
        assert_eq!(request_for(Signal::SIGCHLD), None);
    }

    #[test]
    fn wait_readable_times_out_and_sees_data() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let fd = r.as_raw_fd();
        let soon = Instant::now() + Duration::from_millis(20);
        assert!(wait_readable(&[fd], Some(soon)).is_empty());
        nix::unistd::write(&w, b"x").unwrap();
        assert_eq!(wait_readable(&[fd], None), [fd]);
    }
}
