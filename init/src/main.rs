//! chaos PID 1. Boots the node through a list of named phases, each logged
//! with its duration, then supervises the service table until a power
//! request. It never exits: every failure ends in the emergency path, which
//! offers a shell in expert mode and otherwise counts down and reboots.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chaos_contract::cmdline::WatchdogAction;
use chaos_contract::cmdline::{self, Autoconf, Cmdline, IpConfig, Mode};
use chaos_contract::fact::{self, Fact};
use chaos_contract::paths;
use chaos_contract::service::Table;
use chaos_init::dhcp::autoconf;
use chaos_init::hosts::{self, Identity};
use chaos_init::lifecycle::{self, Pid1, Watched};
use chaos_init::liveness::Running;
use chaos_init::net::{Link, Netlink};
use chaos_init::power::PowerButtons;
use chaos_init::signals::{Power, Signals};
use chaos_init::supervise::{Supervisor, BACKOFF};
use chaos_init::sys::{Linux, System};
use chaos_init::{coldplug, debug, error, info, log, modules, mount, warn};

/// The integrity watchdog's service name, as the image builder writes it.
const CERTAINTYD: &str = "certaintyd";
/// How long a static `ip=` without a device waits for a NIC with carrier.
const CARRIER_WAIT: Duration = Duration::from_secs(5);
/// How long the boot waits for a first DHCP lease before going on (the
/// NICs keep asking, and a later lease is applied when it comes).
const DHCP_WAIT: Duration = Duration::from_secs(30);
/// Coldplug's passes over /sys: the deepest chain seen is PCI -> virtio ->
/// NIC, and ACPI -> input -> evdev.
const COLDPLUG_ROUNDS: usize = 4;
/// Seconds shown before an emergency reboot, so the reason can be read.
const EMERGENCY_COUNTDOWN: u64 = 10;

/// Whether the emergency path may offer a shell (`chaos.mode=expert`); set
/// once the command line is read, consulted when everything else has failed.
static EXPERT: AtomicBool = AtomicBool::new(false);

#[derive(Default)]
struct Boot {
    cmdline: Cmdline,
    identity: Identity,
    table: Table,
    supervisor: Option<Supervisor>,
    /// Closed when the image's module list is loaded (see [`Pid1`]).
    modules_pending: Option<std::os::fd::OwnedFd>,
}

struct Phase {
    name: &'static str,
    /// A fatal phase's failure leaves nothing to boot on: emergency path.
    fatal: bool,
    run: fn(&mut Boot) -> anyhow::Result<()>,
}

const PHASES: &[Phase] = &[
    Phase {
        name: "mount",
        fatal: true,
        run: mount_phase,
    },
    Phase {
        name: "cmdline",
        fatal: false,
        run: cmdline_phase,
    },
    Phase {
        name: "modules",
        fatal: false,
        run: modules_phase,
    },
    Phase {
        name: "network",
        fatal: false,
        run: network_phase,
    },
    Phase {
        name: "hosts",
        fatal: false,
        run: hosts_phase,
    },
    Phase {
        name: "table",
        fatal: true,
        run: table_phase,
    },
    Phase {
        name: "services",
        fatal: false,
        run: services_phase,
    },
];

fn main() {
    // The image links fix_hosts to init: the hosts phase, run by hand.
    if chaos_init::invoked_as(chaos_init::fix_hosts::NAME) {
        std::process::exit(chaos_init::fix_hosts::run());
    }
    // And the root's watchdog, which PID 1 starts as a service.
    if chaos_init::invoked_as(chaos_init::certainty::command::NAME) {
        std::process::exit(chaos_init::certainty::command::main().into());
    }
    log::set_component("init");
    if std::process::id() != 1 {
        eprintln!(
            "init: this is chaos's PID 1; the kernel starts it (this is pid {})",
            std::process::id()
        );
        std::process::exit(2);
    }
    let outcome = std::panic::catch_unwind(run);
    let reason = match outcome {
        Ok(Err(e)) => format!("{e:#}"),
        Ok(Ok(never)) => match never {},
        Err(panic) => panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .map_or_else(|| "panic".to_string(), |m| format!("panic: {m}")),
    };
    emergency(&reason)
}

fn run() -> anyhow::Result<std::convert::Infallible> {
    // First of all: signals blocked before anything can fork or send one.
    let signals = Signals::take_over().context("taking over signals")?;
    let mut boot = Boot::default();
    for phase in PHASES {
        let started = Instant::now();
        match (phase.run)(&mut boot) {
            Ok(()) => info!("phase {} done in {} ms", phase.name, ms(started)),
            Err(e) if phase.fatal => return Err(e.context(format!("phase {}", phase.name))),
            Err(e) => error!(
                "phase {} failed after {} ms: {e:#}; booting on",
                phase.name,
                ms(started)
            ),
        }
    }
    let modules_pending = boot.modules_pending.take();
    if modules_pending.is_none() {
        // No list is loading (none to load, safe mode, or the phase
        // failed): the services waiting for it start with what there is.
        mark_modules_loaded();
    }
    let supervisor = boot
        .supervisor
        .take()
        .unwrap_or_else(|| Supervisor::new(Vec::new(), BACKOFF));
    let mut pid1 = Pid1 {
        watched: watched(&boot.cmdline, &supervisor),
        supervisor,
        signals,
        buttons: PowerButtons::open(Path::new("/dev/input")),
        // softdog may still be loading: then it is armed once it is in.
        watchdog: modules_pending
            .is_none()
            .then(chaos_init::watchdog::arm)
            .flatten(),
        modules_pending,
    };
    if pid1.buttons.is_empty() {
        warn!("no power button found; ACPI power-off requests will be ignored");
    }
    info!("ready: {} as pid 1", boot.identity.hostname);
    info!(
        "{}",
        Fact::new(fact::READY).with("host", &boot.identity.hostname)
    );
    if boot.cmdline.chaos.mode == Mode::Expert {
        expert_shell();
    }
    let (power, cause) = pid1.supervise();
    pid1.shutdown(power, &cause)
}

/// certaintyd, when the image has it and `chaos.watchdog=` is not off.
fn watched(cmdline: &Cmdline, supervisor: &Supervisor) -> Option<Watched> {
    let watchdog = &cmdline.chaos.watchdog;
    let present = !matches!(supervisor.running(CERTAINTYD), Running::Down);
    (present && watchdog.action != WatchdogAction::Off).then(|| {
        Watched::new(
            CERTAINTYD,
            chaos_contract::paths::CERTAINTYD_STATUS.into(),
            watchdog.interval,
            watchdog.action,
        )
    })
}

fn ms(since: Instant) -> u128 {
    since.elapsed().as_millis()
}

fn mount_phase(_: &mut Boot) -> anyhow::Result<()> {
    mount::apply(&Linux, mount::MOUNTS)?;
    log::attach_kmsg().context("opening /dev/kmsg")?;
    Linux.create_dir_all(Path::new(chaos_contract::paths::RUN), 0o755)?;
    Ok(())
}

fn cmdline_phase(boot: &mut Boot) -> anyhow::Result<()> {
    let text = std::fs::read_to_string("/proc/cmdline").context("reading /proc/cmdline")?;
    boot.cmdline = cmdline::parse(&text);
    log::set_max_level(boot.cmdline.chaos.log.into());
    EXPERT.store(boot.cmdline.chaos.mode == Mode::Expert, Ordering::Relaxed);
    for problem in &boot.cmdline.problems {
        warn!("{problem}");
    }
    info!("mode {:?}", boot.cmdline.chaos.mode);
    Ok(())
}

fn modules_phase(boot: &mut Boot) -> anyhow::Result<()> {
    let release = nix::sys::utsname::uname()?
        .release()
        .to_string_lossy()
        .into_owned();
    let safe = boot.cmdline.chaos.mode == Mode::Safe;
    let extra = &boot.cmdline.chaos.modules;
    let Some(dir) = modules::image_dir(Path::new("/"), &release)? else {
        info!("coldplug: this image has no kernel modules (kernel {release} has its drivers built in); nothing to load");
        if !extra.is_empty() {
            warn!(
                "chaos.modules={} ignored: this image has no modules",
                extra.join(",")
            );
        }
        report_unmatched_nics();
        return Ok(());
    };
    let opened = Instant::now();
    let tree = std::sync::Arc::new(mkimage::ModuleTree::open(&dir)?);
    debug!(
        "coldplug: read the image's module tables in {} ms",
        ms(opened)
    );
    if safe {
        info!("safe mode: no autoprobe; loading only chaos.modules=");
    }
    // Drivers bring devices that want drivers of their own (virtio_pci the
    // virtio NIC, button its input device), so /sys is read again after
    // each round until nothing new matches.
    let mut names = extra.clone();
    let mut tried: BTreeSet<String> = names
        .iter()
        .map(|n| mkimage::modules::normalise(n))
        .collect();
    for _ in 0..COLDPLUG_ROUNDS {
        let started = Instant::now();
        if !safe {
            let devices = coldplug::devices(Path::new("/sys"));
            let read = ms(started);
            let matched = coldplug::matches(tree.aliases(), &devices);
            debug!(
                "coldplug: {} devices read in {read} ms, matched in {} ms",
                devices.len(),
                ms(started) - read
            );
            for (module, found) in matched {
                if tried.insert(module.clone()) {
                    let names_of: Vec<String> = found
                        .iter()
                        .filter_map(|d| Some(d.path.file_name()?.to_string_lossy().into_owned()))
                        .collect();
                    info!("coldplug: {module} for {}", names_of.join(", "));
                    names.push(module);
                }
            }
        }
        if names.is_empty() {
            break;
        }
        log_loaded("modules", &modules::load_all(&tree, &dir, &names), started);
        names.clear();
    }
    if safe {
        return Ok(());
    }
    report_unmatched_nics();
    let read = |path: &str| match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.split_whitespace().map(String::from).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(anyhow::anyhow!("reading {path}: {e}")),
    };
    let listed: Vec<String> = read(chaos_contract::paths::MODULE_LIST)?;
    let later: Vec<String> = read(chaos_contract::paths::LATE_MODULE_LIST)?;
    // The image's own list (WireGuard, nftables, softdog) is for the
    // services, not for the network or ready: it loads while the NICs come
    // up and the boot goes on, and the services that need it wait for its
    // file. What only a member needs, and long after (the NFS client or
    // server), loads after it, with no one waiting.
    let (pending, done) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    std::thread::spawn(move || {
        let started = Instant::now();
        // Whatever happens here, the services waiting for the list start
        // (with what there is), rather than waiting for ever in silence.
        let loading = std::panic::AssertUnwindSafe(|| modules::load_all(&tree, &dir, &listed));
        match std::panic::catch_unwind(loading) {
            Ok(outcome) => log_loaded("the image's modules", &outcome, started),
            Err(_) => error!("loading the image's modules panicked"),
        }
        mark_modules_loaded();
        // Closing the pipe is the news: PID 1's loop wakes to arm the
        // watchdog (softdog may be among them) and to start tyd.
        drop(done);
        if !later.is_empty() {
            // Only idle CPU for these: on a slow or single CPU they would
            // otherwise compete with the join they are loaded for.
            idle_priority();
            let started = Instant::now();
            let outcome = modules::load_all(&tree, &dir, &later);
            log_loaded("the image's later modules", &outcome, started);
        }
    });
    boot.modules_pending = Some(pending);
    Ok(())
}

/// Says that the image's module list is in: the `when =` file of the
/// services that need it. A failure to write it is logged; those services
/// then do not start, and the log says why.
fn mark_modules_loaded() {
    if let Err(e) = std::fs::write(chaos_contract::paths::MODULES_LOADED, "") {
        error!(
            "writing {}: {e}; the services that wait for it will not start",
            chaos_contract::paths::MODULES_LOADED
        );
    }
}

/// Puts the calling thread in SCHED_IDLE, saying so when it cannot (the
/// work then goes on at normal priority). musl's sched_setscheduler
/// always fails with ENOSYS by design, so this is the system call itself.
fn idle_priority() {
    // SAFETY: sched_param is plain integers; zero is what SCHED_IDLE wants.
    let param: libc::sched_param = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is this thread, and param lives across the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_setscheduler,
            0,
            libc::SCHED_IDLE,
            &param as *const libc::sched_param,
        )
    };
    if rc != 0 {
        warn!(
            "the later modules load at normal priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn log_loaded(what: &str, outcome: &modules::Outcome, started: Instant) {
    for problem in &outcome.errors {
        error!("{problem}");
    }
    info!(
        "{what}: loaded {} modules in {} ms",
        outcome.loaded.len(),
        ms(started)
    );
    // A few per line: the kernel cuts a log record at about 1000 bytes.
    for chunk in outcome.loaded.chunks(8) {
        let names: Vec<String> = chunk
            .iter()
            .map(|m| format!("{} ({} ms)", m.name, m.took.as_millis()))
            .collect();
        info!("  {}", names.join(", "));
    }
}

/// Names every network controller left without a driver, so a person at
/// the console knows which module the image lacks.
fn report_unmatched_nics() {
    for nic in coldplug::pci_nics(Path::new("/sys")) {
        if nic.driver.is_none() {
            warn!("coldplug: no driver in this image for network controller {nic}");
        }
    }
}

fn network_phase(boot: &mut Boot) -> anyhow::Result<()> {
    let mut netlink = Netlink::open()?;
    let links = netlink.links()?;
    for lo in links.iter().filter(|l| l.loopback) {
        netlink.set_up(lo.index)?;
    }
    let nics: Vec<&Link> = links.iter().filter(|l| !l.loopback).collect();
    boot.identity.hostname = nics
        .iter()
        .find_map(|l| l.mac)
        .map_or_else(|| "chaos".to_string(), hosts::name_from_mac);
    if boot.cmdline.chaos.mode == Mode::Safe {
        info!("safe mode: no network autoconfiguration");
        return Ok(());
    }
    // No ip= at all means what the kernel's ip=on means: DHCP on any NIC.
    let configs = match boot.cmdline.ip.clone() {
        configs if configs.is_empty() => vec![IpConfig::default()],
        configs => configs,
    };
    let mut dhcp = Vec::new();
    for config in configs {
        match config.autoconf {
            Autoconf::Off if config.is_static() => {
                let link = pick_link(&mut netlink, &links, &config)?;
                apply_static(&mut netlink, &link, &config, &mut boot.identity)?;
            }
            Autoconf::Off => info!(
                "ip=: autoconfiguration off{}: left unconfigured",
                config
                    .device
                    .as_ref()
                    .map_or(String::new(), |d| format!(" for {d}"))
            ),
            Autoconf::Rarp => {
                warn!("ip=: RARP is not supported; using DHCP instead");
                dhcp.push(config);
            }
            Autoconf::Any | Autoconf::Dhcp | Autoconf::Bootp | Autoconf::Both => dhcp.push(config),
        }
    }
    if !dhcp.is_empty() {
        autoconfigure(boot, &nics, &dhcp);
    }
    Ok(())
}

/// DHCP on the NICs the `ip=` entries name, or on every NIC when one names
/// none; waits a bounded time for the first lease.
fn autoconfigure(boot: &mut Boot, nics: &[&Link], configs: &[IpConfig]) {
    let names = || {
        nics.iter()
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let candidates: Vec<Link> = if configs.iter().any(|c| c.device.is_none()) {
        nics.iter().map(|l| (*l).clone()).collect()
    } else {
        configs
            .iter()
            .filter_map(|c| {
                let device = c.device.as_deref()?;
                let found = nics.iter().find(|l| l.name == device);
                if found.is_none() {
                    warn!(
                        "ip=: device {device} not found (this node has: {})",
                        names()
                    );
                }
                found.map(|l| (*l).clone())
            })
            .collect()
    };
    if candidates.is_empty() {
        warn!("dhcp: no network interface to ask on (was its driver loaded?)");
        return;
    }
    let settings = autoconf::Settings {
        hostname: configs.iter().find_map(|c| c.hostname.clone()),
        nis_domain: configs.iter().find_map(|c| c.nis_domain.clone()),
        dns: configs
            .iter()
            .find(|c| !c.dns.is_empty())
            .map_or_else(Vec::new, |c| c.dns.clone()),
        client_id: configs.iter().find_map(|c| {
            let id = c.client_id.as_ref()?;
            Some([&[id.kind][..], id.value.as_bytes()].concat())
        }),
    };
    let asked: Vec<&str> = candidates.iter().map(|l| l.name.as_str()).collect();
    info!("dhcp: asking for a lease on {}", asked.join(", "));
    let started = Instant::now();
    match autoconf::start(&candidates, &settings, DHCP_WAIT) {
        Some((lease, identity)) => {
            info!(
                "dhcp: {} configured {} ms after asking",
                lease.interface,
                ms(started)
            );
            boot.identity = identity;
        }
        None => warn!(
            "dhcp: no lease within {} s; booting on, still asking in the background",
            DHCP_WAIT.as_secs()
        ),
    }
}

/// The named device, or else the first NIC that has carrier (all are set
/// up to find out), or else the first NIC at all.
fn pick_link(netlink: &mut Netlink, links: &[Link], config: &IpConfig) -> anyhow::Result<Link> {
    let nics: Vec<&Link> = links.iter().filter(|l| !l.loopback).collect();
    let names = || {
        nics.iter()
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(device) = &config.device {
        return nics
            .iter()
            .find(|l| &l.name == device)
            .map(|l| (*l).clone())
            .with_context(|| {
                format!(
                    "ip=: device {device} not found (this node has: {})",
                    names()
                )
            });
    }
    for nic in &nics {
        netlink.set_up(nic.index)?;
    }
    let started = Instant::now();
    if let Some(link) = netlink.wait_for_carrier(|l| !l.loopback, started + CARRIER_WAIT)? {
        info!("{} has carrier after {} ms", link.name, ms(started));
        return Ok(link);
    }
    let first = nics
        .first()
        .with_context(|| "ip=: no network interface found (was its driver loaded?)".to_string())?;
    warn!(
        "no NIC got carrier within {} s ({}); using {}",
        CARRIER_WAIT.as_secs(),
        names(),
        first.name
    );
    Ok((*first).clone())
}

fn apply_static(
    netlink: &mut Netlink,
    link: &Link,
    config: &IpConfig,
    identity: &mut Identity,
) -> anyhow::Result<()> {
    let address = config
        .client
        .context("static ip= without a client address")?;
    let prefix = config
        .prefix_len()
        .context("static ip= whose netmask gives no prefix length")?;
    netlink.set_up(link.index)?;
    netlink.add_address(link.index, address, prefix)?;
    if let Some(gateway) = config.gateway {
        netlink.replace_default_route(gateway, Some(link.index))?;
    }
    info!(
        "{} {address}/{prefix} gateway {} dns {}",
        link.name,
        config.gateway.map_or("none".to_string(), |g| g.to_string()),
        list(&config.dns)
    );
    if let Some(name) = &config.hostname {
        identity.hostname = name.clone();
    } else if let Some(mac) = link.mac {
        identity.hostname = hosts::name_from_mac(mac);
    }
    identity.nis_domain = config.nis_domain.clone();
    identity.address = Some(address);
    identity.dns = config.dns.clone();
    Ok(())
}

fn list(addresses: &[Ipv4Addr]) -> String {
    if addresses.is_empty() {
        return "none".to_string();
    }
    addresses
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn hosts_phase(boot: &mut Boot) -> anyhow::Result<()> {
    hosts::apply(&Linux, &boot.identity)?;
    info!("host name {}", boot.identity.hostname);
    live_accounts()
}

/// The live passwd and group files start as the image's own accounts;
/// tyd lays the cluster's over them once the node joins.
fn live_accounts() -> anyhow::Result<()> {
    for (image, live) in [
        (paths::ACCOUNTS_PASSWD, paths::PASSWD),
        (paths::ACCOUNTS_GROUP, paths::GROUP),
    ] {
        match std::fs::copy(image, live) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => bail!("copying {image} to {live}: {e}"),
        }
    }
    Ok(())
}

/// Reads the service table. A broken service is named and left out, with
/// what starts after it; the rest of the table runs. But an image that
/// carries a manifest must run the watchdog that verifies it (unless
/// `chaos.watchdog=off` says so): without it the node would run with its
/// integrity unchecked, so that is fatal.
fn table_phase(boot: &mut Boot) -> anyhow::Result<()> {
    boot.table = Table::load(Path::new(paths::SERVICES));
    for problem in &boot.table.problems {
        error!("service {} left out: {problem}", problem.service);
        info!(
            "{}",
            Fact::new(fact::SERVICE)
                .with("name", &problem.service)
                .with("state", "broken")
                .with("why", &problem.what)
        );
    }
    let wanted = boot.cmdline.chaos.watchdog.action != WatchdogAction::Off;
    if wanted && Path::new(paths::MANIFEST).exists() {
        integrity_watchdog_usable(&boot.table)?;
    }
    Ok(())
}

fn integrity_watchdog_usable(table: &Table) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(problem) = table.problems.iter().find(|p| p.service == CERTAINTYD) {
        bail!("the integrity watchdog cannot run: {problem}");
    }
    let service = table
        .services
        .iter()
        .find(|s| s.name == CERTAINTYD)
        .with_context(|| {
            format!(
                "this image has a manifest but no {}/{CERTAINTYD}: its integrity would go unchecked",
                paths::SERVICES
            )
        })?;
    let exec = service.exec.display();
    let meta = std::fs::metadata(&service.exec)
        .with_context(|| format!("the integrity watchdog cannot run: {exec}"))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        bail!("the integrity watchdog cannot run: {exec} is not an executable file");
    }
    Ok(())
}

fn services_phase(boot: &mut Boot) -> anyhow::Result<()> {
    let table = std::mem::take(&mut boot.table);
    let mut supervisor = Supervisor::new(table.services, BACKOFF);
    supervisor.start_due(Instant::now(), &|path| std::fs::read_to_string(path).ok());
    boot.supervisor = Some(supervisor);
    Ok(())
}

/// The path out of every fatal error. A shell on the console in expert mode
/// (if the image has one); then, or otherwise, a countdown and a reboot.
fn emergency(reason: &str) -> ! {
    error!("fatal: {reason}");
    if expert() && Path::new("/bin/sh").exists() {
        error!("expert mode: emergency shell on the console; exit it to reboot");
        if let Err(e) = emergency_shell() {
            error!("emergency shell: {e:#}");
        }
    }
    for left in (1..=EMERGENCY_COUNTDOWN).rev() {
        error!("rebooting in {left} s");
        // Not synchronisation: a pause so a person can read the reason.
        std::thread::sleep(Duration::from_secs(1));
    }
    lifecycle::finish(Power::Reboot)
}

/// Whether the emergency path may offer a shell: the command line said
/// expert mode, or, when the boot failed before its phase read it (a
/// mount after /proc's failed), says so in /proc/cmdline.
fn expert() -> bool {
    EXPERT.load(Ordering::Relaxed)
        || std::fs::read_to_string("/proc/cmdline")
            .is_ok_and(|text| cmdline::parse(&text).chaos.mode == Mode::Expert)
}

/// `chaos.mode=expert`: the node is configured and supervised as usual,
/// with a shell on the console beside it. PID 1 reaps it like any orphan;
/// leaving it changes nothing else.
fn expert_shell() {
    match console_shell() {
        Ok(shell) => info!("expert mode: shell on the console (pid {})", shell.id()),
        Err(e) => error!("expert mode: {e:#}"),
    }
}

fn emergency_shell() -> anyhow::Result<()> {
    let child = console_shell()?;
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    // Other children may end meanwhile; wait for the shell itself.
    nix::sys::wait::waitpid(pid, None).context("waiting for the shell")?;
    Ok(())
}

/// /bin/sh on PID 1's console, with the signals PID 1 blocks unblocked,
/// the console as its controlling terminal (so Ctrl-C stops a `ping`), and
/// a prompt that names the node. Its home is /tmp: the root is guarded,
/// and the shell keeps its history in its home.
fn console_shell() -> anyhow::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    let mut shell = std::process::Command::new("/bin/sh");
    shell
        .env("PATH", chaos_contract::paths::SEARCH_PATH)
        .env("HOME", "/tmp")
        .env("PS1", "\\h:\\w# ")
        .current_dir("/tmp");
    // SAFETY: only async-signal-safe calls (sigprocmask, setsid, ioctl)
    // between fork and exec.
    unsafe {
        shell.pre_exec(|| {
            nix::sys::signal::SigSet::empty()
                .thread_set_mask()
                .map_err(std::io::Error::from)?;
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            // Without a controlling terminal the shell still works, only
            // without job control.
            libc::ioctl(0, libc::TIOCSCTTY as _, 0);
            Ok(())
        });
    }
    shell.spawn().context("starting /bin/sh")
}
