//! The image builder beside Debian's two initramfs generators, in one run:
//! mkimage, mkinitramfs (initramfs-tools) and dracut each build an initramfs
//! for the same kernel (the unpacked distribution package under build/,
//! never the host's /boot or its own modules) with the same kernel modules
//! (the image's: [`image::BOOT_MODULES`], [`image::PROBE_MODULES`] and
//! [`image::LAB_NICS`]), gzip-compressed, and each is timed and sized.
//!
//! mkinitramfs reads modules only from /lib/modules/<release> and the
//! kernel's configuration only from /boot/config-<release>, so it runs in
//! a private mount namespace where the unpacked package's tree and /boot
//! are bind-mounted there;
//! dracut takes the tree with --kmoddir. Both need root (mount namespaces)
//! and their packages: initramfs-tools-core and dracut-core (not dracut,
//! which conflicts with initramfs-tools on Debian).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

use mkimage::MemberCache;

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

/// Builds the same initramfs three ways and returns mkimage's figures
/// first: the median of three builds with a warm member cache, then of
/// three with a cold one (spec, closure and write, as `cargo xtask image`
/// does them); the others are one run each after a warm-up run, since each
/// takes seconds.
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

    // Warm: the members are in the cache from the first build, as on any
    // machine that built the image before. Cold: an empty cache each time,
    // so every member is compressed (on every core).
    let warm_cache = MemberCache::open(scratch.join("mkimage-cache"))?;
    let cold_dir = scratch.join("mkimage-cold-cache");
    let mut built = Vec::new();
    for (tool, warm) in [("mkimage", true), ("mkimage, cold cache", false)] {
        let mut times = Vec::new();
        let mut size = 0;
        for _ in 0..3 + usize::from(warm) {
            let cold_cache;
            let cache = if warm {
                &warm_cache
            } else {
                let _ = std::fs::remove_dir_all(&cold_dir);
                cold_cache = MemberCache::open(&cold_dir)?;
                &cold_cache
            };
            let started = Instant::now();
            let spec = image::base_spec(kernel, binaries)?;
            let out = scratch.join("mkimage.cpio.gz");
            size = image::write_with(&spec, &out, Some(cache))?.size;
            times.push(started.elapsed());
        }
        // The first warm build fills the cache.
        let times = &mut times[usize::from(warm)..];
        times.sort();
        built.push(Built {
            tool,
            took: times[times.len() / 2],
            size,
        });
    }
    println!("compare: mkimage done");

    let out = scratch.join("mkinitramfs.img");
    let conf = initramfs_tools_conf(&scratch, &names)?;
    // mkinitramfs also reads the kernel's configuration from
    // /boot/config-<release>, which only a host that installed this
    // kernel has: the namespace sees the package's own /boot instead.
    let boot = kernel
        .vmlinuz
        .parent()
        .context("the kernel image has no directory")?;
    let config = boot.join(format!("config-{}", kernel.release));
    if !config.exists() {
        bail!(
            "{} is missing: the kernel package should have unpacked it",
            config.display()
        );
    }
    let run_mkinitramfs = || -> anyhow::Result<Duration> {
        let release = &kernel.release;
        let target = format!("/lib/modules/{release}");
        // The bind mount needs a mount point; on a host without this
        // release it is made (empty) and left, which changes nothing.
        std::fs::create_dir_all(&target)?;
        let script = "mount --make-rprivate / && mount --bind \"$1\" \"$2\" && mount --bind \"$3\" /boot && shift 3 && exec mkinitramfs \"$@\"";
        timed(
            "mkinitramfs",
            cmd!(
                sh,
                "unshare --mount sh -c {script} sh {modules} {target} {boot} -d {conf} -o {out} {release}"
            ),
        )
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
        timed(
            "dracut",
            cmd!(
                sh,
                "dracut --quiet --force --no-hostonly --gzip --conf /dev/null --confdir {empty}
                --kver {release} --kmoddir {modules} --drivers {drivers} {out}"
            ),
        )
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

/// How long `command` took; its stderr, which is chatty when all is well,
/// is shown only when it fails.
fn timed(tool: &str, command: xshell::Cmd) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let output = command.quiet().ignore_status().output()?;
    if !output.status.success() {
        bail!(
            "{tool} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(started.elapsed())
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

/// The comparison as a table, with mkimage's margins (warm and cold)
/// against each of the others.
pub fn print(built: &[Built]) {
    println!("\n{:<20} {:>12} {:>12}", "builder", "build", "size");
    for b in built {
        println!(
            "{:<20} {:>9} ms {:>9} KiB",
            b.tool,
            b.took.as_millis(),
            b.size / 1024
        );
    }
    let (ours, others) = split(built);
    for other in others {
        for ours in ours {
            println!(
                "{} vs {}: {:.1}x faster, {:.2}x the size",
                ours.tool,
                other.tool,
                faster(ours, other),
                ours.size as f64 / other.size.max(1) as f64
            );
        }
    }
}

/// mkimage's figures and the other tools'.
pub fn split(built: &[Built]) -> (&[Built], &[Built]) {
    let ours = built
        .iter()
        .take_while(|b| b.tool.starts_with("mkimage"))
        .count();
    built.split_at(ours)
}

/// How many times faster `ours` built than `other`.
pub fn faster(ours: &Built, other: &Built) -> f64 {
    other.took.as_secs_f64() / ours.took.as_secs_f64().max(1e-6)
}
