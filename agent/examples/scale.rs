// SPDX-License-Identifier: GPL-3.0-or-later
//! The control-plane scale bench on its own:
//! `cargo run -p agent --release --example scale -- TYD [NODES]`
//! (TYD is a built tyd binary; NODES defaults to 500).

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let tyd = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: scale TYD [NODES]"))?;
    let nodes = match args.next() {
        Some(n) => n
            .parse()
            .map_err(|_| anyhow::anyhow!("NODES {n:?}: expected a number"))?,
        None => 500,
    };
    let report = chaos_agent::bench::control_plane_scale(tyd.as_ref(), nodes)?;
    println!(
        "{} simulated drones: first join {:?}, all joined in {:?}; head RSS {} KiB (peak {} KiB)",
        report.nodes,
        report.first_join,
        report.all_joined,
        report.head_rss_kib,
        report.head_peak_rss_kib
    );
    Ok(())
}
