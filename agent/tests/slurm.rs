// SPDX-License-Identifier: GPL-3.0-or-later
//! `tyd serve --slurm` on an ordinary Debian host, in a test-made network
//! namespace: it makes the cluster's munge key beside the identity, puts it
//! where munged reads it, writes slurm.conf and cgroup.conf for dynamic
//! nodes, and Debian's own slurmctld starts with that configuration and
//! answers `scontrol ping`. (slurmd cannot run on this host, which lacks a
//! cgroup2-only hierarchy: the QEMU cluster test runs it.) An
//! administrator's own slurm.conf is never overwritten. The exports file
//! shares /home with exactly the members, and with nobody before the
//! first joins.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use chaos_agent::proto::State;
use common::Lab;

/// The controller's address: the overlay head address of `tyd serve`'s
/// default range.
const CONTROLLER: &str = "10.99.0.1";

/// `tyd serve --slurm` in `ns` with its configuration directory, munge
/// key and state directory (in that order); the head's index in `lab`.
fn slurm_head(lab: &mut Lab, ns: &str, keys: &Path, [conf, key, state]: [&Path; 3]) -> usize {
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let (conf, key, state) = (path(conf), path(key), path(state));
    let exports = path(&lab.dir.join("chaos.exports"));
    lab.head(
        ns,
        "head",
        keys,
        &[
            "--slurm",
            "--slurm-conf",
            &conf,
            "--munge-key",
            &key,
            "--slurm-state",
            &state,
            "--exports",
            &exports,
        ],
    )
}

#[test]
fn tyd_serve_slurm_writes_a_configuration_that_slurmctld_runs_with() {
    let mut lab = Lab::new("slurm");
    let ns = lab.node(1);
    let keys = lab.init("keys");
    let conf = lab.dir.join("etc-slurm");
    let key = lab.dir.join("munge/munge.key");
    let state = lab.dir.join("state");
    // In control-plane-only mode there is no wg0 to hold the overlay
    // address slurmctld is configured at.
    let status = Command::new("ip")
        .args(["netns", "exec", &ns, "ip", "addr", "add"])
        .args([&format!("{CONTROLLER}/32"), "dev", "lo"])
        .status()
        .unwrap();
    assert!(status.success());
    slurm_head(&mut lab, &ns, &keys, [&conf, &key, &state]);
    lab.wait_log("head", "@chaos node state=serving");
    let log = lab.log("head");
    assert!(
        log.contains("no service manager here: start munged")
            && log.contains("and the NFS server (rpc.nfsd, rpc.mountd)"),
        "a host without systemd is told what to start:\n{log}"
    );

    // The key: made once beside the identity, installed for munged alone.
    let made = std::fs::read(keys.join("munge.key")).unwrap();
    assert_eq!(made.len(), 1024);
    assert_eq!(std::fs::read(&key).unwrap(), made);
    let munge = nix::unistd::User::from_name("munge").unwrap().unwrap();
    let meta = std::fs::metadata(&key).unwrap();
    assert_eq!(
        (meta.uid(), meta.mode() & 0o777),
        (munge.uid.as_raw(), 0o400)
    );
    let slurm_conf = std::fs::read_to_string(conf.join("slurm.conf")).unwrap();
    let host = nix::unistd::gethostname().unwrap();
    let host = host.to_string_lossy();
    let short = host.split('.').next().unwrap();
    assert!(
        slurm_conf.contains(&format!("SlurmctldHost={short}({CONTROLLER})")),
        "{slurm_conf}"
    );

    // What Debian's units would do, by hand: munged on the socket Slurm
    // looks for (in a /run of the script's own mount namespace, so the
    // host's stays as it was), then slurmctld, then ping it.
    let run = lab.dir.join("munge-run");
    let script = format!(
        "set -e\n\
         mount -t tmpfs -o mode=0755 tmpfs /run\n\
         mkdir /run/munge && chown munge /run/munge\n\
         mkdir -p {run} && chown munge {run} && chmod 0700 {run}\n\
         runuser -u munge -- /usr/sbin/munged --key-file={key} --seed-file={run}/seed \
           --log-file={run}/log --pid-file={run}/pid\n\
         export SLURM_CONF={conf}/slurm.conf\n\
         /usr/sbin/slurmctld -D > {run}/slurmctld.log 2>&1 &\n\
         ctld=$!\n\
         trap 'kill $ctld; kill $(cat {run}/pid)' EXIT\n\
         for i in $(seq 300); do\n\
           if scontrol ping 2>/dev/null | grep -q UP; then scontrol ping; exit 0; fi\n\
           sleep 0.2\n\
         done\n\
         cat {run}/slurmctld.log; exit 1\n",
        run = run.display(),
        key = key.display(),
        conf = conf.display(),
    );
    let output = Command::new("ip")
        .args([
            "netns", "exec", &ns, "unshare", "--mount", "sh", "-c", &script,
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && said.contains("is UP"),
        "slurmctld did not answer with tyd's configuration:\n{said}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_exports_follow_the_membership() {
    let mut lab = Lab::new("exports");
    let ns = lab.node(1);
    let keys = lab.init("keys");
    let dir = lab.dir.clone();
    let (conf, key, state) = (dir.join("conf"), dir.join("munge.key"), dir.join("state"));
    slurm_head(&mut lab, &ns, &keys, [&conf, &key, &state]);
    lab.wait_log("head", "@chaos node state=serving");
    let exports = dir.join("chaos.exports");
    let shared = || {
        std::fs::read_to_string(&exports)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(shared(), Vec::<String>::new(), "shared before any member");

    let drone_ns = lab.node(11);
    lab.drone(&drone_ns, "drone1", &keys, Some("192.168.77.1"));
    let socket = lab.socket("head");
    lab.wait(
        "drone1 up",
        || common::state_of(&socket, "drone1") == Some(State::Up),
        || lab.log("head"),
    );
    let overlay = common::nodes(&socket)
        .unwrap()
        .into_iter()
        .find(|n| n.hostname == "drone1")
        .and_then(|n| n.overlay)
        .unwrap();
    let line = format!("/home {overlay}(rw,sync,root_squash,");
    lab.wait(
        "/home exported to drone1",
        || shared().len() == 1 && shared()[0].starts_with(&line),
        || format!("{:?}\n{}", shared(), lab.log("head")),
    );

    let removed = Command::new(common::tyd())
        .args(["remove", "drone1", "--socket", socket.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(removed.status.success(), "{removed:?}");
    lab.wait(
        "/home exported to nobody once drone1 is removed",
        || shared().is_empty(),
        || format!("{:?}", shared()),
    );
}

#[test]
fn an_administrators_own_slurm_conf_is_left_alone() {
    let mut lab = Lab::new("slurmown");
    let ns = lab.node(1);
    let keys = lab.init("keys");
    let conf = lab.dir.join("etc-slurm");
    std::fs::create_dir_all(&conf).unwrap();
    let theirs = "# our site's cluster\nClusterName=physics\n";
    std::fs::write(conf.join("slurm.conf"), theirs).unwrap();
    let (key, state) = (lab.dir.join("munge.key"), lab.dir.join("state"));
    let head = slurm_head(&mut lab, &ns, &keys, [&conf, &key, &state]);
    lab.wait_log("head", "is not tyd's (its first line is not");
    assert!(
        !lab.exit_status(head).success(),
        "tyd serve went on with a foreign slurm.conf"
    );
    assert_eq!(
        std::fs::read_to_string(conf.join("slurm.conf")).unwrap(),
        theirs
    );
}
