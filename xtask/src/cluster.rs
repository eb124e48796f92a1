//! chaos nodes as one cluster: what makes an image a head or a drone (tyd,
//! the cluster identity made by `tyd init`, tyd's service), and `cargo xtask
//! qemu-cluster`, which boots a head and drones on a private Ethernet
//! segment on loopback and shows them join.
//!
//! Secrets travel only inside images, never on a kernel command line
//! (PXE configs and /proc/cmdline are world-readable), and the head's
//! private key only ever goes into the head's own image.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chaos_agent::keys::{self, ClusterIdentity, HeadIdentity};
use chaos_agent::keys::{BEACON_PUB, CLUSTER_KEY, HEAD_ADDRESS, HEAD_KEY, HEAD_PUB};
use chaos_contract::fact::{self, Fact};
use chaos_contract::paths::{self, IDENTITY};
use chaos_contract::service::{Restart, Service};
use mkimage::Spec;

use crate::image::{self, KernelChoice, Written};
use crate::kernel::Kernel;
use crate::node::Binaries;
use crate::slurm;
use crate::vm::{Config, Hub, Vm};

/// What a node image does in its cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Runs `tyd serve`; carries the head's private key, so it is for the
    /// head's own machine and never for serving to the lab.
    Head,
    /// Runs `tyd join`; carries the head's public keys, the cluster key and
    /// optionally the head's LAN address (`addr[:port]`), which a
    /// `chaos.head=` on the kernel command line overrides. Without either,
    /// the drone finds the head by its signed beacon.
    Drone { head: Option<String> },
}

/// A cluster identity (a directory made by `tyd init`) and the role an
/// image plays in that cluster.
#[derive(Clone, Debug)]
pub struct Membership {
    pub dir: PathBuf,
    pub role: Role,
}

/// Adds the membership's identity files and the service that runs tyd
/// (which every image carries, see [`image::moduleless_spec`]) in its
/// role. An image without a membership starts no tyd: a node has no
/// cluster to join until an identity is baked in.
pub fn add(spec: &mut Spec, kernel: &Kernel, membership: &Membership) -> anyhow::Result<()> {
    let Membership { dir, role } = membership;
    let context = || {
        format!(
            "reading the cluster identity in {} (make one with `tyd init --dir {}`)",
            dir.display(),
            dir.display()
        )
    };
    let cluster = ClusterIdentity::load(dir).with_context(context)?;
    let path = |name: &str| format!("{IDENTITY}/{name}");
    let key_file = |key: &[u8; 32]| format!("{}\n", keys::hex(key));
    spec.dir(chaos_contract::paths::IDENTITY, 0o700)?;
    spec.file(&path(HEAD_PUB), 0o644, key_file(&cluster.head_public))?;
    spec.file(&path(BEACON_PUB), 0o644, key_file(&cluster.beacon_public))?;
    spec.file(&path(CLUSTER_KEY), 0o600, key_file(&cluster.cluster_key))?;
    let mut service = Service::new("tyd", paths::TYD);
    // WireGuard and nftables are in the image's module list, which loads
    // while the boot goes on.
    service.when = Some(paths::MODULES_LOADED.into());
    match role {
        Role::Head => {
            let head = HeadIdentity::load(dir).with_context(context)?;
            if head.keypair.public != cluster.head_public {
                bail!(
                    "{}: {HEAD_PUB} is not the public half of {HEAD_KEY}",
                    dir.display()
                );
            }
            if head.beacon_key().verifying_key().to_bytes() != cluster.beacon_public {
                bail!(
                    "{}: {BEACON_PUB} is not the beacon key of {HEAD_KEY}",
                    dir.display()
                );
            }
            spec.file(&path(HEAD_KEY), 0o600, key_file(&head.keypair.private))?;
            // The cluster's munge key, made beside the identity on first
            // use: the head's image is its own machine's, never served.
            let (munge_key, _) = keys::munge_key(dir).with_context(context)?;
            spec.file(&path(keys::MUNGE_KEY), 0o600, munge_key)?;
            // The default admission: the window tyd serve opens at start
            // admits the drones booting with it, with no one typing.
            service.args = [
                "serve",
                "--slurm",
                "--slurm-conf",
                slurm::HEAD_CONF_DIR,
                "--munge-key",
                paths::MUNGE_KEY,
                "--slurm-state",
                slurm::HEAD_STATE_DIR,
                "--exports",
                slurm::HEAD_EXPORTS,
            ]
            .map(String::from)
            .to_vec();
        }
        Role::Drone { head } => {
            if let Some(head) = head {
                let head = chaos_agent::drone::parse_head(head)?;
                spec.file(&path(HEAD_ADDRESS), 0o644, format!("{head}\n"))?;
            }
            service.args = vec!["join".into()];
            // tyd join ends by itself only when stopped.
            service.restart = Restart::OnFailure;
        }
    }
    // The firewall guards the whole node, not only the cluster's traffic,
    // and tyd keeps the node (clock, name, accounts, key) as a member.
    service
        .args
        .extend(["--firewall", "node", "--manage-node"].map(String::from));
    image::add_service(spec, &service)?;
    let profile = match role {
        Role::Head => slurm::Profile::Head,
        Role::Drone { .. } => slurm::Profile::Drone,
    };
    slurm::add_to_node(spec, kernel, profile)?;
    for service in slurm::services(profile) {
        image::add_service(spec, &service)?;
    }
    Ok(())
}

/// The private segment's address plan: the head at 10.77.0.1, drone `i`
/// (counting from 1) at 10.77.0.(i+1).
pub const MAX_DRONES: usize = 253;

/// Node `index`: 0 is the head, 1.. the drones.
pub fn lan_address(index: usize) -> Ipv4Addr {
    assert!(index <= MAX_DRONES, "no address for node {index}");
    Ipv4Addr::new(10, 77, 0, index as u8 + 1)
}

pub fn node_name(index: usize) -> String {
    match index {
        0 => "head".into(),
        i => format!("drone{i}"),
    }
}

/// The static `ip=` of node `index` (address, netmask, host name; no
/// gateway: the segment leads nowhere).
pub fn ip_arg(index: usize) -> String {
    format!(
        "ip={}:::255.255.255.0:{}::off",
        lan_address(index),
        node_name(index)
    )
}

/// Makes a cluster identity in `dir` unless one is there already (one
/// from before beacons gains its beacon.pub); a directory only its owner
/// can read, since it holds the head's key.
pub fn identity(dir: &Path) -> anyhow::Result<()> {
    if !dir.join(HEAD_KEY).exists() || !dir.join(BEACON_PUB).exists() {
        for written in keys::init(dir)
            .with_context(|| format!("creating a cluster identity in {}", dir.display()))?
        {
            println!("cluster: wrote {}", written.display());
        }
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}

/// The two images of a QEMU cluster.
pub struct Images {
    pub head: Written,
    pub drone: Written,
}

/// Builds build/cluster's head and drone images from `dir`'s identity.
/// The drones carry no head address: they find the head by its beacon,
/// as a lab's PCs do. With `demo`, the head runs the demonstration once
/// that many drones are idle in Slurm.
pub fn images(
    kernel: &Kernel,
    binaries: &Binaries,
    dir: &Path,
    demo: Option<usize>,
) -> anyhow::Result<Images> {
    let head = member_image(kernel, binaries, dir, Role::Head, "head", |spec| {
        demo.map_or(Ok(()), |drones| add_demo(spec, binaries, drones))
    })?;
    let drone = member_image(
        kernel,
        binaries,
        dir,
        Role::Drone { head: None },
        "drone",
        |_| Ok(()),
    )?;
    Ok(Images { head, drone })
}

/// `dir/<name>.cpio.gz`: the image of a member of `dir`'s cluster in
/// `role`, with `extra` added last, readable by its owner alone.
pub fn member_image(
    kernel: &Kernel,
    binaries: &Binaries,
    dir: &Path,
    role: Role,
    name: &str,
    extra: impl FnOnce(&mut Spec) -> anyhow::Result<()>,
) -> anyhow::Result<Written> {
    let mut spec = image::base_spec(kernel, binaries)?;
    let membership = Membership {
        dir: dir.to_path_buf(),
        role,
    };
    add(&mut spec, kernel, &membership)?;
    extra(&mut spec)?;
    let written = image::write(&spec, &dir.join(format!("{name}.cpio.gz")))?;
    // The images hold the cluster's keys.
    std::fs::set_permissions(&written.path, std::fs::Permissions::from_mode(0o600))?;
    Ok(written)
}

/// Where the demonstration's program and script are in the head's image.
const PRIMES: &str = "/usr/local/bin/primes";
const DEMO: &str = "/usr/local/lib/chaos-demo.sh";
/// The demonstration's bound, and the count of primes below it.
pub const PRIMES_BELOW: (u64, u64) = (20_000_000, 1_270_607);
/// The demonstration's last line starts so, then `ok` or what failed.
const DEMO_DONE: &str = "finished: ";

/// The demonstration, run on the head once `drones` drones are idle in
/// Slurm: `srun -N drones hostname`, then a CPU-bound job whose result is
/// known, split across the drones. The drones carry nothing but their
/// image: srun itself copies the program to them (`--bcast`).
fn add_demo(spec: &mut Spec, binaries: &Binaries, drones: usize) -> anyhow::Result<()> {
    let (limit, expected) = PRIMES_BELOW;
    let script = format!(
        "n={drones}\n\
         until [ \"$(sinfo -h -N -t idle -o %N 2>/dev/null | sort -u | wc -l)\" -ge $n ]; do sleep 0.5; done\n\
         echo \"demo: $n drones are idle in Slurm\"\n\
         echo \"demo: \\$ srun -N $n hostname\"\n\
         srun -N $n hostname 2>&1 | sort | sed 's/^/demo:   /'\n\
         echo \"demo: \\$ srun -N $n --bcast=/tmp/primes {PRIMES} {limit}\"\n\
         started=$(date +%s)\n\
         out=$(srun -N $n --ntasks-per-node=1 --bcast=/tmp/primes {PRIMES} {limit} 2>&1)\n\
         echo \"$out\" | sed 's/^/demo:   /'\n\
         total=$(echo \"$out\" | awk '$1 == \"primes\" {{ s += $2 }} END {{ print s + 0 }}')\n\
         echo \"demo: primes below {limit}: $total, counted by $n nodes in $(( $(date +%s) - started )) s\"\n\
         if [ \"$total\" = {expected} ]; then echo 'demo: {DEMO_DONE}ok'; \
         else echo 'demo: {DEMO_DONE}expected {expected}'; fi\n"
    );
    spec.file_from(PRIMES, 0o755, &binaries.primes)?;
    spec.file(DEMO, 0o644, script)?;
    let mut demo = Service::new("demo", "/bin/sh");
    demo.args = vec![DEMO.into()];
    demo.restart = Restart::Never;
    demo.when = Some(paths::JOINED.into());
    image::add_service(spec, &demo)
}

/// [`image::build`], made a member of `cluster` when there is one
/// (`cargo xtask image --cluster`, and pxe, iso and appliance).
pub fn build_image(
    out: &Path,
    choice: KernelChoice,
    cluster: Option<&Membership>,
) -> anyhow::Result<(Kernel, Written)> {
    image::build_with(out, choice, |spec, kernel| match cluster {
        Some(membership) => add(spec, kernel, membership),
        None => Ok(()),
    })
}

/// The VM of node `index` on `hub`, booting `image` with its static
/// address and `extra` kernel arguments.
pub fn node_config(
    kernel: &Kernel,
    image: &Written,
    hub: &Hub,
    index: usize,
    extra: &str,
) -> anyhow::Result<Config> {
    let append = format!("{} {} {extra}", ip_arg(index), image.root_digest_arg());
    Config::new(&kernel.vmlinuz, &image.path, append.trim()).hub_net(hub)
}

/// The user at the head's shell on this terminal: each line typed goes to
/// the head's serial console, whatever it prints comes back, until the
/// shell is left (`exit`, `logout`, Ctrl-D) or Ctrl-C. The consoles keep
/// going to their logs meanwhile.
fn shell(nodes: &mut [Node]) -> anyhow::Result<()> {
    println!(
        "qemu-cluster: the demonstration is over and the cluster runs on. You are at the \
         head's shell: sinfo, squeue, srun, sbatch work as on any Slurm cluster \
         (for example `srun -N {} hostname`); `exit`, Ctrl-D or Ctrl-C stops every VM.",
        nodes.len() - 1
    );
    let _echo = Echo::off();
    let (lines, typed) = std::sync::mpsc::channel::<String>();
    // Reading stdin blocks; a thread that ends with the process does it.
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let prompt = format!("{}:", nodes[0].name);
    let mut shown = nodes[0].vm.console().len();
    // A line goes to the shell only once it shows its prompt again: what is
    // typed ahead would go to whatever reads the terminal meanwhile (srun
    // passes its stdin to the job), and lines piped in arrive at once.
    let mut waiting: VecDeque<String> = VecDeque::new();
    let mut since_typed = shown;
    nodes[0].vm.type_serial("\n")?;
    let mut input_done = false;
    let mut leaving: Option<Instant> = None;
    while !STOP.load(Ordering::Relaxed) {
        match typed.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => waiting.push_back(line),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => input_done = true,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        for node in nodes.iter_mut() {
            let console = node.vm.console();
            node.log_console(&console)?;
        }
        let head = nodes[0].vm.console();
        // The shell's line editor asks the terminal where its cursor is;
        // a terminal that saw the question would answer into the next line.
        // The serial line delivers it byte by byte, so a part of it at the
        // end waits for the rest.
        let fresh = &head[shown..];
        let partial = (1..CURSOR_QUERY.len())
            .rev()
            .find(|&n| fresh.ends_with(&CURSOR_QUERY[..n]))
            .unwrap_or(0);
        let complete = &fresh[..fresh.len() - partial];
        let mut out = std::io::stdout().lock();
        out.write_all(complete.replace(CURSOR_QUERY, "").as_bytes())?;
        out.flush()?;
        shown = head.len() - partial;
        let at_prompt = head[since_typed..].lines().any(|l| {
            let l = l.trim_start_matches('\r');
            l.starts_with(&prompt) && l.contains("# ")
        });
        if !at_prompt {
            if leaving.is_some_and(|since| since.elapsed() > SHELL_FINISH) {
                println!(
                    "\nqemu-cluster: the head's shell did not finish within {} s; stopping anyway",
                    SHELL_FINISH.as_secs()
                );
                break;
            }
            continue;
        }
        match waiting.pop_front() {
            Some(line) if matches!(line.trim(), "exit" | "logout") => break,
            Some(line) => {
                since_typed = head.len();
                nodes[0].vm.type_serial(&format!("{line}\n"))?;
            }
            None if input_done => break,
            None => {}
        }
        if input_done && leaving.is_none() {
            leaving = Some(Instant::now());
        }
    }
    println!();
    Ok(())
}

/// A terminal's "where is the cursor?" (DSR 6).
const CURSOR_QUERY: &str = "\x1b[6n";

/// How long the shell may take to finish what was typed before the user
/// left it.
const SHELL_FINISH: Duration = Duration::from_secs(300);

/// The terminal's own echo off while the head's shell echoes what is
/// typed (so each line shows once), back on when dropped; nothing when
/// stdin is no terminal.
struct Echo(Option<libc::termios>);

impl Echo {
    fn off() -> Echo {
        // SAFETY: tcgetattr and tcsetattr on stdin with a termios of our
        // own; a failure leaves the terminal as it was.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut saved) != 0 {
                return Echo(None);
            }
            let mut quiet = saved;
            quiet.c_lflag &= !libc::ECHO;
            if libc::tcsetattr(0, libc::TCSANOW, &quiet) != 0 {
                return Echo(None);
            }
            Echo(Some(saved))
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            // SAFETY: restores the attributes read in `off`.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, saved) };
        }
    }
}

/// A node of a running QEMU cluster.
struct Node {
    name: String,
    lan: Ipv4Addr,
    vm: Vm,
    log: std::fs::File,
    logged: usize,
}

impl Node {
    /// Appends what the console printed since the last call to the log.
    fn log_console(&mut self, console: &str) -> anyhow::Result<()> {
        self.log.write_all(&console.as_bytes()[self.logged..])?;
        self.logged = console.len();
        Ok(())
    }
}

/// One node as the live table shows it, read from the facts on its
/// console ([`chaos_contract::fact`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Row {
    pub state: String,
    pub overlay: String,
    pub peers: Option<usize>,
    /// The node's name in the cluster, once it has one.
    pub name: Option<String>,
}

/// What a node's console says about it: the last word of init and tyd
/// on its state, its overlay address, and how many peers its mesh has
/// (for the head: how many drones are members).
pub fn row(console: &str) -> Row {
    let mut row = Row {
        state: "booting".into(),
        overlay: "-".into(),
        peers: None,
        name: None,
    };
    let mut members = std::collections::BTreeSet::new();
    for fact in Fact::all(console) {
        let get = |key| fact.get(key).map(str::to_string);
        match fact.kind.as_str() {
            fact::READY if row.state == "booting" => row.state = "up".into(),
            fact::SERVICE
                if fact.matches(fact::SERVICE, &[("name", "tyd"), ("state", "given-up")]) =>
            {
                row.state = "tyd gave up".into()
            }
            fact::NODE => {
                row.state = get("state").unwrap_or_default();
                if let Some(overlay) = get("overlay") {
                    row.overlay = overlay.split('/').next().unwrap_or("-").to_string();
                }
                row.name = get("name").or(row.name.take());
                match fact.get("peers").and_then(|p| p.parse().ok()) {
                    Some(peers) => row.peers = Some(peers),
                    None if row.state == "serving" => row.peers = Some(members.len()),
                    None => {}
                }
            }
            fact::MEMBER => {
                let node = get("node").unwrap_or_default();
                if fact.get("state") == Some("up") {
                    members.insert(node);
                } else {
                    members.remove(&node);
                }
                row.peers = Some(members.len());
            }
            _ => {}
        }
    }
    row
}

/// Every node's Slurm state by name, as the head's tyd last reported it.
pub fn slurm_states(head_console: &str) -> BTreeMap<String, String> {
    let mut states = BTreeMap::new();
    for fact in Fact::all(head_console).filter(|f| f.kind == fact::SLURM) {
        if let (Some(name), Some(state)) = (fact.get("name"), fact.get("state")) {
            if state == "gone" {
                states.remove(name);
            } else {
                states.insert(name.to_string(), state.to_string());
            }
        }
    }
    states
}

/// Set by SIGINT and SIGTERM: `qemu-cluster` stops its VMs and returns.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// `cargo xtask qemu-cluster`: a head and `drones` drones under QEMU on a
/// private segment on loopback, a live table of their state until Ctrl-C,
/// then every VM stopped.
pub fn run(choice: KernelChoice, drones: usize, once: bool) -> anyhow::Result<()> {
    if !(1..=MAX_DRONES).contains(&drones) {
        bail!("-n {drones}: expected 1 to {MAX_DRONES} drones");
    }
    let sh = crate::shell()?;
    let dir = work_dir();
    identity(&dir)?;
    println!("qemu-cluster: building the node binaries (static musl)");
    let binaries = crate::node::build()?;
    let kernel = choice.get(&sh)?;
    let images = images(&kernel, &binaries, &dir, Some(drones))?;
    println!(
        "qemu-cluster: images {} and {} (kernel {})",
        images.head.path.display(),
        images.drone.path.display(),
        kernel.release
    );
    // Handlers only set a flag; QEMU gets its own default dispositions
    // back at exec, and the VMs are killed below in any case.
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe { libc::signal(signal, request_stop as *const () as libc::sighandler_t) };
    }
    let hub = Hub::start()?;
    let mut nodes = Vec::new();
    for index in 0..=drones {
        let image = if index == 0 {
            &images.head
        } else {
            &images.drone
        };
        let name = node_name(index);
        let log = dir.join(format!("{name}.log"));
        // The head's console is the user's shell after the demonstration.
        let extra = if index == 0 { "chaos.mode=expert" } else { "" };
        nodes.push(Node {
            vm: Vm::start(&node_config(&kernel, image, &hub, index, extra)?)?,
            name,
            lan: lan_address(index),
            log: std::fs::File::create(&log)
                .with_context(|| format!("creating {}", log.display()))?,
            logged: 0,
        });
    }
    println!(
        "qemu-cluster: booting 1 head and {drones} drones on 10.77.0.0/24 \
         (consoles in {}/*.log); Ctrl-C stops them",
        dir.display()
    );
    let result = watch(&mut nodes, drones, once).and_then(|()| {
        if once || STOP.load(Ordering::Relaxed) {
            return Ok(());
        }
        shell(&mut nodes)
    });
    let count = nodes.len();
    drop(nodes);
    drop(hub);
    println!("qemu-cluster: stopped {count} VMs");
    result
}

/// Where qemu-cluster and its measurement keep the cluster's identity,
/// images and consoles.
fn work_dir() -> PathBuf {
    crate::build_dir().join("cluster")
}

/// How long `--once` waits for the demonstration to end: a cluster that
/// has not run it by then will not (under TCG it takes about a minute).
const ONCE_DEADLINE: Duration = Duration::from_secs(600);

/// Prints the table whenever it changes and the demonstration's lines as
/// they come, until the demonstration ends (with `once`, its outcome is
/// the result) or the user stops it.
fn watch(nodes: &mut [Node], drones: usize, once: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut shown = (Vec::new(), BTreeMap::new());
    let mut converged = false;
    let mut demo_lines = 0;
    while !STOP.load(Ordering::Relaxed) {
        let mut rows = Vec::new();
        for node in nodes.iter_mut() {
            let console = node.vm.console();
            node.log_console(&console)?;
            rows.push(row(&console));
        }
        let head = nodes[0].vm.console();
        let slurm = slurm_states(&head);
        if (&rows, &slurm) != (&shown.0, &shown.1) {
            println!("\n{:.1} s", started.elapsed().as_secs_f64());
            print!("{}", table(nodes, &rows, &slurm));
            if !converged && rows.iter().all(|r| r.peers == Some(drones)) {
                converged = true;
                println!(
                    "qemu-cluster: all {drones} drones joined, full mesh, after {:.1} s",
                    started.elapsed().as_secs_f64()
                );
            }
            shown = (rows, slurm);
        }
        let demo: Vec<&str> = head
            .lines()
            .filter_map(|l| l.split_once("demo: demo: ").map(|(_, rest)| rest))
            .collect();
        for line in &demo[demo_lines..] {
            println!("qemu-cluster: {line}");
            if let Some(outcome) = line.strip_prefix(DEMO_DONE) {
                return match (outcome, once) {
                    ("ok", _) | (_, false) => Ok(()),
                    (failed, true) => bail!("the demonstration failed: {failed}"),
                };
            }
        }
        demo_lines = demo.len();
        if once && started.elapsed() >= ONCE_DEADLINE {
            bail!(
                "the demonstration did not end within {} s (the consoles are in {}/*.log)",
                ONCE_DEADLINE.as_secs(),
                work_dir().display()
            );
        }
        // A display refresh, not a synchronisation: the consoles are
        // re-read a few times a second.
        std::thread::sleep(Duration::from_millis(250));
    }
    if once {
        bail!("stopped before the demonstration ended");
    }
    Ok(())
}

fn table(nodes: &[Node], rows: &[Row], slurm: &BTreeMap<String, String>) -> String {
    let mut out = format!(
        "{:<8} {:<12} {:<12} {:<16} {:<6} {}\n",
        "NODE", "LAN", "OVERLAY", "STATE", "PEERS", "SLURM"
    );
    for (node, row) in nodes.iter().zip(rows) {
        let peers = row.peers.map_or_else(|| "-".into(), |p| p.to_string());
        let state = row.name.as_ref().and_then(|n| slurm.get(n));
        out.push_str(&format!(
            "{:<8} {:<12} {:<12} {:<16} {peers:<6} {}\n",
            node.name,
            node.lan.to_string(),
            row.overlay,
            row.state,
            state.map_or("-", String::as_str)
        ));
    }
    out
}

/// Join and convergence times of a QEMU cluster, as the host saw them on
/// the consoles (TCG, every VM started at once but the head, which is
/// serving first), and how long Slurm took to have every drone idle and
/// to run the demonstration.
#[derive(Clone, Debug)]
pub struct Convergence {
    pub drones: usize,
    /// Per drone, from tyd's start to its welcome over the overlay.
    pub joins: Vec<Duration>,
    /// Per drone, the join attempt that succeeded as tyd timed it: LAN
    /// handshake, firewall and wg0 up, session moved into the overlay.
    pub tyd_joins: Vec<Duration>,
    /// From the last drone's init starting to the last drone's mesh
    /// holding every other node (DESIGN.md's "converged" budget).
    pub converged: Duration,
    /// From the last drone's init starting to every drone idle in Slurm.
    pub idle: Duration,
    /// From the first QEMU start to every drone idle in Slurm, and to the
    /// end of the demonstration.
    pub idle_from_start: Duration,
    pub demo_from_start: Duration,
    /// `srun -N <drones> hostname` on the head, start to end (guest time).
    pub srun_hostname: Duration,
}

/// Boots a head and `drones` drones (Debian's kernel or the custom one)
/// and measures how they join, converge and run the demonstration; for
/// `cargo xtask bench`.
pub fn measure(choice: KernelChoice, drones: usize) -> anyhow::Result<Convergence> {
    const BOOT: Duration = Duration::from_secs(300);
    const STEP: Duration = Duration::from_secs(120);
    if !(1..=MAX_DRONES).contains(&drones) {
        bail!("{drones} drones: expected 1 to {MAX_DRONES}");
    }
    let dir = work_dir();
    identity(&dir)?;
    let binaries = crate::node::build()?;
    let kernel = choice.get(&crate::shell()?)?;
    let images = images(&kernel, &binaries, &dir, Some(drones))?;
    let hub = Hub::start()?;
    let start = Instant::now();
    let mut head = Vm::start(&node_config(&kernel, &images.head, &hub, 0, "")?)?;
    head.expect_fact(fact::NODE, &[("state", "serving")], BOOT)?;
    let mut vms = (1..=drones)
        .map(|i| Vm::start(&node_config(&kernel, &images.drone, &hub, i, "")?))
        .collect::<anyhow::Result<Vec<Vm>>>()?;
    // One thread per VM, so each event is timed as its line arrives.
    let (drones_seen, head_seen) = std::thread::scope(|scope| {
        let threads: Vec<_> = vms
            .iter_mut()
            .map(|vm| scope.spawn(move || watch_drone(vm, drones, BOOT, STEP)))
            .collect();
        let head = scope.spawn(|| watch_demo(&mut head, BOOT, STEP));
        let drones = threads
            .into_iter()
            .map(joined)
            .collect::<anyhow::Result<Vec<DroneTimes>>>();
        (drones, joined(head))
    });
    let (drones_seen, head_seen) = (drones_seen?, head_seen?);
    drop(vms);
    let last = |pick: fn(&DroneTimes) -> Instant| {
        drones_seen
            .iter()
            .map(pick)
            .max()
            .expect("at least one drone")
    };
    Ok(Convergence {
        drones,
        joins: drones_seen.iter().map(|d| d.joined - d.tyd).collect(),
        tyd_joins: drones_seen.iter().map(|d| d.tyd_join).collect(),
        converged: last(|d| d.meshed) - last(|d| d.init),
        idle: head_seen.idle.saturating_duration_since(last(|d| d.init)),
        idle_from_start: head_seen.idle - start,
        demo_from_start: head_seen.done - start,
        srun_hostname: head_seen.srun_hostname,
    })
}

fn joined<T>(thread: std::thread::ScopedJoinHandle<'_, anyhow::Result<T>>) -> anyhow::Result<T> {
    thread
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("a timing thread panicked")))
}

/// When the head's demonstration saw every drone idle and ended, and how
/// long its `srun hostname` took.
struct DemoTimes {
    idle: Instant,
    done: Instant,
    srun_hostname: Duration,
}

fn watch_demo(head: &mut Vm, boot: Duration, step: Duration) -> anyhow::Result<DemoTimes> {
    head.expect("drones are idle in Slurm", boot)?;
    let idle = Instant::now();
    let started = head.expect_line("demo: demo: $ srun -N", step)?;
    let ended = head.expect_line("demo: demo: $ srun -N", step)?;
    let done = head.expect_line(&format!("demo: demo: {DEMO_DONE}"), step)?;
    let done_at = Instant::now();
    if !done.ends_with(&format!("{DEMO_DONE}ok")) {
        bail!("the demonstration failed: {done}");
    }
    let seconds = crate::vm::timestamp(&ended)? - crate::vm::timestamp(&started)?;
    Ok(DemoTimes {
        idle,
        done: done_at,
        srun_hostname: Duration::from_secs_f64(seconds.max(0.0)),
    })
}

/// When a drone's console showed each step of its way into the cluster.
struct DroneTimes {
    init: Instant,
    tyd: Instant,
    joined: Instant,
    meshed: Instant,
    tyd_join: Duration,
}

fn watch_drone(
    vm: &mut Vm,
    drones: usize,
    boot: Duration,
    step: Duration,
) -> anyhow::Result<DroneTimes> {
    // The kernel's own line.
    vm.expect(crate::timeline::HANDOFF, boot)?;
    let init = Instant::now();
    // tyd's first word, whether it was told the head or listens for it.
    vm.expect_fact(fact::NODE, &[], boot)?;
    let tyd = Instant::now();
    let joined_fact = vm.expect_fact(fact::NODE, &[("state", "joined")], step)?;
    let joined = Instant::now();
    let number = |key| joined_fact.get(key).and_then(|v| v.parse::<u64>().ok());
    let tyd_join = number("ms")
        .map(Duration::from_millis)
        .with_context(|| format!("no join time in {joined_fact}"))?;
    if number("peers") != Some(drones as u64) {
        let peers = drones.to_string();
        vm.expect_fact(
            fact::NODE,
            &[("state", "joined"), ("peers", peers.as_str())],
            step,
        )?;
    }
    Ok(DroneTimes {
        init,
        tyd,
        joined,
        meshed: Instant::now(),
        tyd_join,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_plan() {
        assert_eq!(ip_arg(0), "ip=10.77.0.1:::255.255.255.0:head::off");
        assert_eq!(ip_arg(2), "ip=10.77.0.3:::255.255.255.0:drone2::off");
        assert_eq!(lan_address(MAX_DRONES), Ipv4Addr::new(10, 77, 0, 254));
    }

    #[test]
    fn rows_follow_the_facts_not_the_words() {
        let drone = "\
            [ 1.0] init: ready: drone1 as pid 1\n\
            [ 1.0] init: @chaos ready host=drone1\n\
            [ 1.1] tyd: tyd: @chaos node state=listening\n\
            [ 1.2] tyd: tyd: @chaos node state=joining head=10.77.0.1:7700\n\
            [ 1.2] tyd: tyd: @chaos node state=retrying head=10.77.0.1:7700\n\
            [ 2.1] tyd: tyd: joined as node 2, whatever the words say\n\
            [ 2.1] tyd: tyd: @chaos node state=joined node=2 name=drone1 \
            overlay=10.99.0.2/16 head=10.77.0.1:7700 peers=1 ms=80\n\
            [ 3.0] tyd: tyd: @chaos node state=joined node=2 name=drone1 \
            overlay=10.99.0.2/16 head=10.77.0.1:7700 peers=2\n";
        let want = Row {
            state: "joined".into(),
            overlay: "10.99.0.2".into(),
            peers: Some(2),
            name: Some("drone1".into()),
        };
        assert_eq!(row(drone), want);
        let head = "\
            tyd: @chaos node state=serving name=head overlay=10.99.0.1/16 listen=0.0.0.0:7700\n\
            tyd: @chaos member node=2 name=drone1 state=up overlay=10.99.0.2\n\
            tyd: @chaos member node=3 name=drone2 state=up overlay=10.99.0.3\n\
            tyd: @chaos slurm name=drone1 state=idle\n\
            tyd: @chaos slurm name=drone2 state=idle\n\
            tyd: @chaos member node=2 name=drone1 state=expired\n\
            tyd: @chaos slurm name=drone1 state=gone\n";
        assert_eq!(row(head).peers, Some(1));
        assert_eq!(row(head).state, "serving");
        let slurm = slurm_states(head);
        assert_eq!(slurm.len(), 1);
        assert_eq!(slurm["drone2"], "idle");
        assert_eq!(row("").state, "booting");
        assert_eq!(row("init: @chaos ready host=x\n").state, "up");
        assert_eq!(
            row("init: @chaos ready host=x\ninit: @chaos service name=tyd state=given-up why=x\n")
                .state,
            "tyd gave up"
        );
    }
}
