//! `cargo xtask bench`: measures the DESIGN.md budgets this build can
//! already be held to and prints each figure beside its budget. Timings are
//! reported, never asserted: these machines are too noisy for that.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use xshell::{cmd, Shell};

use crate::image::Written;
use crate::kernel::Kernel;
use crate::node::Binaries;
use crate::vm::{Config, Firmware, Vm};

const MIB: f64 = 1024.0 * 1024.0;

struct Row {
    what: String,
    measured: String,
    budget: &'static str,
    /// None when the figure has no budget of its own.
    within: Option<bool>,
}

/// Every figure, or with `lab_only` the lab's morning alone (it takes
/// minutes by itself).
/// A part of the bench measured alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Only {
    /// The lab's morning.
    Lab,
    /// The binaries' and the base image's sizes, the images with Slurm
    /// and the QEMU clusters.
    Slurm,
}

pub fn run(sh: &Shell, boots: usize, only: Option<Only>) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    let binaries = crate::node::build()?;
    let kernel = crate::kernel::distribution(sh)?;
    let scratch = crate::build_dir().join("bench");
    std::fs::create_dir_all(&scratch)?;
    match only {
        Some(Only::Lab) => {
            print(&lab_morning(&kernel, &binaries)?);
            return Ok(());
        }
        Some(Only::Slurm) => {
            let custom = custom_kernel(sh)?;
            rows.extend(sizes(&binaries, &scratch)?);
            rows.extend(slurm(&kernel, &custom, &binaries, &scratch)?);
            rows.extend(qemu_clusters()?);
            rows.extend(share(&kernel, &binaries)?);
            print(&rows);
            return Ok(());
        }
        None => {}
    }

    rows.extend(sizes(&binaries, &scratch)?);

    let (written, build) = warm_builds(&scratch.join("chaos.cpio.gz"), || {
        crate::image::base_spec(&kernel, &binaries)
    })?;
    rows.push(Row {
        what: "image with boot modules, gzip".into(),
        measured: format!("{:.2} MB", written.size as f64 / MIB),
        budget: "-",
        within: None,
    });
    rows.push(Row {
        what: "image build (mkimage, warm, with modules)".into(),
        measured: format!("{} ms (median of 5)", build.as_millis()),
        budget: "<= 300 ms",
        within: Some(build <= Duration::from_millis(300)),
    });

    rows.extend(certainty(sh, &binaries, &written, &scratch)?);
    rows.extend(builders(sh, &kernel, &binaries)?);
    for class in crate::netbench::class_sizes(&kernel, &binaries)? {
        rows.push(Row {
            what: if class.class.starts_with('@') {
                "image with every wired Ethernet driver"
            } else {
                "image with the lab NIC class"
            }
            .into(),
            measured: format!(
                "{:.2} MB, {} modules",
                class.size as f64 / MIB,
                class.modules
            ),
            budget: "-",
            within: None,
        });
    }
    let lease =
        crate::netbench::handoff_to_lease(&kernel, &written.path, &written.root_digest_arg())?;
    rows.push(Row {
        what: "hand-off -> DHCP lease, e1000 (TCG)".into(),
        measured: format!("{} ms", lease.as_millis()),
        budget: "-",
        within: None,
    });
    rows.extend(cluster(&binaries)?);
    rows.extend(share(&kernel, &binaries)?);

    let custom = custom_kernel(sh)?;
    let bzimage = std::fs::metadata(&custom.vmlinuz)?.len() as f64;
    rows.push(Row {
        what: "custom kernel bzImage (no modules)".into(),
        measured: format!("{:.2} MB", bzimage / 1e6),
        budget: "<= 3 MB",
        within: Some(bzimage <= 3e6),
    });
    let custom_image = crate::image::write(
        &crate::image::base_spec(&custom, &binaries)?,
        &scratch.join("chaos-custom.cpio.gz"),
    )?;
    for (what, kernel, image) in [
        (
            "hand-off -> ready, distribution kernel (TCG)",
            &kernel,
            &written,
        ),
        (
            "hand-off -> ready, custom kernel (TCG)",
            &custom,
            &custom_image,
        ),
    ] {
        if let Some(handoff) = handoff(kernel, image, boots)? {
            rows.push(Row {
                what: what.into(),
                measured: format!("{} ms (median of {boots})", handoff.as_millis()),
                budget: "<= 150 ms",
                within: Some(handoff <= Duration::from_millis(150)),
            });
        }
    }

    rows.extend(slurm(&kernel, &custom, &binaries, &scratch)?);

    let tree = scratch.join("pxe");
    let uki = scratch.join("chaos.efi");
    rows.extend(artifacts(&kernel, &written, &tree, &uki, &scratch)?);
    rows.extend(http(&tree)?);
    let iso = scratch.join("chaos-custom.iso");
    let iso_size = crate::iso::build(
        &custom.vmlinuz,
        &custom_image.path,
        &custom_image.root_digest_arg(),
        &iso,
    )? as f64;
    rows.push(Row {
        what: "hybrid ISO (BIOS + UEFI), custom kernel".into(),
        measured: format!("{:.2} MB", iso_size / 1e6),
        budget: "<= 7.6 MB",
        within: Some(iso_size <= 7.6e6),
    });
    rows.extend(pxe_boots(&tree, &uki, &written.root_digest_arg(), boots)?);
    rows.extend(lab_morning(&kernel, &binaries)?);
    print(&rows);
    Ok(())
}

/// The node binaries' sizes and the base image's, without modules, and
/// its userland's share.
fn sizes(binaries: &Binaries, scratch: &Path) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (what, path, budget, limit) in [
        (
            "init binary, static, stripped",
            &binaries.init,
            "<= 1.5 MB",
            Some(1.5),
        ),
        (
            "certaintyd binary (on a node: init under another name)",
            &binaries.certaintyd,
            "-",
            None,
        ),
    ] {
        let size = std::fs::metadata(path)?.len() as f64;
        rows.push(Row {
            what: what.into(),
            measured: format!("{:.2} MB", size / MIB),
            budget,
            within: limit.map(|mb| size <= mb * MIB),
        });
    }

    let base = crate::image::moduleless_spec(binaries)?;
    let base_size = crate::image::write(&base, &scratch.join("base.cpio.gz"))?.size;
    rows.push(Row {
        what: "base initramfs with busybox (no modules), gzip".into(),
        measured: format!("{:.2} MB", base_size as f64 / MIB),
        budget: "<= 2.5 MB",
        within: Some(base_size as f64 <= 2.5 * MIB),
    });
    let mut userland = mkimage::Spec::new();
    crate::image::add_userland(&mut userland)?;
    let userland_size = crate::image::write(&userland, &scratch.join("userland.cpio.gz"))?.size;
    rows.push(Row {
        what: "  of which the busybox userland, gzip".into(),
        measured: format!("{:.2} MB", userland_size as f64 / MIB),
        budget: "-",
        within: None,
    });
    Ok(rows)
}

fn custom_kernel(sh: &Shell) -> anyhow::Result<Kernel> {
    println!("bench: the compact custom kernel (a first build takes minutes; then cached)");
    crate::custom_kernel::build(sh, None)
}

fn print(rows: &[Row]) {
    println!(
        "\n{:<48} {:>26} {:>10}  verdict",
        "what", "measured", "budget"
    );
    for row in rows {
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
}

/// Builds the image `spec` makes and writes it to `out` five times: the
/// last image and the median time, spec and write together.
fn warm_builds(
    out: &Path,
    spec: impl Fn() -> anyhow::Result<mkimage::Spec>,
) -> anyhow::Result<(Written, Duration)> {
    let mut builds = Vec::new();
    let mut written = None;
    for _ in 0..5 {
        let started = Instant::now();
        written = Some(crate::image::write(&spec()?, out)?);
        builds.push(started.elapsed());
    }
    let written = written.context("no image was built")?;
    Ok((written, median(&mut builds)))
}

/// The images with Slurm: the drone on Debian's kernel with the lab NIC
/// class (size and warm build, programs and their closures found anew each
/// time), the head VM's image, and the hybrid ISO of a drone on the custom
/// kernel. Each with its role's NFS modules, as [`crate::cluster::add`]
/// makes them, so the sizes are what ships.
fn slurm(
    kernel: &Kernel,
    custom: &Kernel,
    binaries: &Binaries,
    scratch: &Path,
) -> anyhow::Result<Vec<Row>> {
    let with = |kernel: &Kernel, profile: crate::slurm::Profile| {
        let mut spec = crate::image::base_spec(kernel, binaries)?;
        crate::slurm::add_to_node(&mut spec, kernel, profile)?;
        Ok(spec)
    };
    let (drone, build) = warm_builds(&scratch.join("chaos-slurm-drone.cpio.gz"), || {
        with(kernel, crate::slurm::Profile::Drone)
    })?;
    let head = crate::image::write(
        &with(kernel, crate::slurm::Profile::Head)?,
        &scratch.join("chaos-slurm-head.cpio.gz"),
    )?;
    let custom_drone = crate::image::write(
        &with(custom, crate::slurm::Profile::Drone)?,
        &scratch.join("chaos-slurm-drone-custom.cpio.gz"),
    )?;
    let iso = crate::iso::build(
        &custom.vmlinuz,
        &custom_drone.path,
        &custom_drone.root_digest_arg(),
        &scratch.join("chaos-slurm-custom.iso"),
    )? as f64;
    let mb = |size: u64| format!("{:.2} MB", size as f64 / MIB);
    Ok(vec![
        Row {
            what: "drone image with Slurm, lab NIC class, gzip".into(),
            measured: mb(drone.size),
            budget: "<= 8 MB",
            within: Some(drone.size as f64 <= 8.0 * MIB),
        },
        Row {
            what: "image build with Slurm (warm)".into(),
            measured: format!("{} ms (median of 5)", build.as_millis()),
            budget: "<= 1 s",
            within: Some(build <= Duration::from_secs(1)),
        },
        Row {
            what: "head VM image with Slurm, gzip".into(),
            measured: mb(head.size),
            budget: "-",
            within: None,
        },
        Row {
            what: "hybrid ISO with Slurm, custom kernel".into(),
            measured: format!("{:.2} MB", iso / 1e6),
            budget: "<= 12 MB",
            within: Some(iso <= 12e6),
        },
    ])
}

/// The median time from the kernel's hand-off to PID 1 until `init: ready`
/// over `boots` boots on QEMU's user network (guest time, see
/// [`Vm::guest_time_to`]); None for zero boots.
fn handoff(kernel: &Kernel, image: &Written, boots: usize) -> anyhow::Result<Option<Duration>> {
    let mut handoffs = Vec::new();
    for boot in 1..=boots {
        let append = format!(
            "ip=10.0.2.15::10.0.2.2:255.255.255.0:bench::off:10.0.2.3 {}",
            image.root_digest_arg()
        );
        let mut vm = Vm::start(&Config::new(&kernel.vmlinuz, &image.path, &append).user_net())?;
        let handoff = vm.guest_time_to("@chaos ready")?;
        if boot == 1 {
            let title = format!("kernel {}, static ip=", kernel.release);
            crate::timeline::print(
                &title,
                &crate::timeline::timeline(&vm.console(), "@chaos ready")?,
            );
        }
        let phases: Vec<String> = vm
            .console()
            .lines()
            .filter_map(|l| {
                l.split_once("init: phase ")
                    .map(|(_, p)| p.replace(" done in ", " "))
            })
            .collect();
        println!(
            "bench: {} boot {boot}/{boots}: hand-off to ready {} ms (phases: {})",
            kernel.release,
            handoff.as_millis(),
            phases.join(", ")
        );
        handoffs.push(handoff);
    }
    Ok((!handoffs.is_empty()).then(|| median(&mut handoffs)))
}

/// Builds the distribution kernel's boot artifacts from the bench's image
/// and returns their sizes: the PXE tree's files at `tree`, the unified
/// kernel image at `uki` (both booted by [`pxe_boots`]), and the hybrid ISO
/// and the drone appliance in `scratch`.
fn artifacts(
    kernel: &Kernel,
    image: &Written,
    tree: &Path,
    uki: &Path,
    scratch: &Path,
) -> anyhow::Result<Vec<Row>> {
    let append = image.root_digest_arg();
    crate::pxe::build(&kernel.vmlinuz, &image.path, &append, tree)?;
    let mut sizes: Vec<(String, u64)> = crate::pxe::sizes(tree)?
        .into_iter()
        .map(|(name, size)| (format!("PXE tree: {name}"), size))
        .collect();
    let uki_size = crate::uki::build(&kernel.vmlinuz, &image.path, &append, uki)?;
    sizes.push(("unified kernel image chaos.efi".into(), uki_size));
    let iso = scratch.join("chaos.iso");
    let iso_size = crate::iso::build(&kernel.vmlinuz, &image.path, &append, &iso)?;
    sizes.push((
        "hybrid ISO (BIOS + UEFI), distribution kernel".into(),
        iso_size,
    ));
    let appliance = crate::appliance::build(&iso, &scratch.join("chaos-drone.qcow2"))?;
    sizes.push(("drone appliance chaos-drone.qcow2".into(), appliance));
    Ok(sizes
        .into_iter()
        .map(|(what, size)| Row {
            what,
            measured: readable_size(size),
            budget: "-",
            within: None,
        })
        .collect())
}

/// "312 B", "71.4 kB", "7.43 MB (7.09 MiB)": small files such as the boot
/// script stay readable beside the ISO, and large ones read against both
/// the ISO's decimal budget and the image sizes above, which are binary.
fn readable_size(bytes: u64) -> String {
    match bytes {
        0..10_000 => format!("{bytes} B"),
        10_000..1_000_000 => format!("{:.1} kB", bytes as f64 / 1e3),
        _ => format!(
            "{:.2} MB ({:.2} MiB)",
            bytes as f64 / 1e6,
            bytes as f64 / MIB
        ),
    }
}

/// PCs booting at once in [`http`]: a lab's morning.
const PCS: usize = 50;
/// Rounds of [`http`]'s throughput run, alternating the two servers.
const HTTP_ROUNDS: usize = 5;

/// netboot's HTTP server: [`PCS`] PCs fetching boot.ipxe, kernel and
/// initramfs from `tree` at once on loopback (each from its own address),
/// side by side with the thread-per-connection server it replaced, in
/// alternating rounds; then, with root, `netboot serve` in network
/// namespaces under the attacks of its tests, its peak memory and a PC's
/// boot during each.
fn http(tree: &Path) -> anyhow::Result<Vec<Row>> {
    use netboot::clients::{baseline_serve, boot_at_once, loopback_pc};
    let loopback = std::net::Ipv4Addr::LOCALHOST;
    let baseline = std::net::TcpListener::bind((loopback, 0))?;
    let ours = netboot::http::bind((loopback, 0).into())?;
    let addresses = [baseline.local_addr()?, ours.local_addr()?];
    let root = tree.to_path_buf();
    std::thread::spawn(move || baseline_serve(baseline, &root));
    let site = netboot::http::Site {
        root: tree.to_path_buf(),
        rendered: Default::default(),
    };
    std::thread::spawn(move || netboot::http::serve(ours, site, |_| {}));
    let mut times = [Vec::new(), Vec::new()];
    let mut bytes = 0;
    for _ in 0..HTTP_ROUNDS {
        for (address, times) in addresses.iter().zip(&mut times) {
            let (took, fetched) = boot_at_once(*address, PCS, loopback_pc)?;
            times.push(took);
            bytes = fetched;
        }
    }
    let [before, after] = times.map(|mut t| median(&mut t));
    let rate = |took: Duration| bytes as f64 / MIB / took.as_secs_f64().max(1e-6);
    println!(
        "bench: {PCS} PCs at once, {:.0} MiB each round: thread per connection {before:?}, event loop {after:?}",
        bytes as f64 / MIB
    );
    let ratio = after.as_secs_f64() / before.as_secs_f64().max(1e-6);
    let mut rows = vec![
        Row {
            what: format!("HTTP, {PCS} PCs at once, thread per connection"),
            measured: format!(
                "{} ms, {:.0} MiB/s (median of {HTTP_ROUNDS})",
                before.as_millis(),
                rate(before)
            ),
            budget: "-",
            within: None,
        },
        Row {
            what: format!("HTTP, {PCS} PCs at once, netboot's event loop"),
            measured: format!(
                "{} ms, {:.0} MiB/s, {ratio:.2}x the time",
                after.as_millis(),
                rate(after)
            ),
            budget: "<= 1.2x",
            within: Some(ratio <= 1.2),
        },
    ];
    if !crate::deps::is_root() {
        rows.push(Row {
            what: "netboot serve under hostile clients".into(),
            measured: "not measured: network namespaces need root".into(),
            budget: "-",
            within: None,
        });
        return Ok(rows);
    }
    let netboot = crate::pxe::netboot_binary()?;
    let lab = netboot::clients::Lab::start(&netboot, tree, "bench")?;
    let line = lab.endless_line_attack(1_500_000_000)?;
    let idle = lab.idle_attack(3000)?;
    for (after, during, run_pc, took, rss) in [
        (
            "a 1.5 GB request line",
            "a 1.5 GB request line",
            &line.pc,
            line.pc_took,
            line.peak_rss_kib,
        ),
        (
            "3,000 idle connections too",
            "3,000 idle connections",
            &idle.pc,
            idle.pc_took,
            idle.peak_rss_kib,
        ),
    ] {
        let rss_mb = rss as f64 / 1024.0;
        rows.push(Row {
            what: format!("netboot serve peak RSS after {after}"),
            measured: format!("{rss_mb:.1} MB"),
            budget: "<= 64 MB",
            within: Some(rss_mb <= 64.0),
        });
        rows.push(Row {
            what: format!("a PC's boot files during {during}"),
            measured: match run_pc {
                Ok(_) => format!("{} ms", took.as_millis()),
                Err(e) => format!("failed: {e:#}"),
            },
            budget: "served",
            within: Some(run_pc.is_ok()),
        });
    }
    Ok(rows)
}

/// Wall time from starting QEMU to `init: ready` for each PXE path on
/// QEMU's user network, median of `boots`: BIOS and UEFI each through the
/// NIC's iPXE ROM (the boot script over TFTP, kernel and initramfs over
/// HTTP from netboot's server), and, for comparison, UEFI with OVMF's own
/// PXE client loading the unified kernel image over TFTP. Wall time, as
/// the firmware's and the transfers' share is what differs between the
/// paths and the guest's clock does not see it. UEFI over HTTP is held to
/// BIOS's time, measured in the same run.
fn pxe_boots(tree: &Path, uki: &Path, append: &str, boots: usize) -> anyhow::Result<Vec<Row>> {
    let server = crate::pxe::UserNet::serve(tree, append)?;
    let mut rows = Vec::new();
    let mut bios = None;
    for (path, what, config) in [
        (
            "BIOS",
            "PXE boot to ready, BIOS, kernel by HTTP (TCG)",
            server.config(Firmware::Bios, netboot::boot::SCRIPT),
        ),
        (
            "UEFI",
            "PXE boot to ready, UEFI, kernel by HTTP (TCG)",
            server.config(Firmware::Uefi, netboot::boot::SCRIPT),
        ),
        (
            "UEFI-TFTP",
            "PXE boot to ready, UEFI, chaos.efi by TFTP (TCG)",
            crate::pxe::uefi_user_net(uki)?,
        ),
    ] {
        let mut times = Vec::new();
        for boot in 1..=boots {
            let started = Instant::now();
            let mut vm = Vm::start(&config)?;
            vm.expect("@chaos ready", PXE_BOOT_LIMIT)
                .with_context(|| format!("{path} PXE boot {boot}/{boots}"))?;
            let took = started.elapsed();
            println!(
                "bench: {path} PXE boot {boot}/{boots}: QEMU start to ready in {:.1} s",
                took.as_secs_f64()
            );
            times.push(took);
        }
        if times.is_empty() {
            continue;
        }
        let took = median(&mut times);
        let (budget, within) = match (path, bios) {
            ("UEFI", Some(bios)) => ("<= BIOS", Some(took <= bios)),
            _ => ("-", None),
        };
        if path == "BIOS" {
            bios = Some(took);
        }
        rows.push(Row {
            what: what.into(),
            measured: format!("{:.1} s wall (median of {boots})", took.as_secs_f64()),
            budget,
            within,
        });
    }
    Ok(rows)
}

/// How long one PXE boot under TCG may take before the bench gives up on
/// it: firmware, transfers and the boot, on a loaded two-core machine.
const PXE_BOOT_LIMIT: Duration = Duration::from_secs(600);

/// The lab's morning ([`crate::lab::Morning`], root): the head serving,
/// then the PCs of [`crate::lab::PCS`] powered on one after another; wall
/// time from the first power-on until all of them are idle in Slurm, and
/// per path (BIOS PXE, UEFI PXE, CD) from power-on to joined. Wall time:
/// firmware, transfers and the boot loader are the difference between
/// the paths, and the guests' clocks do not see them.
fn lab_morning(kernel: &Kernel, binaries: &Binaries) -> anyhow::Result<Vec<Row>> {
    use crate::lab::{BootPath, Morning, PCS};
    let what = format!("lab morning: 1st PC on -> {} idle in Slurm", PCS.len());
    if !crate::deps::is_root() {
        return Ok(vec![Row {
            what,
            measured: "not measured: network namespaces need root".into(),
            budget: "-",
            within: None,
        }]);
    }
    let mut morning = Morning::start(kernel, binaries, "bench")?;
    let mut pcs = morning.power_on()?;
    let first = pcs
        .iter()
        .map(|pc| pc.powered_on)
        .min()
        .context("the morning has no PCs")?;
    let head = &mut morning.head;
    let (idle, joined) = std::thread::scope(|scope| {
        // One thread per PC, so each join is timed as its line arrives.
        let threads: Vec<_> = pcs
            .iter_mut()
            .map(|pc| {
                scope.spawn(move || -> anyhow::Result<(BootPath, Duration)> {
                    crate::lab::joined(&mut pc.vm, PXE_BOOT_LIMIT)
                        .with_context(|| format!("{} ({})", pc.name, pc.path.name()))?;
                    Ok((pc.path, pc.powered_on.elapsed()))
                })
            })
            .collect();
        let idle = head
            .expect(&crate::lab::idle_line(PCS.len()), PXE_BOOT_LIMIT)
            .map(|_| first.elapsed());
        let joined = threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a timing thread panicked")))
            })
            .collect::<anyhow::Result<Vec<_>>>();
        (idle, joined)
    });
    let (idle, joined) = (idle?, joined?);
    let mut rows = vec![Row {
        what,
        measured: format!("{:.1} s wall (TCG)", idle.as_secs_f64()),
        budget: "-",
        within: None,
    }];
    for path in [BootPath::BiosPxe, BootPath::UefiPxe, BootPath::Cd] {
        let times: Vec<String> = joined
            .iter()
            .filter(|(p, _)| *p == path)
            .map(|(_, took)| format!("{:.1} s", took.as_secs_f64()))
            .collect();
        rows.push(Row {
            what: format!("lab morning: {} power-on -> joined", path.name()),
            measured: format!("{} wall", times.join(", ")),
            budget: "-",
            within: None,
        });
    }
    Ok(rows)
}

/// certaintyd's cost: full verification passes over the unpacked default
/// image, and SHA-256 throughput with the CPU's SHA extensions and with the
/// portable code (a second build with sha2's `force-soft`).
fn certainty(
    sh: &Shell,
    binaries: &Binaries,
    image: &Written,
    scratch: &Path,
) -> anyhow::Result<Vec<Row>> {
    let root = scratch.join("root");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;
    let archives = mkimage::list::archives(std::fs::File::open(&image.path)?)
        .with_context(|| format!("reading {}", image.path.display()))?;
    {
        let _cd = sh.push_dir(&root);
        // GNU cpio stops at a trailer, so it takes the archives one by one.
        // As root it recreates the device nodes too; elsewhere the missing
        // /dev/console is one difference that changes no timing.
        for archive in archives {
            cmd!(sh, "cpio -idm --quiet")
                .stdin(archive)
                .ignore_status()
                .run()?;
        }
    }
    let soft = crate::node::build_soft_sha()?;
    let digest = image.digest.to_string();
    let mut passes = Vec::new();
    for certaintyd in [&binaries.certaintyd, &soft] {
        let line = cmd!(
            sh,
            "{certaintyd} check --root {root} --digest {digest} --repeat 200"
        )
        .ignore_status()
        .read()?;
        let line = line.lines().next().unwrap_or_default().to_string();
        println!("bench: {line}");
        passes.push(Pass::parse(&line)?);
    }
    let native = &passes[0];
    let share = native.median_ms / 2000.0 * 100.0;
    let mut rows = vec![
        Row {
            what: "certaintyd full pass, default image".into(),
            measured: format!("{:.2} ms (median of 200)", native.median_ms),
            budget: "<= 20 ms",
            within: Some(native.median_ms <= 20.0),
        },
        Row {
            what: "certaintyd share of a core at 2 s".into(),
            measured: format!("{share:.2} %"),
            budget: "<= 1 %",
            within: Some(share <= 1.0),
        },
    ];
    rows.push(Row {
        what: "sha256 throughput, best this CPU offers".into(),
        measured: format!("{:.0} MB/s ({})", native.best_rate, native.backend),
        budget: "-",
        within: None,
    });
    rows.push(Row {
        what: "sha256 throughput, portable code".into(),
        measured: format!("{:.0} MB/s", passes[1].best_rate),
        budget: "-",
        within: None,
    });
    Ok(rows)
}

/// The same initramfs from mkimage, Debian's mkinitramfs and dracut
/// (same kernel, same modules): mkimage's margins against the budget, with
/// a warm member cache (DESIGN.md's figure) and, for scale, a cold one.
fn builders(sh: &Shell, kernel: &Kernel, binaries: &Binaries) -> anyhow::Result<Vec<Row>> {
    let built = crate::compare::run(sh, kernel, binaries)?;
    crate::compare::print(&built);
    let (ours, others) = crate::compare::split(&built);
    let mut rows = Vec::new();
    for (index, mine) in ours.iter().enumerate() {
        // The first is the warm build, which the budgets are about.
        let warm = index == 0;
        rows.push(Row {
            what: format!("{}, same kernel and modules", mine.tool),
            measured: format!(
                "{} ms, {:.2} MB",
                mine.took.as_millis(),
                mine.size as f64 / MIB
            ),
            budget: if warm { "<= 300 ms" } else { "-" },
            within: warm.then_some(mine.took <= Duration::from_millis(300)),
        });
        for other in others {
            let faster = crate::compare::faster(mine, other);
            let smaller = other.size as f64 / mine.size.max(1) as f64;
            let (budget, least) = if other.tool == "dracut" {
                (">= 50x, >1x", 50.0)
            } else {
                (">= 20x, >1x", 20.0)
            };
            rows.push(Row {
                what: format!("{} vs {}: faster, smaller", mine.tool, other.tool),
                measured: format!("{faster:.1}x, {smaller:.1}x"),
                budget: if warm { budget } else { "-" },
                within: warm.then_some(faster >= least && smaller > 1.0),
            });
        }
    }
    Ok(rows)
}

/// The control plane at scale (its growth curve: simulated drones against
/// a real head on loopback), five tyd processes in network namespaces (control plane
/// only: the host's kernel may lack WireGuard), and QEMU clusters of three
/// and five nodes forming their WireGuard mesh.
fn cluster(binaries: &Binaries) -> anyhow::Result<Vec<Row>> {
    let mut rows = control_plane_curve(binaries)?;
    if crate::deps::is_root() {
        let ns = chaos_agent::bench::namespace_cluster(&binaries.tyd, 4)?;
        let mut joins = ns.joins.clone();
        rows.push(Row {
            what: "drone join, 5-node namespace cluster".into(),
            measured: format!("{} ms (median of 4)", median(&mut joins).as_millis()),
            budget: "-",
            within: None,
        });
        rows.push(Row {
            what: "5-node namespace cluster converged".into(),
            measured: format!("{} ms", ns.converged.as_millis()),
            budget: "-",
            within: None,
        });
        let flood = chaos_agent::bench::beacon_flood_cost(&binaries.tyd)?;
        println!(
            "bench: beacon flood: {:.0} forged beacons a second",
            flood.sent_per_second
        );
        rows.push(Row {
            what: "drone joins under 10,000 forged beacons/s".into(),
            measured: format!(
                "{} ms after the head starts",
                flood.joined_after.as_millis()
            ),
            budget: "-",
            within: None,
        });
        rows.push(Row {
            what: "drone CPU under the flood, joined".into(),
            measured: format!(
                "{:.1} % of a core ({:.1} % without)",
                flood.drone_cpu_flooded * 100.0,
                flood.drone_cpu_quiet * 100.0
            ),
            budget: "-",
            within: None,
        });
    } else {
        rows.push(Row {
            what: "5-node namespace cluster".into(),
            measured: "not measured: network namespaces need root".into(),
            budget: "-",
            within: None,
        });
    }
    rows.extend(qemu_clusters()?);
    Ok(rows)
}

/// QEMU clusters of a head and 1 to 4 drones on Debian's kernel: the
/// drones' joins, the mesh, all idle in Slurm, and the demonstration job.
fn qemu_clusters() -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for drones in 1..=4 {
        let qemu = crate::cluster::measure(crate::image::KernelChoice::Distribution, drones)?;
        let nodes = drones + 1;
        let mut joins = qemu.joins.clone();
        rows.push(Row {
            what: format!("drone join, {nodes}-node QEMU cluster (TCG)"),
            measured: format!("{} ms (median of {drones})", median(&mut joins).as_millis()),
            budget: "-",
            within: None,
        });
        // DESIGN.md budgets the three-node cluster's mesh, and every
        // cluster's Slurm.
        let budgeted = drones == 2;
        rows.push(Row {
            what: format!("{nodes}-node QEMU cluster converged (TCG)"),
            measured: format!("{} ms", qemu.converged.as_millis()),
            budget: if budgeted { "<= 5 s" } else { "-" },
            within: budgeted.then_some(qemu.converged <= Duration::from_secs(5)),
        });
        rows.push(Row {
            what: format!("{drones} drones idle in Slurm after the last init"),
            measured: format!(
                "{} ms ({:.1} s from the first QEMU start)",
                qemu.idle.as_millis(),
                qemu.idle_from_start.as_secs_f64()
            ),
            budget: "<= 5 s",
            within: Some(qemu.idle <= Duration::from_secs(5)),
        });
        rows.push(Row {
            what: format!("srun -N {drones} hostname (TCG)"),
            measured: format!(
                "{} ms (demonstration ends {:.1} s from the first start)",
                qemu.srun_hostname.as_millis(),
                qemu.demo_from_start.as_secs_f64()
            ),
            budget: "<= 1 s",
            within: Some(qemu.srun_hostname <= Duration::from_secs(1)),
        });
    }
    Ok(rows)
}

/// The head's /home as a drone sees it ([`crate::sharebench`], one QEMU
/// cluster of a head and a drone on `kernel`): the drone's welcome to the
/// share mounted, and 64 MiB read and written on the share beside the
/// same copied over TCP between the two VMs on the overlay (WireGuard
/// both), in the guests' time, with the share's ratio to the copy.
fn share(kernel: &Kernel, binaries: &Binaries) -> anyhow::Result<Vec<Row>> {
    use crate::sharebench::{Transfer, SIZE_MIB};
    let share = crate::sharebench::measure(kernel, binaries).context("the share bench")?;
    let mut mounts = share.mounts.clone();
    let mut rows = vec![Row {
        what: "drone welcome -> /home mounted (NFS, TCG)".into(),
        measured: format!(
            "{} ms (median of {})",
            median(&mut mounts).as_millis(),
            mounts.len()
        ),
        budget: "-",
        within: None,
    }];
    let rate = |t: &Transfer| format!("{:.1} MiB/s, {:.1} s", t.mib_per_s(), t.took.as_secs_f64());
    let against = |t: &Transfer, base: &Transfer, name: &str| {
        format!(
            "{} ({:.2}x {name})",
            rate(t),
            t.mib_per_s() / base.mib_per_s().max(1e-9)
        )
    };
    let overlay = &share.tcp_overlay;
    for (what, transfer) in [
        (
            format!("share read {SIZE_MIB} MiB on a drone (NFS, WireGuard)"),
            &share.read,
        ),
        (
            format!("share write {SIZE_MIB} MiB on a drone (NFS, fsync)"),
            &share.write,
        ),
    ] {
        rows.push(Row {
            what,
            measured: against(transfer, overlay, "TCP copy"),
            budget: "-",
            within: None,
        });
    }
    rows.push(Row {
        what: format!("TCP copy {SIZE_MIB} MiB drone -> head over the overlay"),
        measured: rate(overlay),
        budget: "-",
        within: None,
    });
    Ok(rows)
}

/// The control plane's growth: simulated drones joining a real head all
/// at once (a lab's morning), for each size of [`chaos_agent::bench::CURVE`]:
/// time until all are up, the head's peak memory and processor time; then
/// how both grow from the smallest to the largest size, against linear.
fn control_plane_curve(binaries: &Binaries) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut runs = Vec::new();
    for nodes in chaos_agent::bench::CURVE {
        let scale = chaos_agent::bench::control_plane_scale(&binaries.tyd, nodes)?;
        let rss_mb = scale.head_peak_rss_kib as f64 / 1024.0;
        println!(
            "bench: {nodes} simulated drones joined in {:.1} s, full mesh in {:.1} s; head peak RSS {rss_mb:.1} MB, CPU {:.1} s",
            scale.all_joined.as_secs_f64(),
            scale.full_mesh.as_secs_f64(),
            scale.head_cpu.as_secs_f64()
        );
        let limit = match nodes {
            500 => Some(("<= 10 s", Duration::from_secs(10))),
            5000 => Some(("<= 60 s", Duration::from_secs(60))),
            _ => None,
        };
        rows.push(Row {
            what: format!("{nodes} drones joined, control plane"),
            measured: format!(
                "{:.1} s (head CPU {:.1} s)",
                scale.all_joined.as_secs_f64(),
                scale.head_cpu.as_secs_f64()
            ),
            budget: limit.map_or("-", |(text, _)| text),
            within: limit.map(|(_, limit)| scale.all_joined <= limit),
        });
        rows.push(Row {
            what: format!("head peak RSS with {nodes} drones"),
            measured: format!("{rss_mb:.1} MB"),
            budget: "<= 64 MB",
            within: Some(rss_mb <= 64.0),
        });
        runs.push(scale);
    }
    if let (Some(small), Some(large)) = (runs.first(), runs.last()) {
        // Linear growth takes the figures up by the ratio of the sizes;
        // up to twice that is counted as linear on a noisy machine.
        let sizes = large.nodes as f64 / small.nodes as f64;
        let ratio = |a: f64, b: f64| b / a.max(1e-9);
        let time = ratio(
            small.all_joined.as_secs_f64(),
            large.all_joined.as_secs_f64(),
        );
        let rss = ratio(
            small.head_peak_rss_kib as f64,
            large.head_peak_rss_kib as f64,
        );
        rows.push(Row {
            what: format!(
                "growth {} -> {} drones ({sizes:.0}x)",
                small.nodes, large.nodes
            ),
            measured: format!("time {time:.1}x, head RSS {rss:.1}x"),
            budget: "linear",
            within: Some(time <= 2.0 * sizes && rss <= 2.0 * sizes),
        });
    }
    Ok(rows)
}

/// What `certaintyd check` prints of its timing.
struct Pass {
    best_rate: f64,
    median_ms: f64,
    backend: String,
}

impl Pass {
    /// "... pass best 2.89 ms (576 MB/s), median 3.10 ms of 200; sha256 by SHA-NI"
    fn parse(line: &str) -> anyhow::Result<Pass> {
        let number_after = |key: &str| -> Option<f64> {
            line.split_once(key)?
                .1
                .trim_start()
                .split(|c: char| !(c.is_ascii_digit() || c == '.'))
                .next()?
                .parse()
                .ok()
        };
        let parsed = (|| {
            Some(Pass {
                best_rate: number_after(" ms (")?,
                median_ms: number_after("median ")?,
                backend: line.rsplit_once("sha256 by ")?.1.trim().to_string(),
            })
        })();
        parsed.with_context(|| format!("certaintyd check printed no timing: {line:?}"))
    }
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well_from_bytes_to_megabytes() {
        assert_eq!(readable_size(312), "312 B");
        assert_eq!(readable_size(9_999), "9999 B");
        assert_eq!(readable_size(71_400), "71.4 kB");
        assert_eq!(readable_size(7_430_000), "7.43 MB (7.09 MiB)");
    }

    #[test]
    fn reads_certaintyd_timings() {
        let pass = Pass::parse(
            "verified root against m (sha256:ab): 74 entries, 1.7 MB hashed; \
             pass best 2.89 ms (576 MB/s), median 3.10 ms of 200; sha256 by SHA-NI",
        )
        .unwrap();
        assert_eq!(pass.best_rate, 576.0);
        assert_eq!(pass.median_ms, 3.10);
        assert_eq!(pass.backend, "SHA-NI");
        assert!(Pass::parse("certaintyd: no manifest").is_err());
    }
}
