//! The service table: one file per service under /etc/chaos/services/, the
//! file name being the service's name. This module owns the file format (read
//! by init, written by image builders and tests through [`Service::render`],
//! checked at build time by [`Table::read`] as init reads it at boot) and the
//! start order; it never starts anything.
//!
//! The format is one `key = value` per line; lines starting with `#` and
//! blank lines are ignored; values are taken whole, without quoting, and
//! trimmed. Repeatable keys keep their order:
//!
//! ```text
//! # /etc/chaos/services/tyd
//! # the absolute path of the program (required)
//! exec = /sbin/tyd
//! # one argument per line
//! arg = join
//! # one KEY=VALUE per line
//! env = RUST_BACKTRACE=1
//! # always (default) | on-failure | never
//! restart = always
//! # start after this service (repeatable)
//! after = certaintyd
//! # run as this user and its groups instead of root
//! user = munge
//! # a directory made before every start: path, octal mode, owner[:group]
//! # (repeatable; for what the service writes on /run, /tmp or /var)
//! dir = /run/munge 0755 munge
//! # run only while this file exists: started when it appears, stopped when
//! # it goes, restarted when it changes; its KEY=VALUE lines join the
//! # environment, and ${KEY} in an arg is replaced by the value
//! when = /run/chaos/joined
//! ```
//!
//! A table is read whole: a file that does not parse, a service that starts
//! after one that is missing or broken, and services that start after each
//! other in a cycle are each reported with the file and line and left out;
//! the others start.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// The keys a service file may hold, for messages.
const KEYS: &str = "exec, arg, env, restart, after, user, dir, when";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ServiceError {
    #[error("service {service}: line {line}: {what}")]
    Syntax {
        service: String,
        line: usize,
        what: String,
    },
    #[error("service {0}: no `exec = /path` line")]
    NoExec(String),
    #[error("service name {0:?} is not usable (expected letters, digits, '-', '_', '.')")]
    BadName(String),
    #[error("service {service}: {value:?} cannot be written as a value (one line, no leading or trailing blanks)")]
    Unwritable { service: String, value: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    Always,
    OnFailure,
    Never,
}

impl Restart {
    const NAMES: [(&'static str, Restart); 3] = [
        ("always", Restart::Always),
        ("on-failure", Restart::OnFailure),
        ("never", Restart::Never),
    ];

    fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, r)| *r == self)
            .map(|(n, _)| *n)
            .unwrap_or("always")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub exec: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub restart: Restart,
    pub after: Vec<String>,
    /// Run as this user (with its primary and supplementary groups).
    pub user: Option<String>,
    /// Made, if missing, before every start, and given the mode and owner.
    pub dirs: Vec<Dir>,
    /// Run only while this file exists (see the module docs).
    pub when: Option<PathBuf>,
}

/// A directory a service needs at run time (`dir = PATH MODE OWNER[:GROUP]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dir {
    pub path: PathBuf,
    pub mode: u32,
    pub owner: String,
    /// `None`: the owner's primary group.
    pub group: Option<String>,
}

impl Dir {
    fn parse(value: &str) -> Result<Dir, String> {
        let expected = "expected PATH MODE OWNER[:GROUP], like /run/munge 0755 munge";
        let words: Vec<&str> = value.split_ascii_whitespace().collect();
        let [path, mode, owner] = words[..] else {
            return Err(format!("dir {value:?}: {expected}"));
        };
        if !path.starts_with('/') {
            return Err(format!("dir {path:?} is not an absolute path"));
        }
        let mode = u32::from_str_radix(mode, 8)
            .ok()
            .filter(|m| *m <= 0o7777 && mode.len() >= 3)
            .ok_or_else(|| format!("dir mode {mode:?} is not an octal mode like 0755"))?;
        let (owner, group) = match owner.split_once(':') {
            Some((owner, group)) => (owner, Some(group.to_string())),
            None => (owner, None),
        };
        if owner.is_empty() || group.as_deref() == Some("") {
            return Err(format!("dir {value:?}: {expected}"));
        }
        Ok(Dir {
            path: PathBuf::from(path),
            mode,
            owner: owner.to_string(),
            group,
        })
    }
}

impl fmt::Display for Dir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:04o} {}",
            self.path.display(),
            self.mode,
            self.owner
        )?;
        match &self.group {
            Some(group) => write!(f, ":{group}"),
            None => Ok(()),
        }
    }
}

impl Service {
    /// A service running `exec` with no arguments, restarted always.
    pub fn new(name: &str, exec: impl Into<PathBuf>) -> Self {
        Service {
            name: name.to_string(),
            exec: exec.into(),
            args: Vec::new(),
            env: Vec::new(),
            restart: Restart::Always,
            after: Vec::new(),
            user: None,
            dirs: Vec::new(),
            when: None,
        }
    }

    pub fn parse(name: &str, text: &str) -> Result<Self, ServiceError> {
        check_name(name)?;
        let syntax = |line: usize, what: String| ServiceError::Syntax {
            service: name.to_string(),
            line,
            what,
        };
        let mut service = Service::new(name, "");
        let mut exec = None;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(syntax(i + 1, format!("{line:?} is not `key = value`")));
            };
            let (key, value) = (key.trim(), value.trim());
            match key {
                "exec" => {
                    if !value.starts_with('/') {
                        return Err(syntax(
                            i + 1,
                            format!("exec {value:?} is not an absolute path"),
                        ));
                    }
                    exec = Some(PathBuf::from(value));
                }
                "arg" => service.args.push(value.to_string()),
                "env" => match value.split_once('=') {
                    Some((k, v)) if !k.is_empty() => {
                        service.env.push((k.to_string(), v.to_string()))
                    }
                    _ => return Err(syntax(i + 1, format!("env {value:?} is not KEY=VALUE"))),
                },
                "restart" => {
                    service.restart = Restart::NAMES
                        .iter()
                        .find(|(n, _)| *n == value)
                        .map(|(_, r)| *r)
                        .ok_or_else(|| {
                            syntax(
                                i + 1,
                                format!(
                                    "restart {value:?} is not one of always, on-failure, never"
                                ),
                            )
                        })?
                }
                "after" => {
                    check_name(value)?;
                    service.after.push(value.to_string());
                }
                "user" => {
                    let ok = !value.is_empty()
                        && value
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
                    if !ok {
                        return Err(syntax(i + 1, format!("user {value:?} is not a user name")));
                    }
                    service.user = Some(value.to_string());
                }
                "dir" => service
                    .dirs
                    .push(Dir::parse(value).map_err(|e| syntax(i + 1, e))?),
                "when" => {
                    if !value.starts_with('/') {
                        return Err(syntax(
                            i + 1,
                            format!("when {value:?} is not an absolute path"),
                        ));
                    }
                    service.when = Some(PathBuf::from(value));
                }
                other => {
                    return Err(syntax(
                        i + 1,
                        format!("unknown key {other:?} (expected {KEYS})"),
                    ))
                }
            }
        }
        service.exec = exec.ok_or_else(|| ServiceError::NoExec(name.to_string()))?;
        Ok(service)
    }

    /// The file text that [`Service::parse`] reads back as this service.
    /// The service file; refuses what [`Service::parse`] would read back
    /// differently (a multi-line script, say, which belongs in a file).
    pub fn render(&self) -> Result<String, ServiceError> {
        let mut lines = vec![("exec", self.exec.display().to_string())];
        lines.extend(self.args.iter().map(|a| ("arg", a.clone())));
        lines.extend(self.env.iter().map(|(k, v)| ("env", format!("{k}={v}"))));
        lines.push(("restart", self.restart.name().to_string()));
        lines.extend(self.after.iter().map(|a| ("after", a.clone())));
        lines.extend(self.user.iter().map(|u| ("user", u.clone())));
        lines.extend(self.dirs.iter().map(|d| ("dir", d.to_string())));
        lines.extend(self.when.iter().map(|w| ("when", w.display().to_string())));
        let mut text = String::new();
        for (key, value) in lines {
            if value.contains(['\n', '\r']) || value.trim() != value {
                return Err(ServiceError::Unwritable {
                    service: self.name.clone(),
                    value,
                });
            }
            text.push_str(&format!("{key} = {value}\n"));
        }
        Ok(text)
    }
}

fn check_name(name: &str) -> Result<(), ServiceError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    ok.then_some(())
        .ok_or_else(|| ServiceError::BadName(name.to_string()))
}

/// `${KEY}` in `arg` replaced by KEY's value in `env`; a reference to a
/// key that is not there is an error naming it.
pub fn expand(arg: &str, env: &[(String, String)]) -> Result<String, String> {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("{arg:?}: ${{ without a closing }}"))?;
        let key = &after[..end];
        let value = env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .ok_or_else(|| format!("{arg:?}: ${{{key}}} is not set"))?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `KEY=VALUE` lines (a `when =` file's), blank and `#` lines skipped.
pub fn env_lines(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            (!k.is_empty()).then(|| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// Why a service was left out of the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub service: String,
    /// The line of the service file at fault, where one is.
    pub line: Option<usize>,
    pub what: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", crate::paths::SERVICES, self.service)?;
        if let Some(line) = self.line {
            write!(f, ": line {line}")?;
        }
        write!(f, ": {}", self.what)
    }
}

/// A service table as init runs it: the services that can start, in start
/// order, and what was wrong with the others.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    /// Each after everything it names in `after`; among those free to
    /// start, by name, so the order is the same every boot.
    pub services: Vec<Service>,
    /// One per service left out, by name.
    pub problems: Vec<Problem>,
}

impl Table {
    /// The table of `files`: (service name, file text, or why it could not
    /// be read).
    pub fn read(files: Vec<(String, Result<String, String>)>) -> Table {
        let mut problems = Vec::new();
        let mut texts = BTreeMap::new();
        let mut pending = BTreeMap::new();
        for (name, text) in files {
            let parsed = text
                .map_err(|what| Problem {
                    service: name.clone(),
                    line: None,
                    what,
                })
                .and_then(|text| {
                    let service = Service::parse(&name, &text).map_err(|e| problem(&name, e))?;
                    texts.insert(name.clone(), text);
                    Ok(service)
                });
            match parsed {
                Ok(service) => {
                    pending.insert(name, service);
                }
                Err(problem) => problems.push(problem),
            }
        }
        let mut broken: BTreeSet<String> = problems.iter().map(|p| p.service.clone()).collect();
        let mut order = Vec::with_capacity(pending.len());
        let mut started = BTreeSet::new();
        while !pending.is_empty() {
            // What starts after a missing or broken service cannot start.
            let cut = pending.values().find_map(|s| {
                let dep = s
                    .after
                    .iter()
                    .find(|a| !pending.contains_key(*a) && !started.contains(*a))?;
                let what = if broken.contains(dep) {
                    format!("starts after {dep}, which is broken")
                } else {
                    format!("starts after {dep}, which is not in the service table")
                };
                Some((s.name.clone(), dep.clone(), what))
            });
            if let Some((name, dep, what)) = cut {
                pending.remove(&name);
                broken.insert(name.clone());
                problems.push(Problem {
                    line: texts.get(&name).and_then(|t| line_of(t, "after", &dep)),
                    service: name,
                    what,
                });
                continue;
            }
            let ready = pending
                .values()
                .find(|s| s.after.iter().all(|a| started.contains(a)))
                .map(|s| s.name.clone());
            let Some(name) = ready else {
                let names: Vec<String> = pending.keys().cloned().collect();
                for name in &names {
                    problems.push(Problem {
                        service: name.clone(),
                        line: None,
                        what: format!("{} start after each other in a cycle", names.join(", ")),
                    });
                }
                break;
            };
            let service = pending.remove(&name).expect("name was just found");
            started.insert(name);
            order.push(service);
        }
        problems.sort_by(|a, b| a.service.cmp(&b.service));
        Table {
            services: order,
            problems,
        }
    }

    /// The table in `dir`, as init reads it at boot.
    pub fn load(dir: &Path) -> Table {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                return Table {
                    services: Vec::new(),
                    problems: vec![Problem {
                        service: String::new(),
                        line: None,
                        what: format!("reading {}: {e}", dir.display()),
                    }],
                }
            }
        };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        let files = paths
            .into_iter()
            .map(|path| {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let text = std::fs::read_to_string(&path).map_err(|e| format!("reading: {e}"));
                (name, text)
            })
            .collect();
        Table::read(files)
    }

    /// Whether `name` was left out.
    pub fn is_broken(&self, name: &str) -> bool {
        self.problems.iter().any(|p| p.service == name)
    }
}

fn problem(name: &str, error: ServiceError) -> Problem {
    let (line, what) = match error {
        ServiceError::Syntax { line, what, .. } => (Some(line), what),
        other => (None, other.to_string()),
    };
    Problem {
        service: name.to_string(),
        line,
        what,
    }
}

/// The line number of `key = value` in a service file.
fn line_of(text: &str, key: &str, value: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            line.split_once('=')
                .is_some_and(|(k, v)| k.trim() == key && v.trim() == value)
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, after: &[&str]) -> Service {
        let mut s = Service::new(name, "/bin/true");
        s.after = after.iter().map(|a| a.to_string()).collect();
        s
    }

    fn file(name: &str, text: &str) -> (String, Result<String, String>) {
        (name.to_string(), Ok(text.to_string()))
    }

    fn table(files: &[(&str, &str)]) -> Table {
        Table::read(files.iter().map(|(n, t)| file(n, t)).collect())
    }

    fn names(table: &Table) -> Vec<&str> {
        table.services.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn parses_every_key() {
        let text = "# slurmd\nexec = /usr/sbin/slurmd\narg = -Z\narg = --conf-server ${HEAD}\n\
                    env = A=b=c\nrestart = on-failure\nafter = munged\nuser = slurm\n\
                    dir = /var/spool/slurmd 0755 root\ndir = /run/munge 0700 munge:daemon\n\
                    when = /run/chaos/joined\n\n";
        let s = Service::parse("slurmd", text).unwrap();
        assert_eq!(s.exec, PathBuf::from("/usr/sbin/slurmd"));
        assert_eq!(s.args, ["-Z", "--conf-server ${HEAD}"]);
        assert_eq!(s.env, [("A".to_string(), "b=c".to_string())]);
        assert_eq!(s.restart, Restart::OnFailure);
        assert_eq!(s.after, ["munged"]);
        assert_eq!(s.user.as_deref(), Some("slurm"));
        assert_eq!(
            s.dirs,
            [
                Dir {
                    path: "/var/spool/slurmd".into(),
                    mode: 0o755,
                    owner: "root".into(),
                    group: None
                },
                Dir {
                    path: "/run/munge".into(),
                    mode: 0o700,
                    owner: "munge".into(),
                    group: Some("daemon".into())
                }
            ]
        );
        assert_eq!(s.when, Some(PathBuf::from("/run/chaos/joined")));
    }

    #[test]
    fn render_round_trips() {
        let mut s = svc("probe", &["a", "b"]);
        s.args = vec!["-c".into(), "echo hi; exit 3".into()];
        s.env = vec![("K".into(), "v".into())];
        s.restart = Restart::Never;
        s.user = Some("munge".into());
        s.dirs = vec![Dir::parse("/run/munge 0755 munge:munge").unwrap()];
        s.when = Some("/run/chaos/joined".into());
        assert_eq!(Service::parse("probe", &s.render().unwrap()).unwrap(), s);
    }

    #[test]
    fn what_would_not_read_back_is_refused() {
        for arg in ["echo a\necho b", " padded", "trailing\t"] {
            let mut s = svc("probe", &[]);
            s.args = vec![arg.to_string()];
            assert_eq!(
                s.render(),
                Err(ServiceError::Unwritable {
                    service: "probe".into(),
                    value: arg.into()
                })
            );
        }
    }

    #[test]
    fn malformed_files_name_the_line_and_what_was_expected() {
        let cases = [
            ("exec /bin/x", "service s: line 1: \"exec /bin/x\" is not `key = value`"),
            ("exec = bin/x", "service s: line 1: exec \"bin/x\" is not an absolute path"),
            (
                "exec = /x\nrestart = sometimes",
                "service s: line 2: restart \"sometimes\" is not one of always, on-failure, never",
            ),
            ("exec = /x\nenv = =v", "service s: line 2: env \"=v\" is not KEY=VALUE"),
            (
                "exec = /x\ncolour = red",
                "service s: line 2: unknown key \"colour\" (expected exec, arg, env, restart, after, user, dir, when)",
            ),
            ("exec = /x\nuser = a b", "service s: line 2: user \"a b\" is not a user name"),
            (
                "exec = /x\ndir = /run/x",
                "service s: line 2: dir \"/run/x\": expected PATH MODE OWNER[:GROUP], like /run/munge 0755 munge",
            ),
            ("exec = /x\ndir = run 0755 a", "service s: line 2: dir \"run\" is not an absolute path"),
            (
                "exec = /x\ndir = /run/x 999 a",
                "service s: line 2: dir mode \"999\" is not an octal mode like 0755",
            ),
            (
                "exec = /x\ndir = /run/x 0755 a:",
                "service s: line 2: dir \"/run/x 0755 a:\": expected PATH MODE OWNER[:GROUP], like /run/munge 0755 munge",
            ),
            ("exec = /x\nwhen = joined", "service s: line 2: when \"joined\" is not an absolute path"),
            ("arg = x", "service s: no `exec = /path` line"),
        ];
        for (text, message) in cases {
            let err = Service::parse("s", text).unwrap_err();
            assert_eq!(err.to_string(), message, "for {text:?}");
        }
        assert!(matches!(
            Service::parse("../evil", "exec = /x"),
            Err(ServiceError::BadName(_))
        ));
    }

    #[test]
    fn start_order_follows_after_then_name() {
        let t = table(&[
            ("tyd", "exec = /x\nafter = certaintyd"),
            ("slurmd", "exec = /x\nafter = tyd"),
            ("certaintyd", "exec = /x"),
            ("apple", "exec = /x"),
        ]);
        assert_eq!(names(&t), ["apple", "certaintyd", "tyd", "slurmd"]);
        assert_eq!(t.problems, []);
    }

    #[test]
    fn a_broken_service_costs_only_itself_and_what_starts_after_it() {
        let t = Table::read(vec![
            file("certaintyd", "exec = /sbin/certaintyd"),
            file("ghostly", "# waits for a ghost\nexec = /x\nafter = ghost"),
            file("bad", "exec = nope"),
            file("after-bad", "exec = /x\n\nafter = bad"),
            file("after-after", "exec = /x\nafter = after-bad"),
            file("a", "exec = /x\nafter = b"),
            file("b", "exec = /x\nafter = a"),
            (
                "unreadable".into(),
                Err("reading: Permission denied".into()),
            ),
            file("tyd", "exec = /sbin/tyd\nafter = certaintyd"),
        ]);
        assert_eq!(names(&t), ["certaintyd", "tyd"]);
        let problems: Vec<String> = t.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            problems,
            [
                "/etc/chaos/services/a: a, b start after each other in a cycle",
                "/etc/chaos/services/after-after: line 2: starts after after-bad, which is broken",
                "/etc/chaos/services/after-bad: line 3: starts after bad, which is broken",
                "/etc/chaos/services/b: a, b start after each other in a cycle",
                "/etc/chaos/services/bad: line 1: exec \"nope\" is not an absolute path",
                "/etc/chaos/services/ghostly: line 3: starts after ghost, which is not in the service table",
                "/etc/chaos/services/unreadable: reading: Permission denied",
            ]
        );
        assert!(t.is_broken("bad") && !t.is_broken("tyd"));
    }

    #[test]
    fn args_expand_keys_of_the_environment() {
        let env = vec![
            ("CHAOS_HEAD".to_string(), "10.99.0.1".to_string()),
            ("N".to_string(), "2".to_string()),
        ];
        let table: &[(&str, Result<&str, &str>)] = &[
            ("--conf-server=${CHAOS_HEAD}", Ok("--conf-server=10.99.0.1")),
            ("${N}${N}-$N-$", Ok("22-$N-$")),
            ("plain", Ok("plain")),
            ("${MISSING}", Err("\"${MISSING}\": ${MISSING} is not set")),
            ("${N", Err("\"${N\": ${ without a closing }")),
        ];
        for (arg, expected) in table {
            let got = expand(arg, &env);
            assert_eq!(got.as_deref().map_err(String::as_str), *expected, "{arg}");
        }
        assert_eq!(
            env_lines("# joined\nCHAOS_HEAD=10.99.0.1\n\n=x\nnoequals\nN=2=3\n"),
            [
                ("CHAOS_HEAD".to_string(), "10.99.0.1".to_string()),
                ("N".to_string(), "2=3".to_string())
            ]
        );
    }

    #[test]
    fn load_reads_a_directory() {
        let dir = std::env::temp_dir().join(format!("chaos-services-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("good"), "exec = /bin/true\n").unwrap();
        std::fs::write(dir.join("bad"), "exec = nope\n").unwrap();
        let t = Table::load(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(names(&t), ["good"]);
        assert_eq!(
            t.problems[0].to_string(),
            "/etc/chaos/services/bad: line 1: exec \"nope\" is not an absolute path"
        );
        let missing = Table::load(Path::new("/nonexistent/services"));
        assert!(missing.problems[0]
            .what
            .starts_with("reading /nonexistent/services: "));
    }
}
