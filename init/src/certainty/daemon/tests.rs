use std::os::unix::fs::PermissionsExt;

use mkimage::manifest::embed;

use super::*;
use crate::certainty::fixture::{require_root, sample_spec, unpack, Scratch};

/// A node whose clock the test moves and whose log and requests it reads.
#[derive(Default)]
struct Fake {
    now: Duration,
    asked: Vec<Power>,
    lines: Vec<String>,
    refuse: bool,
}

impl Node for Fake {
    fn uptime(&self) -> Duration {
        self.now
    }

    fn ask_init(&mut self, power: Power) -> io::Result<()> {
        if self.refuse {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        self.asked.push(power);
        Ok(())
    }

    fn log(&mut self, level: Level, line: &str) {
        let tag = match level {
            Level::Error => "E",
            Level::Warn => "W",
            Level::Info => "I",
            Level::Debug => "D",
        };
        self.lines.push(format!("{tag} {line}"));
    }
}

struct Setup {
    root: Scratch,
    run: Scratch,
    daemon: Daemon<Fake>,
}

impl Setup {
    /// The sample image with its manifest embedded, unpacked; the daemon's
    /// clock at 1 s after boot, its grace 30 s and interval 2 s.
    fn new(action: WatchdogAction, pin: Pin) -> Self {
        require_root();
        let mut spec = sample_spec();
        let manifest = embed(&mut spec).unwrap();
        let root = Scratch::new("daemon");
        unpack(&spec, &root.0);
        let run = Scratch::new("daemon-run");
        let pinned = match pin {
            Pin::Right => Some(manifest.digest()),
            Pin::Wrong => Some(Digest::of(b"another image")),
            Pin::None => None,
        };
        let config = Config {
            watchdog: Watchdog {
                action,
                ..Watchdog::default()
            },
            pinned,
            root: root.0.clone(),
            manifest: root.path(chaos_contract::paths::MANIFEST),
            pause_file: run.0.join("certaintyd.pause"),
            status_file: Some(run.0.join("certaintyd.status")),
            writable: WRITABLE_MOUNTS,
        };
        let node = Fake {
            now: Duration::from_secs(1),
            ..Fake::default()
        };
        Setup {
            root,
            run,
            daemon: Daemon::new(config, node),
        }
    }

    fn at(&mut self, secs: u64) -> &mut Self {
        self.daemon.node_mut().now = Duration::from_secs(secs);
        self
    }

    /// Log lines since the last call, without the settings line.
    fn log(&mut self) -> Vec<String> {
        std::mem::take(&mut self.daemon.node_mut().lines)
            .into_iter()
            .filter(|l| !l.starts_with("I watching "))
            .collect()
    }

    fn status(&self) -> String {
        std::fs::read_to_string(self.run.0.join("certaintyd.status")).unwrap()
    }
}

enum Pin {
    Right,
    Wrong,
    None,
}

fn baseline_line(s: &Setup) -> String {
    let text = std::fs::read(s.root.path(chaos_contract::paths::MANIFEST)).unwrap();
    format!(
        "I baseline: {} entries, manifest {} pinned by chaos.root_digest=",
        sample_spec().iter().count() + 2,
        Digest::of(&text)
    )
}

#[test]
fn signals_match_what_pid1_maps() {
    for power in [Power::Reboot, Power::Off] {
        assert_eq!(crate::signals::request_for(ask_signal(power)), Some(power));
    }
}

#[test]
fn grace_then_every_interval_and_a_change_reboots() {
    let mut s = Setup::new(WatchdogAction::Reboot, Pin::Right);
    s.daemon.start();
    let baseline = baseline_line(&s);
    assert_eq!(s.log(), [baseline]);
    // 1 s after boot: the grace lasts until 30 s, the heartbeat goes on.
    assert_eq!(s.daemon.tick(), Duration::from_secs(2));
    assert!(s.status().starts_with("state grace\n"), "{}", s.status());
    assert_eq!(s.at(29).daemon.tick(), Duration::from_secs(1));
    assert_eq!(s.at(30).daemon.tick(), Duration::from_secs(2));
    assert_eq!(s.log(), Vec::<String>::new());
    let status = s.status();
    assert!(
        status.starts_with("state ok\nuptime_ms 30000\npasses 1\n"),
        "{status}"
    );
    assert!(status.contains("\ndifferences 0\n"), "{status}");

    std::fs::write(s.root.path("/etc/motd"), "hello!\n").unwrap();
    std::fs::write(s.root.path("/etc/new"), "x").unwrap();
    s.at(32).daemon.tick();
    assert_eq!(
        s.log(),
        [
            "E the root differs from its manifest: 2 differences",
            "E violation: /etc/motd: content changed: size 6 -> 7 bytes",
            "E violation: /etc/new: added (file)",
            "E asking init to reboot (chaos.watchdog=reboot)",
        ]
    );
    assert_eq!(s.daemon.node().asked, [Power::Reboot]);
    // Asked once; init is shutting down, so no new passes and no new asks
    // until it has ignored the request for a minute.
    assert_eq!(s.at(34).daemon.tick(), Duration::from_secs(2));
    assert_eq!(s.log(), Vec::<String>::new());
    s.at(92).daemon.tick();
    assert_eq!(
        s.log(),
        [
            "E init has not acted for 1m; asking again",
            "E asking init to reboot (chaos.watchdog=reboot)",
        ]
    );
    assert_eq!(s.daemon.node().asked, [Power::Reboot, Power::Reboot]);
}

#[test]
fn poweroff_policy_asks_for_power_off() {
    let mut s = Setup::new(WatchdogAction::Poweroff, Pin::Right);
    s.daemon.start();
    let mode = std::fs::Permissions::from_mode(0o777);
    std::fs::set_permissions(s.root.path("/bin/sh"), mode).unwrap();
    s.at(30).daemon.tick();
    assert_eq!(
        s.log()[1..],
        [
            "E the root differs from its manifest: 1 difference",
            "E violation: /bin/sh: mode changed: 0755 -> 0777",
            "E asking init to power off (chaos.watchdog=poweroff)",
        ]
    );
    assert_eq!(s.daemon.node().asked, [Power::Off]);
}

#[test]
fn a_refused_signal_is_retried_next_pass() {
    let mut s = Setup::new(WatchdogAction::Reboot, Pin::Right);
    s.daemon.start();
    s.daemon.node_mut().refuse = true;
    std::fs::remove_file(s.root.path("/etc/motd")).unwrap();
    s.at(30).daemon.tick();
    let log = s.log();
    assert_eq!(
        log.last().unwrap(),
        "E could not signal init: Operation not permitted (os error 1); asking again next pass"
    );
    s.daemon.node_mut().refuse = false;
    s.at(32).daemon.tick();
    assert_eq!(s.daemon.node().asked, [Power::Reboot]);
}

#[test]
fn log_policy_reports_each_state_once_and_runs_on() {
    let mut s = Setup::new(WatchdogAction::Log, Pin::Right);
    s.daemon.start();
    s.log();
    let mode = std::fs::Permissions::from_mode(0o600);
    std::fs::set_permissions(s.root.path("/etc/motd"), mode).unwrap();
    s.at(30).daemon.tick();
    assert_eq!(
        s.log(),
        [
            "E the root differs from its manifest: 1 difference",
            "E violation: /etc/motd: mode changed: 0644 -> 0600",
            "W chaos.watchdog=log: running on",
        ]
    );
    s.at(32).daemon.tick();
    assert_eq!(
        s.log(),
        Vec::<String>::new(),
        "the same state is not repeated"
    );
    assert!(s.status().starts_with("state violation\n"));
    let mode = std::fs::Permissions::from_mode(0o644);
    std::fs::set_permissions(s.root.path("/etc/motd"), mode).unwrap();
    s.at(34).daemon.tick();
    assert_eq!(s.log(), ["I the root matches the manifest again"]);
    assert!(s.daemon.node().asked.is_empty());
}

#[test]
fn off_verifies_nothing() {
    let mut s = Setup::new(WatchdogAction::Off, Pin::Wrong);
    s.daemon.start();
    std::fs::remove_file(s.root.path("/etc/motd")).unwrap();
    assert_eq!(s.at(100).daemon.tick(), IDLE);
    assert_eq!(s.log(), ["W chaos.watchdog=off: the root is not verified"]);
    assert!(s.daemon.node().asked.is_empty());
}

#[test]
fn a_forged_manifest_is_answered_at_start() {
    let mut s = Setup::new(WatchdogAction::Reboot, Pin::Wrong);
    s.daemon.start();
    let file = s.root.path(chaos_contract::paths::MANIFEST);
    let found = Digest::of(&std::fs::read(&file).unwrap());
    assert_eq!(
        s.log(),
        [
            "E the root differs from its manifest: 1 difference".to_owned(),
            format!(
                "E violation: {0}: untrusted baseline: the manifest {0} has digest {found} \
                 but chaos.root_digest= pins {1}: it is forged or from another image",
                file.display(),
                Digest::of(b"another image")
            ),
            "E asking init to reboot (chaos.watchdog=reboot)".to_owned(),
        ]
    );
    assert_eq!(s.daemon.node().asked, [Power::Reboot]);
}

#[test]
fn an_unpinned_manifest_is_trusted_with_a_warning() {
    let mut s = Setup::new(WatchdogAction::Reboot, Pin::None);
    s.daemon.start();
    let log = s.log();
    assert_eq!(log.len(), 1);
    assert!(
        log[0].starts_with("W baseline: ")
            && log[0].ends_with(
                "NOT pinned: no chaos.root_digest= on the command line, so it is trusted as found"
            ),
        "{log:?}"
    );
}

#[test]
fn a_maintenance_window_suspends_checking_and_is_logged() {
    let mut s = Setup::new(WatchdogAction::Reboot, Pin::Right);
    s.daemon.start();
    s.log();
    let file = s.run.0.join("certaintyd.pause");
    pause::request(&file, Duration::from_secs(40), Duration::from_secs(600), 0).unwrap();
    std::fs::write(s.root.path("/etc/motd"), "maintenance\n").unwrap();
    // During the window: no pass, a wake-up at least every interval.
    assert_eq!(s.at(40).daemon.tick(), Duration::from_secs(2));
    assert_eq!(
        s.log(),
        [
            "W maintenance window: verification paused for 10m by uid 0, 10m left \
          (`certaintyd resume` ends it)"
        ]
    );
    assert_eq!(s.at(639).daemon.tick(), Duration::from_secs(1));
    assert_eq!(s.log(), Vec::<String>::new());
    assert!(s.status().starts_with("state paused\n"));
    assert!(s.daemon.node().asked.is_empty());
    // After it: what changed during the window is still a difference.
    s.at(640).daemon.tick();
    let log = s.log();
    assert_eq!(
        log[..2],
        [
            "W maintenance window over; verifying again",
            "E the root differs from its manifest: 1 difference"
        ]
    );
    assert_eq!(s.daemon.node().asked, [Power::Reboot]);
    assert!(!file.exists(), "a spent request is removed");
}

#[test]
fn resume_ends_a_window_early_and_bad_requests_are_ignored() {
    let mut s = Setup::new(WatchdogAction::Log, Pin::Right);
    s.daemon.start();
    s.log();
    let file = s.run.0.join("certaintyd.pause");
    pause::request(&file, Duration::from_secs(30), Duration::from_secs(60), 0).unwrap();
    s.at(30).daemon.tick();
    s.log();
    pause::clear(&file).unwrap();
    s.at(32).daemon.tick();
    assert_eq!(
        s.log(),
        ["W maintenance window ended early; verifying again"]
    );

    std::fs::write(&file, "until tomorrow\n").unwrap();
    s.at(34).daemon.tick();
    s.at(36).daemon.tick();
    assert_eq!(
        s.log(),
        [format!(
            "W ignoring the pause request: {}: line 1: expected \"requested_ms <number>\"",
            file.display()
        )],
        "logged once"
    );
    let forever = format!(
        "requested_ms 36000\nuntil_ms {}\nuid 0\n",
        36_000 + 2 * pause::MAX_PAUSE.as_millis()
    );
    std::fs::write(&file, forever).unwrap();
    s.at(38).daemon.tick();
    assert_eq!(
        s.log(),
        ["W ignoring a pause request that runs past the 1h limit"]
    );
    assert!(!file.exists());
}

#[test]
fn reports_are_capped() {
    let mut s = Setup::new(WatchdogAction::Log, Pin::Right);
    s.daemon.start();
    s.log();
    for i in 0..MAX_LISTED + 3 {
        std::fs::write(s.root.path(&format!("/etc/new{i:03}")), "x").unwrap();
    }
    s.at(30).daemon.tick();
    let log = s.log();
    assert_eq!(log.len(), 1 + MAX_LISTED + 1 + 1);
    assert_eq!(
        log[0],
        "E the root differs from its manifest: 67 differences"
    );
    assert_eq!(log[MAX_LISTED + 1], "E violation: ... and 3 more");
}
