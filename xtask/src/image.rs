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

/// Modules every image loads at boot: the NICs of QEMU and of common lab
/// PCs' emulations (virtio, e1000), and the ACPI power button with the event
/// device it reports through.
pub const BOOT_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_net",
    "e1000",
    "button",
    "evdev",
    "i6300esb",
    "softdog",
];

/// Where PID 1 finds its services.
pub const SERVICES_DIR: &str = "/etc/chaos/services";

/// The image with its boot modules: what `cargo xtask image` ships.
pub fn base_spec(kernel: &Kernel, binaries: &Binaries) -> anyhow::Result<Spec> {
    let mut spec = moduleless_spec(binaries)?;
    add_modules(&mut spec, kernel)?;
    Ok(spec)
}

/// The kernel's boot modules and their dependencies; nothing for a kernel
/// with every driver built in.
fn add_modules(spec: &mut Spec, kernel: &Kernel) -> anyhow::Result<()> {
    let Some(modules) = &kernel.modules else {
        return Ok(());
    };
    mkimage::ModuleTree::open(modules)
        .and_then(|tree| tree.closure(BOOT_MODULES))
        .with_context(|| format!("the boot modules of kernel {}", kernel.release))?
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
    let sh = crate::shell()?;
    println!("image: building the node binaries (static musl)");
    let binaries = crate::node::build()?;
    let kernel = choice.get(&sh)?;
    let started = Instant::now();
    let written = write(&base_spec(&kernel, &binaries)?, out)?;
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
