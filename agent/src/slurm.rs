// SPDX-License-Identifier: GPL-3.0-or-later
//! Slurm in a chaos cluster, defined once: the configuration the head
//! writes for dynamic nodes (slurm.conf, cgroup.conf), the ports Slurm
//! uses, and the plugins that configuration makes the daemons load, which
//! the image builder copies into the images. Drones run configless
//! (`slurmd -Z --conf-server`), so what is written here is also what every
//! drone runs with.
//!
//! It never starts a daemon: on a Debian head the host's service manager
//! runs munged and slurmctld, in a chaos image init's service table does.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// slurmctld's port (Slurm's default).
pub const SLURMCTLD_PORT: u16 = 6817;
/// slurmd's port (Slurm's default).
pub const SLURMD_PORT: u16 = 6818;
/// The ports srun listens on for its tasks' I/O and messages: fixed, so the
/// firewall can open exactly these on the overlay.
pub const SRUN_PORTS: (u16, u16) = (60001, 60100);
/// The cluster's name in Slurm.
pub const CLUSTER_NAME: &str = "chaos";
/// The one partition, over every node.
pub const PARTITION: &str = "chaos";
/// slurmctld 22.05 refuses a configuration with no node line at all; this
/// FUTURE node is never used.
pub const PLACEHOLDER_NODE: &str = "chaos-placeholder";
/// Where slurmd keeps its spool on every node (a RAM mount on a drone).
pub const SLURMD_SPOOL: &str = "/var/spool/slurmd";

/// The settings that are the same in every chaos cluster, in the order they
/// are written. The plugins named here are loaded by the daemons and so
/// belong in the images (see [`plugins`]).
const FIXED: &[(&str, &str)] = &[
    ("AuthType", "auth/munge"),
    ("CredType", "cred/munge"),
    ("SlurmUser", "slurm"),
    ("SlurmdUser", "root"),
    // Drones fetch this file from the controller instead of carrying it.
    ("SlurmctldParameters", "enable_configless"),
    // Dynamic nodes talk to the controller directly, not through a tree
    // of each other.
    ("TreeWidth", "65533"),
    ("SchedulerType", "sched/backfill"),
    ("SelectType", "select/cons_tres"),
    ("SelectTypeParameters", "CR_Core"),
    ("ProctrackType", "proctrack/cgroup"),
    ("TaskPlugin", "task/cgroup"),
    ("JobAcctGatherType", "jobacct_gather/none"),
    ("AccountingStorageType", "accounting_storage/none"),
    ("JobCompType", "jobcomp/none"),
    ("MpiDefault", "none"),
    ("SwitchType", "switch/none"),
    // A node that was down (a drone rebooted) comes back by registering.
    ("ReturnToService", "2"),
    ("SlurmdSpoolDir", SLURMD_SPOOL),
    ("SlurmctldPidFile", "/run/slurmctld.pid"),
    ("SlurmdPidFile", "/run/slurmd.pid"),
    // No mail on a lab's nodes; the default program is not there.
    ("MailProg", "/bin/true"),
    ("SlurmctldDebug", "info"),
    ("SlurmdDebug", "info"),
];

/// Plugins the daemons load with the [`FIXED`] settings although no
/// setting names them (Slurm's defaults for the settings left out).
const IMPLICIT_PLUGINS: &[&str] = &[
    "acct_gather_energy/none",
    "acct_gather_filesystem/none",
    "acct_gather_interconnect/none",
    "acct_gather_profile/none",
    "cgroup/v2",
    "core_spec/none",
    "ext_sensors/none",
    "hash/k12",
    "job_container/none",
    "mcs/none",
    "mpi/none",
    "preempt/none",
    "prep/script",
    "priority/basic",
    "route/default",
    "topology/none",
];

/// Plugins only the client tools load (srun launches through one).
const CLIENT_PLUGINS: &[&str] = &["launch/slurm", "cli_filter/none"];

/// Every plugin a chaos cluster's daemons and client tools load, as
/// `type/name` (the file is `<type>_<name>.so` in Slurm's plugin
/// directory), sorted.
pub fn plugins() -> Vec<&'static str> {
    let mut plugins: Vec<&str> = FIXED
        .iter()
        .map(|(_, value)| *value)
        .filter(|value| value.contains('/') && !value.starts_with('/'))
        .chain(IMPLICIT_PLUGINS.iter().copied())
        .chain(CLIENT_PLUGINS.iter().copied())
        .collect();
    plugins.sort_unstable();
    plugins.dedup();
    plugins
}

/// What differs between clusters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The head's host name: slurmctld checks that it runs on the host
    /// the configuration names.
    pub controller: String,
    /// The head's overlay address, where the drones reach slurmctld.
    pub controller_address: Ipv4Addr,
    /// slurmctld's state directory on the head.
    pub state_dir: PathBuf,
    /// slurmctld's log file; `None` logs to stderr (under init) or syslog.
    pub log_file: Option<PathBuf>,
    /// The most nodes the cluster may have.
    pub max_nodes: usize,
}

impl Settings {
    /// slurm.conf for a cluster of dynamic nodes (`slurmd -Z`) in one
    /// partition.
    pub fn slurm_conf(&self) -> String {
        let mut text =
            String::from("# Written by tyd serve --slurm; it is rewritten at every start.\n");
        let mut line = |key: &str, value: &dyn std::fmt::Display| {
            let _ = writeln!(text, "{key}={value}");
        };
        line("ClusterName", &CLUSTER_NAME);
        line(
            "SlurmctldHost",
            &format!("{}({})", self.controller, self.controller_address),
        );
        line("SlurmctldPort", &SLURMCTLD_PORT);
        line("SlurmdPort", &SLURMD_PORT);
        line(
            "SrunPortRange",
            &format!("{}-{}", SRUN_PORTS.0, SRUN_PORTS.1),
        );
        line("MaxNodeCount", &self.max_nodes);
        line("StateSaveLocation", &self.state_dir.display());
        if let Some(log) = &self.log_file {
            line("SlurmctldLogFile", &log.display());
        }
        for (key, value) in FIXED {
            line(key, value);
        }
        line("NodeName", &format!("{PLACEHOLDER_NODE} State=FUTURE"));
        line(
            "PartitionName",
            &format!("{PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP"),
        );
        text
    }
}

/// cgroup.conf: cgroup v2 without systemd, which a chaos node does not
/// run; slurmd mounts and fills the hierarchy itself.
pub fn cgroup_conf() -> String {
    "# Written by tyd serve --slurm.\n\
     CgroupPlugin=cgroup/v2\n\
     IgnoreSystemd=yes\n\
     CgroupAutomount=yes\n"
        .to_string()
}

/// Where slurmd keeps its jobs' cgroups on a node without systemd: one
/// scope per slurmd (`slurmstepd.scope`, or `<node>_slurmstepd.scope`
/// when several run), a `job_<id>` directory in it per job running here.
pub const STEPD_SCOPES: &str = "/sys/fs/cgroup/system.slice";

/// How many jobs run on this node, by the cgroups slurmd made for them
/// under `slice` ([`STEPD_SCOPES`]); None when no slurmd made any scope
/// there, so a node without Slurm says nothing rather than "0 jobs".
pub fn running_jobs(slice: &std::path::Path) -> Option<usize> {
    let dirs = |path: &std::path::Path| -> Vec<String> {
        std::fs::read_dir(path)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|entry| entry.file_name().into_string().ok())
            .collect()
    };
    let scopes: Vec<String> = dirs(slice)
        .into_iter()
        .filter(|name| name.ends_with("slurmstepd.scope"))
        .collect();
    if scopes.is_empty() {
        return None;
    }
    Some(
        scopes
            .iter()
            .flat_map(|scope| dirs(&slice.join(scope)))
            .filter(|name| name.starts_with("job_"))
            .count(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            controller: "head".into(),
            controller_address: Ipv4Addr::new(10, 99, 0, 1),
            state_dir: "/var/lib/slurm/slurmctld".into(),
            log_file: None,
            max_nodes: 4096,
        }
    }

    #[test]
    fn slurm_conf_names_the_controller_ports_and_one_placeholder() {
        let conf = settings().slurm_conf();
        let lines: Vec<&str> = conf.lines().collect();
        for expected in [
            "SlurmctldHost=head(10.99.0.1)",
            "SrunPortRange=60001-60100",
            "SlurmctldParameters=enable_configless",
            "MaxNodeCount=4096",
            "TreeWidth=65533",
            "SelectType=select/cons_tres",
            "NodeName=chaos-placeholder State=FUTURE",
            "PartitionName=chaos Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        ] {
            assert!(lines.contains(&expected), "{expected} missing in\n{conf}");
        }
        assert_eq!(
            lines.iter().filter(|l| l.starts_with("NodeName=")).count(),
            1
        );
        assert!(!conf.contains("SlurmctldLogFile"));
    }

    #[test]
    fn every_key_is_written_once() {
        let conf = Settings {
            log_file: Some("/var/log/slurm/slurmctld.log".into()),
            ..settings()
        }
        .slurm_conf();
        let mut keys: Vec<&str> = conf
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split_once('=').expect("key=value").0)
            .collect();
        let all = keys.len();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), all, "{conf}");
    }

    #[test]
    fn plugins_are_those_the_configuration_names_and_implies() {
        let plugins = plugins();
        for expected in [
            "auth/munge",
            "cred/munge",
            "select/cons_tres",
            "proctrack/cgroup",
            "task/cgroup",
            "cgroup/v2",
            "launch/slurm",
        ] {
            assert!(plugins.contains(&expected), "{expected} in {plugins:?}");
        }
        // Paths and plain words are not plugins.
        assert!(plugins
            .iter()
            .all(|p| !p.starts_with('/') && p.contains('/')));
        assert!(plugins.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn jobs_are_counted_by_their_cgroups_and_no_slurmd_says_nothing() {
        let slice = std::env::temp_dir().join(format!("chaos-jobs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&slice);
        std::fs::create_dir_all(slice.join("other.service/job_9")).unwrap();
        assert_eq!(running_jobs(&slice), None);
        assert_eq!(running_jobs(&slice.join("missing")), None);
        let scope = slice.join("slurmstepd.scope");
        std::fs::create_dir_all(scope.join("system")).unwrap();
        assert_eq!(running_jobs(&slice), Some(0));
        for job in ["job_3/step_0", "job_17/step_batch"] {
            std::fs::create_dir_all(scope.join(job)).unwrap();
        }
        std::fs::write(scope.join("job_file"), "").unwrap();
        std::fs::create_dir_all(slice.join("drone2_slurmstepd.scope/job_4")).unwrap();
        assert_eq!(running_jobs(&slice), Some(3));
        std::fs::remove_dir_all(&slice).unwrap();
    }
}
