// SPDX-License-Identifier: GPL-3.0-or-later
//! The head's side of Slurm with `tyd serve --slurm`: what it sets up
//! before it serves (the munge key in place, slurm.conf and cgroup.conf
//! written, munged and slurmctld started by the host's own service manager
//! or, in a chaos image, by init), the accounts it shares with members, the
//! shares (NFS exports that follow the membership, see [`Exports`]), and
//! a worker thread that keeps Slurm in step with the membership: a node
//! that leaves, expires or is removed is drained, set down (so batch jobs
//! on it are requeued) and deleted once nothing runs there, and every
//! node's Slurm state is read for `tyd nodes`.
//!
//! tyd is not a second supervisor: it starts nothing itself. The worker
//! runs Slurm's own client tools with a time limit, so a slurmctld that
//! hangs never stalls the head's event loop.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use chaos_contract::accounts::Accounts;

use crate::files;
use crate::log::{fact, info};
use crate::slurm::{self, Settings};
use chaos_contract::fact::Fact;
use chaos_contract::share;

/// The Debian packages the head needs, with a program each comes with.
pub const PACKAGES: &[(&str, &str)] = &[
    ("slurmctld", "slurmctld"),
    ("munged", "munge"),
    ("scontrol", "slurm-client"),
    ("sinfo", "slurm-client"),
];
/// Where the host's programs are looked for (a service manager's PATH may
/// be short).
const SEARCH: &[&str] = &["/usr/sbin", "/usr/bin", "/sbin", "/bin"];
/// The accounts besides ordinary users that members take from the head.
pub const SHARED_SYSTEM_ACCOUNTS: &[&str] = &["slurm"];
/// What the first line of a file tyd wrote says, so it never overwrites
/// an administrator's own.
const WRITTEN_BY: &str = "# Written by tyd serve --slurm";
/// How long one of Slurm's client tools may take.
const TOOL_TIMEOUT: Duration = Duration::from_secs(10);
/// How soon a failed export is tried again.
const EXPORTS_RETRY: Duration = Duration::from_secs(1);
/// How often the nodes' Slurm states are read.
const POLL: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error(
        "tyd serve --slurm needs {program}, which is not installed: on Debian, \
         `apt-get install {package}` (all of them: slurmctld munge slurm-client)"
    )]
    Missing {
        program: &'static str,
        package: &'static str,
    },
    #[error(
        "{} is not tyd's (its first line is not \"{WRITTEN_BY}\"): move it away, or give \
         tyd serve another --slurm-conf directory",
        path.display()
    )]
    NotOurs { path: PathBuf },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tyd serve --share: {reason} (or --no-share to share nothing)")]
    Share { reason: String },
    #[error("mounting the NFS server's filesystem on {NFSD_FS}: {0}")]
    NfsdFs(nix::Error),
    #[error("looking up user {user}: {source}")]
    LookUp { user: String, source: nix::Error },
    #[error("there is no user {user} on this host (is its package installed?)")]
    NoUser { user: String },
    #[error(transparent)]
    Tool(#[from] ToolError),
}

/// How one of Slurm's (or systemd's) tools failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("running {program}: {source}")]
    Start {
        program: String,
        source: std::io::Error,
    },
    #[error("waiting for {program}: {source}")]
    Wait {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} did not finish within {TOOL_TIMEOUT:?}")]
    Timeout { program: String },
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        program: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// Where `tyd serve --slurm` puts things and how munged and slurmctld get
/// started.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Where slurm.conf and cgroup.conf go (Debian's /etc/slurm).
    pub conf_dir: PathBuf,
    /// The munge key munged reads (Debian's /etc/munge/munge.key).
    pub munge_key: PathBuf,
    pub settings: Settings,
    pub start: Start,
    /// What members mount (`tyd serve --share`, [`share::DEFAULT`] unless
    /// told otherwise); none with `--no-share`.
    pub shares: Vec<String>,
    /// tyd's own file of exports (Debian reads /etc/exports.d/*.exports).
    pub exports: PathBuf,
}

/// Who starts munged and slurmctld.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// systemd runs: tyd asks it to (re)start them when their files
    /// changed.
    Systemd,
    /// A chaos image's init does, through its service table (the joined
    /// file); tyd only puts the files in place.
    Init,
    /// Nothing here does: tyd says what to start.
    ByHand,
}

impl Start {
    /// systemd where it is the service manager (its documented test), or
    /// else by hand.
    pub fn on_this_host() -> Start {
        if Path::new("/run/systemd/system").is_dir() {
            Start::Systemd
        } else {
            Start::ByHand
        }
    }
}

impl Setup {
    pub fn slurm_conf(&self) -> PathBuf {
        self.conf_dir.join("slurm.conf")
    }

    /// Checks the programs, puts the key and the configuration in place
    /// and has munged and slurmctld started.
    pub fn apply(&self, munge_key: &[u8]) -> Result<(), WorkloadError> {
        for (program, package) in PACKAGES {
            if find(program).is_none() {
                return Err(WorkloadError::Missing { program, package });
            }
        }
        if !self.shares.is_empty() {
            self.check_shares()?;
        }
        let key_changed = self.install_key(munge_key)?;
        let conf_changed = [
            self.write_ours(&self.slurm_conf(), &self.settings.slurm_conf())?,
            self.write_ours(&self.conf_dir.join("cgroup.conf"), &slurm::cgroup_conf())?,
        ]
        .contains(&true);
        let state = &self.settings.state_dir;
        let slurm = owner("slurm")?;
        files::directory(state, 0o755, Some(slurm)).map_err(|source| WorkloadError::Io {
            what: "making",
            path: state.clone(),
            source,
        })?;
        if !self.shares.is_empty() {
            // No member yet, so no client: a share line without clients
            // would export it to the world.
            self.write_ours(&self.exports, &exports_file(&self.shares, &[]))?;
        }
        match self.start {
            Start::Systemd => {
                for (unit, changed) in [
                    ("munge", key_changed),
                    ("slurmctld", conf_changed || key_changed),
                ] {
                    let verb = if changed { "restart" } else { "start" };
                    run_tool(Command::new("systemctl").args(["--no-block", verb, unit]))?;
                    info(format!("slurm: asked systemd to {verb} {unit}"));
                }
                if !self.shares.is_empty() {
                    // Debian's unit runs exportfs -r and rpc.nfsd.
                    run_tool(Command::new("systemctl").args(["start", NFS_UNIT]))?;
                    info(format!("nfs: asked systemd to start {NFS_UNIT}"));
                }
            }
            // The joined file is what starts the image's munged and
            // slurmctld, as on a drone.
            Start::Init => {
                if !self.shares.is_empty() {
                    // Its services start with the joined file; the exports
                    // come with the first member.
                    mount_nfsd()?;
                }
                let joined = chaos_contract::member::joined_file(
                    self.settings.controller_address,
                    &self.settings.controller,
                    0,
                );
                write(Path::new(chaos_contract::paths::JOINED), &joined, 0o644)?;
            }
            Start::ByHand => {
                info(format!(
                    "slurm: no service manager here: start munged (with the key in {}) and \
                     `slurmctld -f {}` yourself",
                    self.munge_key.display(),
                    self.slurm_conf().display()
                ));
                if !self.shares.is_empty() {
                    info(format!(
                        "nfs: and the NFS server (rpc.nfsd, rpc.mountd): tyd keeps {} in step \
                         with the membership, for `exportfs -r` to read",
                        self.exports.display()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every share a plain path where members can mount it, and a
    /// directory here; exportfs installed.
    fn check_shares(&self) -> Result<(), WorkloadError> {
        if find("exportfs").is_none() {
            return Err(WorkloadError::Missing {
                program: "exportfs",
                package: "nfs-kernel-server",
            });
        }
        if self.shares.len() > share::MAX_SHARES {
            return Err(WorkloadError::Share {
                reason: format!(
                    "{} shares, at most {}",
                    self.shares.len(),
                    share::MAX_SHARES
                ),
            });
        }
        for (i, path) in self.shares.iter().enumerate() {
            if self.shares[..i].contains(path) {
                return Err(WorkloadError::Share {
                    reason: format!("{path} given twice"),
                });
            }
            share::check(path).map_err(|reason| WorkloadError::Share { reason })?;
            if !Path::new(path).is_dir() {
                return Err(WorkloadError::Share {
                    reason: format!("{path}: no such directory on this host"),
                });
            }
        }
        Ok(())
    }

    /// Who manages the exports, or `None` where nothing reads them.
    pub fn exports(&self) -> Option<Exports> {
        if self.shares.is_empty() {
            return None;
        }
        let reload = self.start != Start::ByHand;
        Some(Exports::start(
            self.exports.clone(),
            self.shares.clone(),
            reload,
        ))
    }

    /// The cluster's key where munged reads it, owned by munge and
    /// readable by it alone; true if it changed.
    fn install_key(&self, key: &[u8]) -> Result<bool, WorkloadError> {
        let path = &self.munge_key;
        if std::fs::read(path).is_ok_and(|old| old == key) {
            return Ok(false);
        }
        let munge = Some(owner("munge")?);
        let io = |what| {
            move |source| WorkloadError::Io {
                what,
                path: path.clone(),
                source,
            }
        };
        if let Some(dir) = path.parent() {
            files::directory(dir, 0o700, munge).map_err(io("making the directory of"))?;
        }
        files::replace(path, key, 0o400, munge).map_err(io("writing"))?;
        info(format!(
            "slurm: installed the cluster's munge key as {}",
            path.display()
        ));
        Ok(true)
    }

    /// Writes `text` to `path` unless it is there already; refuses to
    /// replace a file tyd did not write. True if it changed.
    fn write_ours(&self, path: &Path, text: &str) -> Result<bool, WorkloadError> {
        match std::fs::read_to_string(path) {
            Ok(old) if old == text => return Ok(false),
            Ok(old) if !old.starts_with(WRITTEN_BY) => {
                return Err(WorkloadError::NotOurs { path: path.into() })
            }
            _ => {}
        }
        write(path, text, 0o644)?;
        info(format!("slurm: wrote {}", path.display()));
        Ok(true)
    }
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), WorkloadError> {
    files::replace(path, text.as_bytes(), mode, None).map_err(|source| WorkloadError::Io {
        what: "writing",
        path: path.into(),
        source,
    })
}

/// Debian's unit of the kernel NFS server (nfs-kernel-server's).
const NFS_UNIT: &str = "nfs-server";
/// Where the NFS server's control files are, which exportfs and rpc.nfsd
/// write to.
const NFSD_FS: &str = "/proc/fs/nfsd";
/// The export options of a share: written through (`sync`: a job's
/// output is on the head's disk when its write returns), root squashed
/// (a member's root is not the head's), AUTH_SYS as Slurm's uids are the
/// same everywhere, and no subtree check, which breaks renames across
/// directories and buys nothing when a whole mount is shared.
const EXPORT_OPTIONS: &str = "rw,sync,root_squash,no_subtree_check,sec=sys";

/// tyd's exports file: each share to every member's overlay address, and
/// nothing at all while there is no member.
pub fn exports_file(shares: &[String], members: &[std::net::Ipv4Addr]) -> String {
    let mut text = format!(
        "{WRITTEN_BY}: the shares, to the cluster's members over the overlay.\n\
         # It follows the membership; edits are lost.\n"
    );
    if members.is_empty() {
        return text;
    }
    for path in shares {
        text.push_str(path);
        // A filesystem without a device (the head VM's tmpfs) needs an
        // fsid; one made from the path stays the same across restarts,
        // so members' file handles do too.
        let fsid = 0x8000_0000 | fnv32(path.as_bytes());
        for address in members {
            text.push_str(&format!(" {address}({EXPORT_OPTIONS},fsid={fsid})"));
        }
        text.push('\n');
    }
    text
}

fn fnv32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash: u32, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

/// The NFS server's filesystem, which a chaos head's init does not mount:
/// exportfs and rpc.nfsd talk to the kernel through it.
fn mount_nfsd() -> Result<(), WorkloadError> {
    if Path::new(NFSD_FS).join("exports").exists() {
        return Ok(());
    }
    nix::mount::mount(
        Some("nfsd"),
        NFSD_FS,
        Some("nfsd"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(WorkloadError::NfsdFs)
}

/// A program from [`SEARCH`], or its bare name for the error to name.
fn tool_path(program: &str) -> PathBuf {
    find(program).unwrap_or_else(|| program.into())
}

/// The thread that keeps tyd's exports file (and, where an NFS server
/// runs, the kernel's export table) in step with the membership: a lab's
/// morning brings a join every few milliseconds, and each change costs
/// an `exportfs -r`, so it takes the latest list whenever it gets round
/// to one, and never holds up the head's event loop.
#[derive(Debug)]
pub struct Exports {
    members: Sender<Vec<std::net::Ipv4Addr>>,
    last: Vec<std::net::Ipv4Addr>,
}

impl Exports {
    fn start(file: PathBuf, shares: Vec<String>, reload: bool) -> Exports {
        let (members, lists) = mpsc::channel::<Vec<std::net::Ipv4Addr>>();
        std::thread::spawn(move || {
            let mut done = String::new();
            let mut list = Vec::new();
            let mut said = String::new();
            loop {
                // A failed export is tried again a moment later (the NFS
                // server may still be starting), with the latest list.
                let wait = if said.is_empty() {
                    Duration::MAX
                } else {
                    EXPORTS_RETRY
                };
                match lists.recv_timeout(wait) {
                    Ok(newer) => list = newer,
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
                while let Ok(newer) = lists.try_recv() {
                    list = newer;
                }
                let text = exports_file(&shares, &list);
                if text == done && said.is_empty() {
                    continue;
                }
                let exported = write(&file, &text, 0o644)
                    .map_err(|e| e.to_string())
                    .and_then(|()| {
                        if reload {
                            run_tool(Command::new(tool_path("exportfs")).arg("-r"))
                                .map(drop)
                                .map_err(|e| e.to_string())
                        } else {
                            Ok(())
                        }
                    });
                match exported {
                    Ok(()) => {
                        done = text;
                        said.clear();
                        fact(Fact::new(chaos_contract::fact::EXPORTS).with("members", list.len()));
                    }
                    Err(e) => {
                        if e != said {
                            info(format!(
                                "nfs: exporting the shares to the members: {e}; trying again"
                            ));
                            said = e;
                        }
                    }
                }
            }
        });
        Exports {
            members,
            last: Vec::new(),
        }
    }

    /// The members now (their overlay addresses, sorted).
    pub fn follow(&mut self, members: Vec<std::net::Ipv4Addr>) {
        if members != self.last {
            self.last = members.clone();
            let _ = self.members.send(members);
        }
    }
}

/// A program from [`SEARCH`].
fn find(program: &str) -> Option<PathBuf> {
    SEARCH
        .iter()
        .map(|dir| Path::new(dir).join(program))
        .find(|path| path.is_file())
}

/// A user's uid and primary gid, for the files that user must own.
fn owner(user: &str) -> Result<files::Owner, WorkloadError> {
    let entry = nix::unistd::User::from_name(user)
        .map_err(|source| WorkloadError::LookUp {
            user: user.into(),
            source,
        })?
        .ok_or_else(|| WorkloadError::NoUser { user: user.into() })?;
    Ok((entry.uid.as_raw(), entry.gid.as_raw()))
}

/// Runs one of Slurm's (or systemd's) tools with [`TOOL_TIMEOUT`]; its
/// standard output, or what went wrong with its standard error.
fn run_tool(command: &mut Command) -> Result<String, ToolError> {
    let program = format!("{:?}", command.get_program());
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ToolError::Start {
            program: program.clone(),
            source,
        })?;
    let deadline = Instant::now() + TOOL_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => {
                // Bounded wait for a child process, not synchronisation.
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ToolError::Timeout { program });
            }
            Err(source) => return Err(ToolError::Wait { program, source }),
        }
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    if status.success() {
        Ok(out)
    } else {
        Err(ToolError::Failed {
            program,
            status,
            stderr: err.trim().to_string(),
        })
    }
}

/// Every node's Slurm state by node name, as `sinfo` last said.
pub type States = Arc<Mutex<HashMap<String, String>>>;

/// The worker thread that keeps Slurm in step with the membership.
#[derive(Debug)]
pub struct Worker {
    forget: Sender<(String, String)>,
    states: States,
}

impl Worker {
    /// Starts the worker for the configuration in `slurm_conf`.
    pub fn start(slurm_conf: PathBuf) -> Worker {
        let (forget, requests) = mpsc::channel();
        let states: States = Arc::default();
        let shared = Arc::clone(&states);
        std::thread::spawn(move || work(&slurm_conf, &requests, &shared));
        Worker { forget, states }
    }

    /// `name` is no longer a member (`why` goes into Slurm's reason).
    pub fn forget(&self, name: &str, why: &str) {
        let _ = self.forget.send((name.to_string(), why.to_string()));
    }

    /// `name`'s Slurm state, if slurmctld knows it.
    pub fn state(&self, name: &str) -> Option<String> {
        self.states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }
}

fn work(conf: &Path, requests: &Receiver<(String, String)>, states: &States) {
    let tool = |program: &str| {
        let mut command = Command::new(tool_path(program));
        command.env("SLURM_CONF", conf);
        command
    };
    // Nodes to delete once nothing runs there, with why they went.
    let mut leaving: BTreeMap<String, String> = BTreeMap::new();
    let mut last_problem = String::new();
    loop {
        match requests.recv_timeout(POLL) {
            Ok((name, why)) => {
                // Drained, then down: batch jobs still on it are requeued.
                for state in ["drain", "down"] {
                    let reason = format!("reason={why}");
                    let update = [
                        "update",
                        &format!("nodename={name}"),
                        &format!("state={state}"),
                        &reason,
                    ];
                    if let Err(e) = run_tool(tool("scontrol").args(update)) {
                        info(format!("slurm: setting {name} {state}: {e}"));
                    }
                }
                leaving.insert(name, why);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        leaving.retain(|name, why| {
            match run_tool(tool("scontrol").args(["delete", &format!("nodename={name}")])) {
                Ok(_) => {
                    info(format!("slurm: deleted node {name} ({why})"));
                    false
                }
                // Jobs still on it, or slurmctld away: again next time.
                Err(_) => true,
            }
        });
        match run_tool(tool("sinfo").args(["--noheader", "--Node", "--format=%N %t"])) {
            Ok(text) => {
                last_problem.clear();
                let read = parse_sinfo(&text);
                let mut known = states.lock().unwrap_or_else(|p| p.into_inner());
                report_changes(&known, &read);
                *known = read;
            }
            Err(problem) if problem.to_string() != last_problem => {
                info(format!("slurm: reading the nodes' states: {problem}"));
                last_problem = problem.to_string();
            }
            Err(_) => {}
        }
    }
}

/// A `slurm` fact for each node whose state changed, `gone` for a node
/// Slurm no longer lists.
fn report_changes(before: &HashMap<String, String>, now: &HashMap<String, String>) {
    let mut names: Vec<&String> = before.keys().chain(now.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        let state = now.get(name).map_or("gone", String::as_str);
        if before.get(name).map(String::as_str) != Some(state) {
            fact(
                Fact::new(chaos_contract::fact::SLURM)
                    .with("name", name)
                    .with("state", state),
            );
        }
    }
}

/// `sinfo --Node --format='%N %t'`: a node can be listed once per
/// partition; the placeholder node is not one of the cluster's.
fn parse_sinfo(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let (name, state) = line.trim().split_once(' ')?;
            (name != slurm::PLACEHOLDER_NODE).then(|| (name.to_string(), state.trim().to_string()))
        })
        .collect()
}

/// The head's Slurm while it serves: what members are granted, and the
/// worker.
#[derive(Debug)]
pub struct Cluster {
    munge_key: Vec<u8>,
    shares: Vec<String>,
    /// With shares, the exports that follow the membership.
    pub exports: Option<Exports>,
    pub worker: Worker,
    accounts: SharedAccounts,
    next_refresh: Instant,
}

/// How often the head's passwd and group files are looked at.
const ACCOUNTS_EVERY: Duration = Duration::from_secs(2);

impl Cluster {
    pub fn new(setup: &Setup, munge_key: Vec<u8>) -> Cluster {
        Cluster {
            munge_key,
            shares: setup.shares.clone(),
            exports: setup.exports(),
            worker: Worker::start(setup.slurm_conf()),
            accounts: SharedAccounts::new("/etc/passwd", "/etc/group"),
            next_refresh: Instant::now() + ACCOUNTS_EVERY,
        }
    }

    /// What a member gets in its welcome.
    pub fn grant(&self) -> crate::proto::SlurmGrant {
        crate::proto::SlurmGrant {
            munge_key: self.munge_key.clone(),
            accounts: self.accounts.current.clone(),
            shares: self.shares.clone(),
        }
    }

    /// The shared accounts, when they changed since the last call.
    pub fn changed_accounts(&mut self, now: Instant) -> Option<Accounts> {
        if now < self.next_refresh {
            return None;
        }
        self.next_refresh = now + ACCOUNTS_EVERY;
        self.accounts
            .refresh()
            .then(|| self.accounts.current.clone())
    }
}

/// The head's accounts as members get them, read again when the files
/// change.
#[derive(Debug)]
pub struct SharedAccounts {
    passwd: PathBuf,
    group: PathBuf,
    stamp: Option<(SystemTime, SystemTime)>,
    pub current: Accounts,
}

impl SharedAccounts {
    pub fn new(passwd: impl Into<PathBuf>, group: impl Into<PathBuf>) -> SharedAccounts {
        let mut shared = SharedAccounts {
            passwd: passwd.into(),
            group: group.into(),
            stamp: None,
            current: Accounts::default(),
        };
        shared.refresh();
        shared
    }

    /// Reads the files again if they changed; true if what members get
    /// changed.
    pub fn refresh(&mut self) -> bool {
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let stamp = modified(&self.passwd).zip(modified(&self.group));
        if stamp.is_some() && stamp == self.stamp {
            return false;
        }
        self.stamp = stamp;
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let accounts = match Accounts::parse(&read(&self.passwd), &read(&self.group)) {
            Ok(accounts) => accounts.cluster_share(SHARED_SYSTEM_ACCOUNTS),
            Err(e) => {
                info(format!("slurm: the head's accounts are not shared: {e}"));
                return false;
            }
        };
        if accounts == self.current {
            return false;
        }
        info(format!(
            "slurm: sharing {} users and {} groups with the members",
            accounts.users.len(),
            accounts.groups.len()
        ));
        self.current = accounts;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinfo_states_by_node_without_the_placeholder() {
        let states =
            parse_sinfo("drone1 idle\ndrone2 alloc\nchaos-placeholder unk*\n\ndrone3 down*\n");
        assert_eq!(states.len(), 3);
        assert_eq!(states["drone1"], "idle");
        assert_eq!(states["drone3"], "down*");
    }

    #[test]
    fn files_that_are_not_tyds_are_left_alone() {
        let dir = std::env::temp_dir().join(format!("chaos-workload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let setup = Setup {
            conf_dir: dir.clone(),
            munge_key: dir.join("munge.key"),
            settings: Settings {
                controller: "head".into(),
                controller_address: std::net::Ipv4Addr::new(10, 99, 0, 1),
                state_dir: dir.join("state"),
                log_file: None,
                max_nodes: 16,
            },
            start: Start::ByHand,
            shares: Vec::new(),
            exports: dir.join("chaos.exports"),
        };
        let conf = setup.slurm_conf();
        let text = setup.settings.slurm_conf();
        assert!(setup.write_ours(&conf, &text).unwrap());
        assert!(!setup.write_ours(&conf, &text).unwrap());
        std::fs::write(&conf, "# the admin's\nClusterName=theirs\n").unwrap();
        let error = setup.write_ours(&conf, &text).unwrap_err().to_string();
        assert!(error.contains("is not tyd's"), "{error}");
        assert_eq!(
            std::fs::read_to_string(&conf).unwrap(),
            "# the admin's\nClusterName=theirs\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_exports_reach_the_members_and_nobody_without_them() {
        let shares = ["/home".to_string(), "/srv/data".to_string()];
        let none = exports_file(&shares, &[]);
        assert!(none.lines().all(|l| l.starts_with('#')), "{none}");
        assert!(none.starts_with(WRITTEN_BY));
        let members = [
            std::net::Ipv4Addr::new(10, 99, 0, 2),
            std::net::Ipv4Addr::new(10, 99, 0, 3),
        ];
        let two = exports_file(&shares, &members);
        let lines: Vec<&str> = two.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(lines.len(), 2, "{two}");
        let fsid = 0x8000_0000 | fnv32(b"/home");
        assert_eq!(
            lines[0],
            format!(
                "/home 10.99.0.2({EXPORT_OPTIONS},fsid={fsid}) 10.99.0.3({EXPORT_OPTIONS},fsid={fsid})"
            )
        );
        assert!(lines[1].starts_with("/srv/data 10.99.0.2("));
        assert!(EXPORT_OPTIONS.contains("root_squash") && !EXPORT_OPTIONS.contains("no_root"));
        // Another path, another filesystem id.
        assert_ne!(fnv32(b"/home"), fnv32(b"/srv/data"));
    }

    #[test]
    fn the_exports_file_follows_the_membership() {
        let dir = std::env::temp_dir().join(format!("chaos-exports-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("chaos.exports");
        let mut exports = Exports::start(file.clone(), vec!["/home".into()], false);
        let wait_for = |exported: bool| {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let text = std::fs::read_to_string(&file).unwrap_or_default();
                if text.starts_with(WRITTEN_BY) && text.contains("/home 10.99.0.2(") == exported {
                    return text;
                }
                assert!(Instant::now() < deadline, "exported {exported}?\n{text}");
                // Polling a file another thread writes, with a deadline.
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        exports.follow(vec![std::net::Ipv4Addr::new(10, 99, 0, 2)]);
        wait_for(true);
        exports.follow(vec![]);
        let text = wait_for(false);
        assert!(!text.contains("/home "), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn shared_accounts_follow_the_files() {
        let dir = std::env::temp_dir().join(format!("chaos-accounts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (passwd, group) = (dir.join("passwd"), dir.join("group"));
        std::fs::write(
            &passwd,
            "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(&group, "root:x:0:\nalice:x:1000:\n").unwrap();
        let mut shared = SharedAccounts::new(&passwd, &group);
        assert_eq!(shared.current.users.len(), 1);
        assert!(!shared.refresh());
        // A new user: the files' times move on (set explicitly, as a
        // second write within the same tick would not).
        std::fs::write(&passwd, "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\nbob:x:1001:1000::/home/bob:/bin/sh\n").unwrap();
        let later = SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&passwd)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert!(shared.refresh());
        assert_eq!(shared.current.users.len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
