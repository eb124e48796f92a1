//! `cargo xtask image`: what goes into a chaos node image, composed as an
//! mkimage spec. Tests start from [`base_spec`] and add their own services,
//! so the shipped image and the tested one differ only in what a test adds:
//! the operator's userland the tests' scripts use is the shipped one.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use chaos_contract::paths::{SERVICES, TYD};
use chaos_contract::power::{signal_for, Power};
use chaos_contract::service::Table;
use chaos_contract::service::{Restart, Service};
use mkimage::manifest::{self, Digest};
use mkimage::{Content, Kind, MemberCache, Spec, WriteStats};

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
/// adapters are left out to keep the image small, and so is b44 (the
/// BCM4401 of mid-2000s laptops): it needs the SSB bus, which needs the
/// MMC and PCMCIA cores, a megabyte of modules for one chip. `@ethernet`
/// adds every wired Ethernet driver of the kernel.
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

/// Debian's static busybox (package busybox-static) on the build host:
/// the operator's shell and tools in every image.
pub const BUSYBOX: &str = "/bin/busybox";

/// The busybox applets linked into /bin: a shell, file and text tools, the
/// system's (processes, mounts, the kernel log) and the network's, as an
/// operator reaches for them at the node's console (CHAOS's and clump/os's
/// expert mode), which test services use as well; separated by blanks.
/// Left out: near-twins of these (egrep, more, md5sum, ping6, telnet...),
/// whose entries the base image's budget does without; su, which Slurm's
/// images, the only ones with users, leave to util-linux's setpriv (their
/// busybox, linked against their glibc, has none); what would fight
/// PID 1 or its network code (init, getty, udhcpc, modprobe); and
/// `reboot`/`halt`, whose signals mean power-off and reboot to busybox's
/// init but the opposite to ours (see [`add_userland`]).
pub const APPLETS: &str = "\
    sh [ test echo printf true false sleep env cat cp mv rm ln ls mkdir rmdir chmod chown dd \
    touch find grep sed awk head tail less vi wc sort uniq cut tr tee xargs pwd basename \
    dirname readlink stat du df sha256sum hexdump xxd strings diff tar gzip gunzip zcat expr \
    seq timeout which clear stty hostname uname uptime date free ps top kill killall pidof \
    dmesg mount umount sync sysctl lsmod id watch poweroff ip ifconfig route arp netstat ping \
    traceroute nc wget nslookup httpd";

/// Where the image carries CHAOS's `fix_hosts`: init under another name,
/// which runs its hosts phase by hand.
pub const FIX_HOSTS: &str = "/sbin/fix_hosts";

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
    add_modules_loading(spec, kernel, BOOT_MODULES, nics)
}

/// When init loads a module of [`load_too`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loading {
    /// With the image's list, before the services start.
    AtBoot,
    /// In the background once the node is up
    /// ([`chaos_contract::paths::LATE_MODULE_LIST`]).
    Later,
}

/// The modules [`base_spec`] put in `spec` again, with `extra` as well:
/// what a cluster image's role needs besides (the NFS server before tyd
/// serves, the NFS client only after the join). Nothing for a kernel with
/// every driver built in.
pub fn load_too(
    spec: &mut Spec,
    kernel: &Kernel,
    extra: &[&str],
    when: Loading,
) -> anyhow::Result<()> {
    if kernel.modules.is_none() {
        return Ok(());
    }
    spec.remove(&format!("/lib/modules/{}", kernel.release))?;
    spec.remove(chaos_contract::paths::MODULE_LIST)?;
    spec.remove(chaos_contract::paths::KERNEL_RELEASE)?;
    if when == Loading::AtBoot {
        let boot: Vec<&str> = BOOT_MODULES.iter().chain(extra).copied().collect();
        return add_modules_loading(spec, kernel, &boot, LAB_NICS);
    }
    // In the image as probe modules: nothing on a bus wants them.
    let probe: Vec<&str> = LAB_NICS.iter().chain(extra).copied().collect();
    add_modules_loading(spec, kernel, BOOT_MODULES, &probe)?;
    let list: String = extra.iter().map(|name| format!("{name}\n")).collect();
    spec.file(chaos_contract::paths::LATE_MODULE_LIST, 0o644, list)?;
    Ok(())
}

fn add_modules_loading(
    spec: &mut Spec,
    kernel: &Kernel,
    boot: &[&str],
    probe_too: &[&str],
) -> anyhow::Result<()> {
    let Some(modules) = &kernel.modules else {
        // Recorded all the same, so init refuses to boot this image on a
        // kernel that would need modules it does not have.
        spec.file(
            chaos_contract::paths::KERNEL_RELEASE,
            0o644,
            format!("{}\n", kernel.release),
        )?;
        return Ok(());
    };
    let probe: Vec<&str> = PROBE_MODULES.iter().chain(probe_too).copied().collect();
    mkimage::ModuleTree::open_shared(modules)
        .and_then(|tree| tree.image(boot, &probe))
        .with_context(|| format!("the modules of kernel {}", kernel.release))?
        .add_to(spec)?;
    Ok(())
}

/// The service file of a program the image ships, restarted whenever it
/// ends (PID 1's backoff applies).
pub fn add_service(spec: &mut Spec, service: &Service) -> anyhow::Result<()> {
    spec.file(
        &format!("{SERVICES}/{}", service.name),
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
        ("/var", 0o755),
        ("/root", 0o700),
        ("/home", 0o755),
        ("/srv", 0o755),
        (chaos_contract::paths::SERVICES, 0o755),
    ] {
        spec.dir(dir, mode)?;
    }
    // The kernel opens /dev/console for PID 1 before devtmpfs is mounted.
    spec.char_dev("/dev/console", 0o600, 5, 1)?;
    spec.file_from("/init", 0o755, &binaries.init)?;
    spec.dir("/sbin", 0o755)?;
    // init under another name (see chaos_init::certainty::command).
    spec.symlink("/sbin/certaintyd", "/init")?;
    add_service(&mut spec, &Service::new("certaintyd", "/sbin/certaintyd"))?;
    // Started only by an image that is made a cluster member (`cluster::add`).
    spec.file_from(TYD, 0o755, &binaries.tyd)?;
    add_service(&mut spec, &screen_service())?;
    spec.symlink(FIX_HOSTS, "/init")?;
    add_userland(&mut spec)?;
    // Written at boot by fix_hosts; kept in /run so the root stays as built.
    for (link, target) in chaos_contract::paths::HOST_LINKS {
        spec.symlink(link, *target)?;
    }
    Ok(spec)
}

/// The cluster screen on the node's console (`tyd screen --console`): in
/// normal and safe mode; in expert mode it leaves the console to the shell
/// and ends, which `on-failure` does not restart.
fn screen_service() -> Service {
    let mut screen = Service::new("screen", TYD);
    screen.args = vec!["screen".into(), "--console".into()];
    screen.restart = Restart::OnFailure;
    screen
}

/// Busybox at /bin with its [`APPLETS`], each checked against the applets
/// this busybox has, and `reboot` as a script: busybox's own would send
/// PID 1 the signal that means power-off to chaos's init.
pub fn add_userland(spec: &mut Spec) -> anyhow::Result<()> {
    check_applets(Path::new(BUSYBOX), "busybox-static: `cargo xtask deps`")?;
    spec.dir("/bin", 0o755)?;
    spec.file_from(BUSYBOX, 0o755, BUSYBOX)?;
    for applet in APPLETS.split_whitespace() {
        spec.symlink(&format!("/bin/{applet}"), "busybox")?;
    }
    spec.file(
        "/bin/reboot",
        0o755,
        format!(
            "#!/bin/sh\n# The signal that asks PID 1 to reboot.\nexec kill -{} 1\n",
            signal_for(Power::Reboot)
        ),
    )?;
    Ok(())
}

/// Fails unless the busybox at `busybox` has every one of [`APPLETS`];
/// `package` says where it comes from.
pub fn check_applets(busybox: &Path, package: &str) -> anyhow::Result<()> {
    let listed = std::process::Command::new(busybox)
        .arg("--list")
        .output()
        .with_context(|| format!("running {} --list ({package})", busybox.display()))?;
    let have = String::from_utf8_lossy(&listed.stdout);
    let have: std::collections::BTreeSet<&str> = have.lines().collect();
    if let Some(missing) = APPLETS.split_whitespace().find(|a| !have.contains(a)) {
        bail!(
            "{} has no applet {missing:?}: expected Debian's ({package})",
            busybox.display()
        );
    }
    Ok(())
}

/// What [`write`] made.
#[derive(Clone, Debug)]
pub struct Written {
    pub path: PathBuf,
    pub size: u64,
    /// The manifest's digest, for `chaos.root_digest=`.
    pub digest: Digest,
    pub entries: usize,
    /// How many members the image has and how many this build compressed.
    pub stats: WriteStats,
}

impl Written {
    /// The kernel argument that pins this image's manifest.
    pub fn root_digest_arg(&self) -> String {
        format!("chaos.root_digest={}", self.digest)
    }
}

/// Where builds keep compressed image members between runs, so a build
/// compresses only what changed (shared by every image: shipped, tests,
/// bench).
pub fn cache_dir() -> PathBuf {
    crate::build_dir().join("mkimage-cache")
}

/// The image's service table as init will read it at boot; an error
/// naming each file and line init would leave out.
pub fn check_services(spec: &Spec) -> anyhow::Result<()> {
    // Archive names have no leading '/'.
    let prefix = format!("{}/", SERVICES.trim_start_matches('/'));
    let files = spec
        .iter()
        .filter_map(|(path, entry)| {
            let name = path.strip_prefix(&prefix)?;
            let text = match &entry.kind {
                Kind::File(Content::Bytes(bytes)) => {
                    String::from_utf8(bytes.clone()).map_err(|_| "not UTF-8 text".to_string())
                }
                Kind::File(Content::Host(host)) => std::fs::read_to_string(host)
                    .map_err(|e| format!("reading {}: {e}", host.display())),
                other => Err(format!("a {}, not a file", other.file_type().name())),
            };
            Some((name.to_string(), text))
        })
        .collect();
    let problems: Vec<String> = Table::read(files)
        .problems
        .iter()
        .map(|p| p.to_string())
        .collect();
    if !problems.is_empty() {
        bail!(
            "the service table has what init would leave out at boot:\n  {}",
            problems.join("\n  ")
        );
    }
    Ok(())
}

/// Writes `spec` with its manifest (made last, so it covers everything a
/// caller added) to `out` through a temporary file, so a failed build never
/// leaves a half-written image where a good one was; members come from
/// and go to [`cache_dir`]. A service table that init would not run whole
/// is refused ([`check_services`]).
pub fn write(spec: &Spec, out: &Path) -> anyhow::Result<Written> {
    write_with(spec, out, Some(&MemberCache::open(cache_dir())?))
}

/// [`write`] with the member cache of the caller's choice, or none.
pub fn write_with(spec: &Spec, out: &Path, cache: Option<&MemberCache>) -> anyhow::Result<Written> {
    check_services(spec)?;
    write_unchecked(spec, out, cache)
}

/// [`write`] without the service table's check: for the tests of how init
/// boots with a broken one.
pub fn write_as_is(spec: &Spec, out: &Path) -> anyhow::Result<Written> {
    write_unchecked(spec, out, Some(&MemberCache::open(cache_dir())?))
}

fn write_unchecked(
    spec: &Spec,
    out: &Path,
    cache: Option<&MemberCache>,
) -> anyhow::Result<Written> {
    let mut spec = spec.clone();
    // A derived spec may carry its base's manifest: replace it.
    spec.remove(chaos_contract::paths::MANIFEST)?;
    let digest = manifest::embed(&mut spec)
        .context("writing the image manifest")?
        .digest();
    let partial = crate::partial(out);
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::File::create(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let (file, stats) = spec
        .write_with(std::io::BufWriter::new(file), crate::mtime()?, cache)
        .with_context(|| format!("writing {}", out.display()))?;
    file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&partial, out)?;
    Ok(Written {
        path: out.to_path_buf(),
        size: std::fs::metadata(out)?.len(),
        digest,
        entries: spec.iter().count(),
        stats,
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
    build_with(out, choice, |_, _| Ok(()))
}

/// [`build`], with `extra` added to the image before it is written
/// (`cargo xtask image --cluster` makes it a member).
pub fn build_with(
    out: &Path,
    choice: KernelChoice,
    extra: impl FnOnce(&mut Spec, &Kernel) -> anyhow::Result<()>,
) -> anyhow::Result<(Kernel, Written)> {
    let sh = crate::shell()?;
    println!("image: building the node binaries (static musl)");
    let binaries = crate::node::build()?;
    let kernel = choice.get(&sh)?;
    let started = Instant::now();
    let mut spec = base_spec(&kernel, &binaries)?;
    extra(&mut spec, &kernel)?;
    let written = write(&spec, out)?;
    println!(
        "image: {} ({} entries, {} KiB, kernel {}) in {} ms; {} of {} members compressed, the rest from {}",
        out.display(),
        written.entries,
        written.size / 1024,
        kernel.release,
        started.elapsed().as_millis(),
        written.stats.compressed,
        written.stats.members,
        cache_dir().display()
    );
    println!(
        "image: manifest {}; pin it with {}",
        written.digest,
        written.root_digest_arg()
    );
    Ok((kernel, written))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_init_would_not_run_whole_is_refused_naming_file_and_line() {
        let mut spec = Spec::new();
        add_service(&mut spec, &Service::new("certaintyd", "/sbin/certaintyd")).unwrap();
        check_services(&spec).unwrap();
        let mut orphan = Service::new("orphan", "/bin/true");
        orphan.after = vec!["ghost".into()];
        add_service(&mut spec, &orphan).unwrap();
        spec.file(
            &format!("{SERVICES}/typo"),
            0o644,
            "exec = /x\ncolour = red\n",
        )
        .unwrap();
        let error = check_services(&spec).unwrap_err().to_string();
        assert_eq!(
            error,
            "the service table has what init would leave out at boot:\n  \
             /etc/chaos/services/orphan: line 3: starts after ghost, which is not in the service table\n  \
             /etc/chaos/services/typo: line 2: unknown key \"colour\" (expected exec, arg, env, restart, after, user, dir, when)"
        );
    }
}
