//! The facts a node reports on its console for programs to read: xtask's
//! live cluster table, the bench and the tests read these, never the
//! human lines beside them, which stay free to change.
//!
//! A fact is one log line holding [`MARK`], a kind and `key=value` fields,
//! wherever the line's prefixes (kernel timestamp, `init:`, a service's
//! name) put it:
//!
//! ```text
//! [    1.234567] init: @chaos ready host=drone1
//! ```
//!
//! Values are escaped so that a fact stays one line of words: `%`, space,
//! `=` and control characters are written `%XX`. The kinds and their keys
//! (a key not listed may be added later; readers ignore what they do not
//! know):
//!
//! | kind | from | keys |
//! | --- | --- | --- |
//! | `ready` | init | `host` |
//! | `lease` | init | `interface`, `address` (with `/prefix`), `server`, `seconds` (or `forever`), `router` |
//! | `service` | init | `name`, `state` (`broken`, `given-up`), `why` |
//! | `node` | tyd on a drone | `state` (see [`NodeState`]); joined: `node`, `name`, `overlay` (with `/prefix`), `head`, `peers`, and on joining `ms` (how long the join took) |
//! | `node` (head) | tyd on the head | `state=serving`, `name`, `overlay`, `listen` |
//! | `member` | tyd on the head | `node`, `name`, `state` (`up`, `left`, `expired`, `removed`), `overlay` |
//! | `slurm` | tyd on the head | `name`, `state` (Slurm's short state: `idle`, `alloc`, `mix`, `drain`, `down*`..., or `gone`) |
//! | `exports` | tyd on the head | `members` (how many members the NFS server's export table reaches now) |
//! | `share` | tyd on a member | `path`, `state` (`mounted`, `unmounted`, `failed`), and for `mounted` `ms` since the welcome |

use std::fmt::{self, Display};

/// What marks a fact in a line.
pub const MARK: &str = "@chaos";

pub const READY: &str = "ready";
pub const LEASE: &str = "lease";
pub const SERVICE: &str = "service";
pub const NODE: &str = "node";
pub const MEMBER: &str = "member";
pub const SLURM: &str = "slurm";
pub const EXPORTS: &str = "exports";
pub const SHARE: &str = "share";

/// One fact: a kind and its fields, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fact {
    pub kind: String,
    pub fields: Vec<(String, String)>,
}

impl Fact {
    pub fn new(kind: &str) -> Self {
        Fact {
            kind: kind.to_string(),
            fields: Vec::new(),
        }
    }

    /// Adds a field.
    pub fn with(mut self, key: &str, value: impl Display) -> Self {
        self.fields.push((key.to_string(), value.to_string()));
        self
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The fact in one line of `line`, if it holds one.
    pub fn parse(line: &str) -> Option<Fact> {
        let start = line.find(MARK)?;
        let mut words = line[start + MARK.len()..].split_ascii_whitespace();
        let kind = words.next()?;
        let mut fact = Fact::new(kind);
        for word in words {
            let (key, value) = word.split_once('=')?;
            fact.fields.push((unescape(key)?, unescape(value)?));
        }
        Some(fact)
    }

    /// Every fact in a console transcript, in order.
    pub fn all(console: &str) -> impl Iterator<Item = Fact> + '_ {
        console.lines().filter_map(Fact::parse)
    }

    /// True if this fact is of `kind` and has every `(key, value)` given.
    pub fn matches(&self, kind: &str, fields: &[(&str, &str)]) -> bool {
        self.kind == kind && fields.iter().all(|(k, v)| self.get(k) == Some(*v))
    }
}

impl Display for Fact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{MARK} {}", escape(&self.kind))?;
        for (key, value) in &self.fields {
            write!(f, " {}={}", escape(key), escape(value))?;
        }
        Ok(())
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '%' || c == '=' || c.is_whitespace() || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn unescape(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Where a node stands in its cluster, as tyd reports it (`node` facts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// A head accepting joins.
    Serving,
    /// A drone waiting for the head's beacon.
    Listening,
    /// A drone that knows the head and is joining it.
    Joining,
    /// A join failed; the drone tries again.
    Retrying,
    /// A member.
    Joined,
    /// A member whose session ended; joining again.
    Rejoining,
    /// Removed by the head with `tyd remove`; out until it reboots.
    Removed,
    /// Leaving the cluster.
    Leaving,
}

impl NodeState {
    const NAMES: &'static [(NodeState, &'static str)] = &[
        (NodeState::Serving, "serving"),
        (NodeState::Listening, "listening"),
        (NodeState::Joining, "joining"),
        (NodeState::Retrying, "retrying"),
        (NodeState::Joined, "joined"),
        (NodeState::Rejoining, "rejoining"),
        (NodeState::Removed, "removed"),
        (NodeState::Leaving, "leaving"),
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(s, _)| *s == self)
            .map_or("unknown", |(_, n)| n)
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(s, _)| *s)
    }

    /// The `node` fact for this state; callers add the other keys.
    pub fn fact(self) -> Fact {
        Fact::new(NODE).with("state", self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_are_found_behind_any_prefix_and_read_back() {
        let fact = Fact::new(READY).with("host", "drone1");
        let line = format!("[    1.234567] init: {fact}");
        assert_eq!(line, "[    1.234567] init: @chaos ready host=drone1");
        assert_eq!(Fact::parse(&line), Some(fact.clone()));
        assert!(Fact::parse(&line)
            .unwrap()
            .matches(READY, &[("host", "drone1")]));
        assert!(!fact.matches(READY, &[("host", "drone2")]));
        assert_eq!(Fact::parse("init: ready: drone1 as pid 1"), None);
    }

    #[test]
    fn values_with_blanks_equals_and_controls_stay_one_fact() {
        let why = "starts after ghost, which is not in the table; 100% = broken\n";
        let fact = Fact::new(SERVICE).with("name", "a b").with("why", why);
        let text = fact.to_string();
        assert!(!text.contains('\n'));
        assert_eq!(text.split(' ').count(), 4, "{text}");
        assert_eq!(Fact::parse(&text).unwrap().get("why"), Some(why));
    }

    #[test]
    fn malformed_facts_are_not_facts() {
        for line in [
            "@chaos",
            "x @chaos node state",
            "@chaos node state=%zz",
            "@chaos node a=%4",
        ] {
            assert_eq!(Fact::parse(line), None, "{line}");
        }
    }

    #[test]
    fn every_node_state_reads_back() {
        for (state, _) in NodeState::NAMES {
            assert_eq!(NodeState::from_name(state.name()), Some(*state));
            assert_eq!(state.fact().get("state"), Some(state.name()));
        }
        assert_eq!(NodeState::from_name("asleep"), None);
    }
}
