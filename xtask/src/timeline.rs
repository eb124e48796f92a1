//! A boot's timeline from its console: every timestamped line from the
//! kernel's hand-off to PID 1 through a line asked for, with the span that
//! led up to it, so a bench can say where the time of a boot goes.

use crate::vm::timestamp;

/// The kernel's line as it hands over to PID 1: where boot timelines start.
pub const HANDOFF: &str = "Run /init as init process";

/// One line of a boot's timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Milliseconds from the hand-off to this line.
    pub at_ms: f64,
    /// Milliseconds since the line before: what led up to this one.
    pub took_ms: f64,
    /// The line without its timestamp.
    pub line: String,
}

/// The console's timestamped lines from the kernel's hand-off to PID 1
/// ("Run /init as init process") through the first one containing
/// `until`, each with its time since the hand-off and since the line
/// before (printk timestamps: guest time). The spans add up to the whole,
/// so every millisecond is on some line, the kernel's own included.
pub fn timeline(console: &str, until: &str) -> anyhow::Result<Vec<Step>> {
    let mut steps = Vec::new();
    let mut start: Option<f64> = None;
    let mut last = 0.0_f64;
    for line in console.lines() {
        let Ok(at) = timestamp(line) else { continue };
        let text = line.split_once(']').map_or(line, |(_, rest)| rest).trim();
        let start = match start {
            Some(start) => start,
            None if text.contains(HANDOFF) => *start.insert(at),
            None => continue,
        };
        steps.push(Step {
            at_ms: (at - start) * 1000.0,
            took_ms: (at - last.max(start)) * 1000.0,
            line: text.to_string(),
        });
        last = at;
        if text.contains(until) {
            return Ok(steps);
        }
    }
    anyhow::bail!("the console has no line with {until:?} after the hand-off to /init")
}

/// Prints a timeline, and how much of it lies inside init's named phases
/// (as init timed them) and how much outside.
pub fn print(title: &str, steps: &[Step]) {
    let Some(last) = steps.last() else { return };
    println!(
        "bench: timeline, {title}: hand-off to {:?} in {:.0} ms (ms since the hand-off, ms since the line before):",
        last.line, last.at_ms
    );
    for step in steps {
        let line: String = step.line.chars().take(110).collect();
        println!("  {:>8.1} {:>+8.1}  {line}", step.at_ms, step.took_ms);
    }
    let phases: f64 = steps
        .iter()
        .filter_map(|s| {
            let (_, rest) = s.line.split_once("init: phase ")?;
            rest.split_once(" done in ")?
                .1
                .strip_suffix(" ms")?
                .parse::<f64>()
                .ok()
        })
        .sum();
    println!(
        "  in init's phases (as init timed them): {phases:.0} ms; outside them: {:.0} ms",
        last.at_ms - phases
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeline_spans_the_hand_off_to_the_line_asked_for() {
        let console = "[    0.900000] early line\n\
                       [    1.000000] Run /init as init process\n\
                       no timestamp: skipped\n\
                       [    1.050000] init: phase mount done in 30 ms\n\
                       [    1.120000] virtio_net virtio0 eth0: renamed\n\
                       [    1.200000] init: ready: bench as pid 1\n\
                       [    1.300000] after\n";
        let steps = timeline(console, "init: ready").unwrap();
        let spans: Vec<(i64, i64, &str)> = steps
            .iter()
            .map(|s| {
                (
                    s.at_ms.round() as i64,
                    s.took_ms.round() as i64,
                    s.line.as_str(),
                )
            })
            .collect();
        assert_eq!(
            spans,
            [
                (0, 0, "Run /init as init process"),
                (50, 50, "init: phase mount done in 30 ms"),
                (120, 70, "virtio_net virtio0 eth0: renamed"),
                (200, 80, "init: ready: bench as pid 1"),
            ]
        );
        assert!(timeline(console, "never printed").is_err());
        assert!(timeline("[ 1.0] no hand-off\n", "no").is_err());
    }
}
