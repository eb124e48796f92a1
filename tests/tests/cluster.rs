//! A cluster under QEMU: a head and two drones on a private Ethernet
//! segment on loopback (xtask's L2 hub), each with the identity of one
//! `tyd init`. drone1 is told the head's address on its kernel command
//! line; drone2 is told nothing and finds the head by its signed beacon.
//! Both join; drone1 reaches drone2's overlay address through WireGuard,
//! while drone2's LAN side, guarded by tyd's nftables ruleset, drops a port
//! that its overlay side serves: on the wire between them, drone2 sends
//! drone1 nothing but WireGuard.

use chaos_init::service::{Restart, Service};
use chaos_tests::*;
use xtask::cluster::{self, Membership, Role};
use xtask::vm::{Config, Hub, Packet};

/// A Slurm port: open on the overlay, closed on the LAN.
const PORT: u16 = 6818;
const DIR: &str = "/etc/chaos-test";
/// Busybox applets the probe needs beyond the harness's.
const APPLETS: &[&str] = &["awk", "ping", "wget", "httpd", "timeout"];

/// Serves a file on [`PORT`] on every address of the drone.
fn listener() -> Service {
    script(
        "listener",
        &format!(
            "mkdir -p /tmp/www && echo reachable > /tmp/www/ok && \
             exec httpd -f -p {PORT} -h /tmp/www"
        ),
    )
}

/// On drone1 only: waits until `tyd nodes` (asked through drone1's own
/// tyd, answered by the head) lists the drone with LAN address `$1` as up,
/// then pings its overlay address and fetches the file from both of its
/// addresses, printing each outcome.
const PROBE: &str = r#"
[ "$(hostname)" = drone1 ] || exit 0
peer=$1
until overlay=$(tyd nodes 2>/dev/null | awk -v lan=$peer '$4 == lan && $5 == "up" { print $3 }') \
    && [ -n "$overlay" ]; do
  sleep 0.5
done
echo "probe: drone at $peer has overlay address $overlay"
if ping -c 1 -W 15 $overlay > /dev/null; then r=ok; else r=failed; fi
echo "probe: overlay ping $overlay $r"
for address in $overlay $peer; do
  if timeout 10 wget -q -O - http://$address:PORT/ok > /dev/null 2>&1; then r=reached; else r=blocked; fi
  echo "probe: tcp $address:PORT $r"
done
"#;

fn probe(peer: std::net::Ipv4Addr) -> Service {
    let mut probe = Service::new("probe", "/bin/sh");
    probe.args = vec![format!("{DIR}/probe.sh"), peer.to_string()];
    probe.restart = Restart::Never;
    probe
}

/// A fresh cluster identity for one test, under build/tests; the caller
/// removes it once it is baked into the images.
fn identity(tag: &str) -> std::path::PathBuf {
    let dir = xtask::build_dir()
        .join("tests")
        .join(format!("cluster-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    cluster::identity(&dir).step();
    dir
}

#[test]
fn drones_join_and_reach_each_other_only_through_the_overlay() {
    let fixture = fixture();
    let identity = identity("mesh");
    let member = |role| Membership {
        dir: identity.clone(),
        role,
    };
    let head_image = test_image_with("cluster-head", &[], |spec| {
        cluster::add(spec, &member(Role::Head)).expect("the head's identity")
    });
    let drone2 = cluster::lan_address(2);
    let drone_image = test_image_with("cluster-drone", &[listener(), probe(drone2)], |spec| {
        // No baked head address: chaos.head= or the beacon says it.
        cluster::add(spec, &member(Role::Drone { head: None })).expect("the drones' identity");
        for applet in APPLETS {
            spec.symlink(&format!("/bin/{applet}"), "busybox")
                .expect("applet link");
        }
        spec.dir(DIR, 0o755).unwrap();
        spec.file(
            &format!("{DIR}/probe.sh"),
            0o644,
            PROBE.replace("PORT", &PORT.to_string()),
        )
        .unwrap();
    });
    // The identity is in the images now; the test leaves no keys behind.
    std::fs::remove_dir_all(&identity).unwrap();

    let hub = Hub::start().step();
    let node = |image: &Written, index: usize, extra: &str| -> Config {
        cluster::node_config(&fixture.kernel, image, &hub, index, extra).step()
    };
    let head_arg = format!("chaos.head={}", cluster::lan_address(0));
    let mut head = boot(&node(&head_image, 0, ""));
    let mut first = boot(&node(&drone_image, 1, &head_arg));
    let mut second = boot(&node(&drone_image, 2, ""));

    head.expect("serving joins on", BOOT_TIMEOUT).step();
    head.expect_all(
        &["drone1 joined as node", "drone2 joined as node"],
        BOOT_TIMEOUT,
    )
    .step();
    first.expect("tyd: wg0 up with", BOOT_TIMEOUT).step();
    first.expect("joined as node", STEP_TIMEOUT).step();
    second
        .expect(
            &format!("found head {}:7700 by its beacon", cluster::lan_address(0)),
            BOOT_TIMEOUT,
        )
        .step();
    second.expect("tyd: wg0 up with", STEP_TIMEOUT).step();
    let joined = second.expect_line("joined as node", STEP_TIMEOUT).step();
    let overlay = joined
        .split("with overlay address ")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no overlay address in {joined:?}"))
        .to_string();

    first
        .expect(
            &format!("probe: drone at {drone2} has overlay address {overlay}"),
            STEP_TIMEOUT,
        )
        .step();
    first
        .expect(&format!("probe: overlay ping {overlay} ok"), STEP_TIMEOUT)
        .step();
    first
        .expect(
            &format!("probe: tcp {overlay}:{PORT} reached"),
            STEP_TIMEOUT,
        )
        .step();
    first
        .expect(&format!("probe: tcp {drone2}:{PORT} blocked"), STEP_TIMEOUT)
        .step();

    // The wire between the drones, as the hub saw it: WireGuard, and
    // drone1's probe of drone2's LAN address, which drone2 never answered.
    let drone1 = cluster::lan_address(1);
    let packets = hub.packets();
    let between = |from, to| {
        packets
            .iter()
            .filter(move |p: &&Packet| p.source == from && p.destination == to)
    };
    let wireguard = |p: &Packet| p.protocol == 17 && p.destination_port == 51820;
    let probe = |p: &Packet| p.protocol == 6 && p.destination_port == PORT;
    assert!(between(drone1, drone2).any(&wireguard), "no WireGuard seen");
    assert!(
        between(drone1, drone2).any(&probe),
        "the LAN probe not seen"
    );
    for packet in between(drone1, drone2) {
        assert!(wireguard(packet) || probe(packet), "drone1 sent {packet:?}");
    }
    for packet in between(drone2, drone1) {
        assert!(
            wireguard(packet),
            "drone2 answered on the LAN with {packet:?}"
        );
    }
}
