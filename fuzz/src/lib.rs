//! The fuzz targets: one function per parser that reads untrusted bytes,
//! from the network (DHCP replies, the join protocol's frames and
//! messages, beacons, HTTP requests) or from a file a user hands over (the
//! kernel command line, the image manifest, service files, a cpio archive
//! for `mkimage list`, a kernel's modules.dep, modules.alias and
//! modules.softdep). Each takes any bytes and must return: an error is an
//! answer, a panic or a hang is a bug.
//!
//! `cargo xtask fuzz` runs them under libFuzzer (fuzz/libfuzzer/), and the
//! corpora test replays every input in fuzz/corpus/ on stable Rust.

use std::io::Write;
use std::os::unix::net::UnixStream;

/// A fuzz target: its name (also its corpus directory's) and its function.
#[derive(Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

pub const TARGETS: &[Target] = &[
    Target {
        name: "cmdline",
        run: cmdline,
    },
    Target {
        name: "dhcp",
        run: dhcp,
    },
    Target {
        name: "proto",
        run: proto,
    },
    Target {
        name: "frames",
        run: frames,
    },
    Target {
        name: "beacon",
        run: beacon,
    },
    Target {
        name: "manifest",
        run: manifest,
    },
    Target {
        name: "service",
        run: service,
    },
    Target {
        name: "cpio",
        run: cpio,
    },
    Target {
        name: "modules",
        run: modules,
    },
    Target {
        name: "http",
        run: http,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// `ip=` and the `chaos.*` options, as /proc/cmdline gives them.
fn cmdline(data: &[u8]) {
    let _ = chaos_contract::cmdline::parse(&text(data));
}

/// A reply on port 68, taken as an answer to the transaction and hardware
/// address it names itself, so that the checks past those are reached.
fn dhcp(data: &[u8]) {
    let xid = data
        .get(4..8)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let mut mac = [0; 6];
    if let Some(b) = data.get(28..34) {
        mac.copy_from_slice(b);
    }
    let _ = chaos_init::dhcp::parse_reply(data, xid, mac);
}

/// Every message of the join protocol and the control socket.
fn proto(data: &[u8]) {
    use chaos_agent::proto::*;
    let _ = Hello::decode(data);
    let _ = Answer::decode(data);
    let _ = FromDrone::decode(data);
    let _ = ToDrone::decode(data);
    let _ = Request::decode(data);
    let _ = Response::decode(data);
}

/// A connection's bytes cut into frames, then into chunked messages.
fn frames(data: &[u8]) {
    use chaos_agent::channel::Channel;
    for messages in [false, true] {
        let Ok((mut writer, reader)) = UnixStream::pair() else {
            return;
        };
        // A socket buffer holds far more than libFuzzer's inputs.
        if writer.write_all(data).is_err() || reader.set_nonblocking(true).is_err() {
            return;
        }
        drop(writer);
        let mut channel = Channel::new(reader);
        loop {
            if channel.read_available().is_err() {
                break;
            }
            let next = if messages {
                channel.next_message()
            } else {
                channel.next_frame()
            };
            if !matches!(next, Ok(Some(_))) {
                break;
            }
        }
    }
}

/// A datagram on the beacon port, for a cluster whose head key is the one
/// the datagram names (so that the signature check is reached).
fn beacon(data: &[u8]) {
    use chaos_agent::beacon::Beacon;
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
    let mut head = [0; 32];
    if let Some(named) = data.get(18..50) {
        head.copy_from_slice(named);
    }
    let _ = Beacon::open(data, &head, &key);
}

/// /etc/chaos/manifest, as certaintyd reads it.
fn manifest(data: &[u8]) {
    let _ = mkimage::manifest::Manifest::parse(&text(data));
}

/// A file in /etc/chaos/services/.
fn service(data: &[u8]) {
    let _ = chaos_contract::service::Service::parse("fuzzed", &text(data));
}

/// `mkimage list` on an archive, gzipped or not.
fn cpio(data: &[u8]) {
    let _ = mkimage::list(data);
}

/// A kernel's module tree: the input is modules.dep, modules.alias and
/// modules.softdep, separated by NUL bytes; the closure of a module it
/// names is resolved too.
fn modules(data: &[u8]) {
    use std::sync::OnceLock;
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = std::env::temp_dir()
            .join(format!("chaos-fuzz-modules-{}", std::process::id()))
            .join("6.1.0-fuzz");
        let _ = std::fs::create_dir_all(&dir);
        dir
    });
    let mut parts = data.splitn(3, |b| *b == 0);
    for name in ["modules.dep", "modules.alias", "modules.softdep"] {
        let _ = std::fs::write(dir.join(name), parts.next().unwrap_or_default());
    }
    if let Ok(tree) = mkimage::ModuleTree::open(dir) {
        let first = text(data)
            .split(|c: char| c == ':' || c.is_whitespace())
            .next()
            .map(mkimage::modules::normalise)
            .unwrap_or_default();
        let _ = tree.closure(&[first]);
        let _ = tree.aliases().lookup(&text(data));
    }
}

/// A request head as netboot's HTTP server reads it.
fn http(data: &[u8]) {
    let _ = netboot::http::request::parse(data);
}
