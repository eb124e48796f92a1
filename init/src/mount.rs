//! The early mounts as a table, applied by one idempotent function: an entry
//! already mounted (by the kernel, or by an earlier run after an exec) is
//! left alone. It owns nothing but these API filesystems; it never mounts or
//! touches disks, because a chaos node does not use them.

use std::io;
use std::path::Path;

use nix::mount::MsFlags;

use crate::sys::System;

#[derive(Debug)]
pub struct Mount {
    pub source: &'static str,
    pub target: &'static str,
    pub fstype: &'static str,
    pub flags: MsFlags,
    pub data: &'static str,
}

const SAFE: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);
const SAFE_NOEXEC: MsFlags = SAFE.union(MsFlags::MS_NOEXEC);

/// In mount order: a target must come after the mount that holds it.
/// cgroup2 alone at /sys/fs/cgroup because slurmd refuses a hybrid v1/v2 tree.
pub const MOUNTS: &[Mount] = &[
    Mount {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: SAFE_NOEXEC,
        data: "",
    },
    Mount {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: SAFE_NOEXEC,
        data: "",
    },
    Mount {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MsFlags::MS_NOSUID,
        data: "mode=0755",
    },
    Mount {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: SAFE_NOEXEC,
        data: "mode=0620,ptmxmode=0666",
    },
    Mount {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: SAFE,
        data: "mode=0755",
    },
    Mount {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
        flags: SAFE,
        data: "mode=1777",
    },
    // What services keep at run time (Slurm's spool, munge's seed, logs):
    // writable, and outside the root certaintyd guards.
    Mount {
        source: "tmpfs",
        target: "/var",
        fstype: "tmpfs",
        flags: SAFE,
        data: "mode=0755",
    },
    // root's home: a job submitted from it runs there on a drone and
    // writes its output there, which on the guarded root would be a
    // violation.
    Mount {
        source: "tmpfs",
        target: "/root",
        fstype: "tmpfs",
        flags: SAFE,
        data: "mode=0700",
    },
    // The places for users' files (chaos_contract::share::PLACES): on a
    // head VM what it shares, on a drone what the shares are mounted on.
    Mount {
        source: "tmpfs",
        target: "/home",
        fstype: "tmpfs",
        flags: SAFE,
        data: "mode=0755",
    },
    Mount {
        source: "tmpfs",
        target: "/srv",
        fstype: "tmpfs",
        flags: SAFE,
        data: "mode=0755",
    },
    Mount {
        source: "cgroup2",
        target: "/sys/fs/cgroup",
        fstype: "cgroup2",
        flags: SAFE_NOEXEC,
        data: "",
    },
];

/// Mounts every entry of `table` that is not mounted yet; returns how many it
/// mounted. The first failure stops it with the entry named, since a later
/// entry may live on the one that failed.
pub fn apply(sys: &dyn System, table: &[Mount]) -> anyhow::Result<usize> {
    let mut mounted = 0;
    for m in table {
        let target = Path::new(m.target);
        sys.create_dir_all(target, 0o755)
            .map_err(|e| describe(m, "creating the mount point", e))?;
        if sys
            .is_mountpoint(target)
            .map_err(|e| describe(m, "checking", e))?
        {
            continue;
        }
        sys.mount(m.source, target, m.fstype, m.flags, m.data)
            .map_err(|e| describe(m, "mounting", e))?;
        mounted += 1;
    }
    Ok(mounted)
}

fn describe(m: &Mount, doing: &str, e: io::Error) -> anyhow::Error {
    anyhow::anyhow!("{doing} {} ({}): {e}", m.target, m.fstype)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::double::Recorder;

    #[test]
    fn mounts_the_whole_table_in_order() {
        let sys = Recorder::default();
        assert_eq!(apply(&sys, MOUNTS).unwrap(), MOUNTS.len());
        let mounts: Vec<String> = sys
            .calls
            .borrow()
            .iter()
            .filter(|c| c.starts_with("mount "))
            .cloned()
            .collect();
        assert_eq!(
            mounts,
            [
                "mount proc /proc proc ",
                "mount sysfs /sys sysfs ",
                "mount devtmpfs /dev devtmpfs mode=0755",
                "mount devpts /dev/pts devpts mode=0620,ptmxmode=0666",
                "mount tmpfs /run tmpfs mode=0755",
                "mount tmpfs /tmp tmpfs mode=1777",
                "mount tmpfs /var tmpfs mode=0755",
                "mount tmpfs /root tmpfs mode=0700",
                "mount tmpfs /home tmpfs mode=0755",
                "mount tmpfs /srv tmpfs mode=0755",
                "mount cgroup2 /sys/fs/cgroup cgroup2 ",
            ]
        );
    }

    /// Shares land on RAM mounts that certaintyd leaves alone.
    #[test]
    fn every_place_for_shares_is_a_writable_tmpfs() {
        for place in chaos_contract::share::PLACES {
            assert!(
                MOUNTS
                    .iter()
                    .any(|m| m.target == *place && m.fstype == "tmpfs"),
                "{place}"
            );
            assert!(crate::certainty::WRITABLE_MOUNTS.contains(place), "{place}");
        }
    }

    #[test]
    fn applying_twice_mounts_nothing_new() {
        let sys = Recorder::default();
        apply(&sys, MOUNTS).unwrap();
        assert_eq!(apply(&sys, MOUNTS).unwrap(), 0);
    }

    #[test]
    fn leaves_what_the_kernel_already_mounted() {
        let sys = Recorder::default();
        sys.mounted.borrow_mut().insert("/dev".into());
        assert_eq!(apply(&sys, MOUNTS).unwrap(), MOUNTS.len() - 1);
        assert!(!sys.calls.borrow().iter().any(|c| c.contains("devtmpfs")));
    }

    #[test]
    fn every_target_comes_after_its_parent_mount() {
        for (i, m) in MOUNTS.iter().enumerate() {
            for later in &MOUNTS[i + 1..] {
                assert!(
                    !Path::new(m.target).starts_with(later.target),
                    "{} is mounted before its parent {}",
                    m.target,
                    later.target
                );
            }
        }
    }
}
