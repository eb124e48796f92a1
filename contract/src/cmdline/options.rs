//! The `chaos.*` options. One table of descriptors drives parsing, the
//! fallback named in messages and the help text, so an option cannot exist in
//! one of them and be missing from another. Like the kernel, '-' and '_' in an
//! option name are the same; a later value replaces an earlier one, except
//! that `chaos.modules` lists add up.

use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use super::{decimal, is_dns_name, is_dotted_digits, Keyword};

/// The `chaos.*` options, defaults where absent or malformed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChaosOptions {
    /// `chaos.head=`: the head to join; `None`: the one built into the image.
    pub head: Option<Head>,
    pub mode: Mode,
    pub watchdog: Watchdog,
    /// `chaos.root_digest=sha256:<hex>`: the image manifest digest certaintyd
    /// verifies against; `None`: the one built into the image.
    pub root_digest: Option<[u8; 32]>,
    /// `chaos.modules=`: extra kernel modules to load, '-' written as '_'.
    pub modules: Vec<String>,
    pub log: LogLevel,
}

/// `chaos.head=<addr>[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub host: Host,
    /// `None`: tyd's default port.
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    V4(Ipv4Addr),
    /// A DNS name, resolved once the network is up.
    Name(String),
}

/// Written back in command line syntax.
impl fmt::Display for Head {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::V4(addr) => write!(f, "{addr}")?,
            Host::Name(name) => f.write_str(name)?,
        }
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

/// `chaos.mode=`: the boot menu's entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Normal,
    /// With a debug shell on the console.
    Expert,
    /// Without autoconfiguration.
    Safe,
}

impl Keyword for Mode {
    const WORDS: &'static [(&'static str, Self)] = &[
        ("normal", Self::Normal),
        ("expert", Self::Expert),
        ("safe", Self::Safe),
    ];
}

/// certaintyd's schedule and its response to a changed RAM root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watchdog {
    /// `chaos.watchdog=`
    pub action: WatchdogAction,
    /// `chaos.watchdog.interval=`: time between verifications.
    pub interval: Duration,
    /// `chaos.watchdog.grace=`: time from boot to the first verification.
    pub grace: Duration,
}

impl Default for Watchdog {
    fn default() -> Self {
        Watchdog {
            action: WatchdogAction::default(),
            interval: Duration::from_secs(2),
            grace: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WatchdogAction {
    /// Leave the cluster and reboot through PID 1.
    #[default]
    Reboot,
    /// Leave the cluster and power off.
    Poweroff,
    /// Only log the change.
    Log,
    /// Do not verify the root at all.
    Off,
}

impl Keyword for WatchdogAction {
    const WORDS: &'static [(&'static str, Self)] = &[
        ("reboot", Self::Reboot),
        ("poweroff", Self::Poweroff),
        ("log", Self::Log),
        ("off", Self::Off),
    ];
}

/// `chaos.log=`: the least severe level init logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
}

impl Keyword for LogLevel {
    const WORDS: &'static [(&'static str, Self)] = &[
        ("error", Self::Error),
        ("warn", Self::Warn),
        ("info", Self::Info),
        ("debug", Self::Debug),
    ];
}

/// One `chaos.*` option.
struct Opt {
    name: &'static str,
    /// The value's syntax, for help and for a missing value.
    syntax: fn() -> String,
    about: &'static str,
    /// Sets the option from a value, or says what is wrong with it (changing
    /// nothing then, so the message's fallback is true).
    set: fn(&mut ChaosOptions, &str) -> Result<(), String>,
    /// The current value in command line syntax; `None` when unset. Help shows
    /// it for the defaults, messages for the value kept.
    show: fn(&ChaosOptions) -> Option<String>,
}

const OPTIONS: &[Opt] = &[
    Opt {
        name: "chaos.head",
        syntax: || "<addr>[:port]".into(),
        about: "join this head: IPv4 address or host name, resolved with the DNS server of the lease (default: the image's, else the head's beacon)",
        set: |o, v| {
            o.head = Some(Head::parse(v)?);
            Ok(())
        },
        show: |o| o.head.as_ref().map(Head::to_string),
    },
    Opt {
        name: "chaos.mode",
        syntax: || Mode::words("|"),
        about: "expert: with a debug shell; safe: without autoconfiguration",
        set: |o, v| {
            o.mode = Mode::from_word(v)?;
            Ok(())
        },
        show: |o| Some(o.mode.word().into()),
    },
    Opt {
        name: "chaos.watchdog",
        syntax: || WatchdogAction::words("|"),
        about: "what certaintyd does when the RAM root changed (off: no checks)",
        set: |o, v| {
            o.watchdog.action = WatchdogAction::from_word(v)?;
            Ok(())
        },
        show: |o| Some(o.watchdog.action.word().into()),
    },
    Opt {
        name: "chaos.watchdog.interval",
        syntax: || crate::duration::SYNTAX.into(),
        about: "time between two verifications of the RAM root",
        set: |o, v| {
            let interval = duration(v)?;
            if interval.is_zero() {
                return Err("is zero, expected a positive duration".into());
            }
            o.watchdog.interval = interval;
            Ok(())
        },
        show: |o| Some(crate::duration::show(o.watchdog.interval)),
    },
    Opt {
        name: "chaos.watchdog.grace",
        syntax: || crate::duration::SYNTAX.into(),
        about: "time from boot to the first verification",
        set: |o, v| {
            o.watchdog.grace = duration(v)?;
            Ok(())
        },
        show: |o| Some(crate::duration::show(o.watchdog.grace)),
    },
    Opt {
        name: "chaos.root_digest",
        syntax: || "sha256:<64 hex digits>".into(),
        about: "the image digest mkimage printed (default: built into the image)",
        set: |o, v| {
            o.root_digest = Some(digest(v).ok_or("is not sha256:<64 hex digits>")?);
            Ok(())
        },
        show: |o| {
            let hex: String = o.root_digest?.iter().map(|b| format!("{b:02x}")).collect();
            Some(format!("sha256:{hex}"))
        },
    },
    Opt {
        name: "chaos.modules",
        syntax: || "<module>[,<module>...]".into(),
        about: "extra kernel modules to load; may be repeated",
        set: add_modules,
        show: |o| Some(o.modules.join(",")).filter(|list| !list.is_empty()),
    },
    Opt {
        name: "chaos.log",
        syntax: || LogLevel::words("|"),
        about: "the least severe level init logs",
        set: |o, v| {
            o.log = LogLevel::from_word(v)?;
            Ok(())
        },
        show: |o| Some(o.log.word().into()),
    },
];

/// Applies `key` (starting with `chaos.`) with its value, if any.
pub(super) fn apply(
    options: &mut ChaosOptions,
    key: &str,
    value: Option<&str>,
    problems: &mut Vec<String>,
) {
    let Some(opt) = OPTIONS.iter().find(|opt| same_name(opt.name, key)) else {
        let names: Vec<_> = OPTIONS.iter().map(|opt| opt.name).collect();
        problems.push(format!(
            "{key}: unknown option, expected one of {}; ignored",
            names.join(", ")
        ));
        return;
    };
    let result = match value {
        Some(value) => (opt.set)(options, value).map_err(|reason| format!("{value:?} {reason}")),
        None => Err(format!(
            "no value, expected {}={}",
            opt.name,
            (opt.syntax)()
        )),
    };
    if let Err(what) = result {
        let fallback = (opt.show)(options)
            .map_or_else(|| "ignored".to_owned(), |kept| format!("keeping {kept}"));
        problems.push(format!("{}: {what}; {fallback}", opt.name));
    }
}

pub(super) fn help(out: &mut String) {
    let defaults = ChaosOptions::default();
    for opt in OPTIONS {
        let default = (opt.show)(&defaults)
            .map(|v| format!("  (default {v})"))
            .unwrap_or_default();
        out.push_str(&format!(
            "  {}={}{default}\n      {}\n",
            opt.name,
            (opt.syntax)(),
            opt.about
        ));
    }
}

/// The kernel's `parameq`: '-' and '_' match each other.
fn same_name(a: &str, b: &str) -> bool {
    let norm = |c: u8| if c == b'-' { b'_' } else { c };
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| norm(x) == norm(y))
}

impl Head {
    /// `<addr>[:port]`: an IPv4 address or a host name, and a port
    /// 1-65535; on failure, what is wrong, for a message that quotes the
    /// value itself.
    pub fn parse(v: &str) -> Result<Head, &'static str> {
        if v.starts_with('[') || v.matches(':').count() > 1 {
            return Err(
                "is an IPv6 address, expected an IPv4 address or a host name \
                        (a chaos cluster runs on IPv4)",
            );
        }
        let malformed = "is not <addr>[:port] (an IPv4 address or a host name; port 1-65535)";
        let (name, port) = match v.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (v, None),
        };
        let host = host(name).ok_or(malformed)?;
        let port = match port {
            Some(port) => Some(decimal::<u16>(port).filter(|&p| p != 0).ok_or(malformed)?),
            None => None,
        };
        Ok(Head { host, port })
    }

    /// A head at a known address and port.
    pub fn at(address: std::net::SocketAddrV4) -> Head {
        Head {
            host: Host::V4(*address.ip()),
            port: Some(address.port()),
        }
    }
}

fn host(s: &str) -> Option<Host> {
    if is_dotted_digits(s) {
        return s
            .parse()
            .ok()
            .filter(|a: &Ipv4Addr| !a.is_unspecified())
            .map(Host::V4);
    }
    is_dns_name(s).then(|| Host::Name(s.to_owned()))
}

fn duration(v: &str) -> Result<Duration, String> {
    crate::duration::parse(v).map_err(|e| e.reason())
}

fn digest(v: &str) -> Option<[u8; 32]> {
    let hex = v.strip_prefix("sha256:")?.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0; 32];
    let digit = |b: u8| char::from(b).to_digit(16);
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = u8::try_from(digit(pair[0])? << 4 | digit(pair[1])?).ok()?;
    }
    Some(out)
}

fn add_modules(o: &mut ChaosOptions, v: &str) -> Result<(), String> {
    let mut names = Vec::new();
    for name in v.split(',').filter(|name| !name.is_empty()) {
        // MODULE_NAME_LEN is 56, including the terminating NUL.
        if name.len() > 55
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(format!(
                "has {name:?}, expected module names (up to 55 letters, digits, '_' or '-') separated by ','"
            ));
        }
        // The kernel treats '-' and '_' in module names as the same.
        names.push(name.replace('-', "_"));
    }
    for name in names {
        if !o.modules.contains(&name) {
            o.modules.push(name);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;

    const HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn digest_bytes() -> [u8; 32] {
        let half = [
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ];
        let mut out = [0; 32];
        out[..16].copy_from_slice(&half);
        out[16..].copy_from_slice(&half);
        out
    }

    fn head_at(host: Host, port: Option<u16>) -> Option<Head> {
        Some(Head { host, port })
    }

    /// What an input changes from the defaults.
    type Change = fn(&mut ChaosOptions);

    #[test]
    fn valid_options() {
        let upper = format!("chaos.root_digest=sha256:{}", HEX.to_uppercase());
        let lower = format!("chaos.root-digest=sha256:{HEX}");
        let table: &[(&str, Change)] = &[
            ("chaos.head=10.0.0.1", |o| {
                o.head = head_at(Host::V4(Ipv4Addr::new(10, 0, 0, 1)), None)
            }),
            ("chaos.head=10.0.0.1:7000", |o| {
                o.head = head_at(Host::V4(Ipv4Addr::new(10, 0, 0, 1)), Some(7000))
            }),
            ("chaos.head=head.lab:1", |o| {
                o.head = head_at(Host::Name("head.lab".into()), Some(1))
            }),
            ("chaos.head=head", |o| {
                o.head = head_at(Host::Name("head".into()), None)
            }),
            ("chaos.head=10.0.0.1:65535", |o| {
                o.head = head_at(Host::V4(Ipv4Addr::new(10, 0, 0, 1)), Some(65535))
            }),
            ("chaos.mode=normal", |_| {}),
            ("chaos.mode=expert", |o| o.mode = Mode::Expert),
            ("chaos.mode=safe", |o| o.mode = Mode::Safe),
            ("chaos.mode=safe chaos.mode=expert", |o| {
                o.mode = Mode::Expert
            }),
            ("chaos.watchdog=reboot", |_| {}),
            ("chaos.watchdog=poweroff", |o| {
                o.watchdog.action = WatchdogAction::Poweroff
            }),
            ("chaos.watchdog=log", |o| {
                o.watchdog.action = WatchdogAction::Log
            }),
            ("chaos.watchdog=off", |o| {
                o.watchdog.action = WatchdogAction::Off
            }),
            ("chaos.watchdog.interval=500ms", |o| {
                o.watchdog.interval = Duration::from_millis(500)
            }),
            ("chaos.watchdog.interval=5s", |o| {
                o.watchdog.interval = Duration::from_secs(5)
            }),
            ("chaos.watchdog.interval=1m", |o| {
                o.watchdog.interval = Duration::from_secs(60)
            }),
            ("chaos.watchdog.interval=7", |o| {
                o.watchdog.interval = Duration::from_secs(7)
            }),
            ("chaos.watchdog.grace=0", |o| {
                o.watchdog.grace = Duration::ZERO
            }),
            ("chaos.watchdog.grace=90s", |o| {
                o.watchdog.grace = Duration::from_secs(90)
            }),
            ("chaos.watchdog.grace=0010m", |o| {
                o.watchdog.grace = Duration::from_secs(600)
            }),
            ("chaos.modules=e1000,virtio-net,wireguard", |o| {
                o.modules = vec!["e1000".into(), "virtio_net".into(), "wireguard".into()]
            }),
            ("chaos.modules=a,,b, chaos.modules=b,c-d", |o| {
                o.modules = vec!["a".into(), "b".into(), "c_d".into()]
            }),
            ("chaos.modules=", |_| {}),
            ("chaos.log=error", |o| o.log = LogLevel::Error),
            ("chaos.log=warn", |o| o.log = LogLevel::Warn),
            ("chaos.log=info", |_| {}),
            ("chaos.log=debug", |o| o.log = LogLevel::Debug),
            (&upper, |o| o.root_digest = Some(digest_bytes())),
            (&lower, |o| o.root_digest = Some(digest_bytes())),
        ];
        for (input, change) in table {
            let mut expected = ChaosOptions::default();
            change(&mut expected);
            let got = parse(input);
            assert_eq!((got.chaos, got.problems), (expected, vec![]), "{input}");
        }
    }

    #[test]
    fn malformed_options_keep_the_value_before() {
        let long_module = "m".repeat(56);
        let long_module_input = format!("chaos.modules=a,{long_module}");
        let long_module_message = format!(
            "chaos.modules: \"a,{long_module}\" has \"{long_module}\", expected module names \
             (up to 55 letters, digits, '_' or '-') separated by ','; ignored"
        );
        const HEAD: &str =
            "is not <addr>[:port] (an IPv4 address or a host name; port 1-65535); ignored";
        const V6: &str = "is an IPv6 address, expected an IPv4 address or a host name \
                          (a chaos cluster runs on IPv4); ignored";
        let duration_reason = format!("is not a duration, expected {}", crate::duration::SYNTAX);
        let table: &[(&str, String)] = &[
            ("chaos.mode=turbo", r#"chaos.mode: "turbo" is not one of normal, expert, safe; keeping normal"#.into()),
            ("chaos.mode=Safe", r#"chaos.mode: "Safe" is not one of normal, expert, safe; keeping normal"#.into()),
            ("chaos.mode", "chaos.mode: no value, expected chaos.mode=normal|expert|safe; keeping normal".into()),
            ("chaos.mode=", r#"chaos.mode: "" is not one of normal, expert, safe; keeping normal"#.into()),
            ("chaos.head", "chaos.head: no value, expected chaos.head=<addr>[:port]; ignored".into()),
            ("chaos.head=", format!(r#"chaos.head: "" {HEAD}"#)),
            ("chaos.head=10.0.0.1:0", format!(r#"chaos.head: "10.0.0.1:0" {HEAD}"#)),
            ("chaos.head=10.0.0.1:65536", format!(r#"chaos.head: "10.0.0.1:65536" {HEAD}"#)),
            ("chaos.head=10.0.0.1:", format!(r#"chaos.head: "10.0.0.1:" {HEAD}"#)),
            ("chaos.head=10.0.0.1:+80", format!(r#"chaos.head: "10.0.0.1:+80" {HEAD}"#)),
            ("chaos.head=:7000", format!(r#"chaos.head: ":7000" {HEAD}"#)),
            ("chaos.head=10.0.0.300", format!(r#"chaos.head: "10.0.0.300" {HEAD}"#)),
            ("chaos.head=0.0.0.0", format!(r#"chaos.head: "0.0.0.0" {HEAD}"#)),
            ("chaos.head=fd00::1", format!(r#"chaos.head: "fd00::1" {V6}"#)),
            ("chaos.head=[fd00::1", format!(r#"chaos.head: "[fd00::1" {V6}"#)),
            ("chaos.head=[fd00::1]7000", format!(r#"chaos.head: "[fd00::1]7000" {V6}"#)),
            ("chaos.head=[head.lab]:1", format!(r#"chaos.head: "[head.lab]:1" {V6}"#)),
            ("chaos.head=[::]:1", format!(r#"chaos.head: "[::]:1" {V6}"#)),
            ("chaos.head=-head.lab", format!(r#"chaos.head: "-head.lab" {HEAD}"#)),
            ("chaos.head=head..lab", format!(r#"chaos.head: "head..lab" {HEAD}"#)),
            ("chaos.head=head.lab.", format!(r#"chaos.head: "head.lab." {HEAD}"#)),
            ("chaos.head=head_lab", format!(r#"chaos.head: "head_lab" {HEAD}"#)),
            ("chaos.watchdog=explode", r#"chaos.watchdog: "explode" is not one of reboot, poweroff, log, off; keeping reboot"#.into()),
            ("chaos.watchdog.interval=2d", format!(r#"chaos.watchdog.interval: "2d" {duration_reason}; keeping 2s"#)),
            ("chaos.watchdog.interval=-1", format!(r#"chaos.watchdog.interval: "-1" {duration_reason}; keeping 2s"#)),
            ("chaos.watchdog.interval=ms", format!(r#"chaos.watchdog.interval: "ms" {duration_reason}; keeping 2s"#)),
            ("chaos.watchdog.interval=", format!(r#"chaos.watchdog.interval: "" {duration_reason}; keeping 2s"#)),
            ("chaos.watchdog.interval=0ms", r#"chaos.watchdog.interval: "0ms" is zero, expected a positive duration; keeping 2s"#.into()),
            (
                "chaos.watchdog.interval=99999999999999999999",
                r#"chaos.watchdog.interval: "99999999999999999999" is too long a duration; keeping 2s"#.into(),
            ),
            ("chaos.watchdog.grace=1.5s", format!(r#"chaos.watchdog.grace: "1.5s" {duration_reason}; keeping 30s"#)),
            (
                "chaos.watchdog.grace=18446744073709551615m",
                r#"chaos.watchdog.grace: "18446744073709551615m" is too long a duration; keeping 30s"#.into(),
            ),
            ("chaos.root_digest=sha256:abc", r#"chaos.root_digest: "sha256:abc" is not sha256:<64 hex digits>; ignored"#.into()),
            ("chaos.root_digest=abc", r#"chaos.root_digest: "abc" is not sha256:<64 hex digits>; ignored"#.into()),
            (
                "chaos.root_digest=sha256:g0112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
                r#"chaos.root_digest: "sha256:g0112233445566778899aabbccddeeff00112233445566778899aabbccddeeff" is not sha256:<64 hex digits>; ignored"#.into(),
            ),
            (
                "chaos.modules=e1000,bad/name",
                r#"chaos.modules: "e1000,bad/name" has "bad/name", expected module names (up to 55 letters, digits, '_' or '-') separated by ','; ignored"#.into(),
            ),
            (&long_module_input, long_module_message.clone()),
            ("chaos.log=trace", r#"chaos.log: "trace" is not one of error, warn, info, debug; keeping info"#.into()),
            (
                "chaos.bogus=1",
                "chaos.bogus: unknown option, expected one of chaos.head, chaos.mode, chaos.watchdog, \
                 chaos.watchdog.interval, chaos.watchdog.grace, chaos.root_digest, chaos.modules, \
                 chaos.log; ignored"
                    .into(),
            ),
            (
                "chaos.",
                "chaos.: unknown option, expected one of chaos.head, chaos.mode, chaos.watchdog, \
                 chaos.watchdog.interval, chaos.watchdog.grace, chaos.root_digest, chaos.modules, \
                 chaos.log; ignored"
                    .into(),
            ),
        ];
        for (input, message) in table {
            let got = parse(input);
            assert_eq!(
                (got.chaos, got.problems),
                (ChaosOptions::default(), vec![message.clone()]),
                "{input}"
            );
        }
    }

    #[test]
    fn a_malformed_value_keeps_the_one_set_before() {
        let table: &[(&str, &str)] = &[
            (
                "chaos.mode=safe chaos.mode=turbo",
                r#"chaos.mode: "turbo" is not one of normal, expert, safe; keeping safe"#,
            ),
            (
                "chaos.head=h:1 chaos.head=h:0",
                r#"chaos.head: "h:0" is not <addr>[:port] (an IPv4 address or a host name; port 1-65535); keeping h:1"#,
            ),
            (
                "chaos.watchdog.grace=90 chaos.watchdog.grace=x",
                r#"chaos.watchdog.grace: "x" is not a duration, expected <n>h|<n>m|<n>s|<n>ms, a sum like 1m30s, or seconds; keeping 1m30s"#,
            ),
            (
                "chaos.watchdog.interval=1500ms chaos.watchdog.interval=0",
                r#"chaos.watchdog.interval: "0" is zero, expected a positive duration; keeping 1s500ms"#,
            ),
            (
                "chaos.modules=a-b chaos.modules=c,d/e",
                r#"chaos.modules: "c,d/e" has "d/e", expected module names (up to 55 letters, digits, '_' or '-') separated by ','; keeping a_b"#,
            ),
        ];
        for (input, message) in table {
            let expected = parse(input.split(' ').next().unwrap()).chaos;
            let got = parse(input);
            assert_eq!(
                (got.chaos, got.problems),
                (expected, vec![message.to_string()]),
                "{input}"
            );
        }
    }

    #[test]
    fn every_keyword_value_is_named() {
        for mode in [Mode::Normal, Mode::Expert, Mode::Safe] {
            assert_eq!(Mode::from_word(mode.word()), Ok(mode));
        }
        for action in [
            WatchdogAction::Reboot,
            WatchdogAction::Poweroff,
            WatchdogAction::Log,
            WatchdogAction::Off,
        ] {
            assert_eq!(WatchdogAction::from_word(action.word()), Ok(action));
        }
        for level in [
            LogLevel::Error,
            LogLevel::Warn,
            LogLevel::Info,
            LogLevel::Debug,
        ] {
            assert_eq!(LogLevel::from_word(level.word()), Ok(level));
        }
    }

    #[test]
    fn shown_values_parse_back() {
        let set = format!(
            "chaos.head=head.lab:7 chaos.mode=safe chaos.watchdog=log chaos.watchdog.interval=1500ms \
             chaos.watchdog.grace=2m chaos.root_digest=sha256:{HEX} chaos.modules=a,b chaos.log=warn"
        );
        for options in [ChaosOptions::default(), parse(&set).chaos] {
            let line: Vec<_> = OPTIONS
                .iter()
                .filter_map(|opt| Some(format!("{}={}", opt.name, (opt.show)(&options)?)))
                .collect();
            let got = parse(&line.join(" "));
            assert_eq!((got.chaos, got.problems), (options, vec![]), "{line:?}");
        }
    }

    #[test]
    fn help_lists_every_option_with_syntax_and_default() {
        let help = super::super::help();
        for opt in OPTIONS {
            assert!(
                help.contains(&format!("  {}={}", opt.name, (opt.syntax)())),
                "{}",
                opt.name
            );
            assert!(help.contains(opt.about), "{}", opt.name);
        }
        for line in [
            "  chaos.head=<addr>[:port]\n",
            "  chaos.mode=normal|expert|safe  (default normal)\n",
            "  chaos.watchdog=reboot|poweroff|log|off  (default reboot)\n",
            "  chaos.watchdog.interval=<n>h|<n>m|<n>s|<n>ms, a sum like 1m30s, or seconds  (default 2s)\n",
            "  chaos.watchdog.grace=<n>h|<n>m|<n>s|<n>ms, a sum like 1m30s, or seconds  (default 30s)\n",
            "  chaos.root_digest=sha256:<64 hex digits>\n",
            "  chaos.modules=<module>[,<module>...]\n",
            "  chaos.log=error|warn|info|debug  (default info)\n",
        ] {
            assert!(help.contains(line), "{line:?} in\n{help}");
        }
    }
}
