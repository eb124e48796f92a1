// SPDX-License-Identifier: GPL-3.0-or-later
//! tyd's log lines (stderr, which the node's init forwards to the console)
//! and the rate limits that keep hostile input from flooding either the log
//! or the head's CPU.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static SILENT: AtomicBool = AtomicBool::new(false);

/// Prints one line with tyd's prefix.
pub fn info(message: impl std::fmt::Display) {
    if !SILENT.load(Ordering::Relaxed) {
        eprintln!("tyd: {message}");
    }
}

/// Stops all log lines of this process: for the bench, whose hundreds of
/// simulated drones would otherwise bury its figures.
pub fn silence() {
    SILENT.store(true, Ordering::Relaxed);
}

/// A token bucket: `burst` events at once, then `per_second` on average.
#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f64,
    burst: f64,
    per_second: f64,
    updated: Instant,
}

impl Bucket {
    pub fn new(burst: u32, per_second: f64, now: Instant) -> Self {
        Self {
            tokens: f64::from(burst),
            burst: f64::from(burst),
            per_second,
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.updated = now;
    }

    /// Takes a token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// True if a token is there, without taking it.
    pub fn has(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= 1.0
    }

    /// Full again: the bucket can be forgotten.
    fn full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

/// Rejections of hostile or broken input, logged with the peer's address:
/// at most a burst and then a few a second, with a count of what was left
/// out.
#[derive(Debug)]
pub struct RejectLog {
    bucket: Bucket,
    suppressed: u64,
}

impl RejectLog {
    pub fn new(now: Instant) -> Self {
        Self {
            bucket: Bucket::new(20, 2.0, now),
            suppressed: 0,
        }
    }

    pub fn reject(&mut self, peer: impl std::fmt::Display, what: impl std::fmt::Display) {
        let now = Instant::now();
        if self.bucket.take(now) {
            if self.suppressed > 0 {
                info(format!(
                    "({} more rejections not logged)",
                    std::mem::take(&mut self.suppressed)
                ));
            }
            info(format!("rejected {peer}: {what}"));
        } else {
            self.suppressed += 1;
        }
    }
}

/// Failed handshakes per source address: an address that keeps failing is
/// cut off at accept, before it costs a Diffie-Hellman, until it calms down.
#[derive(Debug, Default)]
pub struct Penalties {
    buckets: HashMap<IpAddr, Bucket>,
}

impl Penalties {
    const BURST: u32 = 20;
    const PER_SECOND: f64 = 2.0;

    pub fn failed(&mut self, ip: IpAddr, now: Instant) {
        self.buckets
            .entry(ip)
            .or_insert_with(|| Bucket::new(Self::BURST, Self::PER_SECOND, now))
            .take(now);
    }

    pub fn allowed(&mut self, ip: IpAddr, now: Instant) -> bool {
        match self.buckets.get_mut(&ip) {
            Some(bucket) => bucket.has(now),
            None => true,
        }
    }

    /// Forgets addresses that have recovered, so the table stays small.
    pub fn prune(&mut self, now: Instant) {
        self.buckets.retain(|_, bucket| !bucket.full(now));
    }
}

/// "15m", "2s", "250ms", "1h": a duration as an administrator types it.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let expected = "expected a number and a unit: ms, s, m or h (like 15m)";
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("duration {text:?}: no unit; {expected}"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("duration {text:?}: {expected}"))?;
    let millis = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("duration {text:?}: unit {unit:?}; {expected}")),
    };
    number
        .checked_mul(millis)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration {text:?}: too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let table: &[(&str, Result<u64, &str>)] = &[
            ("15m", Ok(900_000)),
            ("2s", Ok(2000)),
            ("250ms", Ok(250)),
            ("1h", Ok(3_600_000)),
            ("15", Err("no unit")),
            ("m", Err("expected a number")),
            ("3d", Err("unit \"d\"")),
            ("99999999999999999999s", Err("expected a number")),
        ];
        for (text, expected) in table {
            match (parse_duration(text), expected) {
                (Ok(d), Ok(ms)) => assert_eq!(d.as_millis() as u64, *ms, "{text}"),
                (Err(e), Err(wanted)) => assert!(e.contains(wanted), "{text}: {e}"),
                (got, _) => panic!("{text}: {got:?}"),
            }
        }
    }

    #[test]
    fn buckets_allow_a_burst_then_a_rate() {
        let start = Instant::now();
        let mut bucket = Bucket::new(3, 1.0, start);
        assert!((0..3).all(|_| bucket.take(start)));
        assert!(!bucket.take(start));
        assert!(bucket.take(start + Duration::from_secs(1)));
        assert!(!bucket.take(start + Duration::from_secs(1)));
    }

    #[test]
    fn failing_addresses_are_cut_off_and_forgiven() {
        let start = Instant::now();
        let mut penalties = Penalties::default();
        let ip: IpAddr = [192, 168, 0, 9].into();
        for _ in 0..Penalties::BURST {
            assert!(penalties.allowed(ip, start));
            penalties.failed(ip, start);
        }
        assert!(!penalties.allowed(ip, start));
        assert!(penalties.allowed([192, 168, 0, 10].into(), start));
        let later = start + Duration::from_secs(60);
        assert!(penalties.allowed(ip, later));
        penalties.prune(later);
        assert!(penalties.buckets.is_empty());
    }
}
