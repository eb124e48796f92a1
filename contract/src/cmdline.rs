//! The kernel command line, parsed into one typed [`Cmdline`].
//!
//! This module owns the node's whole command line contract: the kernel's
//! tokenising rules, `ip=`/`nfsaddrs=` ([`IpConfig`]), the `chaos.*` options
//! ([`ChaosOptions`], one table that also writes [`help`]) and init's own
//! arguments after `--`. Every other parameter belongs to the kernel and is
//! ignored.
//!
//! It never does I/O (the caller reads /proc/cmdline and prints the problems),
//! never fails and never panics: a node must boot and reach the network whatever
//! was typed into a PXE config, so each malformed value becomes one message in
//! [`Cmdline::problems`] plus a safe fallback.
//!
//! Every message has one shape, `<where>: <what is wrong, with the value quoted
//! and what was expected>; <the fallback taken>`:
//!
//! - `ip=: field 4 (netmask) "255.255.0.300" is not an IPv4 address; using DHCP instead`
//! - `chaos.mode: "turbo" is not one of normal, expert, safe; keeping normal`

mod ip;
mod options;

pub use ip::{Autoconf, ClientId, IpConfig};
pub use options::{ChaosOptions, Head, Host, LogLevel, Mode, Watchdog, WatchdogAction};

/// Everything init takes from the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cmdline {
    /// `ip=`/`nfsaddrs=` entries in command line order, at most one per device
    /// and one without a device. Empty means DHCP on any NIC.
    pub ip: Vec<IpConfig>,
    /// The `chaos.*` options, defaults where absent or malformed.
    pub chaos: ChaosOptions,
    /// Everything after a bare `--`, for init's argv; `key=value` params are
    /// joined again as the kernel does.
    pub init_args: Vec<String>,
    /// One console message per malformed or overridden value, in order.
    pub problems: Vec<String>,
}

/// Parses a kernel command line (the contents of /proc/cmdline).
pub fn parse(cmdline: &str) -> Cmdline {
    let mut out = Cmdline::default();
    let mut params = Params { rest: cmdline };
    while let Some((key, value)) = params.next() {
        match (key, value) {
            ("--", None) => {
                out.init_args = params
                    .by_ref()
                    .map(|(key, value)| match value {
                        Some(value) => format!("{key}={value}"),
                        None => key.to_owned(),
                    })
                    .collect();
            }
            ("ip" | "nfsaddrs", Some(value)) => ip::add(&mut out.ip, key, value, &mut out.problems),
            ("ip" | "nfsaddrs", None) => out.problems.push(format!(
                "{key}: no value, expected {key}=<autoconf> or {key}={}; ignored",
                ip::syntax()
            )),
            _ if key.starts_with("chaos.") => {
                options::apply(&mut out.chaos, key, value, &mut out.problems);
            }
            _ => {}
        }
    }
    out
}

/// The help screen: every option init understands, with its syntax and default.
pub fn help() -> String {
    let mut out = String::from("Kernel command line options of chaos init:\n\n");
    ip::help(&mut out);
    options::help(&mut out);
    out.push_str("  -- <args>\n      everything after a bare -- is passed to init\n");
    out
}

/// The kernel's parameter tokeniser (`next_arg` in lib/cmdline.c), so that
/// quoting means here exactly what it meant to the kernel: a leading `"` on a
/// param or on its value is dropped together with a `"` ending the param, and
/// whitespace inside quotes does not split.
struct Params<'a> {
    rest: &'a str,
}

impl<'a> Iterator for Params<'a> {
    type Item = (&'a str, Option<&'a str>);

    fn next(&mut self) -> Option<Self::Item> {
        let s = self
            .rest
            .trim_start_matches(|c: char| c.is_ascii() && is_space(c as u8));
        let (quoted, s) = match s.strip_prefix('"') {
            Some(inner) => (true, inner),
            None if s.is_empty() => {
                self.rest = s;
                return None;
            }
            None => (false, s),
        };
        let mut in_quote = quoted;
        let mut equals = None;
        let mut end = s.len();
        for (i, b) in s.bytes().enumerate() {
            if is_space(b) && !in_quote {
                end = i;
                break;
            }
            // Like the kernel, a '=' in the first position does not split.
            if equals.is_none() && b == b'=' && i > 0 {
                equals = Some(i);
            }
            if b == b'"' {
                in_quote = !in_quote;
            }
        }
        self.rest = &s[end..];
        let token = &s[..end];
        let ends_in_quote = token.ends_with('"');
        Some(match equals {
            None => (
                token.strip_suffix('"').filter(|_| quoted).unwrap_or(token),
                None,
            ),
            Some(eq) => {
                let value = &token[eq + 1..];
                let (start, value_quoted) = match value.strip_prefix('"') {
                    Some(_) => (eq + 2, true),
                    None => (eq + 1, false),
                };
                let stop = if ends_in_quote && (quoted || value_quoted) {
                    end - 1
                } else {
                    end
                };
                (&token[..eq], Some(&token[start..stop.max(start)]))
            }
        })
    }
}

/// The kernel's `isspace`, which unlike Rust's ASCII whitespace includes '\v'.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// A closed set of words a value must be one of.
trait Keyword: Copy + PartialEq + 'static {
    /// Every accepted spelling in the order messages and help list them; the
    /// first spelling of a value is its name. Every value appears (tested).
    const WORDS: &'static [(&'static str, Self)];

    fn from_word(word: &str) -> Result<Self, String> {
        Self::WORDS
            .iter()
            .find(|(w, _)| *w == word)
            .map(|&(_, value)| value)
            .ok_or_else(|| format!("is not one of {}", Self::words(", ")))
    }

    fn word(self) -> &'static str {
        Self::WORDS
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("?", |&(w, _)| w)
    }

    fn words(separator: &str) -> String {
        Self::WORDS
            .iter()
            .map(|(w, _)| *w)
            .collect::<Vec<_>>()
            .join(separator)
    }
}

/// A plain decimal number: unlike `str::parse` no sign, and never empty.
fn decimal<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Only digits and dots: meant as an IPv4 address, so never taken for a name.
fn is_dotted_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// A DNS name by RFC 1035's limits: 253 characters, labels of up to 63.
/// For the command line's and the DHCP server's names alike.
pub fn is_dns_name(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(|label| is_label(label, 63))
}

/// A host name label: letters, digits and '-', not at either end.
fn is_label(s: &str, max_len: usize) -> bool {
    !s.is_empty()
        && s.len() <= max_len
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    type Tokens = &'static [(&'static str, Option<&'static str>)];

    #[test]
    fn tokenises_like_the_kernel() {
        let table: &[(&str, Tokens)] = &[
            ("", &[]),
            (" \t\n\x0b\x0c\r ", &[]),
            ("a b=c", &[("a", None), ("b", Some("c"))]),
            ("  \ta \n", &[("a", None)]),
            ("k=", &[("k", Some(""))]),
            ("k=\"", &[("k", Some(""))]),
            ("k=a=b", &[("k", Some("a=b"))]),
            ("foo=\"a b\" x", &[("foo", Some("a b")), ("x", None)]),
            ("\"foo=a b\" x", &[("foo", Some("a b")), ("x", None)]),
            ("\"bare word\"", &[("bare word", None)]),
            ("\"\"", &[("", None)]),
            ("x=a\"b c\"d", &[("x", Some("a\"b c\"d"))]),
            ("x=\"a\"b", &[("x", Some("a\"b"))]),
            ("=a=b", &[("=a", Some("b"))]),
            ("\"open x=y", &[("open x", Some("y"))]),
            (
                "k\u{e9}=v\u{e9} \u{1f980}",
                &[("k\u{e9}", Some("v\u{e9}")), ("\u{1f980}", None)],
            ),
            ("a\n", &[("a", None)]),
        ];
        for (input, expected) in table {
            let got: Vec<_> = Params { rest: input }.collect();
            assert_eq!(got, *expected, "{input:?}");
        }
    }

    #[test]
    fn everything_after_dashes_is_for_init() {
        let table: &[(&str, &[&str])] = &[
            ("quiet", &[]),
            ("--", &[]),
            (
                "quiet -- single x=\"a b\" \"y=c d\"",
                &["single", "x=a b", "y=c d"],
            ),
            (
                "-- chaos.mode=safe ip=dhcp -- z",
                &["chaos.mode=safe", "ip=dhcp", "--", "z"],
            ),
            ("\"--\" a", &["a"]),
            ("a=-- b", &[]),
            ("--x b", &[]),
        ];
        for (input, expected) in table {
            let got = parse(input);
            assert_eq!(got.init_args, *expected, "{input:?}");
            assert_eq!(got.chaos, ChaosOptions::default(), "{input:?}");
            assert!(
                got.ip.is_empty() && got.problems.is_empty(),
                "{input:?}: {got:?}"
            );
        }
    }

    #[test]
    fn an_empty_or_foreign_command_line_gives_the_defaults() {
        for input in [
            "",
            "\n",
            "BOOT_IMAGE=/vmlinuz root=/dev/ram0 console=ttyS0,115200n8 quiet",
            "ipv6.disable=1 ip6=x chaos chaosmode=1 ipx=1 rd.chaos.mode=x initrd=chaos.cpio.gz",
        ] {
            assert_eq!(parse(input), Cmdline::default(), "{input:?}");
        }
    }

    #[test]
    fn a_bare_ip_is_reported_and_ignored() {
        let got = parse("ip nfsaddrs");
        assert!(got.ip.is_empty());
        assert_eq!(
            got.problems,
            [
                "ip: no value, expected ip=<autoconf> or ip=<client-ip>:<server-ip>:<gw-ip>:\
                 <netmask>:<hostname>:<device>:<autoconf>:<dns0-ip>:<dns1-ip>:<ntp0-ip>; ignored",
                "nfsaddrs: no value, expected nfsaddrs=<autoconf> or nfsaddrs=<client-ip>:\
                 <server-ip>:<gw-ip>:<netmask>:<hostname>:<device>:<autoconf>:<dns0-ip>:\
                 <dns1-ip>:<ntp0-ip>; ignored",
            ]
        );
    }

    #[test]
    fn parses_a_whole_command_line() {
        let got = parse(
            "BOOT_IMAGE=vmlinuz ip=eth0:dhcp quiet chaos.mode=expert \
             \"chaos.head=head.lab:7000\" chaos.log=debug -- init-arg\n",
        );
        assert_eq!(got.ip.len(), 1);
        assert_eq!(got.ip[0].device.as_deref(), Some("eth0"));
        assert_eq!(got.chaos.mode, Mode::Expert);
        assert_eq!(got.chaos.log, LogLevel::Debug);
        assert_eq!(
            got.chaos.head.map(|h| h.to_string()).as_deref(),
            Some("head.lab:7000")
        );
        assert_eq!(got.init_args, ["init-arg"]);
        assert!(got.problems.is_empty(), "{:?}", got.problems);
    }

    #[test]
    fn help_lists_ip_and_dashes() {
        let help = help();
        assert!(help.contains("  ip=<client-ip>:<server-ip>:<gw-ip>:<netmask>:<hostname>:"));
        assert!(help.contains("off none on any dhcp bootp rarp both"));
        assert!(help.contains("nfsaddrs="));
        assert!(help.contains("  -- <args>"));
    }

    #[test]
    fn garbage_never_panics() {
        const PIECES: &[&str] = &[
            "ip=",
            "nfsaddrs=",
            "chaos.",
            "head=",
            "mode=",
            "watchdog",
            ".interval=",
            ".grace=",
            "root_digest=",
            "sha256:",
            "modules=",
            "log=",
            "dhcp",
            "off",
            "eth0",
            ",",
            ":",
            "::",
            "\"",
            " ",
            "\t",
            "\n",
            "=",
            "--",
            "-",
            "_",
            ".",
            "0",
            "1",
            "255",
            "300",
            "65536",
            "[",
            "]",
            "fd00::1",
            "10.0.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "ms",
            "m",
            "s",
            "\u{e9}",
            "\u{1f980}",
            "\0",
            "\\",
            "abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopq",
        ];
        // xorshift64: deterministic, so a failure reproduces.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let mut input = String::new();
            for _ in 0..next() % 40 {
                let n = next();
                if n % 4 == 0 {
                    input.extend(char::from_u32((n >> 8) as u32 % 0x800));
                } else {
                    input.push_str(PIECES[(n >> 8) as usize % PIECES.len()]);
                }
            }
            let got = parse(&input);
            assert!(got.problems.iter().all(|p| !p.is_empty()), "{input:?}");
            for (i, entry) in got.ip.iter().enumerate() {
                assert!(entry.dns.len() <= 2, "{input:?}");
                assert!(
                    got.ip[..i].iter().all(|e| e.device != entry.device),
                    "{input:?}"
                );
            }
        }
    }
}
