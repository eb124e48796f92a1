//! `cargo xtask iso`: build/chaos.iso, a hybrid image that boots as a CD
//! and, written to a USB stick, as a disk, under BIOS (isolinux, with
//! isohdpfx's MBR) and UEFI (GRUB in an El Torito EFI system partition image,
//! also marked as a GPT partition). Built without root or loop mounts:
//! mtools fills the FAT image, xorriso writes the ISO. Same inputs, same
//! bytes: every date is SOURCE_DATE_EPOCH (or 0), every identifier fixed.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use netboot::boot;
use xshell::{cmd, Shell};

/// Debian's syslinux packages: isolinux and its MBR, and the library
/// isolinux loads next to itself.
const ISOLINUX_BIN: &str = "/usr/lib/ISOLINUX/isolinux.bin";
const ISOHYBRID_MBR: &str = "/usr/lib/ISOLINUX/isohdpfx.bin";
const LDLINUX: &str = "/usr/lib/syslinux/modules/bios/ldlinux.c32";
/// GRUB's x86_64-efi modules (grub-efi-amd64-bin).
const GRUB_EFI_MODULES: &str = "/usr/lib/grub/x86_64-efi";

/// What GRUB's EFI image holds: finding the medium, reading its menu over
/// serial and screen, booting Linux.
const GRUB_MODULES: &[&str] = &[
    "part_gpt",
    "part_msdos",
    "iso9660",
    "fat",
    "search",
    "search_fs_file",
    "configfile",
    "normal",
    "linux",
    "echo",
    "cat",
    "read",
    "test",
    "serial",
    "terminal",
    "efi_gop",
    "efi_uga",
    "all_video",
];

/// The menu GRUB reads from the medium, named for chaos so the search does
/// not stop at another system's /boot/grub/grub.cfg on the PC's own disk.
const GRUB_CFG: &str = "/boot/grub/chaos.cfg";
const VOLUME_ID: &str = "CHAOS";
/// The FAT volume serial: fixed, as mkfs would otherwise pick it at random.
const ESP_SERIAL: &str = "0c4a05e1";

pub fn default_path() -> PathBuf {
    crate::build_dir().join("chaos.iso")
}

/// Builds the ISO for `kernel` and `initrd`, booted with `append`, at `out`.
pub fn build(kernel: &Path, initrd: &Path, append: &str, out: &Path) -> anyhow::Result<u64> {
    let sh = crate::shell()?;
    let epoch = crate::mtime()?;
    let staging = crate::partial(&out.with_extension("staging"));
    let _ = std::fs::remove_dir_all(&staging);
    let tree = staging.join("tree");
    for dir in ["isolinux", "boot/grub"] {
        std::fs::create_dir_all(tree.join(dir))?;
    }
    let kernel_path = format!("/boot/{}", boot::KERNEL);
    let initrd_path = format!("/boot/{}", boot::INITRD);
    let options = boot::options_msg(&chaos_contract::cmdline::help());
    for (from, to) in [
        (Path::new(ISOLINUX_BIN), "isolinux/isolinux.bin"),
        (Path::new(LDLINUX), "isolinux/ldlinux.c32"),
        (kernel, &kernel_path[1..]),
        (initrd, &initrd_path[1..]),
    ] {
        crate::pxe::copy(from, &tree.join(to)).with_context(|| {
            format!(
                "{} (packages isolinux, syslinux-common; `cargo xtask deps`)",
                from.display()
            )
        })?;
    }
    for (to, text) in [
        (
            "isolinux/isolinux.cfg",
            boot::isolinux_cfg(&kernel_path, &initrd_path, append),
        ),
        ("isolinux/boot.msg", boot::isolinux_msg()),
        ("isolinux/options.msg", options.clone()),
        ("boot/options.txt", options),
        (
            &GRUB_CFG[1..],
            boot::grub_cfg(&kernel_path, &initrd_path, "/boot/options.txt", append),
        ),
    ] {
        std::fs::write(tree.join(to), text)?;
    }
    let esp = tree.join("boot/efiboot.img");
    efi_system_partition(&sh, &staging, &esp, epoch)?;
    set_mtimes(&tree, epoch)?;

    let partial = crate::partial(out);
    let _ = std::fs::remove_file(&partial);
    // xorriso takes every date, the volume UUID and the GPT GUIDs from
    // SOURCE_DATE_EPOCH; the file dates are the staged mtimes set above.
    cmd!(
        sh,
        "xorriso -report_about WARNING -as mkisofs -o {partial} -V {VOLUME_ID} -r
            -isohybrid-mbr {ISOHYBRID_MBR}
            -c isolinux/boot.cat -b isolinux/isolinux.bin
            -no-emul-boot -boot-load-size 4 -boot-info-table
            -eltorito-alt-boot -e boot/efiboot.img -no-emul-boot -isohybrid-gpt-basdat
            {tree}"
    )
    .env("SOURCE_DATE_EPOCH", epoch.to_string())
    .quiet()
    .run()
    .context("xorriso (package xorriso; `cargo xtask deps`)")?;
    std::fs::rename(&partial, out)?;
    std::fs::remove_dir_all(&staging)?;
    let size = std::fs::metadata(out)?.len();
    println!("iso: {} ({:.1} MiB)", out.display(), size as f64 / MIB);
    Ok(size)
}

const MIB: f64 = 1024.0 * 1024.0;

/// GRUB as EFI/BOOT/BOOTX64.EFI (the removable-media path every UEFI
/// firmware tries) in a FAT image: the El Torito EFI image of the CD, and
/// the ESP of the USB disk.
fn efi_system_partition(sh: &Shell, staging: &Path, esp: &Path, epoch: u64) -> anyhow::Result<()> {
    let early = staging.join("early.cfg");
    std::fs::write(
        &early,
        format!(
            "search --no-floppy --set=root --file {GRUB_CFG}\n\
             set prefix=($root)/boot/grub\n\
             configfile ($root){GRUB_CFG}\n"
        ),
    )?;
    let efi = staging.join("BOOTX64.EFI");
    cmd!(
        sh,
        "grub-mkimage -O x86_64-efi -d {GRUB_EFI_MODULES} -o {efi} -p /boot/grub -c {early} {GRUB_MODULES...}"
    )
    .quiet()
    .run()
    .context("grub-mkimage (packages grub-common, grub-efi-amd64-bin; `cargo xtask deps`)")?;
    set_mtime(&efi, epoch)?;
    // FAT12/16 overhead plus room: clusters, two FATs, the root directory.
    let kib = (std::fs::metadata(&efi)?.len() / 1024 + 256).next_multiple_of(64);
    let kib = kib.to_string();
    cmd!(
        sh,
        "mkfs.vfat -C --invariant -i {ESP_SERIAL} -n CHAOS_EFI {esp} {kib}"
    )
    .quiet()
    .ignore_stdout()
    .run()
    .context("mkfs.vfat (package dosfstools; `cargo xtask deps`)")?;
    let epoch_s = epoch.to_string();
    // mtools stamps new directories with the time (SOURCE_DATE_EPOCH when
    // set) and copies keep the source's mtime with -m.
    cmd!(sh, "mmd -i {esp} ::/EFI ::/EFI/BOOT")
        .env("SOURCE_DATE_EPOCH", &epoch_s)
        .env("MTOOLS_SKIP_CHECK", "1")
        .quiet()
        .run()
        .context("mmd (package mtools; `cargo xtask deps`)")?;
    cmd!(sh, "mcopy -m -i {esp} {efi} ::/EFI/BOOT/BOOTX64.EFI")
        .env("SOURCE_DATE_EPOCH", &epoch_s)
        .env("MTOOLS_SKIP_CHECK", "1")
        .quiet()
        .run()
        .context("mcopy (package mtools)")?;
    Ok(())
}

fn set_mtime(path: &Path, epoch: u64) -> anyhow::Result<()> {
    // Read-only opens work for directories too; the owner may set times.
    std::fs::File::open(path)
        .and_then(|f| f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(epoch)))
        .with_context(|| format!("setting the mtime of {}", path.display()))
}

/// Stamps `dir` and everything below it; directories last, as writing into
/// them moves their mtime.
fn set_mtimes(dir: &Path, epoch: u64) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            set_mtimes(&path, epoch)?;
        } else {
            set_mtime(&path, epoch)?;
        }
    }
    set_mtime(dir, epoch)
}

/// `cargo xtask iso`: the image (a drone of `drones`' cluster, if any),
/// then the ISO; with `appliance`, the drone appliance from it too.
pub fn command(
    choice: crate::image::KernelChoice,
    drones: Option<&crate::cluster::Membership>,
    appliance: bool,
) -> anyhow::Result<()> {
    let (kernel, image) =
        crate::cluster::build_image(&crate::image::default_path(), choice, drones)?;
    let iso = default_path();
    build(&kernel.vmlinuz, &image.path, &image.root_digest_arg(), &iso)?;
    if appliance {
        crate::appliance::build(&iso, &crate::appliance::default_path())?;
    }
    Ok(())
}
