//! The Slurm payload is complete: the base image with the head profile
//! boots under QEMU, and in it every program runs, munged (as munge) signs
//! and verifies a credential, slurmctld answers `scontrol ping` with the
//! configuration chaos writes, and a dynamic slurmd on the same VM
//! registers and runs `srun -N1 hostname`. The configuration and the
//! directories stand in for what the head and init provide in a cluster.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use chaos_agent::slurm::Settings;
use chaos_contract::paths::MUNGE_KEY;
use chaos_contract::service::{Restart, Service};
use chaos_tests::*;
use xtask::slurm::{self, Profile};

const HOST: &str = "slurmhead";
const DIR: &str = "/etc/chaos-test";
const SCRIPT: &str = "/etc/chaos-test/slurm.sh";

/// The NFS server's tools, which know no `-V`: each is run for its usage,
/// which it prints only once the loader has found all it needs.
const NFS_TOOLS: [&str; 3] = [
    "/usr/sbin/exportfs",
    "/usr/sbin/rpc.nfsd",
    "/usr/sbin/rpc.mountd",
];

/// The programs that answer `-V`: all but slurmstepd, which only slurmd
/// runs (it reads its orders from slurmd) and which the job exercises,
/// and the NFS tools.
fn commands() -> impl Iterator<Item = &'static str> {
    Profile::Head
        .programs()
        .filter(|p| !p.ends_with("/slurmstepd") && !NFS_TOOLS.contains(p))
}

/// The script's steps; each prints what it saw, `FAILED: ...` ends it.
fn script() -> String {
    let mut text = String::from(
        "set -u -o pipefail\n\
         fail() { echo \"FAILED: $*\"; exit 1; }\n\
         # Polls a command until it succeeds, for at most 120 s.\n\
         wait_for() { what=$1; shift; n=0; \
           until \"$@\" >/dev/null 2>&1; do n=$((n+1)); \
           [ $n -le 600 ] || fail \"$what: not within 120 s\"; sleep 0.2; done; }\n",
    );
    for dir in Profile::Head.runtime_dirs() {
        let _ = writeln!(
            text,
            "mkdir -p {path} && chown {owner}:{owner} {path} && chmod {mode:o} {path} || fail {path}",
            path = dir.path,
            owner = dir.owner,
            mode = dir.mode
        );
    }
    let _ = write!(
        text,
        "mkdir -p -m 0700 $(dirname {MUNGE_KEY}) && chown munge:munge $(dirname {MUNGE_KEY}) \
           || fail 'the munge key directory'\n\
         dd if=/dev/urandom of={MUNGE_KEY} bs=1024 count=1 2>/dev/null \
           && chown munge:munge {MUNGE_KEY} && chmod 0400 {MUNGE_KEY} || fail 'the munge key'\n\
         mkdir -p {conf} && cp {DIR}/slurm.conf {DIR}/cgroup.conf {conf}/ || fail 'the configuration'\n",
        conf = slurm::HEAD_CONF_DIR
    );
    // The client tools look for their configuration even for -V.
    for program in commands() {
        let _ = writeln!(
            text,
            "out=$({program} -V 2>&1) || fail \"{program} -V: $out\"; echo \"version {program}: $out\""
        );
    }
    for program in NFS_TOOLS {
        let _ = writeln!(
            text,
            "out=$({program} --help 2>&1); case $out in *sage*) echo \"runs {program}\";; \
             *) fail \"{program} --help: $out\";; esac"
        );
    }
    let _ = write!(
        text,
        "setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --key-file={MUNGE_KEY} || fail munged\n\
         echo \"munged runs as $(stat -c %U /proc/$(cat /run/munge/munged.pid))\"\n\
         munge -n | unmunge || fail 'munge -n | unmunge'\n\
         echo 'munge round trip ok'\n\
         slurmctld -D &\n\
         wait_for 'scontrol ping' sh -c 'scontrol ping | grep -q UP'\n\
         echo \"ping: $(scontrol ping)\"\n\
         mkdir -p /sys/fs/cgroup/system.slice || fail 'system.slice'\n\
         slurmd -Z -D &\n\
         wait_for 'slurmd registering' sh -c \"sinfo -h -N -o '%N %t' | grep -q '^{HOST} idle'\"\n\
         echo \"sinfo: $(sinfo -h -N -o '%N %t')\"\n\
         out=$(srun -N1 hostname 2>&1) || fail \"srun: $out\"\n\
         echo \"srun -N1 hostname: $out\"\n\
         /sbin/certaintyd check || fail 'the root changed'\n\
         echo 'the root is as built'\n"
    );
    text
}

#[test]
fn the_head_payload_runs_munge_slurmctld_slurmd_and_a_job() {
    let settings = Settings {
        controller: HOST.into(),
        controller_address: Ipv4Addr::LOCALHOST,
        state_dir: slurm::HEAD_STATE_DIR.into(),
        log_file: None,
        max_nodes: 16,
    };
    let mut service = Service::new("slurm", "/bin/sh");
    service.args = vec![SCRIPT.into()];
    service.restart = Restart::Never;
    let image = test_image_with("slurm-payload", &[service], |spec| {
        slurm::add_head(spec).step();
        spec.file(SCRIPT, 0o644, script()).unwrap();
        spec.file(&format!("{DIR}/slurm.conf"), 0o644, settings.slurm_conf())
            .unwrap();
        spec.file(
            &format!("{DIR}/cgroup.conf"),
            0o644,
            chaos_agent::slurm::cgroup_conf(),
        )
        .unwrap();
    });
    let append = format!("ip=10.0.2.15::10.0.2.2:255.255.255.0:{HOST}::off:10.0.2.3");
    let mut vm = boot(&config(&image, &append).user_net());
    vm.expect("@chaos ready", BOOT_TIMEOUT).step();
    for program in commands() {
        let name = program.rsplit('/').next().unwrap_or(program);
        let version = match name {
            "setpriv" => "setpriv from util-linux",
            _ if name.contains("munge") => "munge-0.5",
            _ => "slurm-wlm 22.05",
        };
        vm.expect(
            &format!("slurm: version {program}: {version}"),
            STEP_TIMEOUT,
        )
        .step();
    }
    for program in NFS_TOOLS {
        assert!(Profile::Head.programs().any(|p| p == program), "{program}");
        vm.expect(&format!("slurm: runs {program}"), STEP_TIMEOUT)
            .step();
    }
    for line in [
        "slurm: munged runs as munge",
        "STATUS:          Success (0)",
        "slurm: munge round trip ok",
    ] {
        vm.expect(line, STEP_TIMEOUT).step();
    }
    vm.expect(
        &format!("slurm: ping: Slurmctld(primary) at {HOST} is UP"),
        BOOT_TIMEOUT,
    )
    .step();
    vm.expect(&format!("slurm: sinfo: {HOST} idle"), BOOT_TIMEOUT)
        .step();
    vm.expect(&format!("slurm: srun -N1 hostname: {HOST}"), BOOT_TIMEOUT)
        .step();
    // Nothing Slurm or munge wrote is on the root certaintyd guards.
    vm.expect("slurm: the root is as built", STEP_TIMEOUT)
        .step();
}
