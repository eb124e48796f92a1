//! A cluster under QEMU that runs jobs: a head VM (tyd serve --slurm,
//! munged, slurmctld) and two drones on a private Ethernet segment on
//! loopback (xtask's L2 hub), each with the identity of one `tyd init`.
//! drone1 is told the head's address on its kernel command line; drone2 is
//! told nothing and finds the head by its signed beacon. Both join, mesh
//! and register with Slurm over the overlay; the head's probe runs jobs on
//! them, as root and as a user of the head's; Slurm's port on a drone
//! answers on the overlay and not on the LAN; a drone's screen counts the
//! batch job running there; the munge key never crosses the LAN in the
//! clear, and between the drones the wire carries nothing but WireGuard.
//! Then drone2 is powered off and is gone from the membership and from
//! Slurm within the expiry, and after the head restarts drone1 is back in
//! Slurm.
//!
//! The head shares /home over NFS: both drones mount it as they join;
//! alice's batch job reads its input and leaves its result and output in
//! her home there, owned by her; root on a drone is squashed; from a LAN
//! address that is no member's the NFS port is closed; and once drone1 is
//! removed it can no longer read the share and the head exports to no one.

use chaos_contract::accounts::User;
use chaos_contract::service::Restart;
use chaos_contract::{fact, paths};
use chaos_tests::*;
use xtask::cluster::{self, Membership, Role};
use xtask::probe::{self, Verdict};
use xtask::vm::{Config, Hub, Packet};

/// slurmd's port, which a drone serves on the overlay only.
const SLURMD: u16 = chaos_agent::slurm::SLURMD_PORT;
const DIR: &str = "/etc/chaos-test";
/// A user of the head's (and so of the cluster's).
const ALICE: u32 = 1000;

/// On the head: prints Slurm's and the membership's view of the drones
/// whenever it changes, and once two drones are idle runs the jobs and
/// probes the ports, printing each outcome.
const PROBE: &str = r#"
# alice's home, on the head's share of /home, with her job's input.
mkdir -p /home/alice && chown alice:alice /home/alice
echo '6 7' > /home/alice/input
slurm() { sinfo -h -N -o '%N:%t' 2>/dev/null | sort | uniq | tr '\n' ' '; }
members() { tyd nodes 2>/dev/null | awk 'NR > 1 && $1 != "1*" { print $2 ":" $5 }' | sort | tr '\n' ' '; }
last=
ran=
while true; do
  now="slurm $(slurm)| tyd $(members)"
  if [ "$now" != "$last" ]; then echo "probe: $now"; last=$now; fi
  if [ -z "$ran" ] && [ "$(sinfo -h -N -t idle -o %N 2>/dev/null | sort -u | wc -l)" -ge 2 ]; then
    ran=1
    echo "probe: srun $(srun -N 2 hostname 2>&1 | sort | tr '\n' ' ')"
    echo "probe: alice runs as $(setpriv --reuid=alice --regid=alice --init-groups srun -N 1 id -u 2>&1)"
    # alice's batch job, submitted from her home, reads its input there
    # and leaves its result and its output there, on the share.
    # Its own step copies a program to its node with sbcast and runs it.
    printf '#!/bin/sh\nread a b < input\necho $((a * b)) > result\nsbcast -f /bin/busybox /tmp/busybox\nsrun /tmp/busybox echo sbcast ok\nhostname\n' > /home/alice/job.sh
    chown alice:alice /home/alice/job.sh
    echo "probe: alice $(cd /home/alice && setpriv --reuid=alice --regid=alice --init-groups sbatch -N 1 -w drone1 -o job.out job.sh 2>&1)"
    for i in $(seq 240); do grep -q drone1 /home/alice/job.out 2>/dev/null && break; sleep 0.5; done
    echo "probe: alice's result $(cat /home/alice/result 2>&1) by $(stat -c %U /home/alice/result 2>&1), output $(echo $(cat /home/alice/job.out 2>&1)) by $(stat -c %U /home/alice/job.out 2>&1)"
    if srun -N 1 -w drone1 touch /home/root-was-here > /dev/null 2>&1; then r=allowed; else r=denied; fi
    echo "probe: root on drone1 writes /home: $r"
    tyd nodes | awk 'NR > 1 && $1 != "1*" && $5 == "up" { print $2, $3, $4 }' > /tmp/drones
    while read name overlay lan; do
      for address in $overlay $lan; do
        if nc -w 5 $address SLURMD < /dev/null > /dev/null 2>&1; then r=reached; else r=blocked; fi
        echo "probe: $name tcp $address:SLURMD $r"
      done
    done < /tmp/drones
    # drone1 talks to drone2 over the overlay, as MPI ranks would.
    other=$(awk '$1 == "drone2" { print $2 }' /tmp/drones)
    # Three echoes, any answer will do: the first may wait for the peers'
    # first WireGuard handshake. On failure the probe says what srun said.
    if out=$(srun -N 1 -w drone1 ping -c 3 -W 10 $other 2>&1); then r=ok; else r="failed: $(echo "$out" | tail -n 4 | tr '\n' ' ')"; fi
    echo "probe: drone1 pings drone2 at $other: $r"
    # A batch job that drone1's screen counts while it runs.
    echo "probe: sbatch $(sbatch -N 1 -w drone1 -o /dev/null --wrap 'sleep 20' 2>&1)"
  fi
  sleep 0.5
done
"#;

/// On the drones: whether alice's input on the share can be read, each
/// time that changes.
const SHARE_PROBE: &str = r#"
last=
while true; do
  if timeout -s KILL 5 cat /home/alice/input > /dev/null 2>&1; then now=readable; else now=unreadable; fi
  if [ "$now" != "$last" ]; then echo "share-probe: alice's input $now"; last=$now; fi
  sleep 0.5
done
"#;

#[test]
fn a_cluster_runs_jobs_over_its_overlay_and_follows_its_membership() {
    let fixture = fixture();
    let identity = cluster_identity("slurm");
    let munge_key = std::fs::read(identity.join(chaos_agent::keys::MUNGE_KEY)).unwrap();
    let head_pub = std::fs::read_to_string(identity.join(chaos_agent::keys::HEAD_PUB)).unwrap();
    let member = |role| Membership {
        dir: identity.clone(),
        role,
    };
    let mut probe = chaos_contract::service::Service::new("probe", "/bin/sh");
    probe.args = vec![format!("{DIR}/probe.sh")];
    probe.restart = Restart::Never;
    probe.when = Some(paths::JOINED.into());
    let head_image = test_image_with("cluster-head", &[probe], |spec| {
        cluster::add(spec, &fixture.kernel, &member(Role::Head)).expect("the head's identity");
        // alice is one of the head's users, so one of the cluster's.
        let mut accounts = xtask::slurm::accounts().unwrap();
        accounts.group("alice", ALICE).unwrap();
        accounts
            .user(User {
                name: "alice".into(),
                uid: ALICE,
                gid: ALICE,
                gecos: "Alice".into(),
                home: "/tmp".into(),
                shell: "/bin/sh".into(),
            })
            .unwrap();
        spec.remove(paths::ACCOUNTS_PASSWD).unwrap();
        spec.remove(paths::ACCOUNTS_GROUP).unwrap();
        accounts.add_to(spec).unwrap();
        spec.dir(DIR, 0o755).unwrap();
        spec.file(
            &format!("{DIR}/probe.sh"),
            0o644,
            PROBE.replace("SLURMD", &SLURMD.to_string()),
        )
        .unwrap();
    });
    let mut share_probe = chaos_contract::service::Service::new("share-probe", "/bin/sh");
    share_probe.args = vec![format!("{DIR}/share-probe.sh")];
    let drone_image = test_image_with("cluster-drone", &[share_probe], |spec| {
        spec.dir(DIR, 0o755).unwrap();
        spec.file(&format!("{DIR}/share-probe.sh"), 0o644, SHARE_PROBE)
            .unwrap();
        // No baked head address: chaos.head= or the beacon says it.
        cluster::add(spec, &fixture.kernel, &member(Role::Drone { head: None }))
            .expect("the drones' identity");
    });
    // The identity is in the images now; the test leaves no keys behind.
    std::fs::remove_dir_all(&identity).unwrap();

    let hub = Hub::start().step();
    hub.watch_for(&munge_key[..32]);
    hub.watch_for(&munge_key[512..544]);
    // The head's public key is in every beacon, in the clear: if the
    // capture does not see it, it sees nothing.
    let head_pub = chaos_agent::keys::parse_hex_key(&head_pub).unwrap();
    hub.watch_for(&head_pub);
    let node = |image: &Written, index: usize, extra: &str| -> Config {
        cluster::node_config(&fixture.kernel, image, &hub, index, extra).step()
    };
    let head_arg = format!("chaos.head={}", cluster::lan_address(0));
    // The head's console is a shell, as `cargo xtask qemu-cluster` leaves
    // its user at one.
    let mut head = boot(&node(&head_image, 0, "chaos.mode=expert"));
    let mut first = boot(&node(&drone_image, 1, &head_arg));
    let mut second = boot(&node(&drone_image, 2, ""));

    // tyd starts slurmctld (through init) before it serves joins.
    head.expect("init: started service slurmctld", BOOT_TIMEOUT)
        .step();
    head.expect_fact(fact::NODE, &[("state", "serving")], BOOT_TIMEOUT)
        .step();
    first.expect_fact(fact::READY, &[], BOOT_TIMEOUT).step();
    second
        .expect_fact(fact::NODE, &[("state", "listening")], BOOT_TIMEOUT)
        .step();
    let beacon = format!("{}:7700", cluster::lan_address(0));
    second
        .expect_fact(
            fact::NODE,
            &[("state", "joining"), ("head", &beacon)],
            BOOT_TIMEOUT,
        )
        .step();
    // Each mounts the head's /home, where alice's input is, as it joins.
    for drone in [&mut first, &mut second] {
        drone
            .expect_all(
                &[
                    "init: started service slurmd",
                    "share-probe: alice's input readable",
                ],
                BOOT_TIMEOUT,
            )
            .step();
    }
    // The probe runs its jobs once both drones are idle in Slurm.
    let (drone1, drone2) = (cluster::lan_address(1), cluster::lan_address(2));
    head.expect("probe: srun drone1 drone2", BOOT_TIMEOUT)
        .step();
    head.expect(&format!("probe: alice runs as {ALICE}"), STEP_TIMEOUT)
        .step();
    // alice's batch job ran on drone1 in her home on the head's share; as
    // her, and root on a drone is nobody there.
    head.expect("probe: alice Submitted batch job", STEP_TIMEOUT)
        .step();
    let result = head
        .expect_line("probe: alice's result", STEP_TIMEOUT)
        .step();
    assert!(
        result.ends_with("probe: alice's result 42 by alice, output sbcast ok drone1 by alice"),
        "{result}"
    );
    head.expect("probe: root on drone1 writes /home: denied", STEP_TIMEOUT)
        .step();
    // The drones are probed in the order of their ids, which is the order
    // they joined in.
    head.expect_all(
        &[
            &format!("probe: drone1 tcp {drone1}:{SLURMD} blocked"),
            &format!("probe: drone2 tcp {drone2}:{SLURMD} blocked"),
        ],
        STEP_TIMEOUT,
    )
    .step();
    // The ping's outcome ends its line, which the console may deliver in
    // pieces: read it only once it is complete.
    let ping = head
        .expect_line("probe: drone1 pings drone2 at 10.99.", STEP_TIMEOUT)
        .step();
    let console = head.console();
    for name in ["drone1", "drone2"] {
        let over = format!("probe: {name} tcp 10.99.");
        let line = console
            .lines()
            .find(|l| l.contains(&over))
            .unwrap_or_else(|| panic!("no overlay probe of {name}:\n{console}"));
        assert!(line.ends_with(&format!(":{SLURMD} reached")), "{line}");
    }
    assert!(
        ping.ends_with(": ok"),
        "drone1 could not reach drone2 over the overlay: {ping}\n\
         the head's probe:\n{}\ndrone1's console, last lines:\n{}",
        console
            .lines()
            .filter(|l| l.contains("probe:"))
            .collect::<Vec<_>>()
            .join("\n"),
        xtask::vm::tail(&first.console(), 60),
    );

    // From a LAN address that is no member's, the head's NFS port (and a
    // portmapper's) is closed, while its join port answers.
    let stranger = std::net::Ipv4Addr::new(10, 77, 0, 250);
    let head_lan = cluster::lan_address(0);
    let wait = std::time::Duration::from_secs(5);
    for (port, expected) in [
        (7700, Verdict::Open),
        (chaos_contract::share::NFS_PORT, Verdict::Silent),
        (111, Verdict::Silent),
    ] {
        let verdict = probe::tcp(&hub, stranger, head_lan, port, wait).step();
        assert_eq!(verdict, expected, "port {port} of the head from {stranger}");
    }

    // drone1's console shows the cluster screen, which counts the job.
    head.expect("probe: sbatch Submitted batch job", STEP_TIMEOUT)
        .step();
    first.expect("running 1 job", STEP_TIMEOUT).step();

    // The wire, as the hub saw it.
    assert!(hub.saw(&head_pub), "the capture saw no beacon");
    assert!(!hub.saw(&munge_key[..32]), "the munge key crossed the LAN");
    assert!(
        !hub.saw(&munge_key[512..544]),
        "the munge key crossed the LAN"
    );
    let packets = hub.packets();
    let wireguard = |p: &Packet| p.protocol == 17 && p.destination_port == 51820;
    let between = |from, to| {
        packets
            .iter()
            .filter(move |p: &&Packet| p.source == from && p.destination == to)
    };
    assert!(between(drone1, drone2).any(&wireguard), "no WireGuard seen");
    for (from, to) in [(drone1, drone2), (drone2, drone1)] {
        for packet in between(from, to) {
            assert!(wireguard(packet), "{from} sent {to} {packet:?}");
        }
    }
    for packet in packets.iter().filter(|p| p.source == drone2) {
        assert_ne!(
            packet.source_port, SLURMD,
            "drone2's slurmd answered on the LAN: {packet:?}"
        );
    }

    // drone2 powered off, without leaving: expired, then out of Slurm.
    second.qmp("quit").step();
    let gone = [("name", "drone2"), ("state", "expired")];
    head.expect_fact(fact::MEMBER, &gone, STEP_TIMEOUT).step();
    // Slurm's view and the probe's line race: the probe may see the
    // node deleted before the head reports it.
    head.expect_all(
        &[
            "@chaos slurm name=drone2 state=gone",
            "probe: slurm drone1:idle | tyd drone1:up drone2:expired",
        ],
        STEP_TIMEOUT,
    )
    .step();

    // The head is power-cycled, its Slurm state lost with its RAM:
    // drone1 joins it again and is back in Slurm.
    head.qmp("quit").step();
    head.wait_exit(STEP_TIMEOUT).step();
    let mut head = boot(&node(&head_image, 0, "chaos.mode=expert"));
    first
        .expect_fact(fact::NODE, &[("state", "rejoining")], BOOT_TIMEOUT)
        .step();
    head.expect_fact(
        fact::MEMBER,
        &[("name", "drone1"), ("state", "up")],
        BOOT_TIMEOUT,
    )
    .step();
    head.expect("probe: slurm drone1:idle | tyd drone1:up", BOOT_TIMEOUT)
        .step();

    // drone1 removed: the head exports to no one, and drone1, which read
    // alice's input on the restarted head's share until then, no longer
    // can (the probe says so only when that changes).
    head.type_serial("tyd remove drone1\n").step();
    first
        .expect_fact(fact::NODE, &[("state", "removed")], STEP_TIMEOUT)
        .step();
    head.expect_fact(fact::EXPORTS, &[("members", "0")], STEP_TIMEOUT)
        .step();
    first
        .expect("share-probe: alice's input unreadable", STEP_TIMEOUT)
        .step();
}
