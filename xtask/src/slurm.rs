//! Slurm in the images: the programs of the build host's Debian packages
//! with their shared-library closure ([`mkimage::payload`]), the plugins
//! the daemons and tools load ([`chaos_agent::slurm::plugins`]), and the
//! accounts they run as. Two profiles: a drone runs slurmd and munged (and
//! a batch script's srun and sbcast); the head (a head that runs as a VM)
//! adds slurmctld, the other client tools and the NFS server.
//!
//! What the image must not carry is not here: the configuration is the
//! head's to write and the munge key is delivered by tyd at run time.
//! Whatever Slurm and munge write lives in [`RUNTIME_DIRS`], on the
//! writable mounts, never on the root certaintyd guards.

use std::path::PathBuf;

use anyhow::Context;
use chaos_contract::service::{Dir, Restart, Service};
use chaos_contract::{member, paths};
use mkimage::{Accounts, AccountsError, Payload, Spec, User};

use crate::image::Loading;
use crate::kernel::Kernel;

/// Where Debian's Slurm keeps libslurmfull.so and its plugins.
pub const PLUGIN_DIR: &str = "/usr/lib/x86_64-linux-gnu/slurm-wlm";
/// The Debian package of [`PLUGIN_DIR`]'s files.
const PLUGIN_PACKAGE: &str = "slurm-wlm-basic-plugins";

/// Where glibc finds the unwinder it loads at run time.
const LIBGCC_S: &str = "/lib/x86_64-linux-gnu/libgcc_s.so.1";

/// The D-Bus library cgroup/v2 links; see [`dbus_stand_in`].
const LIBDBUS: &str = "/lib/x86_64-linux-gnu/libdbus-1.so.3";
const DBUS_STAND_IN: (&str, &str) = (
    include_str!("dbus-stand-in.c"),
    include_str!("dbus-stand-in.map"),
);
const DBUS_CC_FLAGS: &[&str] = &[
    "-shared",
    "-fPIC",
    "-O2",
    "-nostdlib",
    "-fno-stack-protector",
    "-Wl,-soname,libdbus-1.so.3",
    "-Wl,--build-id=none",
];

/// Debian's busybox linked against glibc, which a Slurm image carries;
/// unpacked into build/ because the host's busybox-static conflicts with
/// its package.
const SHARED_BUSYBOX: &str = "busybox";

/// The shared busybox, unpacked on first use and checked for every
/// applet the image links. Its version is the installed busybox-static's
/// (one source package makes both), so every image build need not ask
/// apt, which takes a second.
fn shared_busybox() -> anyhow::Result<PathBuf> {
    let sh = crate::shell()?;
    let version = crate::debian::installed_version(&sh, "busybox-static")?;
    let busybox =
        crate::debian::unpacked(&sh, SHARED_BUSYBOX, &version, |_| Ok(()))?.join("bin/busybox");
    crate::image::check_applets(
        &busybox,
        &format!("Debian package {SHARED_BUSYBOX} {version}, unpacked into build/debian"),
    )?;
    Ok(busybox)
}

/// The library that stands in for libdbus on a node (the source says
/// why), built with the host's C compiler once and kept under
/// build/dbus-stand-in/ by a hash of its source and flags.
pub fn dbus_stand_in() -> anyhow::Result<PathBuf> {
    let mut hash = chaos_kernel_config::fragments::Fnv::default();
    for part in [DBUS_STAND_IN.0, DBUS_STAND_IN.1]
        .into_iter()
        .chain(DBUS_CC_FLAGS.iter().copied())
    {
        hash.write(part.as_bytes());
        hash.write(&[0]);
    }
    let dir = crate::build_dir().join("dbus-stand-in");
    let out = dir.join(format!("libdbus-1.so.3-{:016x}", hash.0));
    if out.exists() {
        return Ok(out);
    }
    // Tests build images side by side: each builder works in its own
    // directory and the first rename wins.
    let work = dir.join(format!(
        "partial-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let source = work.join("dbus-stand-in.c");
    let map = work.join("dbus-stand-in.map");
    std::fs::write(&source, DBUS_STAND_IN.0)?;
    std::fs::write(&map, DBUS_STAND_IN.1)?;
    let partial = work.join("libdbus-1.so.3");
    let status = std::process::Command::new("cc")
        .args(DBUS_CC_FLAGS)
        .arg(format!("-Wl,--version-script={}", map.display()))
        .arg("-o")
        .arg(&partial)
        .arg(&source)
        .status()
        .context(
            "running cc to build the D-Bus stand-in of the Slurm image \
             (Debian package build-essential; `cargo xtask deps` installs it)",
        )?;
    anyhow::ensure!(
        status.success(),
        "cc {} failed ({status}) building {}",
        DBUS_CC_FLAGS.join(" "),
        out.display()
    );
    std::fs::rename(&partial, &out)?;
    std::fs::remove_dir_all(&work)?;
    Ok(out)
}

/// Debian's fixed ids for Slurm's account (base-passwd), the same on every
/// Debian head, so files a head shares keep their owner.
pub const SLURM_ID: u32 = 64030;
/// munge's account. Debian picks a dynamic id per host; an image fixes
/// one. munged's id never leaves the node (credentials carry the client's
/// uid), so it need not match the head's.
pub const MUNGE_ID: u32 = 101;
pub const NOBODY_ID: u32 = 65534;

/// glibc reads this at run time to know where names come from. Without it
/// glibc asks DNS first for host names (`dns [!UNAVAIL=return] files`), so
/// a name the lab's DNS does not know never reaches /etc/hosts, and an
/// unreachable DNS server stalls every lookup. Its `files` and `dns`
/// sources are built into libc.so.6 since glibc 2.34.
pub const NSSWITCH: (&str, &str) = (
    "/etc/nsswitch.conf",
    "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nservices: files\n",
);

/// Which image a part belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// A compute node: slurmd, slurmstepd, munged.
    Drone,
    /// A head VM: the drone's parts, slurmctld and the client tools.
    Head,
}

/// A program in the image, the Debian package it comes from, and the
/// profile that needs it (the head has the drone's too).
struct Program {
    path: &'static str,
    package: &'static str,
    profile: Profile,
}

const fn program(path: &'static str, package: &'static str, profile: Profile) -> Program {
    Program {
        path,
        package,
        profile,
    }
}

const PROGRAMS: &[Program] = &[
    program("/usr/sbin/slurmd", "slurmd", Profile::Drone),
    // slurmd runs it by its compiled-in path: no ELF file names it.
    program("/usr/sbin/slurmstepd", "slurmd", Profile::Drone),
    program("/usr/sbin/munged", "munge", Profile::Drone),
    // Runs a command as one of the cluster's users, which only Slurm's
    // images have (`setpriv --reuid=alice --regid=alice --init-groups`):
    // the shared busybox has no su.
    program("/usr/bin/setpriv", "util-linux", Profile::Drone),
    // A batch script runs on a drone: it starts its steps with srun and
    // copies a program to its other nodes with sbcast.
    program("/usr/bin/srun", "slurm-client", Profile::Drone),
    program("/usr/bin/sbcast", "slurm-client", Profile::Drone),
    program("/usr/sbin/slurmctld", "slurmctld", Profile::Head),
    program("/usr/bin/sbatch", "slurm-client", Profile::Head),
    program("/usr/bin/squeue", "slurm-client", Profile::Head),
    program("/usr/bin/sinfo", "slurm-client", Profile::Head),
    program("/usr/bin/scontrol", "slurm-client", Profile::Head),
    program("/usr/bin/scancel", "slurm-client", Profile::Head),
    // For checking the key by hand: `munge -n | unmunge`.
    program("/usr/bin/munge", "munge", Profile::Head),
    program("/usr/bin/unmunge", "munge", Profile::Head),
    // The kernel NFS server's tools: the head shares its users' homes.
    program("/usr/sbin/exportfs", "nfs-kernel-server", Profile::Head),
    program("/usr/sbin/rpc.nfsd", "nfs-kernel-server", Profile::Head),
    program("/usr/sbin/rpc.mountd", "nfs-kernel-server", Profile::Head),
];

/// A directory Slurm or munge writes to at run time: made on a RAM mount
/// (/run, /var) before its service starts, with this owner and mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuntimeDir {
    pub path: &'static str,
    /// The owning user, whose primary group owns it too.
    pub owner: &'static str,
    pub mode: u32,
    /// The service that writes there.
    pub service: &'static str,
    pub profile: Profile,
}

const fn runtime_dir(
    path: &'static str,
    owner: &'static str,
    mode: u32,
    service: &'static str,
    profile: Profile,
) -> RuntimeDir {
    RuntimeDir {
        path,
        owner,
        mode,
        service,
        profile,
    }
}

pub const RUNTIME_DIRS: &[RuntimeDir] = &[
    // munged's socket and pid file; clients must be able to reach the
    // socket, and munged refuses a directory others may write to.
    runtime_dir("/run/munge", "munge", 0o755, MUNGED, Profile::Drone),
    // munged's PRNG seed and its log, private to it.
    runtime_dir("/var/lib/munge", "munge", 0o700, MUNGED, Profile::Drone),
    runtime_dir("/var/log/munge", "munge", 0o700, MUNGED, Profile::Drone),
    runtime_dir(
        chaos_agent::slurm::SLURMD_SPOOL,
        "root",
        0o755,
        SLURMD,
        Profile::Drone,
    ),
    // slurmctld's StateSaveLocation in a head VM; slurmctld runs as slurm.
    runtime_dir(HEAD_STATE_DIR, "slurm", 0o755, SLURMCTLD, Profile::Head),
    // exportfs's and rpc.mountd's export table (etab) and state, and the
    // kernel server's record of its clients, made before it starts.
    runtime_dir(NFS_STATE_DIR, "root", 0o755, NFSD, Profile::Head),
    runtime_dir(NFS_RECOVERY_DIR, "root", 0o700, NFSD, Profile::Head),
];

/// The services' names.
pub const MUNGED: &str = "munged";
pub const SLURMD: &str = "slurmd";
pub const SLURMCTLD: &str = "slurmctld";
pub const NFSD: &str = "nfsd";
pub const MOUNTD: &str = "mountd";
/// Where nfs-utils keeps its state (its compiled-in path).
const NFS_STATE_DIR: &str = "/var/lib/nfs";
const NFS_RECOVERY_DIR: &str = "/var/lib/nfs/v4recovery";
/// Where a head VM's tyd writes its exports file, and where exportfs
/// finds it (the root is the image's).
pub const HEAD_EXPORTS: &str = "/run/chaos/exports";
const EXPORTS_LINK: &str = "/etc/exports.d/chaos.exports";
/// NFS version 4 alone: one port, nothing for rpcbind to map. (rpc.nfsd
/// of nfs-utils 2.6 knows no version 2 any more; rpc.mountd still does.)
const NFSD_V4_ONLY: [&str; 2] = ["-N", "3"];
const MOUNTD_V4_ONLY: [&str; 4] = ["-N", "2", "-N", "3"];
/// Where a head VM's tyd writes slurm.conf (the root is the image's).
pub const HEAD_CONF_DIR: &str = "/run/chaos/slurm";
/// slurmd 22.05 on cgroup v2 without systemd puts itself under this.
const SYSTEM_SLICE: &str = "/sys/fs/cgroup/system.slice";

/// slurmctld's state directory in a head VM.
pub const HEAD_STATE_DIR: &str = "/var/lib/slurm/slurmctld";

impl Profile {
    fn includes(self, part: Profile) -> bool {
        self == Profile::Head || part == Profile::Drone
    }

    /// The runtime directories of this profile.
    pub fn runtime_dirs(self) -> impl Iterator<Item = &'static RuntimeDir> {
        RUNTIME_DIRS
            .iter()
            .filter(move |d| self.includes(d.profile))
    }

    /// The kernel modules this profile needs beside the image's own, and
    /// when: the NFS server before the head's tyd serves; the NFS client
    /// only after a drone's join (its mount tries again until the client
    /// is there), so it does not hold up the boot.
    pub fn nfs_modules(self) -> (&'static [&'static str], Loading) {
        match self {
            Profile::Drone => (&["nfsv4"], Loading::Later),
            Profile::Head => (&["nfsd"], Loading::AtBoot),
        }
    }

    /// The paths of this profile's programs.
    pub fn programs(self) -> impl Iterator<Item = &'static str> {
        self.parts().map(|p| p.path)
    }

    fn parts(self) -> impl Iterator<Item = &'static Program> {
        PROGRAMS.iter().filter(move |p| self.includes(p.profile))
    }
}

/// The drone's Slurm: slurmd, slurmstepd, munged, the plugins, accounts.
pub fn add_drone(spec: &mut Spec) -> anyhow::Result<()> {
    add(spec, Profile::Drone)
}

/// The head VM's Slurm: the drone's, slurmctld and the client tools.
pub fn add_head(spec: &mut Spec) -> anyhow::Result<()> {
    add(spec, Profile::Head)
}

/// What a cluster node of `profile` carries for its jobs: its NFS modules
/// ([`Profile::nfs_modules`]), then [`add`]'s payload, in that order.
pub fn add_to_node(spec: &mut Spec, kernel: &Kernel, profile: Profile) -> anyhow::Result<()> {
    let (modules, when) = profile.nfs_modules();
    crate::image::load_too(spec, kernel, modules, when)?;
    add(spec, profile)
}

/// Adds `profile`'s programs with their closures, the plugins,
/// /etc/nsswitch.conf and the accounts ([`mkimage::accounts`]) to `spec`.
/// Call it after the kernel modules are in the spec: merged /usr's `/lib
/// -> usr/lib` then goes one level down, beside `/lib/modules`.
pub fn add(spec: &mut Spec, profile: Profile) -> anyhow::Result<()> {
    let mut payload = Payload::from_host().context("reading the build host's loader setup")?;
    payload
        .stand_in(LIBDBUS, &dbus_stand_in()?)
        .with_context(|| format!("{LIBDBUS} (Debian package libdbus-1-3)"))?;
    for program in profile.parts() {
        payload.binary(program.path).with_context(|| {
            format!(
                "Slurm {profile:?} image: {} (Debian package {}; `cargo xtask deps` installs it)",
                program.path, program.package
            )
        })?;
    }
    for plugin in chaos_agent::slurm::plugins() {
        let file = plugin_file(plugin);
        payload.binary(&file).with_context(|| {
            format!(
                "Slurm {profile:?} image: plugin {plugin} (Debian package {PLUGIN_PACKAGE}; \
                 `cargo xtask deps` installs it)"
            )
        })?;
    }
    // glibc is in the image now: the busybox linked against it replaces
    // the static one, which carries a second copy (0.5 MB compressed).
    payload
        .stand_in(crate::image::BUSYBOX, &shared_busybox()?)
        .and_then(|p| p.binary(crate::image::BUSYBOX))
        .context("the shared busybox")?;
    // glibc loads it by name when a thread is cancelled or exits, as
    // munged's and slurmctld's do at shutdown (without it they abort);
    // no ELF file names it.
    payload
        .binary(LIBGCC_S)
        .context("libgcc_s.so.1 (Debian package libgcc-s1)")?;
    // The payload's /bin/busybox is a link into merged /usr.
    spec.remove(crate::image::BUSYBOX)?;
    payload.add_to(spec)?;
    if profile == Profile::Head {
        // Slurm's tools look for their configuration here; the head's tyd
        // writes it at run time.
        spec.symlink("/etc/slurm", HEAD_CONF_DIR)?;
        // exportfs reads /etc/exports (none of the image's own) and
        // /etc/exports.d, where tyd's file is.
        spec.file("/etc/exports", 0o644, "")?;
        spec.dir("/etc/exports.d", 0o755)?;
        spec.symlink(EXPORTS_LINK, HEAD_EXPORTS)?;
    }
    spec.file(NSSWITCH.0, 0o644, NSSWITCH.1)?;
    accounts()?.add_to(spec)?;
    Ok(())
}

/// The services that run Slurm on `profile`'s node, each only while the
/// node is a member (tyd's joined file, which says where the head is and
/// what the node is called): munged, then slurmd on a drone or slurmctld
/// on the head. The tyd service they start after is the cluster's
/// ([`crate::cluster::add`]).
pub fn services(profile: Profile) -> Vec<Service> {
    let joined = || Some(PathBuf::from(paths::JOINED));
    let dirs = |service: &str| -> Vec<Dir> {
        profile
            .runtime_dirs()
            .filter(|d| d.service == service)
            .map(|d| Dir {
                path: d.path.into(),
                mode: d.mode,
                owner: d.owner.into(),
                group: None,
            })
            .collect()
    };
    let mut munged = Service::new(MUNGED, "/usr/sbin/munged");
    munged.args = ["--foreground", &format!("--key-file={}", paths::MUNGE_KEY)]
        .map(String::from)
        .to_vec();
    munged.user = Some("munge".into());
    munged.dirs = dirs(MUNGED);
    munged.when = joined();
    munged.after = vec!["tyd".into()];
    let mut daemon = match profile {
        Profile::Drone => {
            let mut slurmd = Service::new(SLURMD, "/usr/sbin/slurmd");
            slurmd.args = [
                "-D",
                "-Z",
                "--conf-server",
                &format!("${{{}}}", member::HEAD),
                "-N",
                &format!("${{{}}}", member::NAME),
            ]
            .map(String::from)
            .to_vec();
            slurmd.dirs = dirs(SLURMD);
            slurmd.dirs.push(Dir {
                path: SYSTEM_SLICE.into(),
                mode: 0o755,
                owner: "root".into(),
                group: None,
            });
            slurmd
        }
        Profile::Head => {
            let mut slurmctld = Service::new(SLURMCTLD, "/usr/sbin/slurmctld");
            slurmctld.args = ["-D", "-f", &format!("{HEAD_CONF_DIR}/slurm.conf")]
                .map(String::from)
                .to_vec();
            slurmctld.dirs = dirs(SLURMCTLD);
            slurmctld
        }
    };
    daemon.when = joined();
    daemon.after = vec![MUNGED.into()];
    let mut services = vec![munged, daemon];
    if profile == Profile::Head {
        services.extend(nfs_server(joined(), dirs(NFSD)));
    }
    services
}

/// The head VM's NFS server, started once tyd has put the exports in
/// place (the joined file): rpc.nfsd, which starts the kernel's server
/// threads and ends, and rpc.mountd, which answers the kernel's questions
/// about the export table.
fn nfs_server(joined: Option<PathBuf>, dirs: Vec<Dir>) -> [Service; 2] {
    let mut nfsd = Service::new(NFSD, "/usr/sbin/rpc.nfsd");
    nfsd.dirs = dirs;
    // A grace period of 10 s (the least the kernel takes, against 90):
    // a head VM starts with no clients to reclaim state, and members
    // wait out the grace period before they open a file.
    // The port by number: the image has no /etc/services to look "nfs"
    // up in.
    let port = chaos_contract::share::NFS_PORT.to_string();
    nfsd.args = NFSD_V4_ONLY
        .into_iter()
        .chain(["--port", &port, "--grace-time", "10", "8"])
        .map(String::from)
        .collect();
    nfsd.restart = Restart::Never;
    nfsd.when = joined.clone();
    nfsd.after = vec!["tyd".into()];
    let mut mountd = Service::new(MOUNTD, "/usr/sbin/rpc.mountd");
    mountd.args = ["--foreground"]
        .into_iter()
        .chain(MOUNTD_V4_ONLY)
        .map(String::from)
        .collect();
    mountd.when = joined;
    mountd.after = vec![NFSD.into()];
    [nfsd, mountd]
}

/// The file of a plugin named `type/name`.
pub fn plugin_file(plugin: &str) -> String {
    format!("{PLUGIN_DIR}/{}.so", plugin.replace('/', "_"))
}

/// The accounts of either profile's image: root, Slurm's, munge's and
/// nobody. The head adds none of its own: its users are the cluster's,
/// which are not the image's to fix.
pub fn accounts() -> Result<Accounts, AccountsError> {
    let mut accounts = Accounts::new();
    accounts
        .group("root", 0)?
        .group("slurm", SLURM_ID)?
        .group("munge", MUNGE_ID)?
        .group("nogroup", NOBODY_ID)?;
    accounts
        .user(User::root())?
        .user(User::system("slurm", SLURM_ID, SLURM_ID))?
        .user(User::system("munge", MUNGE_ID, MUNGE_ID))?
        .user(User::system("nobody", NOBODY_ID, NOBODY_ID))?;
    Ok(accounts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_package_named_is_installed_by_deps() {
        let packages: Vec<&str> = crate::deps::PACKAGES.iter().map(|(p, _)| *p).collect();
        for package in PROGRAMS.iter().map(|p| p.package) {
            assert!(packages.contains(&package), "{package} not in deps");
        }
    }

    /// The dynamic symbols `nm` lists for `file` with `flag`.
    fn symbols(file: &std::path::Path, flag: &str) -> Vec<String> {
        let out = std::process::Command::new("nm")
            .args(["-D", flag])
            .arg(file)
            .output()
            .unwrap();
        assert!(out.status.success(), "nm {}", file.display());
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_whitespace().last().map(String::from))
            .collect()
    }

    /// The stand-in offers, at its version, every D-Bus symbol the host's
    /// cgroup/v2 plugin takes, and needs no library: a Debian update that
    /// makes the plugin use one more function fails here, not on a node.
    #[test]
    fn the_dbus_stand_in_has_what_cgroup_v2_takes_and_needs_nothing() {
        let stand_in = dbus_stand_in().unwrap();
        let offered = symbols(&stand_in, "--defined-only");
        let taken: Vec<String> = symbols(
            std::path::Path::new(&plugin_file("cgroup/v2")),
            "--undefined-only",
        )
        .into_iter()
        .filter(|s| s.contains("@LIBDBUS_1_3"))
        .collect();
        assert!(!taken.is_empty(), "cgroup/v2 takes nothing from D-Bus");
        for symbol in &taken {
            let name = symbol.replace("@LIBDBUS_1_3", "@@LIBDBUS_1_3");
            assert!(offered.contains(&name), "{symbol} missing: {offered:?}");
        }
        let elf = mkimage::elf::Elf::parse(&std::fs::read(&stand_in).unwrap()).unwrap();
        assert_eq!(elf.soname.as_deref(), Some("libdbus-1.so.3"));
        assert!(elf.needed.is_empty(), "{:?}", elf.needed);
    }

    #[test]
    fn the_head_has_the_drones_parts_and_more() {
        let drone: Vec<_> = Profile::Drone.runtime_dirs().collect();
        let head: Vec<_> = Profile::Head.runtime_dirs().collect();
        assert!(drone.iter().all(|d| head.contains(d)));
        assert!(head.iter().any(|d| d.path == HEAD_STATE_DIR));
        assert!(!drone.iter().any(|d| d.path == HEAD_STATE_DIR));
        // Every owner is an account of the image.
        let accounts = accounts().unwrap();
        for dir in RUNTIME_DIRS {
            assert!(accounts.uid(dir.owner).is_some(), "{}", dir.owner);
            assert!(
                dir.path.starts_with("/run/") || dir.path.starts_with("/var/"),
                "{} is not on a RAM mount",
                dir.path
            );
        }
    }

    #[test]
    fn plugin_files_are_named_as_slurm_names_them() {
        assert_eq!(
            plugin_file("select/cons_tres"),
            "/usr/lib/x86_64-linux-gnu/slurm-wlm/select_cons_tres.so"
        );
    }

    /// The build host has Slurm (`cargo xtask deps`), so the profiles build
    /// from it: every program, plugin and library found.
    #[test]
    fn the_profiles_build_from_the_host() {
        for profile in [Profile::Drone, Profile::Head] {
            let mut spec = Spec::new();
            add(&mut spec, profile).unwrap_or_else(|e| panic!("{profile:?}: {e:#}"));
            for path in [
                "/usr/sbin/slurmd",
                "/usr/sbin/slurmstepd",
                "/usr/sbin/munged",
                &format!("{PLUGIN_DIR}/libslurmfull.so"),
                &plugin_file("auth/munge"),
                // Where merged /usr's /lib leads.
                "/usr/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/etc/passwd",
            ] {
                assert!(spec.get(path).is_some(), "{profile:?}: {path} missing");
            }
            assert_eq!(
                spec.get("/usr/sbin/slurmctld").is_some(),
                profile == Profile::Head
            );
            // The stand-in, not the real D-Bus with what it brings.
            assert!(spec
                .get("/usr/lib/x86_64-linux-gnu/libdbus-1.so.3")
                .is_some());
            assert!(
                !spec.iter().any(|(path, _)| path.contains("libsystemd")),
                "{profile:?}: libsystemd is in"
            );
            // Same host, same spec: sorted, every entry owned by root.
            let mut again = Spec::new();
            add(&mut again, profile).unwrap();
            assert!(spec.iter().eq(again.iter()), "{profile:?} differs");
            assert!(spec.iter().all(|(_, e)| (e.uid, e.gid) == (0, 0)));
        }
    }
}
