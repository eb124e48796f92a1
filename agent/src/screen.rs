// SPDX-License-Identifier: GPL-3.0-or-later
//! `tyd screen`: the cluster as a live full-screen view on the node's own
//! console (clump/os's clumpview): this node's name, addresses and state,
//! and every node's load, CPUs, memory and Slurm state, as `tyd top`
//! shows them to the administrator.
//!
//! This module is the screen's logic, free of devices so it is tested on
//! its own: what it shows (a function of the cluster's [`NodeStatus`] list
//! and this node's [`Own`] facts), how keys move it, and the text of each
//! frame. [`console`] runs it on a terminal. It never changes the cluster
//! itself: leaving is PID 1's orderly shutdown, asked for by signal, in
//! which tyd says goodbye to the head.

pub mod console;

use std::net::Ipv4Addr;

use chaos_contract::fact::NodeState;
use chaos_contract::power::Power;

use crate::control::{hundredths, size, slurm_state, ControlError};
use crate::proto::{NodeStatus, Response, State};

/// This node's own facts, read on the node itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Own {
    pub hostname: String,
    pub lan: Option<Ipv4Addr>,
    pub overlay: Option<Ipv4Addr>,
    /// This boot's node key, as the administrator approves it.
    pub fingerprint: Option<String>,
    /// How many Slurm jobs run here; None without Slurm.
    pub jobs: Option<usize>,
}

/// What the node's tyd says of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cluster {
    /// No tyd answers on this node: why.
    NoAgent(String),
    /// tyd runs, and this node is not a member: its state, and why.
    Outside {
        state: NodeState,
        why: String,
    },
    Members(Vec<NodeStatus>),
    /// Another answer (the head slow to answer, say).
    Waiting(String),
}

impl Cluster {
    /// The cluster as an answer to [`crate::proto::Request::Nodes`] shows it.
    pub fn from_answer(answer: Result<Response, ControlError>) -> Cluster {
        match answer {
            Err(e) => Cluster::NoAgent(e.to_string()),
            Ok(Response::Nodes(nodes)) => Cluster::Members(nodes),
            Ok(Response::Failed(why) | Response::Done(why)) => match crate::drone::standing(&why) {
                Some(state) => Cluster::Outside { state, why },
                None => Cluster::Waiting(why),
            },
        }
    }
}

/// Everything one frame shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub own: Own,
    pub cluster: Cluster,
}

/// A key, as [`Keys`] reads it from the terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Esc,
    Enter,
    Char(char),
    /// Anything else: arrows, function keys, Alt combinations.
    Other,
}

/// Bytes from a terminal into keys. The Esc key and the start of an escape
/// sequence (an arrow, a function key) are the same byte; a sequence
/// arrives in one piece, so a lone Esc at the end of a read stays pending
/// until [`Keys::timeout`] says no more came.
#[derive(Debug, Default)]
pub struct Keys {
    pending: Vec<u8>,
}

const ESC: u8 = 0x1b;

impl Keys {
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Key> {
        self.pending.extend_from_slice(bytes);
        let mut keys = Vec::new();
        let mut at = 0;
        while at < self.pending.len() {
            let rest = &self.pending[at..];
            let (key, used) = match rest {
                [ESC] => break,
                [ESC, b'[' | b'O', ..] => match sequence_length(rest) {
                    Some(length) => (Key::Other, length),
                    None => break,
                },
                // Alt and a key: nothing a bumped keyboard should confirm.
                [ESC, _, ..] => (Key::Other, 2),
                [b'\r' | b'\n', ..] => (Key::Enter, 1),
                [byte, ..] if byte.is_ascii_graphic() || *byte == b' ' => {
                    (Key::Char(char::from(*byte)), 1)
                }
                _ => (Key::Other, 1),
            };
            keys.push(key);
            at += used;
        }
        self.pending.drain(..at);
        keys
    }

    /// Whether a lone Esc waits for [`Keys::timeout`].
    pub fn pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// No more bytes came: what is pending was the Esc key.
    pub fn timeout(&mut self) -> Option<Key> {
        let pending = std::mem::take(&mut self.pending);
        (pending == [ESC]).then_some(Key::Esc)
    }
}

/// The length of the escape sequence `bytes` starts with (ESC [ ... final,
/// ESC O x, and the Linux console's function keys ESC [ [ x), if complete.
fn sequence_length(bytes: &[u8]) -> Option<usize> {
    match bytes {
        [ESC, b'O', _, ..] => Some(3),
        [ESC, b'[', b'[', _, ..] => Some(4),
        [ESC, b'[', rest @ ..] => rest
            .iter()
            .position(|b| (0x40..=0x7e).contains(b))
            .map(|end| end + 3),
        _ => None,
    }
}

/// What the screen is showing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Cluster,
    /// Asking whether to leave and power off or reboot.
    Confirm(Power),
    /// The last lines of the kernel's log (init's and the services' lines).
    Log,
    /// Confirmed: PID 1 is asked and the node is on its way out.
    Leaving(Power),
}

/// What a key asks of the program that runs the screen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Nothing,
    Redraw,
    /// Leave the cluster and power off or reboot (through PID 1).
    Leave(Power),
    /// Off a node's console: end the view.
    Quit,
}

/// The screen's state: its mode, and whether it owns a node's console
/// (where Esc and `r` leave the cluster) or is a view in a terminal
/// (where Esc and `q` only end it).
#[derive(Debug)]
pub struct Screen {
    pub mode: Mode,
    console: bool,
}

impl Screen {
    pub fn new(console: bool) -> Screen {
        Screen {
            mode: Mode::Cluster,
            console,
        }
    }

    pub fn key(&mut self, key: Key) -> Action {
        let (mode, action) = match (self.mode, key) {
            (Mode::Leaving(_), _) => return Action::Nothing,
            (Mode::Confirm(power), Key::Char('y' | 'Y')) => {
                (Mode::Leaving(power), Action::Leave(power))
            }
            (Mode::Confirm(_) | Mode::Log, _) => (Mode::Cluster, Action::Redraw),
            (Mode::Cluster, Key::Char('l' | 'L')) => (Mode::Log, Action::Redraw),
            (Mode::Cluster, Key::Esc) if self.console => {
                (Mode::Confirm(Power::Off), Action::Redraw)
            }
            (Mode::Cluster, Key::Char('r' | 'R')) if self.console => {
                (Mode::Confirm(Power::Reboot), Action::Redraw)
            }
            (Mode::Cluster, Key::Esc | Key::Char('q')) if !self.console => {
                return Action::Quit;
            }
            (Mode::Cluster, _) => return Action::Nothing,
        };
        self.mode = mode;
        action
    }

    /// The frame for a terminal of `columns` x `rows`: at most `rows - 1`
    /// lines (the last row stays free, for the cursor and for any kernel
    /// message that prints there before the next frame), none wider than
    /// `columns`.
    pub fn frame(&self, view: &View, log: &[String], columns: usize, rows: usize) -> Vec<String> {
        let rows = rows.saturating_sub(1).max(4);
        let mut lines = match self.mode {
            Mode::Log => {
                let shown = rows - 1;
                let mut lines = vec![" the last lines of the log; any key returns".to_string()];
                lines.extend(log[log.len().saturating_sub(shown)..].iter().cloned());
                lines
            }
            _ => self.cluster_lines(view, rows),
        };
        lines.truncate(rows);
        lines
            .into_iter()
            .map(|line| line.chars().take(columns).collect())
            .collect()
    }

    fn cluster_lines(&self, view: &View, rows: usize) -> Vec<String> {
        let own = &view.own;
        let (state, why) = state(view);
        let state = match self.mode {
            Mode::Leaving(Power::Off) => "leaving the cluster, then powering off".to_string(),
            Mode::Leaving(Power::Reboot) => "leaving the cluster, then rebooting".to_string(),
            _ => state,
        };
        let address = |a: Option<Ipv4Addr>| a.map_or_else(|| "-".to_string(), |a| a.to_string());
        let rule = "-".repeat(78);
        let mut lines = vec![
            format!(" chaos node {}", own.hostname),
            rule.clone(),
            format!(" state    {state}"),
        ];
        if let Some(why) = why {
            lines.push(format!("          {why}"));
        }
        lines.push(format!(
            " LAN      {:<16} overlay  {}",
            address(own.lan),
            address(own.overlay)
        ));
        if let Some(fingerprint) = &own.fingerprint {
            lines.push(format!(" key      {fingerprint}"));
        }
        lines.push(rule);
        let footer = self.footer();
        if let Cluster::Members(nodes) = &view.cluster {
            lines.push(row(
                "  ", "NODE", "OVERLAY", "STATE", "LOAD", "CPUS", "MEMORY", "SLURM",
            ));
            // The footer and the blank line above it keep their places.
            let room = rows.saturating_sub(lines.len() + 2);
            let shown = if nodes.len() <= room {
                nodes.len()
            } else {
                room.saturating_sub(1)
            };
            let own_node = own_entry(view);
            for node in &nodes[..shown] {
                let mark = if Some(node) == own_node { "> " } else { "  " };
                lines.push(node_row(mark, node));
            }
            if shown < nodes.len() && room > 0 {
                lines.push(format!("  ... and {} more", nodes.len() - shown));
            }
        }
        while lines.len() + 2 < rows {
            lines.push(String::new());
        }
        lines.push(String::new());
        lines.push(footer);
        lines
    }

    fn footer(&self) -> String {
        match (self.mode, self.console) {
            (Mode::Confirm(Power::Off), _) => {
                " Leave the cluster and power off this PC? y: yes, any other key: no".into()
            }
            (Mode::Confirm(Power::Reboot), _) => {
                " Leave the cluster and reboot this PC? y: yes, any other key: no".into()
            }
            (Mode::Leaving(_), _) => String::new(),
            (_, true) => " Esc: leave and power off   r: leave and reboot   l: the log".into(),
            (_, false) => " Esc or q: quit   l: the log".into(),
        }
    }
}

/// This node's entry in the list: the one with its overlay address, else
/// the one with its name.
fn own_entry(view: &View) -> Option<&NodeStatus> {
    let Cluster::Members(nodes) = &view.cluster else {
        return None;
    };
    let own = &view.own;
    nodes
        .iter()
        .find(|n| own.overlay.is_some() && n.overlay == own.overlay)
        .or_else(|| nodes.iter().find(|n| n.hostname == own.hostname))
}

/// The state line and, below it, why (for a node outside the cluster).
fn state(view: &View) -> (String, Option<String>) {
    match &view.cluster {
        Cluster::NoAgent(why) => ("not in a cluster: no tyd answers".into(), Some(why.clone())),
        Cluster::Outside { state, why } => (words(*state).into(), Some(why.clone())),
        Cluster::Waiting(why) => ("waiting for the head".into(), Some(why.clone())),
        Cluster::Members(nodes) => {
            let up = nodes.iter().filter(|n| n.state == State::Up).count();
            let of = format!("{up} of {} nodes up", nodes.len());
            let state = match own_entry(view) {
                Some(node) if node.head => format!("head of the cluster, {of}"),
                Some(node) => {
                    let slurm = node
                        .slurm
                        .as_ref()
                        .map(|slurm| format!(", {slurm} in Slurm"))
                        .unwrap_or_default();
                    let jobs = match view.own.jobs {
                        Some(1) => ", running 1 job".to_string(),
                        Some(n) if n > 1 => format!(", running {n} jobs"),
                        _ => String::new(),
                    };
                    format!("joined: node {}, {of}{slurm}{jobs}", node.id)
                }
                None => format!("joined, {of}"),
            };
            (state, None)
        }
    }
}

/// A node state as the screen says it to a passer-by.
fn words(state: NodeState) -> &'static str {
    match state {
        NodeState::Serving => "head of the cluster",
        NodeState::Listening => "looking for the head",
        NodeState::Joining | NodeState::Retrying | NodeState::Rejoining => "joining",
        NodeState::Joined => "joined",
        NodeState::Removed => "removed from the cluster",
        NodeState::Leaving => "leaving",
    }
}

#[allow(clippy::too_many_arguments)]
fn row(
    mark: &str,
    name: &str,
    overlay: &str,
    state: &str,
    load: &str,
    cpus: &str,
    memory: &str,
    slurm: &str,
) -> String {
    let name: String = name.chars().take(16).collect();
    format!("{mark}{name:<16} {overlay:<15} {state:<8} {load:>5} {cpus:>4}  {memory:<11} {slurm}")
        .trim_end()
        .to_string()
}

fn node_row(mark: &str, node: &NodeStatus) -> String {
    let name = if node.head {
        format!("{}*", node.hostname)
    } else {
        node.hostname.clone()
    };
    let overlay = node.overlay.map_or_else(|| "-".into(), |a| a.to_string());
    let (load, cpus, memory) = node.load.map_or_else(
        || ("-".into(), "-".into(), "-".into()),
        |l| {
            (
                hundredths(l.average[0]),
                l.cpus.to_string(),
                format!(
                    "{}/{}",
                    size(l.memory_total_kib.saturating_sub(l.memory_available_kib)),
                    size(l.memory_total_kib)
                ),
            )
        },
    );
    row(
        mark,
        &name,
        &overlay,
        node.state.name(),
        &load,
        &cpus,
        &memory,
        &slurm_state(node),
    )
}

/// A /dev/kmsg record ("6,1234,5678901,-;init: ready") as a log line, as
/// dmesg shows it ("[    5.678] init: ready"); its continuation lines
/// (device properties) are left out.
pub fn kmsg_line(record: &str) -> Option<String> {
    let (prefix, text) = record.split_once(';')?;
    let micros: u64 = prefix.split(',').nth(2)?.parse().ok()?;
    let text = text.lines().next().unwrap_or_default();
    Some(format!(
        "[{:5}.{:03}] {text}",
        micros / 1_000_000,
        micros / 1000 % 1000
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Load;

    fn status(id: u32, hostname: &str, overlay: u8) -> NodeStatus {
        NodeStatus {
            id,
            head: id == 1,
            hostname: hostname.into(),
            fingerprint: "aaaa".into(),
            overlay: Some(Ipv4Addr::new(10, 99, 0, overlay)),
            lan: Some(Ipv4Addr::new(10, 77, 0, overlay)),
            state: State::Up,
            handshake_age_ms: Some(1000),
            load: Some(Load {
                average: [25, 10, 5],
                cpus: 2,
                memory_total_kib: 2 * 1024 * 1024,
                memory_available_kib: 1024 * 1024,
                uptime_secs: 60,
            }),
            slurm: (id > 1).then(|| "idle".into()),
            admitted: None,
        }
    }

    fn drone(cluster: Cluster) -> View {
        View {
            own: Own {
                hostname: "drone1".into(),
                lan: Some(Ipv4Addr::new(10, 77, 0, 2)),
                overlay: Some(Ipv4Addr::new(10, 99, 0, 2)),
                fingerprint: Some("1a2b-3c4d".into()),
                jobs: Some(0),
            },
            cluster,
        }
    }

    fn members() -> Cluster {
        Cluster::Members(vec![
            status(1, "head", 1),
            status(2, "drone1", 2),
            status(3, "drone2", 3),
        ])
    }

    fn text(screen: &Screen, view: &View) -> String {
        screen.frame(view, &[], 80, 25).join("\n")
    }

    #[test]
    fn a_drone_running_jobs_says_how_many() {
        let screen = Screen::new(true);
        let mut view = drone(members());
        if let Cluster::Members(nodes) = &mut view.cluster {
            nodes[1].slurm = Some("alloc".into());
        }
        view.own.jobs = Some(2);
        assert!(text(&screen, &view).contains(
            " state    joined: node 2, 3 of 3 nodes up, alloc in Slurm, running 2 jobs\n"
        ));
        view.own.jobs = Some(1);
        assert!(text(&screen, &view).contains("alloc in Slurm, running 1 job\n"));
    }

    #[test]
    fn a_joined_drone_sees_itself_and_the_other_nodes() {
        let screen = Screen::new(true);
        let text = text(&screen, &drone(members()));
        for wanted in [
            " chaos node drone1",
            " state    joined: node 2, 3 of 3 nodes up, idle in Slurm",
            " LAN      10.77.0.2        overlay  10.99.0.2",
            " key      1a2b-3c4d",
            "  head*            10.99.0.1       up        0.25    2  1.0G/2.0G   -",
            "> drone1           10.99.0.2       up        0.25    2  1.0G/2.0G   idle",
            "  drone2           10.99.0.3",
            " Esc: leave and power off   r: leave and reboot   l: the log",
        ] {
            assert!(text.contains(wanted), "{wanted:?} missing from\n{text}");
        }
        // Nothing a log reader would take for tyd's own line.
        assert!(!text.contains("joined as node"), "{text}");
    }

    #[test]
    fn a_frame_fits_its_terminal_and_leaves_the_last_row_free() {
        let screen = Screen::new(true);
        let many = Cluster::Members((1..=40).map(|i| status(i, "node", i as u8)).collect());
        for (columns, rows) in [(80, 25), (80, 24), (100, 50), (40, 10)] {
            let frame = screen.frame(&drone(many.clone()), &[], columns, rows);
            assert_eq!(frame.len(), rows - 1, "{columns}x{rows}");
            assert!(frame.iter().all(|l| l.chars().count() <= columns));
            assert!(frame[frame.len() - 1].starts_with(" Esc"), "{frame:#?}");
        }
        let frame = screen.frame(&drone(many), &[], 80, 25).join("\n");
        assert!(frame.contains("  ... and "), "{frame}");
    }

    #[test]
    fn a_node_outside_the_cluster_says_where_it_stands() {
        let screen = Screen::new(true);
        let table: &[(Cluster, &str)] = &[
            (
                Cluster::from_answer(Ok(Response::Failed(format!(
                    "{}: no beacon from the head heard yet",
                    NodeState::Listening.name()
                )))),
                " state    looking for the head",
            ),
            (
                Cluster::from_answer(Ok(Response::Failed(format!(
                    "{} head 10.77.0.1:7700: refused",
                    NodeState::Joining.name()
                )))),
                " state    joining\n          joining head 10.77.0.1:7700: refused",
            ),
            (
                Cluster::from_answer(Err(ControlError::Connect {
                    path: "/run/chaos/tyd.sock".into(),
                    error: std::io::ErrorKind::NotFound.into(),
                })),
                " state    not in a cluster: no tyd answers",
            ),
            (
                Cluster::from_answer(Ok(Response::Failed("the head did not answer".into()))),
                " state    waiting for the head",
            ),
        ];
        for (cluster, wanted) in table {
            let text = text(&screen, &drone(cluster.clone()));
            assert!(text.contains(wanted), "{wanted:?} missing from\n{text}");
            assert!(!text.contains("NODE"), "{text}");
        }
        let mut head = drone(members());
        head.own.overlay = Some(Ipv4Addr::new(10, 99, 0, 1));
        let text = text(&screen, &head);
        assert!(
            text.contains(" state    head of the cluster, 3 of 3 nodes up"),
            "{text}"
        );
    }

    #[test]
    fn leaving_asks_first_and_a_bumped_key_does_nothing() {
        let view = drone(members());
        let mut screen = Screen::new(true);
        assert_eq!(screen.key(Key::Char('x')), Action::Nothing);
        assert_eq!(screen.key(Key::Esc), Action::Redraw);
        assert!(text(&screen, &view).contains("power off this PC? y: yes, any other key: no"));
        assert_eq!(screen.key(Key::Char('n')), Action::Redraw);
        assert_eq!(screen.mode, Mode::Cluster);
        assert_eq!(screen.key(Key::Char('r')), Action::Redraw);
        assert!(text(&screen, &view).contains("reboot this PC? y: yes"));
        assert_eq!(screen.key(Key::Char('y')), Action::Leave(Power::Reboot));
        assert!(text(&screen, &view).contains(" state    leaving the cluster, then rebooting"));
        assert_eq!(screen.key(Key::Esc), Action::Nothing, "on its way out");

        let mut screen = Screen::new(true);
        screen.key(Key::Esc);
        assert_eq!(screen.key(Key::Char('Y')), Action::Leave(Power::Off));
        assert!(text(&screen, &view).contains("leaving the cluster, then powering off"));
    }

    #[test]
    fn the_log_is_a_key_away_and_off_the_console_esc_quits() {
        let view = drone(members());
        let mut screen = Screen::new(true);
        assert_eq!(screen.key(Key::Char('l')), Action::Redraw);
        let log: Vec<String> = (0..100).map(|i| format!("line {i}")).collect();
        let frame = screen.frame(&view, &log, 80, 25);
        assert_eq!(frame.len(), 24);
        assert_eq!(frame.last().map(String::as_str), Some("line 99"));
        assert_eq!(screen.key(Key::Other), Action::Redraw);
        assert_eq!(screen.mode, Mode::Cluster);

        let mut view_only = Screen::new(false);
        assert_eq!(view_only.key(Key::Char('r')), Action::Nothing);
        assert_eq!(view_only.key(Key::Esc), Action::Quit);
        assert_eq!(view_only.key(Key::Char('q')), Action::Quit);
    }

    #[test]
    fn keys_tell_esc_from_escape_sequences() {
        let mut keys = Keys::default();
        assert_eq!(keys.feed(b"r\r"), [Key::Char('r'), Key::Enter]);
        assert_eq!(keys.feed(b"\x1b[A\x1bOP\x1b[[A\x1b[15~y"), {
            [
                Key::Other,
                Key::Other,
                Key::Other,
                Key::Other,
                Key::Char('y'),
            ]
        });
        assert_eq!(keys.feed(b"\x1b"), []);
        assert!(keys.pending());
        assert_eq!(keys.timeout(), Some(Key::Esc));
        assert!(!keys.pending());
        // A sequence split across reads is still one key.
        assert_eq!(keys.feed(b"\x1b["), []);
        assert_eq!(keys.feed(b"B"), [Key::Other]);
        assert_eq!(keys.feed(b"\x1by"), [Key::Other], "Alt-y is no yes");
        assert_eq!(keys.timeout(), None);
    }

    #[test]
    fn kmsg_records_read_as_dmesg_lines() {
        assert_eq!(
            kmsg_line("6,1234,5678901,-;init: ready: drone1 as pid 1").as_deref(),
            Some("[    5.678] init: ready: drone1 as pid 1")
        );
        assert_eq!(
            kmsg_line("4,9,12,-;virtio_net: x\n SUBSYSTEM=pci").as_deref(),
            Some("[    0.000] virtio_net: x")
        );
        assert_eq!(kmsg_line("garbage"), None);
    }
}
