//! The watchdog's schedule and policy: verify the manifest against the
//! pinned digest at start, wait out the grace period, then verify the root
//! every interval unless a maintenance window is open, and answer a
//! difference as `chaos.watchdog=` says: log it, and for `reboot` and
//! `poweroff` ask PID 1 by signal, which stops the services in order (tyd
//! leaves the cluster on the way) before it reboots or powers off.
//!
//! The clock, the signal to PID 1 and the log go through [`Node`], so the
//! whole policy runs in tests against a scratch root and a recording double.
//! The daemon never reboots by itself and never sleeps: [`Daemon::tick`]
//! says how long to wait, and the binary waits.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mkimage::manifest::Digest;
use nix::sys::signal::Signal;

use super::change::{Change, Difference};
use super::pause::{self, partial_path, Pause};
use super::verify::{verify_with, Baseline};
use super::WRITABLE_MOUNTS;
use crate::log::Level;
use crate::signals::Power;
use chaos_contract::cmdline::{Watchdog, WatchdogAction};
use chaos_contract::duration::show;

/// At most this many differences are listed per report, so a flood of
/// added files cannot flood the console; the count of the rest follows.
pub const MAX_LISTED: usize = 64;
/// How long to wait for PID 1 to act on a request before asking again.
const REASK: Duration = Duration::from_secs(60);
/// Sleep when there is nothing to do (`chaos.watchdog=off`); the process
/// stays, so the supervisor sees a healthy service.
const IDLE: Duration = Duration::from_secs(3600);

/// The signal that asks PID 1 for `power`
/// ([`chaos_contract::power::signal_for`]).
pub fn ask_signal(power: Power) -> Signal {
    // The user signals, which nix knows.
    Signal::try_from(chaos_contract::power::signal_for(power)).unwrap_or(Signal::SIGUSR1)
}

/// The daemon's view of the system.
pub trait Node {
    /// Time since boot, on a clock that setting the date does not move.
    fn uptime(&self) -> Duration;
    /// Asks PID 1 to reboot or power off.
    fn ask_init(&mut self, power: Power) -> io::Result<()>;
    fn log(&mut self, level: Level, line: &str);
}

/// The running node: CLOCK_BOOTTIME, kill(1, ...), the kmsg log.
#[derive(Debug, Default)]
pub struct Linux;

impl Node for Linux {
    fn uptime(&self) -> Duration {
        // CLOCK_BOOTTIME cannot fail on Linux; zero would only mean "early".
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
            .map(Duration::from)
            .unwrap_or_default()
    }

    fn ask_init(&mut self, power: Power) -> io::Result<()> {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(1), ask_signal(power))
            .map_err(io::Error::from)
    }

    fn log(&mut self, level: Level, line: &str) {
        crate::log::write(level, format_args!("{line}"));
    }
}

/// Everything the daemon needs to know; [`Config::node`] is the node's.
#[derive(Debug, Clone)]
pub struct Config {
    pub watchdog: Watchdog,
    /// `chaos.root_digest=`; without it the manifest is trusted as found.
    pub pinned: Option<Digest>,
    pub root: PathBuf,
    pub manifest: PathBuf,
    pub pause_file: PathBuf,
    pub status_file: Option<PathBuf>,
    pub writable: &'static [&'static str],
}

impl Config {
    pub fn node(watchdog: Watchdog, pinned: Option<Digest>) -> Self {
        Config {
            watchdog,
            pinned,
            root: "/".into(),
            manifest: chaos_contract::paths::MANIFEST.into(),
            pause_file: chaos_contract::paths::CERTAINTYD_PAUSE.into(),
            status_file: Some(chaos_contract::paths::CERTAINTYD_STATUS.into()),
            writable: WRITABLE_MOUNTS,
        }
    }
}

fn action_word(action: WatchdogAction) -> &'static str {
    match action {
        WatchdogAction::Reboot => "reboot",
        WatchdogAction::Poweroff => "poweroff",
        WatchdogAction::Log => "log",
        WatchdogAction::Off => "off",
    }
}

/// The watchdog; see the module docs.
#[derive(Debug)]
pub struct Daemon<N: Node> {
    config: Config,
    node: N,
    baseline: Option<Baseline>,
    /// The differences last reported, so `log` reports a state once, not
    /// every interval.
    reported: Vec<String>,
    /// The window being honoured, to log its start and end once.
    pause: Option<Pause>,
    /// The last complaint about the pause file, logged once.
    pause_problem: Option<String>,
    /// Set once PID 1 has been asked: (what, when).
    asked: Option<(Power, Duration)>,
    passes: u64,
}

impl<N: Node> Daemon<N> {
    pub fn new(config: Config, node: N) -> Self {
        Daemon {
            config,
            node,
            baseline: None,
            reported: Vec::new(),
            pause: None,
            pause_problem: None,
            asked: None,
            passes: 0,
        }
    }

    pub fn node(&self) -> &N {
        &self.node
    }

    pub fn node_mut(&mut self) -> &mut N {
        &mut self.node
    }

    /// Logs the settings and checks the manifest against the pinned digest
    /// at once: a forged manifest is answered now, not after the grace.
    pub fn start(&mut self) {
        let w = self.config.watchdog.clone();
        let line = format!(
            "watching {} against {}: chaos.watchdog={}, grace {}, interval {}, sha256 by {}",
            self.config.root.display(),
            self.config.manifest.display(),
            action_word(w.action),
            show(w.grace),
            show(w.interval),
            super::sha256_backend()
        );
        self.node.log(Level::Info, &line);
        if w.action == WatchdogAction::Off {
            let line = "chaos.watchdog=off: the root is not verified";
            return self.node.log(Level::Warn, line);
        }
        self.load_baseline();
    }

    /// Does whatever is due now and returns how long to wait before the
    /// next call.
    pub fn tick(&mut self) -> Duration {
        let w = self.config.watchdog.clone();
        if w.action == WatchdogAction::Off {
            return IDLE;
        }
        let now = self.node.uptime();
        if let Some((power, at)) = self.asked {
            // PID 1 is shutting down and will stop us; if it does not, the
            // request was lost, and asking again is all we can do.
            if now.saturating_sub(at) >= REASK {
                let line = format!("init has not acted for {}; asking again", show(REASK));
                self.node.log(Level::Error, &line);
                self.ask(power, now);
            }
            self.status("asked", now, None);
            return w.interval;
        }
        if now < w.grace {
            self.status("grace", now, None);
            // Wake every interval even now, so the heartbeat never goes
            // quiet for longer than an interval.
            return (w.grace - now).min(w.interval);
        }
        if let Some(left) = self.paused(now) {
            self.status("paused", now, None);
            // Wake at the end of the window, or sooner to notice a resume.
            return left.min(w.interval);
        }
        if self.baseline.is_none() && !self.load_baseline() {
            return w.interval;
        }
        let started = Instant::now();
        let mut last_beat = started;
        let result = verify_with(
            &self.config.root,
            self.baseline.as_ref().expect("loaded above"),
            self.config.writable,
            &mut || {
                if last_beat.elapsed() >= w.interval {
                    last_beat = Instant::now();
                    self.status("verifying", self.node.uptime(), None);
                }
            },
        );
        let elapsed = started.elapsed();
        self.passes += 1;
        match result {
            Ok(report) => {
                let clean = report.differences.is_empty();
                let state = if clean { "ok" } else { "violation" };
                let stats = format!(
                    "duration_us {}\nentries {}\nbytes {}\ndifferences {}\n",
                    elapsed.as_micros(),
                    report.entries,
                    report.bytes,
                    report.differences.len()
                );
                self.status(state, now, Some(&stats));
                if !clean {
                    self.violation(report.differences, now);
                } else if !self.reported.is_empty() {
                    self.reported.clear();
                    self.node
                        .log(Level::Info, "the root matches the manifest again");
                }
            }
            Err(e) => {
                let path = self.config.root.display().to_string();
                let change = Change::Unreadable {
                    error: e.to_string(),
                };
                self.violation(vec![Difference { path, change }], now);
            }
        }
        // Fixed rate: the interval runs from the start of one pass to the
        // start of the next.
        (now + w.interval).saturating_sub(self.node.uptime())
    }

    /// Reads and checks the manifest; a failure is a violation.
    fn load_baseline(&mut self) -> bool {
        let now = self.node.uptime();
        match Baseline::load(&self.config.manifest, self.config.pinned) {
            Ok((baseline, digest)) => {
                let trust = match self.config.pinned {
                    Some(_) => "pinned by chaos.root_digest=".to_owned(),
                    None => "NOT pinned: no chaos.root_digest= on the command line, \
                             so it is trusted as found"
                        .to_owned(),
                };
                let level = match self.config.pinned {
                    Some(_) => Level::Info,
                    None => Level::Warn,
                };
                let line = format!(
                    "baseline: {} entries, manifest {digest} {trust}",
                    baseline.len()
                );
                self.node.log(level, &line);
                self.baseline = Some(baseline);
                true
            }
            Err(e) => {
                let path = self.config.manifest.display().to_string();
                let change = Change::Baseline {
                    problem: e.to_string(),
                };
                self.violation(vec![Difference { path, change }], now);
                false
            }
        }
    }

    /// The open maintenance window's time left, logging its start and end.
    fn paused(&mut self, now: Duration) -> Option<Duration> {
        let request = match pause::read(&self.config.pause_file) {
            Ok(request) => {
                self.pause_problem = None;
                request
            }
            Err(e) => {
                let problem = e.to_string();
                if self.pause_problem.as_ref() != Some(&problem) {
                    let line = format!("ignoring the pause request: {problem}");
                    self.node.log(Level::Warn, &line);
                    self.pause_problem = Some(problem);
                }
                None
            }
        };
        if let Some(p) = request.filter(|p| p.is_active(now)) {
            if self.pause != Some(p) {
                let line = format!(
                    "maintenance window: verification paused for {} by uid {}, \
                     {} left (`certaintyd resume` ends it)",
                    show(p.until.saturating_sub(p.requested)),
                    p.uid,
                    show(p.remaining(now))
                );
                self.node.log(Level::Warn, &line);
                self.pause = Some(p);
            }
            return Some(p.remaining(now));
        }
        if let Some(p) = request {
            if now < p.until {
                let line = format!(
                    "ignoring a pause request that runs past the {} limit",
                    show(pause::MAX_PAUSE)
                );
                self.node.log(Level::Warn, &line);
            }
            // Spent or invalid: remove it so it cannot be mistaken later.
            let _ = pause::clear(&self.config.pause_file);
        }
        if let Some(p) = self.pause.take() {
            let how = if now < p.until { "ended early" } else { "over" };
            let line = format!("maintenance window {how}; verifying again");
            self.node.log(Level::Warn, &line);
        }
        None
    }

    fn violation(&mut self, differences: Vec<Difference>, now: Duration) {
        let lines: Vec<String> = differences.iter().map(ToString::to_string).collect();
        let action = self.config.watchdog.action;
        if action == WatchdogAction::Log && lines == self.reported {
            return;
        }
        let count = match lines.len() {
            1 => "1 difference".to_owned(),
            n => format!("{n} differences"),
        };
        let line = format!("the root differs from its manifest: {count}");
        self.node.log(Level::Error, &line);
        for line in lines.iter().take(MAX_LISTED) {
            self.node.log(Level::Error, &format!("violation: {line}"));
        }
        if lines.len() > MAX_LISTED {
            let line = format!("violation: ... and {} more", lines.len() - MAX_LISTED);
            self.node.log(Level::Error, &line);
        }
        self.reported = lines;
        match action {
            WatchdogAction::Reboot => self.ask(Power::Reboot, now),
            WatchdogAction::Poweroff => self.ask(Power::Off, now),
            WatchdogAction::Log => {
                let line = "chaos.watchdog=log: running on";
                self.node.log(Level::Warn, line);
            }
            WatchdogAction::Off => {}
        }
    }

    fn ask(&mut self, power: Power, now: Duration) {
        let (what, word) = match power {
            Power::Reboot => ("reboot", "reboot"),
            Power::Off => ("power off", "poweroff"),
        };
        let line = format!("asking init to {what} (chaos.watchdog={word})");
        self.node.log(Level::Error, &line);
        match self.node.ask_init(power) {
            Ok(()) => self.asked = Some((power, now)),
            Err(e) => {
                let line = format!("could not signal init: {e}; asking again next pass");
                self.node.log(Level::Error, &line);
            }
        }
    }

    /// The heartbeat file; failing to write it must not stop verification.
    fn status(&self, state: &str, now: Duration, stats: Option<&str>) {
        let Some(path) = &self.config.status_file else {
            return;
        };
        let text = format!(
            "state {state}\nuptime_ms {}\npasses {}\n{}",
            now.as_millis(),
            self.passes,
            stats.unwrap_or("")
        );
        let _ = write_atomically(path, &text);
    }
}

fn write_atomically(path: &Path, text: &str) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let partial = partial_path(path);
    std::fs::write(&partial, text)?;
    std::fs::rename(&partial, path)
}

#[cfg(test)]
mod tests;
