//! A node booted from the real image on Debian's kernel under QEMU: PID 1,
//! a static ip= applied and reachable, supervision with backoff, a bad ip=
//! survived, a broken service left out while the rest runs, an unusable
//! integrity watchdog fatal, and a clean power-off through the ACPI power
//! button.

use chaos_contract::service::Restart;
use chaos_tests::*;

/// The node's side of the test namespace's network.
const STATIC_IP: &str =
    "ip=192.168.77.10::192.168.77.1:255.255.255.0:drone7.lab::off:192.168.77.1:192.168.77.2";

#[test]
fn static_ip_is_applied_and_the_node_answers_ping() {
    require_root();
    let mut probe = script(
        "probe",
        "echo pid1=$(cat /proc/1/comm); echo hostname=$(hostname); \
         cat /etc/hostname /etc/hosts /etc/resolv.conf; ip -4 addr show; ip -4 route",
    );
    probe.restart = Restart::Never;
    let image = test_image("static-ip", &[probe]);

    let ns = Netns::new("static");
    ns.run(&["ip", "tuntap", "add", "dev", "tap0", "mode", "tap"]);
    ns.run(&["ip", "addr", "add", "192.168.77.1/24", "dev", "tap0"]);
    ns.run(&["ip", "link", "set", "tap0", "up"]);
    let mut config = config(&image, STATIC_IP);
    config.wrapper = ns.wrapper();
    config.qemu_args = [
        "-netdev",
        "tap,id=n0,ifname=tap0,script=no,downscript=no",
        "-device",
        "virtio-net-pci,netdev=n0",
    ]
    .map(String::from)
    .to_vec();
    let mut vm = boot(&config);

    vm.expect("@chaos ready host=drone7", BOOT_TIMEOUT).step();
    for line in [
        "probe: pid1=init",
        "probe: hostname=drone7",
        "probe: drone7",
        "probe: 192.168.77.10\tdrone7.lab drone7",
        "probe: nameserver 192.168.77.1",
        "probe: nameserver 192.168.77.2",
        "inet 192.168.77.10/24",
        "probe: default via 192.168.77.1 dev eth0",
        "init: service probe exited with status 0",
    ] {
        vm.expect(line, STEP_TIMEOUT).step();
    }
    // The address is configured before services start, so the first
    // answered ping is the event; each try is bounded by its own timeout.
    let answered = (0..10).any(|_| ns.try_run(&["ping", "-c", "1", "-W", "2", "192.168.77.10"]));
    assert!(
        answered,
        "node did not answer ping; console:\n{}",
        vm.console()
    );
}

#[test]
fn a_crashing_service_backs_off_then_is_given_up_and_init_stays_up() {
    let image = test_image("crashy", &[script("crashy", "echo crashing; exit 3")]);
    let mut vm = boot(&config(&image, "").user_net());
    // Services start within the boot, so the first start precedes "ready".
    let mut starts = vec![vm.expect("started service crashy", BOOT_TIMEOUT).step()];
    for (attempt, delay) in [(1, 250), (2, 500), (3, 1000), (4, 2000), (5, 4000)] {
        vm.expect("service crashy exited with status 3 after", STEP_TIMEOUT)
            .step();
        vm.expect(&format!("restart {attempt}/5 in {delay} ms"), STEP_TIMEOUT)
            .step();
        starts.push(vm.expect("started service crashy", STEP_TIMEOUT).step());
    }
    vm.expect("giving up after 5 restarts (crash loop)", STEP_TIMEOUT)
        .step();
    // The delays really grew: each start comes at least its delay after the
    // previous one (a lower bound, so a slow machine cannot fail it).
    let times: Vec<f64> = starts
        .iter()
        .map(|line| xtask::vm::timestamp(line).step())
        .collect();
    for (gap, delay) in times.windows(2).zip([0.25, 0.5, 1.0, 2.0, 4.0]) {
        assert!(
            gap[1] - gap[0] >= delay,
            "restart came {:.3} s after the crash, before its {delay} s delay",
            gap[1] - gap[0]
        );
    }
    // PID 1 is still there and in charge: it answers the power button.
    vm.qmp("system_powerdown").step();
    vm.expect("reboot: Power down", STEP_TIMEOUT).step();
}

#[test]
fn a_malformed_ip_is_named_and_the_node_still_comes_up() {
    let image = test_image("bad-ip", &[]);
    let mut vm = boot(&config(&image, "ip=192.168.1.300:::255.255.255.0::eth0:off").user_net());
    vm.expect(
        "ip=: field 1 (client-ip) \"192.168.1.300\" is not an IPv4 address",
        BOOT_TIMEOUT,
    )
    .step();
    vm.expect("@chaos ready", STEP_TIMEOUT).step();
}

#[test]
fn the_power_button_stops_services_in_reverse_order_and_powers_off() {
    let sleeper = |name: &str| {
        script(
            name,
            &format!("trap 'echo {name} got TERM; exit 0' TERM; echo {name} up; while true; do sleep 1; done"),
        )
    };
    let first = sleeper("first");
    let mut second = sleeper("second");
    second.after = vec!["first".to_string()];
    let image = test_image("powerdown", &[second, first]);
    let mut vm = boot(&config(&image, "").user_net());
    vm.expect("init: started service first", BOOT_TIMEOUT)
        .step();
    vm.expect("init: started service second", STEP_TIMEOUT)
        .step();
    // Both run at once, so their first lines may come in either order.
    vm.expect_all(&["first: first up", "second: second up"], STEP_TIMEOUT)
        .step();

    vm.qmp("system_powerdown").step();
    for line in [
        "init: shutdown: power-off requested by the power button",
        "second: second got TERM",
        "init: stopped service second",
        "first: first got TERM",
        "init: stopped service first",
        "init: power-off: filesystems synced",
        "reboot: Power down",
    ] {
        vm.expect(line, STEP_TIMEOUT).step();
    }
    let status = vm.wait_exit(STEP_TIMEOUT).step();
    assert!(status.success(), "QEMU ended with {status}");
}

#[test]
fn a_fatal_boot_error_counts_down_and_reboots_instead_of_exiting() {
    // /proc as a plain file: the mount phase cannot succeed, so PID 1 must
    // take the emergency path; if it exited, the kernel would panic.
    let image = test_image_with("no-proc", &[], |spec| {
        spec.remove("/proc").unwrap();
        spec.file("/proc", 0o644, "not a directory").unwrap();
    });
    let mut vm = boot(&config(&image, "").user_net());
    vm.expect(
        "init: fatal: phase mount: creating the mount point /proc",
        BOOT_TIMEOUT,
    )
    .step();
    for left in (1..=10).rev() {
        vm.expect(&format!("init: rebooting in {left} s"), STEP_TIMEOUT)
            .step();
    }
    vm.expect("reboot: Restarting system", STEP_TIMEOUT).step();
    let console = vm.console();
    assert!(
        !console.contains("Attempted to kill init"),
        "PID 1 exited:\n{console}"
    );
}

#[test]
fn a_broken_service_costs_only_itself_but_an_unusable_watchdog_is_fatal() {
    let mut good = script("good", "echo good ran");
    good.restart = Restart::Never;
    let mut after_broken = script("after-broken", "echo after-broken ran");
    after_broken.after = vec!["broken".to_string()];
    let spec = test_spec(&[good, after_broken], |spec| {
        let file = format!("{}/broken", chaos_contract::paths::SERVICES);
        spec.file(&file, 0o644, "exec = /bin/sh\nrestart = sometimes\n")
            .unwrap();
    });
    // `cargo xtask image` refuses such a table; written as is to see what
    // init does with one.
    assert!(xtask::image::write(&spec, &test_image_path("broken-service")).is_err());
    let broken = xtask::image::write_as_is(&spec, &test_image_path("broken-service")).step();
    let blind = test_image_with("no-certaintyd", &[], |spec| {
        spec.remove("/sbin/certaintyd").unwrap();
    });

    let mut vm = boot(&config(&broken, "").user_net());
    let mut blind_vm = boot(&config(&blind, "").user_net());
    // Problems are reported by service name.
    for line in [
        "init: service after-broken left out: /etc/chaos/services/after-broken: line 5: \
         starts after broken, which is broken",
        "init: service broken left out: /etc/chaos/services/broken: line 2: \
         restart \"sometimes\" is not one of always, on-failure, never",
        "@chaos service name=broken state=broken",
        "init: started service certaintyd",
    ] {
        vm.expect(line, BOOT_TIMEOUT).step();
    }
    vm.expect_all(&["good: good ran", "@chaos ready host="], STEP_TIMEOUT)
        .step();
    assert!(
        !vm.console().contains("after-broken ran"),
        "a service after a broken one ran:\n{}",
        vm.console()
    );

    blind_vm
        .expect(
            "init: fatal: phase table: the integrity watchdog cannot run: /sbin/certaintyd",
            BOOT_TIMEOUT,
        )
        .step();
    blind_vm
        .expect("init: rebooting in 10 s", STEP_TIMEOUT)
        .step();
    assert!(
        !blind_vm.console().contains("@chaos ready"),
        "a node without its integrity watchdog came up:\n{}",
        blind_vm.console()
    );
}
