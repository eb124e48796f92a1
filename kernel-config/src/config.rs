//! The kernel's `.config` format, as Kconfig writes and reads it: one
//! `CONFIG_NAME=value` or `# CONFIG_NAME is not set` per line, any other
//! `#` line a comment. The same format serves the fragments and the final
//! configuration, so both go through [`Config::parse`].
//!
//! Names are kept without the `CONFIG_` prefix (Kconfig's symbol names) and
//! values as written, so a value compares exactly as Kconfig would print it.
//! This module never decides what a kernel should contain.

use std::collections::BTreeMap;
use std::fmt;

/// What Kconfig puts before every symbol name in a `.config`.
pub const PREFIX: &str = "CONFIG_";
const NOT_SET: &str = " is not set";

/// One option's setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// `# CONFIG_NAME is not set`: a bool or tristate turned off.
    NotSet,
    /// `CONFIG_NAME=<value>`: `y`, `m`, a number or a quoted string, as written.
    Set(String),
}

impl Value {
    /// `y`, the value of everything built in.
    pub fn yes() -> Self {
        Value::Set("y".to_string())
    }

    /// The `.config` line that gives `name` this value.
    pub fn line(&self, name: &str) -> String {
        match self {
            Value::NotSet => format!("# {PREFIX}{name}{NOT_SET}"),
            Value::Set(value) => format!("{PREFIX}{name}={value}"),
        }
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("line {line}: {text:?} is neither `CONFIG_NAME=value`, `# CONFIG_NAME is not set` nor a comment")]
    Syntax { line: usize, text: String },
    #[error("line {line}: CONFIG_{name}= has no value; write `# CONFIG_{name} is not set` to turn it off")]
    Empty { line: usize, name: String },
    #[error("line {line}: CONFIG_{name}={value}: a value is one word or one quoted string (a .config has no trailing comments)")]
    BadValue {
        line: usize,
        name: String,
        value: String,
    },
    #[error("line {line}: CONFIG_{name} is given again (first on line {first})")]
    Duplicate {
        line: usize,
        first: usize,
        name: String,
    },
}

/// One option whose value a merge replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Override {
    pub name: String,
    pub was: Value,
    pub now: Value,
}

/// A set of option settings, ordered by name so that rendering is
/// deterministic (Kconfig does not care about the order of a `.config`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    options: BTreeMap<String, Value>,
}

impl Config {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `.config` text. Stricter than Kconfig, which warns and goes
    /// on: a line it would ignore or misread here is an error with its
    /// line number, because in a fragment it is always a mistake.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut options = BTreeMap::new();
        let mut first_line = BTreeMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let Some((name, value)) = parse_line(line, raw.trim_end())? else {
                continue;
            };
            if let Some(first) = first_line.insert(name.to_string(), line) {
                return Err(ParseError::Duplicate {
                    line,
                    first,
                    name: name.to_string(),
                });
            }
            options.insert(name.to_string(), value);
        }
        Ok(Config { options })
    }

    /// The setting of `name` (without the `CONFIG_` prefix), if any.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.options.get(name)
    }

    /// Sets `name`, returning what it was.
    pub fn set(&mut self, name: impl Into<String>, value: Value) -> Option<Value> {
        self.options.insert(name.into(), value)
    }

    /// Every setting, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.options.iter().map(|(n, v)| (n.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.options.len()
    }

    pub fn is_empty(&self) -> bool {
        self.options.is_empty()
    }

    /// Lays `fragment` over this configuration, as merge_config.sh does:
    /// the fragment's setting wins. Returns the settings it changed, so a
    /// caller can tell an intended override from an accident.
    pub fn merge(&mut self, fragment: &Config) -> Vec<Override> {
        let mut overrides = Vec::new();
        for (name, now) in fragment.iter() {
            if let Some(was) = self.set(name, now.clone()) {
                if &was != now {
                    overrides.push(Override {
                        name: name.to_string(),
                        was,
                        now: now.clone(),
                    });
                }
            }
        }
        overrides
    }
}

/// Renders the configuration as `.config` text, one line per option.
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, value) in self.iter() {
            writeln!(f, "{}", value.line(name))?;
        }
        Ok(())
    }
}

/// One line: `None` for blanks and comments.
fn parse_line(line: usize, text: &str) -> Result<Option<(&str, Value)>, ParseError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    if let Some(comment) = text.strip_prefix('#') {
        // Kconfig's own test: "# CONFIG_" then a name then " is not set";
        // every other `#` line is a comment.
        let not_set = comment
            .strip_prefix(' ')
            .and_then(|c| c.strip_prefix(PREFIX))
            .and_then(|c| c.strip_suffix(NOT_SET))
            .filter(|name| is_name(name));
        return Ok(not_set.map(|name| (name, Value::NotSet)));
    }
    let syntax = || ParseError::Syntax {
        line,
        text: text.to_string(),
    };
    let (name, value) = text
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.split_once('='))
        .ok_or_else(syntax)?;
    if !is_name(name) {
        return Err(syntax());
    }
    if value.is_empty() {
        return Err(ParseError::Empty {
            line,
            name: name.to_string(),
        });
    }
    let quoted = value.len() >= 2 && value.starts_with('"') && value.ends_with('"');
    if !quoted && (value.contains(char::is_whitespace) || value.starts_with('"')) {
        return Err(ParseError::BadValue {
            line,
            name: name.to_string(),
            value: value.to_string(),
        });
    }
    Ok(Some((name, Value::Set(value.to_string()))))
}

/// Kconfig symbol names: letters, digits and underscores.
fn is_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(value: &str) -> Value {
        Value::Set(value.to_string())
    }

    #[test]
    fn parses_settings_and_skips_comments() {
        let config = Config::parse(
            "#\n# Automatically generated file; DO NOT EDIT.\n#\n\
             CONFIG_64BIT=y\n\
             # CONFIG_MODULES is not set\n\
             CONFIG_NR_CPUS=64\n\
             CONFIG_CC_VERSION_TEXT=\"gcc (Debian 12.2.0-14) 12.2.0\"\n\
             CONFIG_PHYSICAL_START=0x1000000\r\n\
             # CONFIG_SMP=y is how one comments an option out\n\
             #CONFIG_X86 is not set\n\
             \n",
        )
        .unwrap();
        let expected = [
            ("64BIT", set("y")),
            ("CC_VERSION_TEXT", set("\"gcc (Debian 12.2.0-14) 12.2.0\"")),
            ("MODULES", Value::NotSet),
            ("NR_CPUS", set("64")),
            ("PHYSICAL_START", set("0x1000000")),
        ];
        let got: Vec<_> = config.iter().map(|(n, v)| (n, v.clone())).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn malformed_lines_are_named() {
        let table = [
            (
                "CONFIG_NET=y\nNET=y\n",
                "line 2: \"NET=y\" is neither `CONFIG_NAME=value`, `# CONFIG_NAME is not set` nor a comment",
            ),
            (
                "CONFIG_NET\n",
                "line 1: \"CONFIG_NET\" is neither `CONFIG_NAME=value`, `# CONFIG_NAME is not set` nor a comment",
            ),
            (
                "CONFIG_NET-CORE=y\n",
                "line 1: \"CONFIG_NET-CORE=y\" is neither `CONFIG_NAME=value`, `# CONFIG_NAME is not set` nor a comment",
            ),
            (
                "CONFIG_NET=\n",
                "line 1: CONFIG_NET= has no value; write `# CONFIG_NET is not set` to turn it off",
            ),
            (
                "CONFIG_NET=y # the stack\n",
                "line 1: CONFIG_NET=y # the stack: a value is one word or one quoted string (a .config has no trailing comments)",
            ),
            (
                "CONFIG_CMDLINE=\"console=ttyS0\n",
                "line 1: CONFIG_CMDLINE=\"console=ttyS0: a value is one word or one quoted string (a .config has no trailing comments)",
            ),
            (
                "CONFIG_NET=y\n\n# CONFIG_NET is not set\n",
                "line 3: CONFIG_NET is given again (first on line 1)",
            ),
        ];
        for (text, message) in table {
            let err = Config::parse(text).unwrap_err();
            assert_eq!(err.to_string(), message, "{text:?}");
        }
    }

    #[test]
    fn renders_what_it_parses() {
        let text = "CONFIG_64BIT=y\nCONFIG_CMDLINE=\"a b\"\n# CONFIG_MODULES is not set\n";
        let config = Config::parse(text).unwrap();
        assert_eq!(config.to_string(), text);
        assert_eq!(Config::parse(&config.to_string()).unwrap(), config);
    }

    #[test]
    fn merge_lets_the_fragment_win_and_reports_changes() {
        let mut base =
            Config::parse("# CONFIG_NET is not set\nCONFIG_64BIT=y\nCONFIG_NR_CPUS=8\n").unwrap();
        let fragment = Config::parse("CONFIG_NET=y\nCONFIG_64BIT=y\nCONFIG_UNIX=y\n").unwrap();
        let overrides = base.merge(&fragment);
        assert_eq!(
            overrides,
            [Override {
                name: "NET".to_string(),
                was: Value::NotSet,
                now: Value::yes(),
            }]
        );
        assert_eq!(
            base.to_string(),
            "CONFIG_64BIT=y\nCONFIG_NET=y\nCONFIG_NR_CPUS=8\nCONFIG_UNIX=y\n"
        );
    }
}
