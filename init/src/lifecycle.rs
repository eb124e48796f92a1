//! PID 1 after boot: the supervision loop and the orderly end. One loop
//! waits on the signalfd, the services' output pipes and the power buttons;
//! the shutdown sequence reuses it to wait for services to stop, so output
//! and exits keep being handled while the node goes down. Every turn of the
//! loop pets the hardware watchdog when a pet is due, so a PID 1 stuck
//! anywhere gets the node reset.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::reboot::RebootMode;
use nix::sys::signal::Signal;

use crate::liveness::{self, Liveness, Verdict, MAX_STRIKES};
use crate::power::PowerButtons;
use crate::signals::{self, Power, Signals};
use crate::supervise::{signal_group, Supervisor};
use crate::watchdog::Watchdog;
use crate::{error, info, warn};
use chaos_contract::cmdline::WatchdogAction;

/// How long a service gets between SIGTERM and SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long leftover processes get between SIGTERM and SIGKILL.
const STRAGGLER_TIMEOUT: Duration = Duration::from_secs(2);
/// How often PID 1 reads the watched service's heartbeat.
const LIVENESS_EVERY: Duration = Duration::from_secs(1);

/// A service PID 1 expects a heartbeat from (certaintyd), and what to do
/// when it fails for good: the `chaos.watchdog=` policy.
#[derive(Debug)]
pub struct Watched {
    pub service: String,
    pub status_file: PathBuf,
    pub liveness: Liveness,
    pub policy: WatchdogAction,
    next_check: Instant,
}

impl Watched {
    pub fn new(
        service: &str,
        status_file: PathBuf,
        interval: Duration,
        policy: WatchdogAction,
    ) -> Self {
        Watched {
            service: service.to_string(),
            status_file,
            liveness: Liveness::new(interval),
            policy,
            next_check: Instant::now(),
        }
    }
}

#[derive(Debug)]
pub struct Pid1 {
    pub supervisor: Supervisor,
    pub signals: Signals,
    pub buttons: PowerButtons,
    pub watchdog: Option<Watchdog>,
    pub watched: Option<Watched>,
    /// The read end of a pipe that init's module loader closes once the
    /// image's module list is in: then the watchdog is armed (softdog may
    /// have been among them).
    pub modules_pending: Option<OwnedFd>,
}

impl Pid1 {
    /// Supervises until a power request arrives; returns it with its cause.
    pub fn supervise(&mut self) -> (Power, String) {
        loop {
            let now = Instant::now();
            self.supervisor
                .start_due(now, &|path| std::fs::read_to_string(path).ok());
            if let Some(request) = self.check_liveness(now) {
                return request;
            }
            let deadline = [
                self.supervisor.next_due(now),
                self.watched.as_ref().map(|w| w.next_check),
            ]
            .into_iter()
            .flatten()
            .min();
            if let Some(request) = self.turn(deadline) {
                return request;
            }
        }
    }

    /// Reads the watched service's heartbeat when a check is due; a silent
    /// service is killed (and so restarted), a failed one answered with the
    /// policy.
    fn check_liveness(&mut self, now: Instant) -> Option<(Power, String)> {
        let watched = self.watched.as_mut()?;
        if now < watched.next_check {
            return None;
        }
        watched.next_check = now + LIVENESS_EVERY;
        let status = std::fs::read_to_string(&watched.status_file).ok();
        let running = self.supervisor.running(&watched.service);
        let name = &watched.service;
        match watched
            .liveness
            .check(now, running, status.as_deref().and_then(liveness::beat))
        {
            Verdict::Alive => None,
            Verdict::Silent { silent, strike } => {
                error!(
                    "{name} has not reported for {} s; killing it to restart it                      (silence {strike} of {MAX_STRIKES})",
                    silent.as_secs()
                );
                self.supervisor.signal(name, Signal::SIGKILL);
                None
            }
            Verdict::Failed(why) => {
                error!("the integrity watchdog failed: {why}");
                match watched.policy {
                    WatchdogAction::Reboot => Some((Power::Reboot, why)),
                    WatchdogAction::Poweroff => Some((Power::Off, why)),
                    WatchdogAction::Log | WatchdogAction::Off => {
                        error!("chaos.watchdog=log: running on without integrity checks");
                        None
                    }
                }
            }
        }
    }

    /// Waits once for anything to happen (or `deadline`) and handles it.
    fn turn(&mut self, deadline: Option<Instant>) -> Option<(Power, String)> {
        let deadline = match &mut self.watchdog {
            Some(watchdog) => {
                watchdog.pet_if_due(Instant::now());
                Some(deadline.map_or(watchdog.next_pet(), |d| d.min(watchdog.next_pet())))
            }
            None => deadline,
        };
        let mut fds = vec![self.signals.fd()];
        fds.extend(self.buttons.fds());
        fds.extend(self.supervisor.output_fds());
        let pending = self.modules_pending.as_ref().map(|fd| fd.as_raw_fd());
        fds.extend(pending);
        let mut request = None;
        let mut ready = signals::wait_readable(&fds, deadline);
        // Output before exits: what a service wrote last is logged before
        // the line saying it ended.
        ready.sort_by_key(|&fd| fd == self.signals.fd());
        for fd in ready {
            if fd == self.signals.fd() {
                for signal in self.signals.pending() {
                    if signal == Signal::SIGCHLD {
                        self.reap();
                    } else if let Some(power) = signals::request_for(signal) {
                        request = Some((power, signal.to_string()));
                    }
                }
            } else if Some(fd) == pending {
                self.modules_pending = None;
                if self.watchdog.is_none() {
                    self.watchdog = crate::watchdog::arm();
                }
            } else if self.buttons.fds().contains(&fd) {
                if self.buttons.pressed(fd) {
                    request = Some((Power::Off, "the power button".to_string()));
                }
            } else {
                self.supervisor.drain_output(fd);
            }
        }
        request
    }

    fn reap(&mut self) {
        let now = Instant::now();
        for exit in signals::reap() {
            if !self
                .supervisor
                .exited(exit.pid, &exit.status, exit.success, now)
            {
                crate::debug!("reaped orphan {} ({})", exit.pid, exit.status);
            }
        }
    }

    /// Runs turns until `done` holds or `deadline` passes; true if done.
    fn wait_for(&mut self, deadline: Instant, done: impl Fn(&Supervisor) -> bool) -> bool {
        while !done(&self.supervisor) {
            if Instant::now() >= deadline {
                return false;
            }
            // A second power request during shutdown changes nothing.
            let _ = self.turn(Some(deadline));
        }
        true
    }

    /// Stops services in reverse start order, then every other process,
    /// syncs and powers off or reboots. Never returns.
    pub fn shutdown(&mut self, power: Power, cause: &str) -> ! {
        info!("shutdown: {} requested by {cause}", describe(power));
        self.supervisor.hold_all();
        for (name, pid) in self.supervisor.running_in_stop_order() {
            let started = Instant::now();
            signal_group(pid, Signal::SIGTERM);
            let gone = |s: &Supervisor| !s.is_running(&name);
            if !self.wait_for(started + STOP_TIMEOUT, gone) {
                warn!(
                    "service {name} did not stop within {} s; killing it",
                    STOP_TIMEOUT.as_secs()
                );
                signal_group(pid, Signal::SIGKILL);
                self.wait_for(Instant::now() + STRAGGLER_TIMEOUT, gone);
            }
            info!(
                "stopped service {name} in {} ms",
                started.elapsed().as_millis()
            );
        }
        self.kill_stragglers();
        // Last, after tyd has said goodbye over the network.
        crate::dhcp::release();
        finish(power)
    }

    fn kill_stragglers(&mut self) {
        for signal in [Signal::SIGTERM, Signal::SIGKILL] {
            // kill(-1) reaches every process but PID 1 itself.
            if nix::sys::signal::kill(nix::unistd::Pid::from_raw(-1), signal).is_err() {
                return; // ESRCH: nothing left.
            }
            let deadline = Instant::now() + STRAGGLER_TIMEOUT;
            while Instant::now() < deadline && has_children() {
                let _ = self.turn(Some(deadline));
            }
            if !has_children() {
                return;
            }
        }
    }
}

fn has_children() -> bool {
    // ECHILD from a non-blocking wait on "any child" means none is left.
    !matches!(
        nix::sys::wait::waitid(
            nix::sys::wait::Id::All,
            nix::sys::wait::WaitPidFlag::WEXITED
                | nix::sys::wait::WaitPidFlag::WNOHANG
                | nix::sys::wait::WaitPidFlag::WNOWAIT,
        ),
        Err(nix::errno::Errno::ECHILD)
    )
}

fn describe(power: Power) -> &'static str {
    match power {
        Power::Off => "power-off",
        Power::Reboot => "reboot",
    }
}

/// The last step of every path out of PID 1: sync and reboot(2). If the
/// kernel refuses, PID 1 must still not exit, so it parks forever.
pub fn finish(power: Power) -> ! {
    nix::unistd::sync();
    let mode = match power {
        Power::Off => RebootMode::RB_POWER_OFF,
        Power::Reboot => RebootMode::RB_AUTOBOOT,
    };
    info!("{}: filesystems synced, goodbye", describe(power));
    let Err(e) = nix::sys::reboot::reboot(mode);
    error!("reboot(2) failed: {e}; halting here");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
