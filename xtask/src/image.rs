//! `cargo xtask image`: what goes into a chaos node image, composed as an
//! mkimage spec. Tests start from [`base_spec`] and add their own services,
//! so the shipped image and the tested one differ only in what a test adds.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use mkimage::Spec;

use crate::kernel::Kernel;
use crate::node::Binaries;

/// Modules every image loads at boot: the NICs of QEMU and of common lab
/// PCs' emulations (virtio, e1000), and the ACPI power button with the event
/// device it reports through.
pub const BOOT_MODULES: &[&str] = &["virtio_pci", "virtio_net", "e1000", "button", "evdev"];

/// Where PID 1 finds its services.
pub const SERVICES_DIR: &str = "/etc/chaos/services";

/// The image with its boot modules: what `cargo xtask image` ships.
pub fn base_spec(kernel: &Kernel, binaries: &Binaries) -> anyhow::Result<Spec> {
    let mut spec = moduleless_spec(binaries)?;
    mkimage::ModuleTree::open(&kernel.modules)
        .and_then(|tree| tree.closure(BOOT_MODULES))
        .with_context(|| format!("the boot modules of kernel {}", kernel.release))?
        .add_to(&mut spec)?;
    Ok(spec)
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

/// Writes `spec` to `out` through a temporary file, so a failed build never
/// leaves a half-written image where a good one was; returns the size.
pub fn write(spec: &Spec, out: &Path) -> anyhow::Result<u64> {
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
    Ok(std::fs::metadata(out)?.len())
}

pub fn default_path() -> PathBuf {
    crate::build_dir().join("chaos.cpio.gz")
}

/// `cargo xtask image`.
pub fn build(out: &Path) -> anyhow::Result<(Kernel, PathBuf)> {
    let sh = crate::shell()?;
    println!("image: building the node binaries (static musl)");
    let binaries = crate::node::build()?;
    let kernel = crate::kernel::distribution(&sh)?;
    let started = Instant::now();
    let spec = base_spec(&kernel, &binaries)?;
    let size = write(&spec, out)?;
    println!(
        "image: {} ({} entries, {} KiB, kernel {}) in {} ms",
        out.display(),
        spec.iter().count(),
        size / 1024,
        kernel.release,
        started.elapsed().as_millis()
    );
    Ok((kernel, out.to_path_buf()))
}
