//! The well-known paths of a chaos node, written once for init, tyd,
//! certaintyd, mkimage and xtask. What lies under /etc is the image, built
//! by mkimage and guarded by certaintyd; what lies under /run is written at
//! run time.

/// The image's own files.
pub const ETC: &str = "/etc/chaos";
/// The service table: one file per service, named for it.
pub const SERVICES: &str = "/etc/chaos/services";
/// The image manifest certaintyd verifies the root against.
pub const MANIFEST: &str = "/etc/chaos/manifest";
/// The kernel modules init loads at every boot, whatever the hardware.
pub const MODULE_LIST: &str = "/etc/chaos/modules";
/// The kernel modules init loads once that list is in, in the background:
/// what only a member needs, seconds later (the NFS client or server).
pub const LATE_MODULE_LIST: &str = "/etc/chaos/modules.late";
/// Present once init has loaded the image's own module list (WireGuard,
/// nftables, softdog), or found it has none to load: the services that
/// need them (tyd) name it as their `when =` file, so the boot reaches
/// ready without waiting for modules that only the services use.
pub const MODULES_LOADED: &str = "/run/chaos/modules-loaded";
/// The kernel release the image's modules were taken from.
pub const KERNEL_RELEASE: &str = "/etc/chaos/kernel-release";
/// The cluster identity tyd reads (`tyd init --dir` made it; the image
/// carries the public parts, and the head's key only in the head's image).
pub const IDENTITY: &str = "/etc/chaos/tyd";
/// The image's own accounts (passwd and group lines), which the live
/// files start from.
pub const ACCOUNTS_PASSWD: &str = "/etc/chaos/passwd";
pub const ACCOUNTS_GROUP: &str = "/etc/chaos/group";
/// The cluster agent in every image; started only by an image made a
/// cluster member, whose service table names it.
pub const TYD: &str = "/sbin/tyd";

/// Everything chaos writes at run time.
pub const RUN: &str = "/run/chaos";
/// The DHCP lease, `key=value` lines (see init's `dhcp::lease`).
pub const LEASE: &str = "/run/chaos/lease";
/// certaintyd's heartbeat, which PID 1 reads.
pub const CERTAINTYD_STATUS: &str = "/run/chaos/certaintyd.status";
/// A maintenance window of certaintyd's, while one is open.
pub const CERTAINTYD_PAUSE: &str = "/run/chaos/certaintyd.pause";
/// The PATH of services and of the console's shell: the image's own
/// programs, the build host's (Slurm's tools in /usr/bin), busybox's.
pub const SEARCH_PATH: &str = "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// tyd's control socket, which the status verbs talk to.
pub const TYD_SOCKET: &str = "/run/chaos/tyd.sock";
/// tyd's per-boot state (the node's key, made in RAM).
pub const TYD_STATE: &str = "/run/chaos/tyd";
/// Present while this node is a member of a cluster: tyd writes it once
/// the node has joined (and what Slurm needs is in place) and removes it
/// when the node leaves; its `KEY=VALUE` lines (see [`crate::member`])
/// are the environment of the services that run only while the node is a
/// member.
pub const JOINED: &str = "/run/chaos/joined";
/// The live files the image's /etc links to: written by init's hosts phase
/// (and `fix_hosts`), the accounts by init from the image's own and then by
/// tyd with the cluster's.
pub const HOSTNAME: &str = "/run/chaos/hostname";
pub const HOSTS: &str = "/run/chaos/hosts";
pub const RESOLV_CONF: &str = "/run/chaos/resolv.conf";
pub const PASSWD: &str = "/run/chaos/passwd";
pub const GROUP: &str = "/run/chaos/group";
/// The files in /etc that are links to the live files init's hosts phase
/// writes under /run/chaos, as (link, target).
pub const HOST_LINKS: &[(&str, &str)] = &[
    ("/etc/hostname", HOSTNAME),
    ("/etc/hosts", HOSTS),
    ("/etc/resolv.conf", RESOLV_CONF),
];
/// The munge key tyd receives from the head (RAM only, owner munge, 0400).
pub const MUNGE_KEY: &str = "/run/chaos/munge/munge.key";
