//! The `certaintyd` command: the node's RAM-root integrity watchdog, as a
//! service under PID 1 and as the administrator's tool for maintenance
//! windows. All the logic is in the rest of [`crate::certainty`]; this
//! reads the command line and the kernel's, and wires the library to the
//! running system. The image links /sbin/certaintyd to init, which runs
//! this when started under that name (the executable's code is there
//! already, and a second static copy of the standard library would cost
//! the image 300 KB); the `certaintyd` binary runs it on any host.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::certainty::pause;
use crate::certainty::{self, Baseline, Config, Daemon, Linux, Node, WRITABLE_MOUNTS};
use crate::log;
use anyhow::Context;
use argh::FromArgs;
use mkimage::manifest::Digest;

#[derive(FromArgs)]
/// The RAM root's integrity watchdog. Without a command it runs as the
/// service PID 1 starts: it checks /etc/chaos/manifest against
/// chaos.root_digest=, waits chaos.watchdog.grace (30s), then every
/// chaos.watchdog.interval (2s) verifies the root (content, mode, owner,
/// type, links, devices, added and removed entries, mounts) and answers a
/// difference as chaos.watchdog= says: reboot (default), poweroff, log, off.
#[argh(
    note = "/dev, /proc, /run, /sys, /tmp and /var are not verified while they are mounts.\n\
            A maintenance window stops verification, it does not accept changes:\n\
            leave the root as it was before the window ends."
)]
struct Args {
    #[argh(subcommand)]
    command: Option<Command>,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Pause(PauseArgs),
    Resume(ResumeArgs),
    Check(CheckArgs),
}

#[derive(FromArgs)]
/// Open a logged maintenance window: no verification for DURATION
/// (like 10m, 1m30s or 90 seconds; at most 1h). Returns once the daemon
/// honours it (a pass under way finishes first), so the root may change
/// from then on. Asking again replaces the window.
#[argh(subcommand, name = "pause")]
struct PauseArgs {
    /// how long, e.g. 10m
    #[argh(positional)]
    duration: String,
}

#[derive(FromArgs)]
/// End the maintenance window now.
#[argh(subcommand, name = "resume")]
struct ResumeArgs {}

#[derive(FromArgs)]
/// Verify a root once against its manifest, print every difference and
/// the time taken; exit 1 if anything differs. Works on any Linux host,
/// e.g. on an unpacked image.
#[argh(subcommand, name = "check")]
struct CheckArgs {
    /// the root directory to verify (default /)
    #[argh(option, default = "PathBuf::from(\"/\")")]
    root: PathBuf,
    /// the manifest (default ROOT/etc/chaos/manifest)
    #[argh(option)]
    manifest: Option<PathBuf>,
    /// the digest the manifest must have (sha256:HEX, as chaos.root_digest=)
    #[argh(option)]
    digest: Option<Digest>,
    /// passes to time (default 1); the best and the median are shown
    #[argh(option, default = "1")]
    repeat: u32,
}

/// The command's name, as the image links it.
pub const NAME: &str = "certaintyd";

/// Runs the command line's command; returns the exit status: 0, or 1 on
/// an error or, for `check`, a difference.
pub fn main() -> u8 {
    let args: Args = argh::from_env();
    log::set_component(NAME);
    let result = match args.command {
        None => run(),
        Some(Command::Pause(a)) => pause_window(&a.duration),
        Some(Command::Resume(_)) => resume(),
        Some(Command::Check(a)) => return check(a),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            crate::error!("{e:#}");
            1
        }
    }
}

/// The service: never returns unless the kernel command line is unreadable.
fn run() -> anyhow::Result<()> {
    // The daemon signals PID 1, which only makes sense when PID 1 is chaos
    // init and started us; run by hand on some host, it would signal that
    // host's init instead.
    if nix::unistd::getppid().as_raw() != 1 {
        anyhow::bail!(
            "the daemon runs as a service of chaos init (PID 1), not from a shell; \
             `certaintyd check` verifies a root by hand"
        );
    }
    // Without /dev/kmsg the lines go to stderr, which PID 1 logs for us.
    let _ = log::attach_kmsg();
    let text = std::fs::read_to_string("/proc/cmdline").context("reading /proc/cmdline")?;
    let cmdline = chaos_contract::cmdline::parse(&text);
    log::set_max_level(cmdline.chaos.log.into());
    let pinned = cmdline.chaos.root_digest.map(Digest);
    let mut daemon = Daemon::new(Config::node(cmdline.chaos.watchdog, pinned), Linux);
    daemon.start();
    loop {
        std::thread::sleep(daemon.tick());
    }
}

/// How long `certaintyd pause` waits for the daemon to honour the window:
/// a pass under way when it was asked for finishes first.
const PAUSE_ANSWER: Duration = Duration::from_secs(60);

fn pause_window(duration: &str) -> anyhow::Result<()> {
    let length = pause::parse_window(duration)?;
    let uid = nix::unistd::getuid().as_raw();
    let requested = Linux.uptime();
    pause::request(
        Path::new(chaos_contract::paths::CERTAINTYD_PAUSE),
        requested,
        length,
        uid,
    )?;
    let on_console = log::attach_kmsg().is_ok();
    // The request goes on record where the daemon's lines go; the daemon
    // logs again when it starts honouring it.
    crate::warn!(
        "maintenance window of {} requested by uid {uid}",
        chaos_contract::duration::show(length)
    );
    // Returned only once no pass can see the root change: the operator
    // changes it as soon as this command ends.
    let status = Path::new(chaos_contract::paths::CERTAINTYD_STATUS);
    let deadline = Instant::now() + PAUSE_ANSWER;
    loop {
        match std::fs::read_to_string(status) {
            Ok(text) if pause::honoured(&text, requested) => break,
            Ok(_) if Instant::now() < deadline => {
                // A file only the daemon writes, read until it answers.
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(_) => anyhow::bail!(
                "certaintyd has not honoured the window within {}: a pass may still be \
                 running, so leave the root alone until {} says it is paused",
                chaos_contract::duration::show(PAUSE_ANSWER),
                status.display()
            ),
            // No status: no daemon verifies this root.
            Err(_) => break,
        }
    }
    if on_console {
        println!(
            "certaintyd: verification paused for {}; `certaintyd resume` ends it early",
            chaos_contract::duration::show(length)
        );
    }
    Ok(())
}

fn resume() -> anyhow::Result<()> {
    let was_open = pause::clear(Path::new(chaos_contract::paths::CERTAINTYD_PAUSE))?;
    let _ = log::attach_kmsg();
    if was_open {
        let uid = nix::unistd::getuid().as_raw();
        crate::warn!("maintenance window ended by uid {uid}");
    } else {
        println!("certaintyd: no maintenance window is open");
    }
    Ok(())
}

fn check(args: CheckArgs) -> u8 {
    let manifest = args.manifest.unwrap_or_else(|| {
        args.root
            .join(chaos_contract::paths::MANIFEST.trim_start_matches('/'))
    });
    let (baseline, digest) = match Baseline::load(&manifest, args.digest) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("certaintyd: {e}");
            return 1;
        }
    };
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..args.repeat.max(1) {
        let started = Instant::now();
        match certainty::verify(&args.root, &baseline, WRITABLE_MOUNTS) {
            Ok(report) => last = Some(report),
            Err(e) => {
                eprintln!("certaintyd: {e}");
                return 1;
            }
        }
        times.push(started.elapsed());
    }
    let report = last.expect("at least one pass");
    times.sort();
    let (best, median) = (times[0], times[times.len() / 2]);
    let mb = report.bytes as f64 / 1e6;
    let rate = |d: Duration| mb / d.as_secs_f64().max(1e-9);
    println!(
        "verified {} against {} ({digest}): {} entries, {mb:.1} MB hashed; \
         pass best {:.2} ms ({:.0} MB/s), median {:.2} ms of {}; sha256 by {}",
        args.root.display(),
        manifest.display(),
        report.entries,
        best.as_secs_f64() * 1e3,
        rate(best),
        median.as_secs_f64() * 1e3,
        times.len(),
        certainty::sha256_backend()
    );
    for difference in &report.differences {
        println!("{difference}");
    }
    if report.differences.is_empty() {
        0
    } else {
        1
    }
}
