// SPDX-License-Identifier: GPL-3.0-or-later
//! The load figures a heartbeat carries, read from procfs: load averages
//! (/proc/loadavg), memory (/proc/meminfo), uptime (/proc/uptime) and the
//! number of CPUs this process may run on.
//!
//! Parsers take text, so they are tested without a /proc; a file that is
//! missing or malformed gives zeros rather than stopping heartbeats.

use crate::proto::Load;

/// Reads the figures now.
pub fn sample() -> Load {
    let read = |path| std::fs::read_to_string(path).unwrap_or_default();
    let (memory_total_kib, memory_available_kib) = memory(&read("/proc/meminfo"));
    Load {
        average: load_average(&read("/proc/loadavg")),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        memory_total_kib,
        memory_available_kib,
        uptime_secs: uptime(&read("/proc/uptime")),
    }
}

/// "0.50 0.66 0.96 2/122 5371" -> hundredths of the three averages.
fn load_average(text: &str) -> [u32; 3] {
    let mut fields = text.split_whitespace().map(hundredths);
    [(); 3].map(|_| fields.next().flatten().unwrap_or(0))
}

/// "12.34" -> 1234, without going through floating point.
fn hundredths(field: &str) -> Option<u32> {
    let (whole, fraction) = field.split_once('.').unwrap_or((field, "0"));
    let whole: u32 = whole.parse().ok()?;
    let mut digits = fraction.chars().chain(std::iter::repeat('0')).take(2);
    let mut cents = 0;
    for digit in digits.by_ref() {
        cents = cents * 10 + digit.to_digit(10)?;
    }
    whole.checked_mul(100)?.checked_add(cents)
}

/// MemTotal and MemAvailable in KiB.
fn memory(text: &str) -> (u64, u64) {
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("MemTotal"), field("MemAvailable"))
}

/// "3617.87 3958.38" -> whole seconds of uptime.
fn uptime(text: &str) -> u64 {
    text.split_whitespace()
        .next()
        .and_then(|s| s.split('.').next()?.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_averages() {
        let table: &[(&str, [u32; 3])] = &[
            ("0.50 0.66 0.96 2/122 5371\n", [50, 66, 96]),
            ("12.3 4 100.05 1/1 1", [1230, 400, 10005]),
            ("", [0, 0, 0]),
            ("x 1.00", [0, 100, 0]),
            ("99999999999.00 1.0x 2", [0, 0, 200]),
        ];
        for (text, expected) in table {
            assert_eq!(load_average(text), *expected, "{text:?}");
        }
    }

    #[test]
    fn memory_and_uptime() {
        let meminfo = "MemTotal:       24683656 kB\nMemFree:        22151452 kB\n\
                       MemAvailable:   23529128 kB\n";
        assert_eq!(memory(meminfo), (24_683_656, 23_529_128));
        assert_eq!(memory("MemTotalX: 5 kB\n"), (0, 0));
        assert_eq!(uptime("3617.87 3958.38\n"), 3617);
        assert_eq!(uptime("garbage"), 0);
    }

    #[test]
    fn this_machine_reports_something() {
        let load = sample();
        assert!(load.cpus >= 1);
        assert!(load.memory_total_kib > 0);
    }
}
