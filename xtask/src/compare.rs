//! The image builder beside Debian's two initramfs generators, in one run:
//! mkimage, mkinitramfs (initramfs-tools) and dracut each build an initramfs
//! for the same kernel (the unpacked distribution package under build/,
//! never the host's /boot or its own modules) with the same kernel modules
//! (the image's: [`image::BOOT_MODULES`], [`image::PROBE_MODULES`] and
//! [`image::LAB_NICS`]), gzip-compressed, and each is timed and sized.
//!
//! mkinitramfs reads modules only from /lib/modules/<release>, so it runs in
//! a private mount namespace where the unpacked tree is bind-mounted there;
//! dracut takes the tree with --kmoddir. Both need root (mount namespaces)
//! and their packages: initramfs-tools-core and dracut-core (not dracut,
//! which conflicts with initramfs-tools on Debian).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

use crate::image;
use crate::kernel::Kernel;
use crate::node::Binaries;

/// One generator's result.
#[derive(Clone, Debug)]
pub struct Built {
    pub tool: &'static str,
    pub took: Duration,
    pub size: u64,
}

/// Builds the same initramfs three ways and returns mkimage's figure first.
/// mkimage's time is the median of three warm builds (spec, closure and
/// write, as `cargo xtask image` does them); the others are one run each
/// after a warm-up run, since each takes seconds.
pub fn run(sh: &Shell, kernel: &Kernel, binaries: &Binaries) -> anyhow::Result<Vec<Built>> {
    let modules = kernel
        .modules
        .as_deref()
        .context("the comparison needs a kernel with modules (the distribution kernel)")?;
    if !crate::deps::is_root() {
        bail!("comparing with mkinitramfs and dracut needs root (a private mount namespace)");
    }
    for (tool, package) in [
        ("mkinitramfs", "initramfs-tools-core"),
        ("dracut", "dracut-core"),
    ] {
        if cmd!(sh, "which {tool}")
            .quiet()
            .ignore_stdout()
            .run()
            .is_err()
        {
            bail!("{tool} not found: install {package} (`cargo xtask deps`)");
        }
    }
    let scratch = crate::build_dir().join("compare");
    std::fs::create_dir_all(&scratch)?;
    let names = module_names();
    println!(
        "compare: {} modules requested, kernel {}",
        names.len(),
        kernel.release
    );

    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..3 {
        let started = Instant::now();
        let spec = image::base_spec(kernel, binaries)?;
        size = image::write(&spec, &scratch.join("mkimage.cpio.gz"))?.size;
        times.push(started.elapsed());
    }
    times.sort();
    let mut built = vec![Built {
        tool: "mkimage",
        took: times[1],
        size,
    }];
    println!("compare: mkimage done");

    let out = scratch.join("mkinitramfs.img");
    let conf = initramfs_tools_conf(&scratch, &names)?;
    let run_mkinitramfs = || -> anyhow::Result<Duration> {
        let release = &kernel.release;
        let target = format!("/lib/modules/{release}");
        // The bind mount needs a mount point; on a host without this
        // release it is made (empty) and left, which changes nothing.
        std::fs::create_dir_all(&target)?;
        let script = "mount --make-rprivate / && mount --bind \"$1\" \"$2\" && shift 2 && exec mkinitramfs \"$@\"";
        let started = Instant::now();
        cmd!(
            sh,
            "unshare --mount sh -c {script} sh {modules} {target} -d {conf} -o {out} {release}"
        )
        .quiet()
        .ignore_stderr()
        .run()
        .context("mkinitramfs")?;
        Ok(started.elapsed())
    };
    run_mkinitramfs()?;
    built.push(Built {
        tool: "mkinitramfs",
        took: run_mkinitramfs()?,
        size: std::fs::metadata(&out)?.len(),
    });
    println!("compare: mkinitramfs done");

    let out = scratch.join("dracut.img");
    let drivers = names.join(" ");
    let release = &kernel.release;
    let empty = scratch.join("dracut.conf.d");
    std::fs::create_dir_all(&empty)?;
    let run_dracut = || -> anyhow::Result<Duration> {
        let started = Instant::now();
        cmd!(
            sh,
            "dracut --quiet --force --no-hostonly --gzip --conf /dev/null --confdir {empty}
                --kver {release} --kmoddir {modules} --drivers {drivers} {out}"
        )
        .quiet()
        .ignore_stderr()
        .run()
        .context("dracut")?;
        Ok(started.elapsed())
    };
    run_dracut()?;
    built.push(Built {
        tool: "dracut",
        took: run_dracut()?,
        size: std::fs::metadata(&out)?.len(),
    });
    println!("compare: dracut done");
    Ok(built)
}

/// Every module the image asks for, by name, as the other tools take them.
fn module_names() -> Vec<String> {
    image::BOOT_MODULES
        .iter()
        .chain(image::PROBE_MODULES)
        .chain(image::LAB_NICS)
        .map(|name| name.to_string())
        .collect()
}

/// An initramfs-tools configuration directory: just the listed modules
/// (MODULES=list), gzip, like the image.
fn initramfs_tools_conf(scratch: &Path, names: &[String]) -> anyhow::Result<PathBuf> {
    let conf = scratch.join("initramfs-tools");
    for dir in ["conf.d", "scripts", "hooks"] {
        std::fs::create_dir_all(conf.join(dir))?;
    }
    std::fs::write(
        conf.join("initramfs.conf"),
        "MODULES=list\nBUSYBOX=auto\nCOMPRESS=gzip\nDEVICE=\nNFSROOT=auto\nRUNSIZE=10%\nFSTYPE=auto\n",
    )?;
    std::fs::write(conf.join("modules"), names.join("\n") + "\n")?;
    Ok(conf)
}

/// The comparison as a table, with mkimage's margins against the budget
/// (>= 10x faster, smaller).
pub fn print(built: &[Built]) {
    println!("\n{:<14} {:>12} {:>12}", "builder", "build", "size");
    for b in built {
        println!(
            "{:<14} {:>9} ms {:>9} KiB",
            b.tool,
            b.took.as_millis(),
            b.size / 1024
        );
    }
    let Some(ours) = built.first() else {
        return;
    };
    for other in &built[1..] {
        println!(
            "mkimage vs {}: {:.1}x faster, {:.2}x the size",
            other.tool,
            other.took.as_secs_f64() / ours.took.as_secs_f64().max(1e-6),
            ours.size as f64 / other.size.max(1) as f64
        );
    }
}
