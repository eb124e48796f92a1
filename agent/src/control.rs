// SPDX-License-Identifier: GPL-3.0-or-later
//! The local control socket the status verbs talk to, both ends, and how
//! their answers are shown: the `tyd nodes` table, `--json`, and the bars
//! of `tyd top`.
//!
//! Anyone on the node may read the status; changing membership (remove,
//! enroll, approve) needs root, checked from the socket's peer credentials.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::channel::{Channel, ChannelError};
use crate::codec::DecodeError;
use crate::proto::{Message, NodeStatus, Request, Response};

/// A local client gets this long for its request and our answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// What went wrong on the control socket, naming the socket.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0} answers: another tyd is running on this node")]
    Running(PathBuf),
    /// Making, binding or opening up the socket failed; `op` says which.
    #[error("{op} {path}: {error}")]
    Io {
        op: &'static str,
        path: PathBuf,
        error: io::Error,
    },
    #[error("connecting to {path} (is tyd running on this node?): {error}")]
    Connect { path: PathBuf, error: io::Error },
    #[error("talking to tyd on {path}: {error}")]
    Channel { path: PathBuf, error: ChannelError },
    #[error("tyd's answer on {path}: {error}")]
    Answer { path: PathBuf, error: DecodeError },
}

/// The error of `op` on `path`.
fn io_error<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ControlError + 'a {
    move |error| ControlError::Io {
        op,
        path: path.into(),
        error,
    }
}

/// Binds the control socket. A socket file left by a tyd that died is
/// replaced; one that still answers means another tyd runs here.
pub fn listen(path: &Path) -> Result<UnixListener, ControlError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_error("creating", dir))?;
    }
    if answers(path) {
        return Err(ControlError::Running(path.into()));
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(io_error("binding", path))?;
    // Everyone may ask for status; membership changes check credentials.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .map_err(io_error("opening to all users", path))?;
    listener
        .set_nonblocking(true)
        .map_err(io_error("making non-blocking", path))?;
    Ok(listener)
}

/// Whether a tyd listens on the control socket at `path`.
pub fn answers(path: &Path) -> bool {
    UnixStream::connect(path).is_ok()
}

/// A connected status verb.
pub struct Client {
    pub channel: Channel<UnixStream>,
    pub deadline: Instant,
    admin: bool,
}

/// Accepts one waiting client, if any.
pub fn accept(listener: &UnixListener) -> Option<Client> {
    let (stream, _) = listener.accept().ok()?;
    stream.set_nonblocking(true).ok()?;
    let admin = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
        .is_ok_and(|credentials| credentials.uid() == 0);
    Some(Client {
        channel: Channel::new(stream),
        deadline: Instant::now() + CLIENT_TIMEOUT,
        admin,
    })
}

impl Client {
    pub fn is_admin(&self) -> bool {
        self.admin
    }

    /// Writes what is pending and reads the request once it is complete.
    /// A request that does not decode is answered with the reason.
    pub fn request(&mut self) -> Result<Option<Request>, ChannelError> {
        self.channel.flush()?;
        self.channel.read_available()?;
        match self.channel.next_message()? {
            None => Ok(None),
            Some(bytes) => match Request::decode(&bytes) {
                Ok(request) => Ok(Some(request)),
                Err(e) => {
                    self.respond(&Response::Failed(format!("bad request: {e}")))?;
                    Ok(None)
                }
            },
        }
    }

    pub fn respond(&mut self, response: &Response) -> Result<(), ChannelError> {
        self.channel.send_message(&response.encode())?;
        self.channel.flush()
    }
}

/// Sends one request to the tyd at `path` and waits for its answer.
pub fn ask(path: &Path, request: &Request) -> Result<Response, ControlError> {
    ask_within(path, request, CLIENT_TIMEOUT)
}

/// [`ask`], waiting up to `timeout` for the answer (a join takes longer
/// than a question).
pub fn ask_within(
    path: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<Response, ControlError> {
    let stream = UnixStream::connect(path).map_err(|error| ControlError::Connect {
        path: path.into(),
        error,
    })?;
    stream
        .set_nonblocking(true)
        .map_err(io_error("making non-blocking", path))?;
    let mut channel = Channel::new(stream);
    let deadline = Instant::now() + timeout;
    let talk = |error| ControlError::Channel {
        path: path.into(),
        error,
    };
    channel.send_message(&request.encode()).map_err(talk)?;
    let bytes = channel.message_by(deadline).map_err(talk)?;
    Response::decode(&bytes).map_err(|error| ControlError::Answer {
        path: path.into(),
        error,
    })
}

/// How long ago, at a glance.
fn age(ms: u64) -> String {
    chaos_contract::duration::show_rough(std::time::Duration::from_millis(ms))
}

/// KiB as "1.5G", "300M".
pub(crate) fn size(kib: u64) -> String {
    const UNITS: [&str; 4] = ["K", "M", "G", "T"];
    let mut value = kib as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value < 10.0 {
        format!("{value:.1}{}", UNITS[unit])
    } else {
        format!("{value:.0}{}", UNITS[unit])
    }
}

pub(crate) fn hundredths(value: u32) -> String {
    format!("{}.{:02}", value / 100, value % 100)
}

fn address(address: Option<std::net::Ipv4Addr>) -> String {
    address.map_or_else(|| "-".into(), |a| a.to_string())
}

/// The `tyd nodes` table.
pub fn table(nodes: &[NodeStatus]) -> String {
    let mut rows = vec![[
        "ID",
        "HOSTNAME",
        "OVERLAY",
        "LAN",
        "STATE",
        "SLURM",
        "ADMITTED",
        "HANDSHAKE",
        "LOAD",
        "CPUS",
        "MEMORY",
    ]
    .map(String::from)];
    for node in nodes {
        let id = match (node.id, node.head) {
            (0, _) => "-".to_string(),
            (id, true) => format!("{id}*"),
            (id, false) => id.to_string(),
        };
        let state = if node.state == crate::proto::State::Pending {
            format!("pending {}", node.fingerprint)
        } else {
            node.state.name().to_string()
        };
        let (load, cpus, memory) = match &node.load {
            Some(l) => (
                l.average.map(hundredths).join(" "),
                l.cpus.to_string(),
                format!(
                    "{}/{}",
                    size(l.memory_total_kib.saturating_sub(l.memory_available_kib)),
                    size(l.memory_total_kib)
                ),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        rows.push([
            id,
            node.hostname.clone(),
            address(node.overlay),
            address(node.lan),
            state,
            slurm_state(node),
            node.admitted.map_or("-", |a| a.name()).to_string(),
            node.handshake_age_ms.map_or_else(|| "-".into(), age),
            load,
            cpus,
            memory,
        ]);
    }
    let mut widths = [0; 11];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The node's Slurm state, `-` for the head and where Slurm is not run.
pub(crate) fn slurm_state(node: &NodeStatus) -> String {
    node.slurm.clone().unwrap_or_else(|| "-".into())
}

fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_address(address: Option<std::net::Ipv4Addr>) -> String {
    address.map_or_else(|| "null".into(), |a| json_string(&a.to_string()))
}

/// `--json`: one array of node objects, on one line.
pub fn json(nodes: &[NodeStatus]) -> String {
    let objects: Vec<String> = nodes
        .iter()
        .map(|n| {
            let load = n.load.map_or_else(
                || "null".to_string(),
                |l| {
                    format!(
                        "{{\"load1\":{},\"load5\":{},\"load15\":{},\"cpus\":{},\
                         \"memory_total_kib\":{},\"memory_available_kib\":{},\"uptime_secs\":{}}}",
                        hundredths(l.average[0]),
                        hundredths(l.average[1]),
                        hundredths(l.average[2]),
                        l.cpus,
                        l.memory_total_kib,
                        l.memory_available_kib,
                        l.uptime_secs
                    )
                },
            );
            format!(
                "{{\"id\":{},\"head\":{},\"hostname\":{},\"fingerprint\":{},\"overlay\":{},\
                 \"lan\":{},\"state\":\"{}\",\"slurm\":{},\"admitted\":{},\"handshake_age_ms\":{},\"load\":{}}}",
                n.id,
                n.head,
                json_string(&n.hostname),
                json_string(&n.fingerprint),
                json_address(n.overlay),
                json_address(n.lan),
                n.state.name(),
                n.slurm
                    .as_deref()
                    .map_or_else(|| "null".into(), json_string),
                n.admitted
                    .map_or_else(|| "null".into(), |a| json_string(a.name())),
                n.handshake_age_ms
                    .map_or_else(|| "null".into(), |a| a.to_string()),
                load
            )
        })
        .collect();
    format!("[{}]", objects.join(","))
}

fn bar(fraction: f64, width: usize) -> String {
    let filled = ((fraction.clamp(0.0, 1.0) * width as f64).round() as usize).min(width);
    format!("[{}{}]", "#".repeat(filled), " ".repeat(width - filled))
}

/// One screen of `tyd top`: per up node, load (per CPU) and memory bars.
pub fn top(nodes: &[NodeStatus]) -> String {
    let name_width = nodes
        .iter()
        .map(|n| n.hostname.chars().count())
        .max()
        .unwrap_or(0)
        .max(8);
    let mut out = format!(
        "{:name_width$}  {:<6}  {:<29}  MEMORY USED\n",
        "NODE", "SLURM", "LOAD (1 min, per CPU)"
    );
    for node in nodes {
        let slurm = slurm_state(node);
        let Some(load) = node.load else {
            out.push_str(&format!(
                "{:name_width$}  {slurm:<6}  {}\n",
                node.hostname,
                node.state.name()
            ));
            continue;
        };
        let per_cpu = f64::from(load.average[0]) / 100.0 / f64::from(load.cpus.max(1));
        let used = load
            .memory_total_kib
            .saturating_sub(load.memory_available_kib);
        let memory = used as f64 / load.memory_total_kib.max(1) as f64;
        out.push_str(&format!(
            "{:name_width$}  {slurm:<6}  {} {:>6}  {} {:>5.0}%\n",
            node.hostname,
            bar(per_cpu, 20),
            hundredths(load.average[0]),
            bar(memory, 20),
            memory * 100.0
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Admission, Load, State};
    use std::net::Ipv4Addr;

    fn nodes() -> Vec<NodeStatus> {
        vec![
            NodeStatus {
                id: 1,
                head: true,
                hostname: "head".into(),
                fingerprint: "aaaa-bbbb".into(),
                overlay: Some(Ipv4Addr::new(10, 99, 0, 1)),
                lan: Some(Ipv4Addr::new(192, 168, 1, 1)),
                state: State::Up,
                handshake_age_ms: Some(130_000),
                load: Some(Load {
                    average: [150, 5, 1000],
                    cpus: 2,
                    memory_total_kib: 2 * 1024 * 1024,
                    memory_available_kib: 1024 * 1024,
                    uptime_secs: 10,
                }),
                slurm: None,
                admitted: None,
            },
            NodeStatus {
                id: 2,
                head: false,
                hostname: "drone1".into(),
                fingerprint: "eeee-ffff".into(),
                overlay: Some(Ipv4Addr::new(10, 99, 0, 2)),
                lan: Some(Ipv4Addr::new(192, 168, 1, 2)),
                state: State::Up,
                handshake_age_ms: Some(2_000),
                load: None,
                slurm: Some("idle".into()),
                admitted: Some(Admission::Approved),
            },
            NodeStatus {
                id: 0,
                head: false,
                hostname: "new\"one".into(),
                fingerprint: "cccc-dddd".into(),
                overlay: None,
                lan: None,
                state: State::Pending,
                handshake_age_ms: None,
                load: None,
                slurm: None,
                admitted: None,
            },
        ]
    }

    #[test]
    fn the_table_shows_every_column() {
        let text = table(&nodes());
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("ID  HOSTNAME"), "{text}");
        assert!(
            lines[1].contains("1*  head")
                && lines[1].contains("10.99.0.1")
                && lines[1].contains("2m")
                && lines[1].contains("1.50 0.05 10.00")
                && lines[1].contains("1.0G/2.0G"),
            "{text}"
        );
        let drone: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            drone[..7],
            [
                "2",
                "drone1",
                "10.99.0.2",
                "192.168.1.2",
                "up",
                "idle",
                "approved"
            ],
            "{text}"
        );
        assert!(lines[3].contains("pending cccc-dddd"), "{text}");
    }

    #[test]
    fn json_is_escaped_and_complete() {
        let text = json(&nodes());
        assert!(text.starts_with("[{\"id\":1,\"head\":true,\"hostname\":\"head\""));
        assert!(text.contains("\"load1\":1.50,\"load5\":0.05,\"load15\":10.00"));
        assert!(text.contains("\"hostname\":\"new\\\"one\""));
        assert!(text.contains("\"overlay\":null,\"lan\":null,\"state\":\"pending\",\"slurm\":null"));
        assert!(text.contains("\"state\":\"up\",\"slurm\":\"idle\",\"admitted\":\"approved\""));
    }

    #[test]
    fn top_draws_bars_per_cpu() {
        let text = top(&nodes());
        assert!(text.contains("[###############     ]   1.50"), "{text}");
        assert!(text.contains("50%"), "{text}");
        assert!(text.contains("drone1    idle    up"), "{text}");
        let last = text.lines().last().unwrap();
        assert!(
            last.starts_with("new\"one") && last.ends_with(" pending"),
            "{text}"
        );
    }

    #[test]
    fn ages_and_sizes_read_at_a_glance() {
        assert_eq!(age(5_400), "5s");
        assert_eq!(age(600_000), "10m");
        assert_eq!(age(10_800_000), "3h");
        assert_eq!(size(512), "512K");
        assert_eq!(size(1536), "1.5M");
    }
}
