//! The node at its own console, typed on over its serial line as a person
//! at a terminal would. Expert mode: the CHAOS HowTo's five commands join
//! a node to a head with no DHCP server and no `ip=`, in the shell the
//! image ships; certaintyd guards the root while /tmp and /run are the
//! operator's; a boot that fails leaves the expert at that shell. Normal
//! mode: the cluster screen shows the node joined with its overlay address
//! among the other nodes, and Esc, confirmed, leaves the cluster (the head
//! lists the node as left) and powers the node off.

use chaos_contract::fact;
use chaos_contract::service::{Restart, Service};
use chaos_tests::*;
use xtask::cluster::{self, Membership, Role};
use xtask::vm::{Hub, Vm};

/// The expert shell's prompt (`\h:\w# `, in its home /tmp), after the name.
const PROMPT: &str = ":/tmp# ";

/// Types `command` and Enter, waits for each of `answers` in order, then
/// for the prompt that says the command is done.
fn run(vm: &mut Vm, command: &str, answers: &[&str]) {
    vm.type_serial(&format!("{command}\n")).step();
    for answer in answers {
        vm.expect(answer, STEP_TIMEOUT).step();
    }
    vm.expect(PROMPT, STEP_TIMEOUT).step();
}

/// The HowTo's head at 192.168.1.11 sends no beacon, so the node learns
/// of it only from `tyd -m`; the node is given neither DHCP nor `ip=`.
#[test]
fn the_howto_joins_a_node_by_hand_in_expert_mode_without_dhcp_or_ip() {
    let identity = cluster_identity("howto");
    let member = |role| Membership {
        dir: identity.clone(),
        role,
    };
    let head_image = test_image_with("howto-head", &[], |spec| {
        cluster::add(spec, &fixture().kernel, &member(Role::Head)).expect("the head's identity");
        // The shipped head's service, sending no beacon.
        let path = format!("{}/tyd", chaos_contract::paths::SERVICES);
        let Some(mkimage::Entry {
            kind: mkimage::Kind::File(mkimage::Content::Bytes(text)),
            ..
        }) = spec.get(&path)
        else {
            panic!("no service file {path} in the head's image");
        };
        let mut tyd = Service::parse("tyd", &String::from_utf8_lossy(text)).unwrap();
        tyd.args.push("--no-beacon".into());
        spec.remove(&path).unwrap();
        xtask::image::add_service(spec, &tyd).unwrap();
    });
    let node_image = test_image_with("howto-node", &[], |spec| {
        cluster::add(spec, &fixture().kernel, &member(Role::Drone { head: None }))
            .expect("the node's identity")
    });
    std::fs::remove_dir_all(&identity).unwrap();

    let hub = Hub::start().step();
    let head_config = config(&head_image, "ip=192.168.1.11:::255.255.255.0:head::off");
    let mut head = boot(&head_config.hub_net(&hub).step());
    // The hub's second NIC: 52:54:00:77:00:02.
    let name = "node-525400770002";
    let mut node = boot(
        &config(&node_image, "chaos.mode=expert")
            .hub_net(&hub)
            .step(),
    );

    head.expect("serving joins on", BOOT_TIMEOUT).step();
    node.expect("dhcp: no lease within", BOOT_TIMEOUT).step();
    node.expect("init: expert mode: shell on the console", STEP_TIMEOUT)
        .step();
    node.expect(&format!("{name}{PROMPT}"), STEP_TIMEOUT).step();

    run(&mut node, "ifconfig eth0 192.168.1.21", &[]);
    run(&mut node, "route add -net 0.0.0.0 gw 192.168.1.1", &[]);
    run(
        &mut node,
        "fix_hosts",
        &[&format!(
            "fix_hosts: {name} at 192.168.1.21; wrote /etc/hostname, /etc/hosts, /etc/resolv.conf"
        )],
    );
    // Whether the node's tyd has loaded its firewall yet or `tyd -f init`
    // does, the key is the one the node's tyd joins with.
    node.type_serial("tyd -f init\n").step();
    let said = node
        .expect_line("this node's key fingerprint is ", STEP_TIMEOUT)
        .step();
    // The whole line: its last part.
    let fingerprint = said
        .rsplit("fingerprint is ")
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no fingerprint in {said:?}"))
        .to_string();
    node.expect(PROMPT, STEP_TIMEOUT).step();
    run(
        &mut node,
        "tyd -m 192.168.1.11",
        &["joined head 192.168.1.11:7700 as node 2 with overlay address 10.99.0.2/16"],
    );
    head.expect_fact(
        fact::MEMBER,
        &[("node", "2"), ("state", "up")],
        STEP_TIMEOUT,
    )
    .step();
    assert!(
        node.console()
            .contains(&format!("node {name} key fingerprint {fingerprint};")),
        "the node's tyd joined with another key than {fingerprint}:\n{}",
        node.console()
    );
    run(
        &mut node,
        "ip addr",
        &["inet 192.168.1.21/24", "wg0", "inet 10.99.0.2/16"],
    );
    run(
        &mut node,
        "cat /etc/hosts",
        &[&format!("192.168.1.21\t{name}")],
    );
    run(&mut node, "ping -c 1 10.99.0.1", &["1 packets received"]);
}

/// Where the test image keeps its shell helper.
const SETTLE: &str = "/etc/chaos-test/settle.sh";

/// `settle STATE`: waits until certaintyd's status says STATE, then for
/// 2.5 s more of its own clock (two passes or more at
/// chaos.watchdog.interval=1s), then for the pass under way to end (a
/// slow pass says `verifying` meanwhile), and says the verdict. Sourced
/// from a file, so the lines typed stay short.
const SETTLE_SH: &str = r#"s=/run/chaos/certaintyd.status
at() { sed -n "s/^$1 //p" $s; }
settle() {
  until grep -q "^state $1" $s; do sleep 0.2; done
  u=$(at uptime_ms)
  until [ "$(at uptime_ms)" -gt $((u + 2500)) ]; do sleep 0.2; done
  while grep -q "^state verifying" $s; do sleep 0.2; done
  echo "certaintyd says: $(at state)"
}
"#;

#[test]
fn in_expert_mode_tmp_and_run_are_the_operators_and_the_root_stays_guarded() {
    let image = test_image_with("expert-guarded", &[], |spec| {
        spec.file(SETTLE, 0o644, SETTLE_SH).unwrap();
    });
    let mut vm = boot(&config(
        &image,
        "chaos.mode=expert ip=off chaos.watchdog.grace=3s chaos.watchdog.interval=1s",
    ));
    vm.expect("init: expert mode: shell on the console", BOOT_TIMEOUT)
        .step();
    vm.expect(PROMPT, STEP_TIMEOUT).step();
    run(&mut vm, &format!(". {SETTLE}"), &[]);
    run(
        &mut vm,
        "echo scratch > /tmp/scratch; echo scratch > /run/scratch; settle ok",
        &["certaintyd says: ok"],
    );
    // A window opened on purpose: a change made in it goes unremarked...
    run(
        &mut vm,
        "certaintyd pause 5m && echo probe > /etc/probe && settle paused",
        &["certaintyd says: paused"],
    );
    // ... and undone before it closes, the root is as built again.
    run(
        &mut vm,
        "rm /etc/probe; certaintyd resume; settle ok",
        &["certaintyd says: ok"],
    );
    vm.type_serial("echo oops > /etc/oops\n").step();
    for line in [
        "violation: /etc/oops: added (file)",
        "init: shutdown: reboot requested by SIGUSR1",
    ] {
        vm.expect(line, STEP_TIMEOUT).step();
    }
    vm.wait_exit(STEP_TIMEOUT).step();
    let console = vm.console();
    for path in ["/tmp", "/run", "/etc/probe"] {
        assert!(
            !console.contains(&format!("violation: {path}")),
            "{path} counted as a change:\n{console}"
        );
    }
}

/// Waits for init's `fatal` line, then for the emergency shell's prompt.
fn expect_emergency_shell(vm: &mut Vm, fatal: &str) {
    for line in [
        fatal,
        "init: expert mode: emergency shell on the console; exit it to reboot",
        PROMPT,
    ] {
        vm.expect(line, BOOT_TIMEOUT).step();
    }
}

/// A boot that cannot go on leaves an expert at a shell instead of a
/// countdown; leaving the shell reboots. Two nodes at once: one fails
/// late (an image without its integrity watchdog, which init refuses to
/// run), one at the first phase, before init has read its command line
/// (/sys a plain file, so the mounts cannot be made).
#[test]
fn in_expert_mode_a_fatal_boot_error_gives_the_emergency_shell() {
    let image = test_image_with("expert-emergency", &[], |spec| {
        spec.remove("/sbin/certaintyd").unwrap();
    });
    let early = test_image_with("expert-no-sys", &[], |spec| {
        spec.remove("/sys").unwrap();
        spec.file("/sys", 0o644, "not a directory").unwrap();
    });
    let mut vm = boot(&config(&image, "chaos.mode=expert ip=off"));
    let mut early_vm = boot(&config(&early, "chaos.mode=expert ip=off"));
    expect_emergency_shell(
        &mut early_vm,
        "init: fatal: phase mount: creating the mount point /sys",
    );
    run(&mut early_vm, "cat /proc/cmdline", &["chaos.mode=expert"]);
    expect_emergency_shell(
        &mut vm,
        "init: fatal: phase table: the integrity watchdog cannot run",
    );
    run(&mut vm, "echo $((6 * 7)) in $PWD", &["42 in /tmp"]);
    vm.type_serial("exit\n").step();
    for line in ["init: rebooting in 1 s", "reboot: Restarting system"] {
        vm.expect(line, STEP_TIMEOUT).step();
    }
    assert!(
        !vm.console().contains("@chaos ready"),
        "a node without its integrity watchdog came up:\n{}",
        vm.console()
    );
}

/// On the head: waits until `tyd nodes` lists drone1 as left.
fn left_watcher() -> Service {
    let mut watcher = script(
        "watcher",
        "until tyd nodes 2>/dev/null | awk '$2 == \"drone1\" && $5 == \"left\" { found = 1 } \
         END { exit !found }'; do sleep 0.5; done; echo \"watcher: tyd nodes lists drone1 as left\"",
    );
    watcher.restart = Restart::Never;
    watcher
}

#[test]
fn the_screen_shows_the_cluster_and_esc_confirmed_leaves_it_and_powers_off() {
    let fixture = fixture();
    let identity = cluster_identity("screen");
    let member = |role| Membership {
        dir: identity.clone(),
        role,
    };
    let head_image = test_image_with("screen-head", &[left_watcher()], |spec| {
        cluster::add(spec, &fixture.kernel, &member(Role::Head)).expect("the head's identity")
    });
    let drone_image = test_image_with("screen-drone", &[], |spec| {
        cluster::add(spec, &fixture.kernel, &member(Role::Drone { head: None }))
            .expect("the drones' identity")
    });
    std::fs::remove_dir_all(&identity).unwrap();

    let hub = Hub::start().step();
    let node = |image: &Written, index: usize| {
        boot(&cluster::node_config(&fixture.kernel, image, &hub, index, "").step())
    };
    let mut head = node(&head_image, 0);
    let mut first = node(&drone_image, 1);
    // drone2 stays up, a node drone1's screen lists.
    let mut second = node(&drone_image, 2);

    // Each drone on its own console, as they join in either order.
    second
        .expect_fact(fact::NODE, &[("state", "joined")], BOOT_TIMEOUT)
        .step();
    let joined = first
        .expect_fact(fact::NODE, &[("state", "joined")], BOOT_TIMEOUT)
        .step();
    let (Some(id), Some(overlay)) = (
        joined.get("node"),
        joined.get("overlay").and_then(|o| o.split('/').next()),
    ) else {
        panic!("no node id and overlay address in {joined:?}");
    };

    // drone1's screen: its state and addresses, then every node's row.
    for line in [
        " chaos node drone1".to_string(),
        format!(" state    joined: node {id}, 3 of 3 nodes up"),
        format!(
            " LAN      {:<16} overlay  {overlay}",
            cluster::lan_address(1).to_string()
        ),
    ] {
        first.expect(&line, STEP_TIMEOUT).step();
    }
    let own_row = format!("> {:<16} {overlay}", "drone1");
    first
        .expect_all(&["  head*", &own_row, "  drone2 "], STEP_TIMEOUT)
        .step();
    first
        .expect(
            " Esc: leave and power off   r: leave and reboot   l: the log",
            STEP_TIMEOUT,
        )
        .step();

    first.type_serial("\x1b").step();
    first
        .expect(
            "Leave the cluster and power off this PC? y: yes, any other key: no",
            STEP_TIMEOUT,
        )
        .step();
    first.type_serial("y").step();
    first
        .expect("leaving the cluster, then powering off", STEP_TIMEOUT)
        .step();
    first
        .expect(
            "init: shutdown: power-off requested by SIGUSR2",
            STEP_TIMEOUT,
        )
        .step();
    head.expect_fact(
        fact::MEMBER,
        &[("node", id), ("state", "left")],
        STEP_TIMEOUT,
    )
    .step();
    head.expect("watcher: tyd nodes lists drone1 as left", STEP_TIMEOUT)
        .step();
    first.wait_exit(STEP_TIMEOUT).step();
}
