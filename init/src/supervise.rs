//! Supervision of the service table: starting services in order, logging
//! their output, deciding after each exit whether and when to restart
//! (exponential backoff, crash-loop limit) and stopping them in reverse order.
//!
//! It never reaps: PID 1's signal loop reaps every child and hands the exits
//! of services back through [`Supervisor::exited`], so an exit is seen once.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, SigSet, Signal};
use nix::unistd::Pid;

use crate::liveness::Running;
use crate::log::{self, Level};
use crate::service::{Restart, Service};
use crate::{info, warn};

/// How restarts back off. A run that lasted `stable_after` clears the count,
/// so a service that crashes once a day is not given up on.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
    pub limit: u32,
    pub stable_after: Duration,
}

pub const BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(250),
    max: Duration::from_secs(30),
    limit: 5,
    stable_after: Duration::from_secs(10),
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Start again after `delay`; this is restart number `attempt`.
    Restart { delay: Duration, attempt: u32 },
    /// The crash-loop limit is reached.
    GiveUp { restarts: u32 },
    /// The policy says not to restart (`never`, or `on-failure` after success).
    Finished,
}

impl Backoff {
    /// Decides after an exit; `restarts` counts the restarts since the
    /// service last ran stably and is updated here.
    pub fn decide(
        &self,
        policy: Restart,
        success: bool,
        ran_for: Duration,
        restarts: &mut u32,
    ) -> Decision {
        if policy == Restart::Never || (policy == Restart::OnFailure && success) {
            return Decision::Finished;
        }
        if ran_for >= self.stable_after {
            *restarts = 0;
        }
        if *restarts >= self.limit {
            return Decision::GiveUp {
                restarts: *restarts,
            };
        }
        let delay = self
            .first
            .saturating_mul(1 << (*restarts).min(16))
            .min(self.max);
        *restarts += 1;
        Decision::Restart {
            delay,
            attempt: *restarts,
        }
    }
}

#[derive(Debug)]
enum State {
    /// Waiting to be started at the given time.
    Due(Instant),
    Running {
        pid: Pid,
        since: Instant,
    },
    /// Done for good: finished, given up on or stopped.
    Down,
}

#[derive(Debug)]
struct Supervised {
    service: Service,
    state: State,
    restarts: u32,
}

/// A service's combined stdout and stderr, forwarded line by line to the log.
#[derive(Debug)]
pub struct Output {
    service: String,
    pipe: File,
    partial: Vec<u8>,
}

/// Longest line kept whole; a longer one is logged in pieces so a runaway
/// service cannot grow PID 1's memory.
const MAX_LINE: usize = 4096;

impl Output {
    pub fn fd(&self) -> RawFd {
        self.pipe.as_raw_fd()
    }

    /// Reads what is there and logs complete lines; false at end of file.
    pub fn drain(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            match self.pipe.read(&mut buf) {
                Ok(0) => {
                    self.flush(true);
                    return false;
                }
                Ok(n) => {
                    self.partial.extend_from_slice(&buf[..n]);
                    self.flush(false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return true,
            }
        }
    }

    fn flush(&mut self, all: bool) {
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            self.emit(&line[..end]);
        }
        if all || self.partial.len() >= MAX_LINE {
            let rest = std::mem::take(&mut self.partial);
            if !rest.is_empty() {
                self.emit(&rest);
            }
        }
    }

    fn emit(&self, line: &[u8]) {
        log::write_as(
            Some(&self.service),
            Level::Info,
            format_args!("{}", String::from_utf8_lossy(line)),
        );
    }
}

#[derive(Debug)]
pub struct Supervisor {
    backoff: Backoff,
    /// In start order.
    services: Vec<Supervised>,
    outputs: BTreeMap<RawFd, Output>,
}

impl Supervisor {
    /// Takes services in start order (see [`crate::service::start_order`]);
    /// all are due at once and start on the first [`Supervisor::start_due`].
    pub fn new(services: Vec<Service>, backoff: Backoff) -> Self {
        let now = Instant::now();
        Supervisor {
            backoff,
            services: services
                .into_iter()
                .map(|service| Supervised {
                    service,
                    state: State::Due(now),
                    restarts: 0,
                })
                .collect(),
            outputs: BTreeMap::new(),
        }
    }

    /// Starts every service whose time has come, in table order. A service
    /// waits while one it starts after has never been started yet.
    pub fn start_due(&mut self, now: Instant) {
        for i in 0..self.services.len() {
            let due = matches!(self.services[i].state, State::Due(at) if at <= now);
            let blocked = self.services[i].service.after.iter().any(|dep| {
                self.services
                    .iter()
                    .any(|s| &s.service.name == dep && matches!(s.state, State::Due(_)))
            });
            if due && !blocked {
                self.start(i, now);
            }
        }
    }

    fn start(&mut self, i: usize, now: Instant) {
        let entry = &mut self.services[i];
        match spawn(&entry.service) {
            Ok((pid, output)) => {
                info!("started service {} (pid {pid})", entry.service.name);
                entry.state = State::Running { pid, since: now };
                self.outputs.insert(output.fd(), output);
            }
            Err(e) => {
                warn!(
                    "service {}: cannot start {}: {e}",
                    entry.service.name,
                    entry.service.exec.display()
                );
                // A program that cannot even start counts as a crash at once.
                entry.state = State::Running {
                    pid: Pid::from_raw(0),
                    since: now,
                };
                self.settle(i, false, now, "failed to start".to_string());
            }
        }
    }

    /// Called by the reaper for every child; false when `pid` is not a
    /// service (an orphan that was reparented to PID 1).
    pub fn exited(&mut self, pid: Pid, status: &str, success: bool, now: Instant) -> bool {
        let Some(i) = self
            .services
            .iter()
            .position(|s| matches!(s.state, State::Running { pid: p, .. } if p == pid))
        else {
            return false;
        };
        self.settle(i, success, now, status.to_string());
        true
    }

    fn settle(&mut self, i: usize, success: bool, now: Instant, status: String) {
        let entry = &mut self.services[i];
        let State::Running { since, .. } = entry.state else {
            return;
        };
        let ran_for = now.saturating_duration_since(since);
        let name = &entry.service.name;
        match self
            .backoff
            .decide(entry.service.restart, success, ran_for, &mut entry.restarts)
        {
            Decision::Finished => {
                info!("service {name} {status} after {} ms", ran_for.as_millis());
                entry.state = State::Down;
            }
            Decision::Restart { delay, attempt } => {
                warn!(
                    "service {name} {status} after {} ms; restart {attempt}/{} in {} ms",
                    ran_for.as_millis(),
                    self.backoff.limit,
                    delay.as_millis()
                );
                entry.state = State::Due(now + delay);
            }
            Decision::GiveUp { restarts } => {
                crate::error!(
                    "service {name} {status}; giving up after {restarts} restarts (crash loop)"
                );
                entry.state = State::Down;
            }
        }
    }

    /// When the next start is due, for the main loop's poll timeout.
    pub fn next_due(&self) -> Option<Instant> {
        self.services
            .iter()
            .filter_map(|s| match s.state {
                State::Due(at) => Some(at),
                _ => None,
            })
            .min()
    }

    pub fn output_fds(&self) -> Vec<RawFd> {
        self.outputs.keys().copied().collect()
    }

    /// Forwards what a service wrote; forgets the pipe at end of file.
    pub fn drain_output(&mut self, fd: RawFd) {
        if let Some(output) = self.outputs.get_mut(&fd) {
            if !output.drain() {
                self.outputs.remove(&fd);
            }
        }
    }

    /// Services still running, last started first: the order to stop them in.
    pub fn running_in_stop_order(&self) -> Vec<(String, Pid)> {
        self.services
            .iter()
            .rev()
            .filter_map(|s| match s.state {
                State::Running { pid, .. } if pid.as_raw() > 0 => {
                    Some((s.service.name.clone(), pid))
                }
                _ => None,
            })
            .collect()
    }

    /// Nothing is restarted any more: shutdown has begun.
    pub fn hold_all(&mut self) {
        for s in &mut self.services {
            if matches!(s.state, State::Due(_)) {
                s.state = State::Down;
            }
            s.service.restart = Restart::Never;
        }
    }

    /// Where `name` stands, for PID 1's liveness check.
    pub fn running(&self, name: &str) -> Running {
        match self.services.iter().find(|s| s.service.name == name) {
            Some(Supervised {
                state: State::Running { since, .. },
                ..
            }) => Running::Since(*since),
            Some(Supervised {
                state: State::Due(_),
                ..
            }) => Running::Restarting,
            _ => Running::Down,
        }
    }

    /// Signals a running service's process group; its exit is then handled
    /// like any other (a restart, with backoff).
    pub fn signal(&self, name: &str, signal: Signal) {
        for s in &self.services {
            if let State::Running { pid, .. } = s.state {
                if s.service.name == name && pid.as_raw() > 0 {
                    signal_group(pid, signal);
                }
            }
        }
    }

    pub fn is_running(&self, name: &str) -> bool {
        self.services
            .iter()
            .any(|s| s.service.name == name && matches!(s.state, State::Running { .. }))
    }
}

/// Sends `signal` to a service's whole process group (each service leads
/// its own session, so its children go with it).
pub fn signal_group(pid: Pid, signal: Signal) {
    let _ = killpg(pid, signal);
}

fn spawn(service: &Service) -> io::Result<(Pid, Output)> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    nix::fcntl::fcntl(
        read.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )?;
    let mut command = Command::new(&service.exec);
    command
        .args(&service.args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", "/")
        .envs(service.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(write.try_clone()?)
        .stderr(write);
    // SAFETY: between fork and exec the closure only makes two
    // async-signal-safe system calls and allocates nothing.
    unsafe {
        command.pre_exec(|| {
            // PID 1 blocks the signals it reads through signalfd; a service
            // must start with none blocked or it could not be stopped.
            SigSet::empty().thread_set_mask().map_err(io::Error::from)?;
            nix::unistd::setsid().map_err(io::Error::from)?;
            Ok(())
        });
    }
    let child = command.spawn()?;
    // The Child handle is dropped without waiting: PID 1's reaper collects
    // the exit status along with every other child's.
    let pid = Pid::from_raw(child.id() as i32);
    let output = Output {
        service: service.name.clone(),
        pipe: File::from(read),
        partial: Vec::new(),
    };
    Ok((pid, output))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn backoff_doubles_then_gives_up() {
        let mut restarts = 0;
        let mut delays = Vec::new();
        loop {
            match BACKOFF.decide(Restart::Always, false, ms(10), &mut restarts) {
                Decision::Restart { delay, attempt } => {
                    assert_eq!(attempt as usize, delays.len() + 1);
                    delays.push(delay.as_millis());
                }
                Decision::GiveUp { restarts } => {
                    assert_eq!(restarts, BACKOFF.limit);
                    break;
                }
                Decision::Finished => panic!("an always service finished"),
            }
        }
        assert_eq!(delays, [250, 500, 1000, 2000, 4000]);
    }

    #[test]
    fn backoff_is_capped() {
        let backoff = Backoff {
            limit: 40,
            ..BACKOFF
        };
        let mut restarts = 30;
        assert_eq!(
            backoff.decide(Restart::Always, false, ms(1), &mut restarts),
            Decision::Restart {
                delay: BACKOFF.max,
                attempt: 31
            }
        );
    }

    #[test]
    fn a_stable_run_clears_the_count() {
        let mut restarts = BACKOFF.limit;
        let decision = BACKOFF.decide(Restart::Always, false, BACKOFF.stable_after, &mut restarts);
        assert_eq!(
            decision,
            Decision::Restart {
                delay: BACKOFF.first,
                attempt: 1
            }
        );
    }

    #[test]
    fn policies() {
        let table = [
            (Restart::Never, false, Decision::Finished),
            (Restart::Never, true, Decision::Finished),
            (Restart::OnFailure, true, Decision::Finished),
            (
                Restart::OnFailure,
                false,
                Decision::Restart {
                    delay: BACKOFF.first,
                    attempt: 1,
                },
            ),
            (
                Restart::Always,
                true,
                Decision::Restart {
                    delay: BACKOFF.first,
                    attempt: 1,
                },
            ),
        ];
        for (policy, success, expected) in table {
            let mut restarts = 0;
            assert_eq!(
                BACKOFF.decide(policy, success, ms(5), &mut restarts),
                expected,
                "{policy:?} success={success}"
            );
        }
    }
}
