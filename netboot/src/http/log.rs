//! The HTTP server's log at a limited rate: every request and refusal is
//! one line naming its client, but a client that floods the server must
//! not flood the log, and refusals must not crowd out the downloads an
//! administrator watches for. In each period every client may log a few
//! lines of each kind and all clients together a few hundred; what is left
//! out is counted and summed up once the period ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How long one period of the limits lasts.
pub const PERIOD: Duration = Duration::from_secs(10);
/// Clients whose left-out lines are counted one by one; beyond them, only
/// in the total.
const TRACKED: usize = 4096;
/// Clients named in a period's summary; the rest are summed up.
const NAMED: usize = 10;

/// What a line is about; each kind has its own limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A request answered: a download (or a 404).
    Request,
    /// A connection or request refused, dropped or aborted.
    Refusal,
}

impl Kind {
    /// Lines per client and in all, per period. A booting PC logs three
    /// requests; a lab of hundreds booting at once fits.
    fn limits(self) -> (u32, u32) {
        match self {
            Kind::Request => (30, 1000),
            Kind::Refusal => (5, 100),
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Default)]
struct Client {
    logged: [u32; 2],
    left_out: u64,
}

#[derive(Debug)]
pub struct Limited {
    started: Instant,
    logged: [u32; 2],
    clients: HashMap<IpAddr, Client>,
    untracked: u64,
}

impl Limited {
    pub fn new(now: Instant) -> Self {
        Self {
            started: now,
            logged: [0; 2],
            clients: HashMap::new(),
            untracked: 0,
        }
    }

    /// Passes `line` about `client` to `out` unless a limit is reached.
    pub fn line(
        &mut self,
        client: IpAddr,
        kind: Kind,
        line: &str,
        now: Instant,
        out: &impl Fn(&str),
    ) {
        self.tick(now, out);
        let tracked = self.clients.len() < TRACKED || self.clients.contains_key(&client);
        if !tracked {
            self.untracked += 1;
            return;
        }
        let (per_client, in_all) = kind.limits();
        let entry = self.clients.entry(client).or_default();
        let i = kind.index();
        if entry.logged[i] < per_client && self.logged[i] < in_all {
            entry.logged[i] += 1;
            self.logged[i] += 1;
            out(&format!("{client} {line}"));
        } else {
            entry.left_out += 1;
        }
    }

    /// Ends the period once it is over, summing up what was left out.
    pub fn tick(&mut self, now: Instant, out: &impl Fn(&str)) {
        if now.saturating_duration_since(self.started) < PERIOD {
            return;
        }
        let mut left_out: Vec<(IpAddr, u64)> = self
            .clients
            .drain()
            .filter(|(_, c)| c.left_out > 0)
            .map(|(client, c)| (client, c.left_out))
            .collect();
        left_out.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let seconds = PERIOD.as_secs();
        for (client, n) in left_out.iter().take(NAMED) {
            out(&format!(
                "{client} {n} more lines not logged in the last {seconds} s"
            ));
        }
        let rest = left_out.iter().skip(NAMED).map(|(_, n)| n).sum::<u64>() + self.untracked;
        if rest > 0 {
            out(&format!(
                "{rest} more lines from other clients not logged in the last {seconds} s"
            ));
        }
        self.started = now;
        self.logged = [0; 2];
        self.untracked = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn a_flooding_client_is_cut_short_and_summed_up() {
        let lines = RefCell::new(Vec::new());
        let out = |l: &str| lines.borrow_mut().push(l.to_string());
        let start = Instant::now();
        let mut log = Limited::new(start);
        let (flood, pc): (IpAddr, IpAddr) = ([10, 0, 0, 9].into(), [10, 0, 0, 7].into());
        for n in 0..1000 {
            log.line(flood, Kind::Refusal, &format!("refused {n}"), start, &out);
        }
        assert_eq!(lines.borrow().len(), 5);
        log.line(pc, Kind::Request, "GET /vmlinuz 200", start, &out);
        assert_eq!(lines.borrow().last().unwrap(), "10.0.0.7 GET /vmlinuz 200");
        log.tick(start + PERIOD, &out);
        assert_eq!(
            lines.borrow().last().unwrap(),
            "10.0.0.9 995 more lines not logged in the last 10 s"
        );
        log.line(flood, Kind::Refusal, "refused again", start + PERIOD, &out);
        assert_eq!(lines.borrow().last().unwrap(), "10.0.0.9 refused again");
    }

    #[test]
    fn refusals_from_many_clients_leave_room_for_downloads() {
        let lines = RefCell::new(Vec::new());
        let out = |l: &str| lines.borrow_mut().push(l.to_string());
        let start = Instant::now();
        let mut log = Limited::new(start);
        for host in 0..=255u8 {
            for _ in 0..10 {
                log.line(
                    [10, 0, 1, host].into(),
                    Kind::Refusal,
                    "refused",
                    start,
                    &out,
                );
            }
        }
        assert_eq!(lines.borrow().len(), 100, "refusals in all");
        log.line(
            [10, 0, 0, 7].into(),
            Kind::Request,
            "GET /initrd.img 200",
            start,
            &out,
        );
        assert_eq!(
            lines.borrow().last().unwrap(),
            "10.0.0.7 GET /initrd.img 200"
        );
        log.tick(start + PERIOD, &out);
        let summary = lines.borrow()[101..].to_vec();
        assert_eq!(summary.len(), NAMED + 1, "{summary:#?}");
        assert_eq!(
            summary.last().unwrap(),
            &format!(
                "{} more lines from other clients not logged in the last 10 s",
                256 * 10 - 100 - NAMED * 10
            )
        );
    }
}
