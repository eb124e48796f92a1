// SPDX-License-Identifier: GPL-3.0-or-later
//! tyd's log lines (stderr, which the node's init forwards to the console)
//! and the rate limits that keep hostile input from flooding either the log
//! or the head's CPU.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

static SILENT: AtomicBool = AtomicBool::new(false);

/// Prints one line with tyd's prefix.
pub fn info(message: impl std::fmt::Display) {
    if !SILENT.load(Ordering::Relaxed) {
        eprintln!("tyd: {message}");
    }
}

/// Reports a fact (see [`chaos_contract::fact`]) for programs to read,
/// beside the human line that says the same.
pub fn fact(fact: chaos_contract::fact::Fact) {
    info(fact);
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

/// Failures per source address (failed handshakes, forged beacons): an
/// address that keeps failing is cut off before it costs a Diffie-Hellman
/// or a signature check, until it calms down. Addresses that never fail
/// are never held back. At most [`Penalties::MAX_ADDRESSES`] are tracked,
/// so a flood from many addresses cannot grow it.
#[derive(Debug)]
pub struct Penalties {
    buckets: HashMap<IpAddr, Bucket>,
    burst: u32,
    per_second: f64,
}

impl Default for Penalties {
    /// The head's for failed handshakes.
    fn default() -> Self {
        Self::new(20, 2.0)
    }
}

impl Penalties {
    const MAX_ADDRESSES: usize = 4096;

    /// `burst` failures at once, then `per_second` on average.
    pub fn new(burst: u32, per_second: f64) -> Self {
        Self {
            buckets: HashMap::new(),
            burst,
            per_second,
        }
    }

    pub fn failed(&mut self, ip: IpAddr, now: Instant) {
        if self.buckets.len() >= Self::MAX_ADDRESSES && !self.buckets.contains_key(&ip) {
            self.prune(now);
            if self.buckets.len() >= Self::MAX_ADDRESSES {
                return;
            }
        }
        let (burst, per_second) = (self.burst, self.per_second);
        self.buckets
            .entry(ip)
            .or_insert_with(|| Bucket::new(burst, per_second, now))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
        for _ in 0..20 {
            assert!(penalties.allowed(ip, start));
            penalties.failed(ip, start);
        }
        assert!(!penalties.allowed(ip, start));
        assert!(penalties.allowed([192, 168, 0, 10].into(), start));
        let later = start + Duration::from_secs(60);
        assert!(penalties.allowed(ip, later));
        penalties.prune(later);
        assert!(penalties.buckets.is_empty());
        // A flood from many addresses tracks only so many.
        for n in 0..5000u32 {
            penalties.failed(IpAddr::from((0x0a00_0000 + n).to_be_bytes()), later);
        }
        assert_eq!(penalties.buckets.len(), Penalties::MAX_ADDRESSES);
    }
}
