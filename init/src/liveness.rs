//! PID 1's check that certaintyd is alive: a watchdog that hangs is as good
//! as none, and an attacker's first move would be to stop it. certaintyd
//! rewrites its status file at least once an interval (see
//! [`chaos_contract::paths::CERTAINTYD_STATUS`]); a service that stays silent for
//! three intervals is killed, so the supervisor restarts it, and a third
//! silence, or a crash loop the supervisor gives up on, is a failure that
//! PID 1 answers with the `chaos.watchdog=` policy.
//!
//! The decisions are here, without I/O: the caller reads the file and the
//! service's state and acts on the [`Verdict`].

use std::time::{Duration, Instant};

/// Silences (each ending in a restart) before the watchdog counts as failed.
pub const MAX_STRIKES: u32 = 3;
/// Added to three intervals before a silence counts: a pass on a slow or
/// busy machine, and the time to start the program.
const SLACK: Duration = Duration::from_secs(5);

/// What the supervisor says of the watched service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Running {
    /// Running since the given time.
    Since(Instant),
    /// Waiting out a restart delay.
    Restarting,
    /// Not running and not coming back (given up on, or not in the table).
    Down,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Alive,
    /// Silent for this long: kill it so it restarts (strike `strike` of
    /// [`MAX_STRIKES`]).
    Silent {
        silent: Duration,
        strike: u32,
    },
    /// Given up on: the policy's response is due. Said once.
    Failed(String),
}

#[derive(Debug)]
pub struct Liveness {
    stale_after: Duration,
    strikes: u32,
    /// The last status seen and when it was first seen.
    last: Option<(String, Instant)>,
    failed: bool,
}

impl Liveness {
    /// For a service that reports every `interval`.
    pub fn new(interval: Duration) -> Self {
        Liveness {
            stale_after: interval.saturating_mul(3).saturating_add(SLACK),
            strikes: 0,
            last: None,
            failed: false,
        }
    }

    /// How long a silence may last before it counts.
    pub fn stale_after(&self) -> Duration {
        self.stale_after
    }

    /// `status` is the heartbeat as read now (None if unreadable); any
    /// change from the last read is a beat.
    pub fn check(&mut self, now: Instant, running: Running, status: Option<&str>) -> Verdict {
        if self.failed {
            return Verdict::Alive;
        }
        if let Some(status) = status {
            if self.last.as_ref().is_none_or(|(seen, _)| seen != status) {
                self.last = Some((status.to_string(), now));
            }
        }
        let since = match running {
            Running::Restarting => return Verdict::Alive,
            Running::Down => {
                return self.fail("certaintyd is not running and will not be restarted".into())
            }
            Running::Since(since) => since,
        };
        // A fresh start gets a full period, whatever its predecessor did.
        let heard = self.last.as_ref().map_or(since, |(_, at)| (*at).max(since));
        let silent = now.saturating_duration_since(heard);
        if silent < self.stale_after {
            return Verdict::Alive;
        }
        self.strikes += 1;
        if self.strikes >= MAX_STRIKES {
            return self.fail(format!(
                "certaintyd went silent {} times (last for {} s)",
                self.strikes,
                silent.as_secs()
            ));
        }
        // The restart's start time resets the period; until then, the
        // last beat is moved up so one silence is one strike.
        self.last = Some((String::new(), now));
        Verdict::Silent {
            silent,
            strike: self.strikes,
        }
    }

    fn fail(&mut self, why: String) -> Verdict {
        self.failed = true;
        Verdict::Failed(why)
    }
}

/// The heartbeat in certaintyd's status file: its `uptime_ms` line, which
/// changes with every write.
pub fn beat(status: &str) -> Option<&str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("uptime_ms "))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(2);

    fn at(t0: Instant, secs: u64) -> Instant {
        t0 + Duration::from_secs(secs)
    }

    #[test]
    fn regular_beats_are_alive() {
        let t0 = Instant::now();
        let mut l = Liveness::new(INTERVAL);
        for s in 0..100 {
            let beat = (s / 2).to_string();
            assert_eq!(
                l.check(at(t0, s), Running::Since(t0), Some(&beat)),
                Verdict::Alive
            );
        }
    }

    #[test]
    fn silence_past_three_intervals_and_slack_is_a_strike() {
        let t0 = Instant::now();
        let mut l = Liveness::new(INTERVAL);
        assert_eq!(l.stale_after(), Duration::from_secs(11));
        assert_eq!(l.check(t0, Running::Since(t0), Some("1")), Verdict::Alive);
        assert_eq!(
            l.check(at(t0, 10), Running::Since(t0), Some("1")),
            Verdict::Alive
        );
        assert_eq!(
            l.check(at(t0, 11), Running::Since(t0), Some("1")),
            Verdict::Silent {
                silent: Duration::from_secs(11),
                strike: 1
            }
        );
        // Being killed, it is still "running" for a moment: no second strike.
        assert_eq!(
            l.check(at(t0, 12), Running::Since(t0), Some("1")),
            Verdict::Alive
        );
    }

    #[test]
    fn a_restart_gets_a_full_period_and_the_third_silence_fails_once() {
        let t0 = Instant::now();
        let mut l = Liveness::new(INTERVAL);
        let mut verdicts = Vec::new();
        for round in 0..3u64 {
            let started = at(t0, round * 20);
            // An unreadable file (the new process has not written yet).
            assert_eq!(
                l.check(started, Running::Since(started), None),
                Verdict::Alive
            );
            assert_eq!(l.check(started, Running::Restarting, None), Verdict::Alive);
            verdicts.push(l.check(at(started, 11), Running::Since(started), None));
        }
        assert!(matches!(verdicts[0], Verdict::Silent { strike: 1, .. }));
        assert!(matches!(verdicts[1], Verdict::Silent { strike: 2, .. }));
        assert_eq!(
            verdicts[2],
            Verdict::Failed("certaintyd went silent 3 times (last for 11 s)".into())
        );
        assert_eq!(
            l.check(at(t0, 100), Running::Down, None),
            Verdict::Alive,
            "a failure is reported once"
        );
    }

    #[test]
    fn a_service_given_up_on_has_failed() {
        let mut l = Liveness::new(INTERVAL);
        assert_eq!(
            l.check(Instant::now(), Running::Down, None),
            Verdict::Failed("certaintyd is not running and will not be restarted".into())
        );
    }

    #[test]
    fn the_beat_is_the_uptime_line() {
        let status = "state ok\nuptime_ms 31234\npasses 2\nduration_us 812\n";
        assert_eq!(beat(status), Some("31234"));
        assert_eq!(beat("state grace\n"), None);
    }
}
