//! Supervision of the service table: starting services in order, logging
//! their output, deciding after each exit whether and when to restart
//! (exponential backoff, crash-loop limit), starting and stopping the
//! services that run only while their `when =` file exists, and stopping
//! them all in reverse order.
//!
//! It never reaps: PID 1's signal loop reaps every child and hands the exits
//! of services back through [`Supervisor::exited`], so an exit is seen once.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chaos_contract::fact::{self, Fact};
use chaos_contract::service::{expand, Dir};
use nix::sys::signal::{killpg, SigSet, Signal};
use nix::unistd::{Gid, Group, Pid, Uid, User};

use crate::liveness::Running;
use crate::log::{self, Level};
use crate::{info, warn};
use chaos_contract::service::{Restart, Service};

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

/// How often the `when =` files are looked at.
pub const CONDITION_POLL: Duration = Duration::from_millis(250);

#[derive(Debug)]
enum State {
    /// Waiting to be started at the given time.
    Due(Instant),
    /// Waiting for its `when =` file to appear.
    Waiting,
    Running {
        pid: Pid,
        since: Instant,
        /// Asked to stop because its `when =` file went away or changed:
        /// its exit is not a failure and it waits for the file again.
        stopping: bool,
    },
    /// Done for good: finished, given up on or stopped.
    Down,
}

#[derive(Debug)]
struct Supervised {
    service: Service,
    state: State,
    restarts: u32,
    /// What its `when =` file said when it was last started.
    started_with: Option<String>,
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
    /// Shutdown has begun: nothing starts again.
    held: bool,
}

impl Supervisor {
    /// Takes services in start order (see [`chaos_contract::service::start_order`]);
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
                    started_with: None,
                })
                .collect(),
            outputs: BTreeMap::new(),
            held: false,
        }
    }

    /// Starts every service whose time has come, in table order. A service
    /// waits while one it starts after has never been started yet, and
    /// while its `when =` file is missing (`read` gives a file's text, or
    /// `None`). A running one whose `when =` file went away, or now says
    /// something else than when it started, is asked to stop (and so starts
    /// again with what the file says now).
    pub fn start_due(&mut self, now: Instant, read: &dyn Fn(&Path) -> Option<String>) {
        for i in 0..self.services.len() {
            if let Some(when) = self.services[i].service.when.clone() {
                self.follow_condition(i, &when, read(&when), now);
            }
            let due = matches!(self.services[i].state, State::Due(at) if at <= now);
            if due && !self.blocked(i) {
                self.start(i, now);
            }
        }
    }

    /// Service `i`'s state after its `when =` file was read as `text`.
    fn follow_condition(&mut self, i: usize, when: &Path, text: Option<String>, now: Instant) {
        let entry = &mut self.services[i];
        let name = &entry.service.name;
        let when = when.display();
        match (&mut entry.state, &text) {
            (State::Due(_), None) => entry.state = State::Waiting,
            (State::Waiting, Some(_)) => {
                info!("service {name}: {when} is there; starting it");
                entry.restarts = 0;
                entry.state = State::Due(now);
            }
            (State::Running { pid, stopping, .. }, _)
                if !*stopping && text != entry.started_with =>
            {
                let what = if text.is_some() { "changed" } else { "gone" };
                info!("service {name}: {when} is {what}; stopping it");
                *stopping = true;
                if pid.as_raw() > 0 {
                    signal_group(*pid, Signal::SIGTERM);
                }
            }
            _ => {}
        }
    }

    /// Whether service `i` waits for one it starts after.
    fn blocked(&self, i: usize) -> bool {
        self.services[i].service.after.iter().any(|dep| {
            self.services.iter().any(|s| {
                &s.service.name == dep && matches!(s.state, State::Due(_) | State::Waiting)
            })
        })
    }

    fn start(&mut self, i: usize, now: Instant) {
        let entry = &mut self.services[i];
        match spawn(&entry.service) {
            Ok((pid, output, started_with)) => {
                entry.started_with = started_with;
                info!("started service {} (pid {pid})", entry.service.name);
                entry.state = State::Running {
                    pid,
                    since: now,
                    stopping: false,
                };
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
                    stopping: false,
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
        let State::Running {
            since, stopping, ..
        } = entry.state
        else {
            return;
        };
        let ran_for = now.saturating_duration_since(since);
        let name = &entry.service.name;
        // Stopped for its when = file, not by its own doing: whatever its
        // restart policy, it runs again when the file says so (but not once
        // shutdown has begun).
        if stopping && !self.held {
            info!("service {name} {status}; waiting for its when = file");
            entry.state = State::Waiting;
            return;
        }
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
                info!(
                    "{}",
                    Fact::new(fact::SERVICE)
                        .with("name", name)
                        .with("state", "given-up")
                        .with("why", &status)
                );
                entry.state = State::Down;
            }
        }
    }

    /// When the next start is due, or the `when =` files are to be looked
    /// at again, for the main loop's poll timeout.
    pub fn next_due(&self, now: Instant) -> Option<Instant> {
        let conditions = self
            .services
            .iter()
            .any(|s| s.service.when.is_some() && !matches!(s.state, State::Down));
        // One that waits for another is started with it, not on its own.
        self.services
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s.state {
                State::Due(at) if !self.blocked(i) => Some(at),
                _ => None,
            })
            .chain(conditions.then_some(now + CONDITION_POLL))
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
        self.held = true;
        for s in &mut self.services {
            if matches!(s.state, State::Due(_) | State::Waiting) {
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
                state: State::Due(_) | State::Waiting,
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

/// Who a service runs as, looked up before the fork.
struct Credentials {
    uid: Uid,
    gid: Gid,
    groups: Vec<Gid>,
}

fn credentials(user: &str) -> io::Result<Credentials> {
    let not_found = || io::Error::other(format!("user {user} is not in /etc/passwd"));
    let entry = User::from_name(user)
        .map_err(io::Error::from)?
        .ok_or_else(not_found)?;
    let name = std::ffi::CString::new(user).map_err(|_| not_found())?;
    let groups = nix::unistd::getgrouplist(&name, entry.gid).map_err(io::Error::from)?;
    Ok(Credentials {
        uid: entry.uid,
        gid: entry.gid,
        groups,
    })
}

fn owner_of(dir: &Dir) -> io::Result<(Uid, Gid)> {
    let user = User::from_name(&dir.owner)
        .map_err(io::Error::from)?
        .ok_or_else(|| {
            io::Error::other(format!(
                "dir {}: user {} is not in /etc/passwd",
                dir.path.display(),
                dir.owner
            ))
        })?;
    let gid = match &dir.group {
        None => user.gid,
        Some(group) => {
            Group::from_name(group)
                .map_err(io::Error::from)?
                .ok_or_else(|| {
                    io::Error::other(format!(
                        "dir {}: group {group} is not in /etc/group",
                        dir.path.display()
                    ))
                })?
                .gid
        }
    };
    Ok((user.uid, gid))
}

/// Makes a service's run-time directory, or gives an existing one the
/// mode and owner the table asks for.
fn make_dir(dir: &Dir) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let (uid, gid) = owner_of(dir)?;
    std::fs::create_dir_all(&dir.path)?;
    nix::unistd::chown(&dir.path, Some(uid), Some(gid)).map_err(io::Error::from)?;
    std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(dir.mode))
}

/// Starts a service; its pid, its output, and what its `when =` file said.
fn spawn(service: &Service) -> io::Result<(Pid, Output, Option<String>)> {
    // What its `when =` file says joins the environment and the arguments.
    let mut env = service.env.clone();
    let when = match &service.when {
        Some(when) => {
            let text = std::fs::read_to_string(when)
                .map_err(|e| io::Error::other(format!("reading {}: {e}", when.display())))?;
            env.extend(chaos_contract::service::env_lines(&text));
            Some(text)
        }
        None => None,
    };
    let args = service
        .args
        .iter()
        .map(|arg| expand(arg, &env))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io::Error::other)?;
    for dir in &service.dirs {
        make_dir(dir)?;
    }
    let credentials = service.user.as_deref().map(credentials).transpose()?;
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    nix::fcntl::fcntl(
        read.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )?;
    let mut command = Command::new(&service.exec);
    let home = credentials
        .as_ref()
        .and_then(|_| User::from_name(service.user.as_deref()?).ok().flatten())
        .map_or_else(|| PathBuf::from("/"), |u| u.dir);
    command
        .args(&args)
        .env_clear()
        .env("PATH", chaos_contract::paths::SEARCH_PATH)
        .env("HOME", home)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(write.try_clone()?)
        .stderr(write);
    if let Some(user) = &service.user {
        command.env("USER", user).env("LOGNAME", user);
    }
    // SAFETY: between fork and exec the closure only makes async-signal-safe
    // system calls on data prepared before the fork, and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            // PID 1 blocks the signals it reads through signalfd; a service
            // must start with none blocked or it could not be stopped.
            SigSet::empty().thread_set_mask().map_err(io::Error::from)?;
            nix::unistd::setsid().map_err(io::Error::from)?;
            if let Some(c) = &credentials {
                // Groups first: once the uid is dropped they cannot change.
                nix::unistd::setgroups(&c.groups).map_err(io::Error::from)?;
                nix::unistd::setgid(c.gid).map_err(io::Error::from)?;
                nix::unistd::setuid(c.uid).map_err(io::Error::from)?;
            }
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
    Ok((pid, output, when))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Waits for `pid` (a test is not PID 1: nothing else reaps) and hands
    /// the exit to the supervisor.
    fn reap(supervisor: &mut Supervisor, pid: Pid) {
        let status = nix::sys::wait::waitpid(pid, None).unwrap();
        let success = matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0));
        assert!(supervisor.exited(pid, "exited", success, Instant::now()));
    }

    fn pid_of(supervisor: &Supervisor, name: &str) -> Pid {
        supervisor
            .running_in_stop_order()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, pid)| pid)
            .unwrap_or_else(|| panic!("{name} is not running"))
    }

    #[test]
    fn a_conditional_service_runs_only_while_its_file_exists() {
        let dir = std::env::temp_dir().join(format!("chaos-when-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let joined = dir.join("joined");
        let mut munged = Service::new("munged", "/bin/sleep");
        munged.args = vec!["${SECONDS}".into()];
        munged.when = Some(joined.clone());
        let mut slurmd = Service::new("slurmd", "/bin/sleep");
        slurmd.args = vec!["60".into()];
        slurmd.after = vec!["munged".into()];
        // Runs once per appearance of the file, whatever its policy.
        let mut once = Service::new("once", "/bin/sleep");
        once.args = vec!["60".into()];
        once.restart = Restart::Never;
        once.when = Some(joined.clone());
        let mut supervisor = Supervisor::new(vec![munged, slurmd, once], BACKOFF);
        let now = Instant::now();
        let read = |p: &Path| std::fs::read_to_string(p).ok();

        // No file: munged waits, and so does what starts after it.
        supervisor.start_due(now, &read);
        assert_eq!(supervisor.running("munged"), Running::Restarting);
        assert!(!supervisor.is_running("slurmd"));
        assert_eq!(supervisor.next_due(now), Some(now + CONDITION_POLL));

        // The file appears: both start, munged with the file's values.
        std::fs::write(&joined, "SECONDS=60\n").unwrap();
        supervisor.start_due(now, &read);
        assert!(supervisor.is_running("munged") && supervisor.is_running("slurmd"));

        // It changes: munged is stopped and started again with the new
        // values, not counted as a crash.
        let first = pid_of(&supervisor, "munged");
        let first_once = pid_of(&supervisor, "once");
        std::fs::write(&joined, "SECONDS=61\n").unwrap();
        supervisor.start_due(now, &read);
        reap(&mut supervisor, first);
        reap(&mut supervisor, first_once);
        supervisor.start_due(now, &read);
        supervisor.start_due(now, &read);
        assert!(supervisor.is_running("munged") && supervisor.is_running("once"));
        assert_ne!(pid_of(&supervisor, "munged"), first);
        assert_eq!(
            supervisor.services[0].started_with.as_deref(),
            Some("SECONDS=61\n")
        );

        // It goes: munged is stopped and waits again, not counted as a crash.
        std::fs::remove_file(&joined).unwrap();
        supervisor.start_due(now, &read);
        let pid = pid_of(&supervisor, "munged");
        reap(&mut supervisor, pid);
        let pid = pid_of(&supervisor, "once");
        reap(&mut supervisor, pid);
        assert_eq!(supervisor.running("munged"), Running::Restarting);
        assert_eq!(supervisor.services[0].restarts, 0);

        // A value the arguments need but the file lacks: a failed start.
        std::fs::write(&joined, "OTHER=1\n").unwrap();
        supervisor.start_due(now, &read);
        assert!(!supervisor.is_running("munged"));
        assert!(matches!(supervisor.services[0].state, State::Due(_)));
        assert_eq!(supervisor.services[0].restarts, 1);

        let pid = pid_of(&supervisor, "slurmd");
        signal_group(pid, Signal::SIGKILL);
        reap(&mut supervisor, pid);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn run_time_directories_are_made_with_their_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("chaos-dir-{}", std::process::id()));
        let target = dir.join("run/munge");
        let root = User::from_uid(Uid::current()).unwrap().unwrap().name;
        make_dir(&Dir {
            path: target.clone(),
            mode: 0o710,
            owner: root.clone(),
            group: None,
        })
        .unwrap();
        let meta = std::fs::metadata(&target).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o710);
        let unknown = make_dir(&Dir {
            path: target.clone(),
            mode: 0o755,
            owner: "no-such-user-here".into(),
            group: None,
        });
        assert_eq!(
            unknown.unwrap_err().to_string(),
            format!(
                "dir {}: user no-such-user-here is not in /etc/passwd",
                target.display()
            )
        );
        std::fs::remove_dir_all(&dir).unwrap();
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
