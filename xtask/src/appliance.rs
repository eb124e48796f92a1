//! build/chaos-drone.qcow2: the hybrid ISO as a qcow2 disk, the VM
//! appliance a Windows or Mac workstation runs as a drone around the clock
//! (QEMU, VirtualBox, UTM and libvirt all import qcow2). It boots the
//! ISO's default entry under BIOS or UEFI and keeps nothing on the disk.

use std::path::{Path, PathBuf};

use anyhow::Context;
use xshell::cmd;

pub fn default_path() -> PathBuf {
    crate::build_dir().join("chaos-drone.qcow2")
}

pub fn build(iso: &Path, out: &Path) -> anyhow::Result<u64> {
    let sh = crate::shell()?;
    let partial = crate::partial(out);
    cmd!(sh, "qemu-img convert -f raw -O qcow2 {iso} {partial}")
        .quiet()
        .run()
        .context("qemu-img (package qemu-utils; `cargo xtask deps`)")?;
    std::fs::rename(&partial, out)?;
    let size = std::fs::metadata(out)?.len();
    println!(
        "appliance: {} ({:.1} MiB)",
        out.display(),
        size as f64 / (1024.0 * 1024.0)
    );
    Ok(size)
}
