//! Maintenance windows: `certaintyd pause 10m` writes a request file that the
//! daemon reads before every pass; `certaintyd resume` removes it.
//!
//! A request names its deadline on the boot-time clock (CLOCK_BOOTTIME, the
//! clock of [`Node::uptime`](super::Node::uptime)), which the clock setting at
//! cluster join cannot move, and it can never be longer than [`MAX_PAUSE`],
//! so a forgotten window closes by itself. This module owns the request
//! file's format and the duration syntax; it never decides whether the
//! daemon honours a request, and never logs (the callers do, so both the
//! request and the daemon's start and end of the window are on record).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chaos_contract::duration;

/// The longest window; a longer job asks again.
pub const MAX_PAUSE: Duration = Duration::from_secs(60 * 60);

/// One maintenance window, in boot-clock time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pause {
    pub requested: Duration,
    pub until: Duration,
    /// Who asked (real uid of the `certaintyd pause` process).
    pub uid: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum PauseError {
    #[error("{0} (at most {max})", max = duration::show(MAX_PAUSE))]
    Duration(#[from] duration::DurationError),
    #[error(
        "{given:?} is longer than the {} limit of a maintenance window",
        duration::show(MAX_PAUSE)
    )]
    TooLong { given: String },
    #[error("{given:?} is no window; `certaintyd resume` ends one")]
    Zero { given: String },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: line {line}: {problem}", path.display())]
    Malformed {
        path: PathBuf,
        line: usize,
        problem: String,
    },
}

/// The length of a window, in the duration grammar of
/// [`chaos_contract::duration`], between one millisecond and [`MAX_PAUSE`].
pub fn parse_window(text: &str) -> Result<Duration, PauseError> {
    let duration = duration::parse(text)?;
    if duration.is_zero() {
        return Err(PauseError::Zero { given: text.into() });
    }
    if duration > MAX_PAUSE {
        return Err(PauseError::TooLong { given: text.into() });
    }
    Ok(duration)
}

impl Pause {
    fn render(&self) -> String {
        format!(
            "requested_ms {}\nuntil_ms {}\nuid {}\n",
            self.requested.as_millis(),
            self.until.as_millis(),
            self.uid
        )
    }

    fn parse(path: &Path, text: &str) -> Result<Self, PauseError> {
        let fail = |line, problem: &str| PauseError::Malformed {
            path: path.into(),
            line,
            problem: problem.into(),
        };
        let mut values = [0u64; 3];
        let keys = ["requested_ms", "until_ms", "uid"];
        let mut lines = text.lines();
        for (i, (key, value)) in keys.iter().zip(values.iter_mut()).enumerate() {
            let line = lines.next().ok_or_else(|| fail(i + 1, "missing"))?;
            *value = line
                .strip_prefix(key)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| fail(i + 1, &format!("expected \"{key} <number>\"")))?;
        }
        if lines.next().is_some() {
            return Err(fail(keys.len() + 1, "unexpected"));
        }
        let uid = u32::try_from(values[2]).map_err(|_| fail(3, "uid out of range"))?;
        Ok(Pause {
            requested: Duration::from_millis(values[0]),
            until: Duration::from_millis(values[1]),
            uid,
        })
    }

    /// How long the window has left at `now`; zero once it is over.
    pub fn remaining(&self, now: Duration) -> Duration {
        self.until.saturating_sub(now)
    }

    /// A window is honoured only while it lasts and never past
    /// [`MAX_PAUSE`] from now, whatever the file says.
    pub fn is_active(&self, now: Duration) -> bool {
        now < self.until && self.until - now <= MAX_PAUSE
    }
}

/// Whether certaintyd's status (its status file's text) shows a request
/// made at `requested` (boot clock) honoured: a tick that began after it
/// found the node paused, or still in its grace, so no pass that could
/// have seen the root changing is under way.
pub fn honoured(status: &str, requested: Duration) -> bool {
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
    };
    let since = field("uptime_ms")
        .and_then(|ms| ms.parse::<u64>().ok())
        .is_some_and(|ms| Duration::from_millis(ms) >= requested);
    since && matches!(field("state"), Some("paused" | "grace"))
}

/// `<path>.partial`: appended, not replacing an extension, so two files
/// that differ only in extension never share a temporary.
pub(super) fn partial_path(path: &Path) -> PathBuf {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    partial.into()
}

/// Writes a request for a window of `length` from `now`, replacing any
/// earlier one, atomically (the daemon never sees half a file).
pub fn request(
    path: &Path,
    now: Duration,
    length: Duration,
    uid: u32,
) -> Result<Pause, PauseError> {
    let io_fail = |source| PauseError::Io {
        path: path.into(),
        source,
    };
    let pause = Pause {
        requested: now,
        until: now + length,
        uid,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_fail)?;
    }
    let partial = partial_path(path);
    std::fs::write(&partial, pause.render()).map_err(io_fail)?;
    std::fs::rename(&partial, path).map_err(io_fail)?;
    Ok(pause)
}

/// The current request, if there is one.
pub fn read(path: &Path) -> Result<Option<Pause>, PauseError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Pause::parse(path, &text).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PauseError::Io {
            path: path.into(),
            source,
        }),
    }
}

/// Ends any window; true if there was one.
pub fn clear(path: &Path) -> Result<bool, PauseError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(PauseError::Io {
            path: path.into(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certainty::fixture::Scratch;

    #[test]
    fn a_request_is_honoured_once_a_later_tick_finds_the_node_paused() {
        let requested = Duration::from_millis(5000);
        let table = [
            ("state paused\nuptime_ms 5200\npasses 3\n", true),
            ("state grace\nuptime_ms 5000\npasses 0\n", true),
            // The tick that wrote it began before the request.
            ("state paused\nuptime_ms 4900\npasses 3\n", false),
            ("state ok\nuptime_ms 6000\npasses 4\n", false),
            ("state paused\n", false),
            ("", false),
        ];
        for (status, honoured_yet) in table {
            assert_eq!(honoured(status, requested), honoured_yet, "{status:?}");
        }
    }

    #[test]
    fn window_lengths() {
        let ok = [
            ("90", 90),
            ("90s", 90),
            ("10m", 600),
            ("1h", 3600),
            ("60m", 3600),
            ("1m30s", 90),
        ];
        for (text, secs) in ok {
            assert_eq!(parse_window(text).unwrap(), Duration::from_secs(secs));
        }
        let syntax = format!(
            "is not a duration, expected {} (at most 1h)",
            duration::SYNTAX
        );
        let bad = [
            ("10 m", format!("\"10 m\" {syntax}")),
            ("", format!("\"\" {syntax}")),
            ("1d", format!("\"1d\" {syntax}")),
            ("-5m", format!("\"-5m\" {syntax}")),
            (
                "61m",
                "\"61m\" is longer than the 1h limit of a maintenance window".into(),
            ),
            (
                "99999999999999999999h",
                "\"99999999999999999999h\" is too long a duration (at most 1h)".into(),
            ),
            (
                "0m",
                "\"0m\" is no window; `certaintyd resume` ends one".into(),
            ),
        ];
        for (text, want) in bad {
            assert_eq!(parse_window(text).unwrap_err().to_string(), want);
        }
    }

    #[test]
    fn request_read_clear() {
        let dir = Scratch::new("pause");
        let file = dir.0.join("chaos/certaintyd.pause");
        assert!(read(&file).unwrap().is_none());
        let now = Duration::from_secs(100);
        let pause = request(&file, now, Duration::from_secs(600), 0).unwrap();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "requested_ms 100000\nuntil_ms 700000\nuid 0\n"
        );
        assert_eq!(read(&file).unwrap(), Some(pause));
        assert!(pause.is_active(now));
        assert_eq!(pause.remaining(now), Duration::from_secs(600));
        assert!(!pause.is_active(Duration::from_secs(700)));
        assert!(clear(&file).unwrap());
        assert!(!clear(&file).unwrap());
    }

    #[test]
    fn a_window_never_outlasts_the_limit() {
        let forged = Pause {
            requested: Duration::ZERO,
            until: MAX_PAUSE * 10,
            uid: 0,
        };
        assert!(!forged.is_active(Duration::from_secs(1)));
    }

    #[test]
    fn malformed_requests() {
        let dir = Scratch::new("pause-bad");
        let file = dir.0.join("p");
        let cases = [
            ("", "line 1: missing"),
            ("until_ms 5\n", "line 1: expected \"requested_ms <number>\""),
            (
                "requested_ms 1\nuntil_ms x\nuid 0\n",
                "line 2: expected \"until_ms <number>\"",
            ),
            (
                "requested_ms 1\nuntil_ms 2\nuid 0\nmore\n",
                "line 4: unexpected",
            ),
            (
                "requested_ms 1\nuntil_ms 2\nuid 4294967296\n",
                "line 3: uid out of range",
            ),
        ];
        for (text, want) in cases {
            std::fs::write(&file, text).unwrap();
            let err = read(&file).unwrap_err().to_string();
            assert_eq!(err, format!("{}: {want}", file.display()), "{text:?}");
        }
    }
}
