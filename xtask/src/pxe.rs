//! `cargo xtask pxe`: the PXE tree in build/pxe. TFTP carries only iPXE's
//! first stages (Debian's ipxe package, BIOS and UEFI x86-64); the boot
//! script, kernel and initramfs go over HTTP from `netboot serve`. The tree
//! is flat, which is all the HTTP server will serve.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use netboot::boot::{ARGS, BIOS_FIRST_STAGE, INITRD, KERNEL, SCRIPT, UEFI_FIRST_STAGE};
use xshell::cmd;

use crate::vm::{Config, Firmware};

/// Where Debian's ipxe package installs its first stages.
const IPXE_DIR: &str = "/usr/lib/ipxe";

pub fn default_dir() -> PathBuf {
    crate::build_dir().join("pxe")
}

/// Writes the tree for `kernel` and `initrd`, booted with `append`, to
/// `out`, replacing it whole.
pub fn build(kernel: &Path, initrd: &Path, append: &str, out: &Path) -> anyhow::Result<()> {
    let partial = crate::partial(out);
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial)?;
    let ipxe = Path::new(IPXE_DIR);
    for (from, name) in [
        (ipxe.join(BIOS_FIRST_STAGE), BIOS_FIRST_STAGE),
        // ipxe.efi is a link into /boot there; copy what it points at.
        (ipxe.join(UEFI_FIRST_STAGE), UEFI_FIRST_STAGE),
        (kernel.to_path_buf(), KERNEL),
        (initrd.to_path_buf(), INITRD),
    ] {
        copy(&from, &partial.join(name)).with_context(|| {
            if from.starts_with(IPXE_DIR) {
                format!("{} (package ipxe; `cargo xtask deps`)", from.display())
            } else {
                from.display().to_string()
            }
        })?;
    }
    // Relative URLs: iPXE resolves them against wherever the script came
    // from. `netboot serve` answers with an absolute copy of its own.
    std::fs::write(partial.join(SCRIPT), netboot::boot::ipxe_script("", append))?;
    std::fs::write(partial.join(ARGS), format!("{append}\n"))?;
    let _ = std::fs::remove_dir_all(out);
    std::fs::rename(&partial, out)?;
    println!(
        "pxe: {} ({})",
        out.display(),
        sizes(out)?
            .iter()
            .map(|(name, size)| format!("{name} {:.2} MiB", *size as f64 / (1024.0 * 1024.0)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// Copies a file readable by everyone: dnsmasq reads the TFTP tree after
/// dropping its privileges.
pub fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o644))?;
    Ok(())
}

/// Sizes of the tree's files, by name.
pub fn sizes(dir: &Path) -> anyhow::Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    for name in [BIOS_FIRST_STAGE, UEFI_FIRST_STAGE, SCRIPT, KERNEL, INITRD] {
        let size = std::fs::metadata(dir.join(name))
            .with_context(|| format!("{}/{name}", dir.display()))?
            .len();
        out.push((name.to_string(), size));
    }
    Ok(out)
}

/// PXE on QEMU's user network, served from a PXE tree: the user network's
/// TFTP hands the NIC's boot ROM a boot script, which fetches kernel and
/// initramfs over HTTP from netboot's server on the host's loopback.
/// QEMU's virtio-net ROM is iPXE for both firmwares: SeaBIOS runs its
/// BIOS part, and OVMF loads its EFI driver, which then boots the same
/// way. The server runs until the process ends.
pub struct UserNet {
    /// The user network's TFTP directory, holding the script.
    pub tftp: PathBuf,
    /// The tree's URL as the guest reaches the HTTP server.
    pub base: String,
    /// The HTTP server's log, one line per request.
    pub downloads: Arc<Mutex<Vec<String>>>,
}

impl UserNet {
    /// Serves `tree` (from [`build`]) over HTTP on a free loopback port and
    /// writes the script, with the tree's kernel arguments `append`, to
    /// `tree`/tftp, where HTTP (flat names only) never serves it.
    pub fn serve(tree: &Path, append: &str) -> anyhow::Result<UserNet> {
        let listener = netboot::http::bind((std::net::Ipv4Addr::LOCALHOST, 0).into())?;
        let port = listener.local_addr()?.port();
        // 10.0.2.2 is the host as the user network's guests see it.
        let base = format!("http://10.0.2.2:{port}/");
        let script = netboot::boot::ipxe_script(&base, append);
        let tftp = tree.join("tftp");
        std::fs::create_dir_all(&tftp)?;
        std::fs::write(tftp.join(SCRIPT), script)?;
        let downloads: Arc<Mutex<Vec<String>>> = Arc::default();
        let site = netboot::http::Site {
            root: tree.to_path_buf(),
            rendered: Default::default(),
        };
        let log = downloads.clone();
        std::thread::spawn(move || {
            netboot::http::serve(listener, site, move |line| {
                log.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(line.to_string());
            })
        });
        Ok(UserNet {
            tftp,
            base,
            downloads,
        })
    }

    /// A PC with `firmware` that boots from its virtio NIC (and the NIC's
    /// iPXE ROM) on the user network, whose DHCP names `bootfile` in
    /// [`Self::tftp`] (the script is netboot's [`SCRIPT`]).
    pub fn config(&self, firmware: Firmware, bootfile: &str) -> Config {
        let netdev = format!(
            "user,id=n0,tftp={},bootfile={bootfile}",
            self.tftp.display()
        );
        network_boot(firmware, &netdev, "virtio-net-pci,netdev=n0")
    }
}

/// UEFI PXE on QEMU's user network: OVMF's own PXE client loads the unified
/// kernel image `uki` (from [`crate::uki::build`]) over TFTP. The user
/// network's DHCP cannot tell iPXE from the firmware, so chaining ipxe.efi
/// here would load ipxe.efi for ever; that path needs `netboot serve`.
pub fn uefi_user_net(uki: &Path) -> anyhow::Result<Config> {
    let (Some(dir), Some(name)) = (uki.parent(), uki.file_name()) else {
        anyhow::bail!(
            "{}: expected the path of a unified kernel image",
            uki.display()
        );
    };
    let netdev = format!(
        "user,id=n0,tftp={},bootfile={}",
        dir.display(),
        name.to_string_lossy()
    );
    // romfile= leaves the NIC to OVMF's own virtio-net driver and PXE client.
    Ok(network_boot(
        Firmware::Uefi,
        &netdev,
        "virtio-net-pci,netdev=n0,romfile=",
    ))
}

/// A PC whose `firmware` boots from its one NIC, `device` on the QEMU
/// backend `netdev` (whose id is n0).
pub fn network_boot(firmware: Firmware, netdev: &str, device: &str) -> Config {
    Config::firmware(
        firmware,
        &["-netdev", netdev, "-device", device, "-boot", "n"],
    )
}

/// A UEFI PC set to boot over HTTP, as PC firmware setups offer: OVMF
/// with its PXE clients switched off (through its fw_cfg switches), so it
/// asks DHCP for a URL (UEFI HTTP Boot) rather than a TFTP file name.
pub fn uefi_http_boot(netdev: &str, device: &str) -> Config {
    let mut config = network_boot(Firmware::Uefi, netdev, device);
    for family in ["IPv4", "IPv6"] {
        config.qemu_args.extend([
            "-fw_cfg".to_string(),
            format!("name=opt/org.tianocore/{family}PXESupport,string=n"),
        ]);
    }
    config
}

/// The `netboot` program, built for this host in a target directory of its
/// own (so building it from inside `cargo test` never waits on cargo's lock).
pub fn netboot_binary() -> anyhow::Result<PathBuf> {
    let sh = crate::shell()?;
    let target_dir = crate::build_dir().join("host-target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    cmd!(
        sh,
        "{cargo} build --quiet --release --locked --target-dir {target_dir} -p netboot"
    )
    .run()
    .context("building netboot")?;
    Ok(target_dir.join("release/netboot"))
}

/// `cargo xtask pxe`: the image (a drone of `drones`' cluster, if any), then the PXE tree and the unified kernel
/// image (the single-file UEFI artifact, also bootable over PXE).
pub fn command(
    choice: crate::image::KernelChoice,
    drones: Option<&crate::cluster::Membership>,
) -> anyhow::Result<()> {
    let (kernel, image) =
        crate::cluster::build_image(&crate::image::default_path(), choice, drones)?;
    let append = image.root_digest_arg();
    build(&kernel.vmlinuz, &image.path, &append, &default_dir())?;
    crate::uki::build(
        &kernel.vmlinuz,
        &image.path,
        &append,
        &crate::uki::default_path(),
    )?;
    Ok(())
}

/// `cargo xtask netboot ARGS...`: the `netboot` program with ARGS, run from
/// the workspace so its default tree is build/pxe.
pub fn netboot(args: &[String]) -> anyhow::Result<()> {
    let program = netboot_binary()?;
    let status = std::process::Command::new(&program)
        .args(args)
        .current_dir(crate::root())
        .status()
        .with_context(|| format!("running {}", program.display()))?;
    anyhow::ensure!(
        status.success(),
        "netboot {} failed ({status})",
        args.join(" ")
    );
    Ok(())
}
