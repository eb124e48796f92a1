//! `cargo xtask image`: what goes into a chaos node image, composed as an
//! mkimage spec. Tests start from [`base_spec`] and add their own services,
//! so the shipped image and the tested one differ only in what a test adds.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use chaos_init::service::Service;
use mkimage::manifest::{self, Digest, MANIFEST_PATH};
use mkimage::Spec;

use crate::kernel::Kernel;
use crate::node::Binaries;

/// Modules every image loads at every boot, whatever the hardware: the
/// image has no modprobe for the kernel to call on demand, so WireGuard and
/// the firewall's nftables expressions are loaded up front; softdog is the
/// watchdog PID 1 arms only when the board has no timer of its own.
pub const BOOT_MODULES: &[&str] = &[
    "wireguard",
    "nf_tables",
    "nft_ct",
    "nft_limit",
    "nft_reject_inet",
    "nft_fib_inet",
    "nft_log",
    "softdog",
];

/// Modules loaded only when a device matches one of their aliases
/// (coldplug): QEMU's virtio NICs, the ACPI power button and the event
/// device it reports through, board watchdogs (QEMU's i6300esb, Intel's
/// TCO behind lpc_ich, AMD's sp5100), and [`LAB_NICS`].
pub const PROBE_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_net",
    "button",
    "evdev",
    "i6300esb",
    "lpc_ich",
    "iTCO_wdt",
    "sp5100_tco",
];

/// The lab NIC class: the wired Ethernet families found in ordinary PCs of
/// the last twenty-five years (Intel, Realtek, Broadcom, Atheros, Marvell,
/// nVidia, VIA, SiS, 3Com, DEC, AMD, National, NE2000 clones). Data-centre
/// adapters are left out to keep the image small; `@ethernet` adds every
/// wired Ethernet driver of the kernel.
pub const LAB_NICS: &[&str] = &[
    "e100",
    "e1000",
    "e1000e",
    "igb",
    "igc",
    "r8169",
    "8139too",
    "8139cp",
    "tg3",
    "bnx2",
    "b44",
    "atl1",
    "atl1e",
    "atl1c",
    "alx",
    "sky2",
    "skge",
    "forcedeth",
    "via-rhine",
    "via-velocity",
    "sis900",
    "sis190",
    "3c59x",
    "tulip",
    "pcnet32",
    "natsemi",
    "ne2k-pci",
    "r6040",
    "dl2k",
    "sundance",
    "jme",
];

/// Where PID 1 finds its services.
pub const SERVICES_DIR: &str = "/etc/chaos/services";

/// The image with its boot modules: what `cargo xtask image` ships.
pub fn base_spec(kernel: &Kernel, binaries: &Binaries) -> anyhow::Result<Spec> {
    let mut spec = moduleless_spec(binaries)?;
    add_modules(&mut spec, kernel, LAB_NICS)?;
    Ok(spec)
}

/// The kernel's modules: [`BOOT_MODULES`], loaded at every boot, and
/// [`PROBE_MODULES`] with `nics`, loaded when a device needs them; each with
/// its dependencies. Nothing for a kernel with every driver built in.
pub fn add_modules(spec: &mut Spec, kernel: &Kernel, nics: &[&str]) -> anyhow::Result<()> {
    let Some(modules) = &kernel.modules else {
        // Recorded all the same, so init refuses to boot this image on a
        // kernel that would need modules it does not have.
        spec.file(
            mkimage::modules::KERNEL_RELEASE,
            0o644,
            format!("{}\n", kernel.release),
        )?;
        return Ok(());
    };
    let probe: Vec<&str> = PROBE_MODULES.iter().chain(nics).copied().collect();
    mkimage::ModuleTree::open(modules)
        .and_then(|tree| tree.image(BOOT_MODULES, &probe))
        .with_context(|| format!("the modules of kernel {}", kernel.release))?
        .add_to(spec)?;
    Ok(())
}

/// The service file of a program the image ships, restarted whenever it
/// ends (PID 1's backoff applies).
pub fn add_service(spec: &mut Spec, service: &Service) -> anyhow::Result<()> {
    spec.file(
        &format!("{SERVICES_DIR}/{}", service.name),
        0o644,
        service.render()?,
    )?;
    Ok(())
}

/// Everything but the kernel modules; the bench's "base initramfs".
pub fn moduleless_spec(binaries: &Binaries) -> anyhow::Result<Spec> {
    let mut spec = Spec::new();
    for (dir, mode) in [
        ("/dev", 0o755),
        ("/proc", 0o555),
        ("/sys", 0o555),
        ("/run", 0o755),
        ("/tmp", 0o1777),
        ("/root", 0o700),
        (SERVICES_DIR, 0o755),
    ] {
        spec.dir(dir, mode)?;
    }
    // The kernel opens /dev/console for PID 1 before devtmpfs is mounted.
    spec.char_dev("/dev/console", 0o600, 5, 1)?;
    spec.file_from("/init", 0o755, &binaries.init)?;
    spec.dir("/sbin", 0o755)?;
    spec.file_from("/sbin/certaintyd", 0o755, &binaries.certaintyd)?;
    add_service(&mut spec, &Service::new("certaintyd", "/sbin/certaintyd"))?;
    // Started only by an image that is made a cluster member (`cluster::add`).
    spec.file_from(crate::cluster::TYD, 0o755, &binaries.tyd)?;
    // Written at boot by fix_hosts; kept in /run so the root stays as built.
    for name in ["hostname", "hosts", "resolv.conf"] {
        spec.symlink(&format!("/etc/{name}"), format!("/run/chaos/{name}"))?;
    }
    Ok(spec)
}

/// SOURCE_DATE_EPOCH when set (reproducible builds' convention), else 0.
pub fn mtime() -> anyhow::Result<u64> {
    Ok(mkimage::source_date_epoch(std::env::var_os(
        "SOURCE_DATE_EPOCH",
    ))?)
}

/// What [`write`] made.
#[derive(Clone, Debug)]
pub struct Written {
    pub path: PathBuf,
    pub size: u64,
    /// The manifest's digest, for `chaos.root_digest=`.
    pub digest: Digest,
    pub entries: usize,
}

impl Written {
    /// The kernel argument that pins this image's manifest.
    pub fn root_digest_arg(&self) -> String {
        format!("chaos.root_digest={}", self.digest)
    }
}

/// Writes `spec` with its manifest (made last, so it covers everything a
/// caller added) to `out` through a temporary file, so a failed build never
/// leaves a half-written image where a good one was.
pub fn write(spec: &Spec, out: &Path) -> anyhow::Result<Written> {
    let mut spec = spec.clone();
    // A derived spec may carry its base's manifest: replace it.
    spec.remove(MANIFEST_PATH)?;
    let digest = manifest::embed(&mut spec)
        .context("writing the image manifest")?
        .digest();
    let partial = crate::partial(out);
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::File::create(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let file = spec
        .write(std::io::BufWriter::new(file), mtime()?)
        .with_context(|| format!("writing {}", out.display()))?;
    file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&partial, out)?;
    Ok(Written {
        path: out.to_path_buf(),
        size: std::fs::metadata(out)?.len(),
        digest,
        entries: spec.iter().count(),
    })
}

pub fn default_path() -> PathBuf {
    crate::build_dir().join("chaos.cpio.gz")
}

/// Which kernel an image is built for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KernelChoice {
    /// Debian's packaged kernel with its modules (the default).
    #[default]
    Distribution,
    /// The compact module-free kernel of `cargo xtask kernel --custom`.
    Custom,
}

impl KernelChoice {
    pub fn get(self, sh: &xshell::Shell) -> anyhow::Result<Kernel> {
        match self {
            KernelChoice::Distribution => crate::kernel::distribution(sh),
            KernelChoice::Custom => crate::custom_kernel::build(sh, None),
        }
    }
}

/// `cargo xtask image`: the shipped image for `choice`'s kernel.
pub fn build(out: &Path, choice: KernelChoice) -> anyhow::Result<(Kernel, Written)> {
    build_for(out, choice, None)
}

/// [`build`], made a member of `cluster` (`cargo xtask image --cluster`).
pub fn build_for(
    out: &Path,
    choice: KernelChoice,
    cluster: Option<&crate::cluster::Membership>,
) -> anyhow::Result<(Kernel, Written)> {
    let sh = crate::shell()?;
    println!("image: building the node binaries (static musl)");
    let binaries = crate::node::build()?;
    let kernel = choice.get(&sh)?;
    let started = Instant::now();
    let mut spec = base_spec(&kernel, &binaries)?;
    if let Some(membership) = cluster {
        crate::cluster::add(&mut spec, membership)?;
    }
    let written = write(&spec, out)?;
    println!(
        "image: {} ({} entries, {} KiB, kernel {}) in {} ms",
        out.display(),
        written.entries,
        written.size / 1024,
        kernel.release,
        started.elapsed().as_millis()
    );
    println!(
        "image: manifest {}; pin it with {}",
        written.digest,
        written.root_digest_arg()
    );
    Ok((kernel, written))
}
