//! `cargo xtask bench`: measures the DESIGN.md budgets this build can
//! already be held to and prints each figure beside its budget. Timings are
//! reported, never asserted: these machines are too noisy for that.

use std::time::{Duration, Instant};

use anyhow::Context;
use xshell::Shell;

use crate::vm::{Config, Vm};

const MIB: f64 = 1024.0 * 1024.0;

struct Row {
    what: &'static str,
    measured: String,
    budget: &'static str,
    /// None when the figure has no budget of its own.
    within: Option<bool>,
}

pub fn run(sh: &Shell, boots: usize) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    let binaries = crate::node::build()?;
    let kernel = crate::kernel::distribution(sh)?;

    let init_size = std::fs::metadata(&binaries.init)?.len();
    rows.push(Row {
        what: "init binary, static, stripped",
        measured: format!("{:.2} MB ({init_size} bytes)", init_size as f64 / MIB),
        budget: "<= 1.5 MB",
        within: Some(init_size as f64 <= 1.5 * MIB),
    });

    let scratch = crate::build_dir().join("bench");
    std::fs::create_dir_all(&scratch)?;
    let base = crate::image::moduleless_spec(&binaries)?;
    let base_size = crate::image::write(&base, &scratch.join("base.cpio.gz"))?.size;
    rows.push(Row {
        what: "base initramfs (no modules), gzip",
        measured: format!("{:.2} MB", base_size as f64 / MIB),
        budget: "<= 2 MB",
        within: Some(base_size as f64 <= 2.0 * MIB),
    });

    let image = scratch.join("chaos.cpio.gz");
    let mut builds = Vec::new();
    let mut size = 0;
    for _ in 0..5 {
        let started = Instant::now();
        let spec = crate::image::base_spec(&kernel, &binaries)?;
        size = crate::image::write(&spec, &image)?.size;
        builds.push(started.elapsed());
    }
    let build = median(&mut builds);
    rows.push(Row {
        what: "image with boot modules, gzip",
        measured: format!("{:.2} MB", size as f64 / MIB),
        budget: "-",
        within: None,
    });
    rows.push(Row {
        what: "image build (mkimage, warm, with modules)",
        measured: format!("{} ms (median of 5)", build.as_millis()),
        budget: "<= 1 s",
        within: Some(build <= Duration::from_secs(1)),
    });

    let mut handoffs = Vec::new();
    for boot in 1..=boots {
        let ip = "ip=10.0.2.15::10.0.2.2:255.255.255.0:bench::off:10.0.2.3";
        let mut vm = Vm::start(&Config::new(&kernel.vmlinuz, &image, ip).user_net())?;
        let run = vm.expect("Run /init as init process", Duration::from_secs(120))?;
        let ready = vm.expect("init: ready", Duration::from_secs(60))?;
        let handoff = timestamp(&ready)? - timestamp(&run)?;
        let phases: Vec<String> = vm
            .console()
            .lines()
            .filter_map(|l| {
                l.split_once("init: phase ")
                    .map(|(_, p)| p.replace(" done in ", " "))
            })
            .collect();
        println!(
            "bench: boot {boot}/{boots}: hand-off to ready {:.0} ms (phases: {})",
            handoff * 1000.0,
            phases.join(", ")
        );
        handoffs.push(Duration::from_secs_f64(handoff));
    }
    if !handoffs.is_empty() {
        let handoff = median(&mut handoffs);
        rows.push(Row {
            what: "kernel hand-off -> init ready, static ip= (TCG)",
            measured: format!("{} ms (median of {boots})", handoff.as_millis()),
            budget: "<= 150 ms",
            within: Some(handoff <= Duration::from_millis(150)),
        });
    }

    println!(
        "\n{:<48} {:>26} {:>10}  verdict",
        "what", "measured", "budget"
    );
    for row in &rows {
        let verdict = match row.within {
            Some(true) => "within",
            Some(false) => "OVER",
            None => "",
        };
        println!(
            "{:<48} {:>26} {:>10}  {verdict}",
            row.what, row.measured, row.budget
        );
    }
    Ok(())
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Seconds from a console line's printk timestamp, `[    1.234567] ...`.
pub fn timestamp(line: &str) -> anyhow::Result<f64> {
    let inner = line
        .trim_start()
        .strip_prefix('[')
        .and_then(|rest| rest.split_once(']'))
        .map(|(ts, _)| ts.trim())
        .with_context(|| format!("no printk timestamp in {line:?}"))?;
    inner
        .parse()
        .with_context(|| format!("printk timestamp {inner:?} in {line:?} is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_printk_timestamps() {
        assert_eq!(timestamp("[    1.234500] init: ready").unwrap(), 1.2345);
        assert!(timestamp("init: ready").is_err());
        assert!(timestamp("[abc] x").is_err());
    }
}
