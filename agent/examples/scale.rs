// SPDX-License-Identifier: GPL-3.0-or-later
//! The control-plane scale bench on its own:
//! `cargo run -p agent --release --example scale -- TYD [NODES...]`
//! (TYD is a built tyd binary; NODES default to the growth curve, 500,
//! 1000, 2000 and 5000 simulated drones, one run each).

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let tyd = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: scale TYD [NODES...]"))?;
    let mut sizes = args
        .map(|n| {
            n.parse()
                .map_err(|_| anyhow::anyhow!("NODES {n:?}: expected a number"))
        })
        .collect::<anyhow::Result<Vec<usize>>>()?;
    if sizes.is_empty() {
        sizes = chaos_agent::bench::CURVE.to_vec();
    }
    for nodes in sizes {
        let report = chaos_agent::bench::control_plane_scale(tyd.as_ref(), nodes)?;
        println!(
            "{} simulated drones: first join {:?}, all joined in {:.2?}, full mesh in {:.2?}; head RSS {} KiB (peak {} KiB), head CPU {:.2?}",
            report.nodes,
            report.first_join,
            report.all_joined,
            report.full_mesh,
            report.head_rss_kib,
            report.head_peak_rss_kib,
            report.head_cpu
        );
    }
    Ok(())
}
