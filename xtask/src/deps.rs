//! `cargo xtask deps`: the host packages and Rust target chaos needs, each
//! with the reason, installed when missing. Nothing else installs software,
//! so a clean Debian or Ubuntu machine only needs this command.

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

use crate::node::NODE_TARGET;

/// Debian packages and why chaos needs each one.
pub const PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86", "boots chaos nodes under QEMU"),
    ("kmod", "depmod indexes the unpacked kernel's modules"),
    ("cpio", "tests check that GNU cpio reads the images"),
    (
        "busybox-static",
        "the operator's shell and tools in every image without Slurm",
    ),
    ("iproute2", "tests make network namespaces and taps"),
    ("iputils-ping", "tests ping nodes from a test namespace"),
    ("linux-source-6.1", "the source of the custom kernel"),
    (
        "build-essential",
        "gcc, g++, make, libc headers: custom kernel, libFuzzer",
    ),
    ("flex", "custom kernel: generates Kconfig's lexer"),
    ("bison", "custom kernel: generates Kconfig's parser"),
    ("bc", "custom kernel: computes timer constants"),
    ("libelf-dev", "custom kernel: objtool reads ELF objects"),
    ("xz-utils", "unpacks linux-source, compresses bzImage"),
    ("dnsmasq-base", "tests: a DHCP server in a namespace"),
    ("initramfs-tools-core", "compare: mkinitramfs"),
    // Not `dracut`: on Debian it conflicts with initramfs-tools.
    ("dracut-core", "compare: dracut"),
    (
        "ipxe",
        "PXE first stages: undionly.kpxe (BIOS), ipxe.efi (UEFI)",
    ),
    ("isolinux", "the ISO's BIOS boot loader and hybrid MBR"),
    ("syslinux-common", "ldlinux.c32, which isolinux loads"),
    ("grub-common", "grub-mkimage: the ISO's UEFI boot loader"),
    ("grub-efi-amd64-bin", "GRUB's x86_64-efi modules"),
    ("xorriso", "writes the hybrid ISO"),
    (
        "mtools",
        "fills the ISO's EFI system partition image without mounting",
    ),
    ("dosfstools", "mkfs.vfat: the EFI system partition image"),
    (
        "systemd-boot-efi",
        "the EFI stub of the unified kernel image",
    ),
    ("binutils", "objcopy assembles the unified kernel image"),
    ("qemu-utils", "qemu-img: the drone appliance's qcow2"),
    ("ovmf", "UEFI firmware for QEMU: UEFI boot tests"),
    // The images copy Slurm and munge from these (xtask/src/slurm.rs).
    (
        "slurmd",
        "the drones' slurmd, slurmstepd and Slurm's plugins",
    ),
    ("slurmctld", "the head image's slurmctld"),
    (
        "slurm-client",
        "srun, sbatch, squeue, sinfo, scontrol, scancel",
    ),
    ("munge", "munged and munge/unmunge: Slurm's authentication"),
    (
        "systemd",
        "systemd-analyze: tests check the head's unit as systemd reads it",
    ),
    (
        "util-linux",
        "setpriv: Slurm images run commands as the cluster's users",
    ),
    (
        "nfs-kernel-server",
        "rpc.nfsd, rpc.mountd, exportfs: the head shares its users' homes",
    ),
];

pub fn missing_packages(sh: &Shell) -> Vec<&'static str> {
    PACKAGES
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| {
            let format = "${Status}";
            let status = cmd!(sh, "dpkg-query -W --showformat {format} {name}")
                .quiet()
                .ignore_stderr()
                .read()
                .unwrap_or_default();
            !status.ends_with("install ok installed")
        })
        .collect()
}

/// Installs what is missing, saying what and why.
pub fn install(sh: &Shell) -> anyhow::Result<()> {
    let missing = missing_packages(sh);
    if missing.is_empty() {
        println!("deps: all {} Debian packages present", PACKAGES.len());
        return rust_target(sh);
    }
    for (name, why) in PACKAGES.iter().filter(|(n, _)| missing.contains(n)) {
        println!("deps: installing {name} ({why})");
    }
    if !sh.path_exists("/usr/bin/apt-get") {
        bail!(
            "apt-get not found: chaos's scripts expect Debian or Ubuntu; install {} by hand",
            missing.join(" ")
        );
    }
    println!("deps: apt-get update");
    apt_get(sh, &["update", "-q"]).context("apt-get update")?;
    apt_install(sh, &missing)?;
    // apt removes an installed package that conflicts with the ones asked
    // for: a qemu-utils from outside the release, say, that the release's
    // qemu-system-x86 breaks. The release's own version goes back in.
    let removed = missing_packages(sh);
    if !removed.is_empty() {
        println!(
            "deps: apt removed {} to install the others; installing the release's version",
            removed.join(" ")
        );
        apt_install(sh, &removed)?;
        let still = missing_packages(sh);
        if !still.is_empty() {
            bail!(
                "apt-get installed but did not keep {}: see apt's output above",
                still.join(" ")
            );
        }
    }
    rust_target(sh)
}

fn apt_install(sh: &Shell, packages: &[&str]) -> anyhow::Result<()> {
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(packages);
    apt_get(sh, &args).context("installing Debian packages")
}

/// apt-get as root, or through sudo.
fn apt_get(sh: &Shell, args: &[&str]) -> anyhow::Result<()> {
    let (apt, sudo_args): (&str, &[&str]) = if is_root() {
        ("apt-get", &[])
    } else {
        ("sudo", &["apt-get"])
    };
    cmd!(sh, "{apt} {sudo_args...} {args...}")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()?;
    Ok(())
}

/// The node binaries are static musl executables.
fn rust_target(sh: &Shell) -> anyhow::Result<()> {
    let installed = cmd!(sh, "rustup target list --installed")
        .quiet()
        .read()
        .unwrap_or_default();
    if installed.lines().any(|t| t.trim() == NODE_TARGET) {
        println!("deps: Rust target {NODE_TARGET} present");
        return Ok(());
    }
    println!("deps: adding Rust target {NODE_TARGET} (the node binaries are static musl)");
    cmd!(sh, "rustup target add {NODE_TARGET}")
        .run()
        .with_context(|| format!("rustup target add {NODE_TARGET}"))
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
