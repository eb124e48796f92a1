//! The service table: one file per service under /etc/chaos/services/, the
//! file name being the service's name. This module owns the file format (read
//! by init, written by image builders and tests through [`Service::render`])
//! and the start order; it never starts anything.
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
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

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
    #[error("service {service}: starts after {missing}, which is not in the service table")]
    MissingDependency { service: String, missing: String },
    #[error("services {0} start after each other in a cycle")]
    Cycle(String),
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
                other => {
                    return Err(syntax(
                        i + 1,
                        format!("unknown key {other:?} (expected exec, arg, env, restart, after)"),
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

/// Reads every service file in `dir`. A file that does not parse is reported
/// and left out rather than keeping the rest of the node from starting.
pub fn load_dir(dir: &Path) -> (Vec<Service>, Vec<String>) {
    let mut services = Vec::new();
    let mut problems = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            problems.push(format!("reading {}: {e}", dir.display()));
            return (services, problems);
        }
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match std::fs::read_to_string(&path) {
            Ok(text) => match Service::parse(&name, &text) {
                Ok(s) => services.push(s),
                Err(e) => problems.push(e.to_string()),
            },
            Err(e) => problems.push(format!("reading {}: {e}", path.display())),
        }
    }
    (services, problems)
}

/// Orders services so each starts after everything it names in `after`;
/// among those free to start, by name, so the order is the same every boot.
pub fn start_order(services: Vec<Service>) -> Result<Vec<Service>, ServiceError> {
    let mut pending: BTreeMap<String, Service> =
        services.into_iter().map(|s| (s.name.clone(), s)).collect();
    for s in pending.values() {
        if let Some(missing) = s.after.iter().find(|a| !pending.contains_key(*a)) {
            return Err(ServiceError::MissingDependency {
                service: s.name.clone(),
                missing: missing.clone(),
            });
        }
    }
    let mut started = BTreeSet::new();
    let mut order = Vec::with_capacity(pending.len());
    while !pending.is_empty() {
        let ready = pending
            .values()
            .find(|s| s.after.iter().all(|a| started.contains(a)))
            .map(|s| s.name.clone());
        let Some(name) = ready else {
            let names: Vec<&str> = pending.keys().map(String::as_str).collect();
            return Err(ServiceError::Cycle(names.join(", ")));
        };
        let service = pending.remove(&name).expect("name was just found");
        started.insert(name);
        order.push(service);
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, after: &[&str]) -> Service {
        let mut s = Service::new(name, "/bin/true");
        s.after = after.iter().map(|a| a.to_string()).collect();
        s
    }

    #[test]
    fn parses_every_key() {
        let text = "# tyd\nexec = /sbin/tyd\narg = join\narg = -m 10.0.0.1\n\
                    env = A=b=c\nrestart = on-failure\nafter = certaintyd\n\n";
        let s = Service::parse("tyd", text).unwrap();
        assert_eq!(s.exec, PathBuf::from("/sbin/tyd"));
        assert_eq!(s.args, ["join", "-m 10.0.0.1"]);
        assert_eq!(s.env, [("A".to_string(), "b=c".to_string())]);
        assert_eq!(s.restart, Restart::OnFailure);
        assert_eq!(s.after, ["certaintyd"]);
    }

    #[test]
    fn render_round_trips() {
        let mut s = svc("probe", &["a", "b"]);
        s.args = vec!["-c".into(), "echo hi; exit 3".into()];
        s.env = vec![("K".into(), "v".into())];
        s.restart = Restart::Never;
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
                "service s: line 2: unknown key \"colour\" (expected exec, arg, env, restart, after)",
            ),
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
        let order = start_order(vec![
            svc("tyd", &["certaintyd"]),
            svc("slurmd", &["tyd"]),
            svc("certaintyd", &[]),
            svc("apple", &[]),
        ])
        .unwrap();
        let names: Vec<&str> = order.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["apple", "certaintyd", "tyd", "slurmd"]);
    }

    #[test]
    fn start_order_rejects_cycles_and_missing_services() {
        let err = start_order(vec![svc("a", &["b"]), svc("b", &["a"]), svc("c", &[])]);
        assert_eq!(
            err.unwrap_err().to_string(),
            "services a, b start after each other in a cycle"
        );
        let err = start_order(vec![svc("a", &["ghost"])]);
        assert_eq!(
            err.unwrap_err().to_string(),
            "service a: starts after ghost, which is not in the service table"
        );
    }

    #[test]
    fn load_dir_keeps_good_files_and_reports_bad_ones() {
        let dir = std::env::temp_dir().join(format!("chaos-services-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("good"), "exec = /bin/true\n").unwrap();
        std::fs::write(dir.join("bad"), "exec = nope\n").unwrap();
        let (services, problems) = load_dir(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(services.len(), 1);
        assert_eq!(services[0].name, "good");
        assert_eq!(
            problems,
            ["service bad: line 1: exec \"nope\" is not an absolute path"]
        );
    }
}
