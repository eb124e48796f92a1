//! Kernel modules and boot modes on Debian's kernel under QEMU: coldplug
//! finds an e1000 and loads its driver, and the node takes its lease from
//! QEMU's user network; a NIC the image has no driver for is named on the
//! console and the node stays up; safe mode loads only what
//! `chaos.modules=` names; expert mode configures everything and adds a
//! shell; an image for another kernel is refused by name.

use chaos_contract::service::Restart;
use chaos_tests::*;

#[test]
fn an_e1000_is_autoprobed_and_gets_its_lease_from_qemus_user_network() {
    let mut probe = script(
        "probe",
        "echo hostname=$(hostname); cat /etc/resolv.conf /etc/hosts; ip -4 addr show; ip -4 route",
    );
    probe.restart = Restart::Never;
    let image = test_image("dhcp-e1000", &[probe]);
    // No ip= at all: DHCP on any NIC is the default.
    let mut config = config(&image, "");
    config.qemu_args = [
        "-netdev",
        "user,id=n0,hostname=drone9,domainname=lab.test",
        "-device",
        "e1000,netdev=n0,mac=52:54:00:12:34:56",
    ]
    .map(String::from)
    .to_vec();
    let mut vm = boot(&config);
    vm.expect("init: coldplug: e1000 for 0000:00:02.0", BOOT_TIMEOUT)
        .step();
    vm.expect(" e1000 (", STEP_TIMEOUT).step();
    for line in [
        "init: #PROTO: DHCP",
        "init: nameserver 10.0.2.3",
        "@chaos lease interface=eth0 address=10.0.2.15/24 server=10.0.2.2",
        "@chaos ready host=drone9",
        "probe: hostname=drone9",
        "probe: search lab.test",
        "probe: nameserver 10.0.2.3",
        "probe: 10.0.2.15\tdrone9.lab.test drone9",
        "inet 10.0.2.15/24",
        "probe: default via 10.0.2.2 dev eth0",
        "init: service probe exited with status 0",
    ] {
        vm.expect(line, STEP_TIMEOUT).step();
    }
}

/// A NIC model whose driver (vmxnet3) is not one of the image's; checked
/// against the image's listing so the premise cannot silently change.
#[test]
fn a_nic_without_a_driver_in_the_image_is_named_and_the_node_comes_up() {
    let image = test_image("no-driver", &[]);
    let listing = mkimage::list(std::fs::File::open(&image.path).unwrap()).unwrap();
    assert!(
        listing.iter().all(|e| !e.name.contains("vmxnet3")),
        "the image has vmxnet3 after all: pick another NIC model for this test"
    );
    let mut config = config(&image, "");
    config.qemu_args = ["-netdev", "user,id=n0", "-device", "vmxnet3,netdev=n0"]
        .map(String::from)
        .to_vec();
    let mut vm = boot(&config);
    vm.expect(
        "init: coldplug: no driver in this image for network controller 0000:00:02.0 [15ad:07b0] (class 0x020000)",
        BOOT_TIMEOUT,
    )
    .step();
    vm.expect("init: dhcp: no network interface to ask on", STEP_TIMEOUT)
        .step();
    vm.expect("@chaos ready host=chaos", STEP_TIMEOUT).step();
    // PID 1 is in charge: it answers the power button.
    vm.qmp("system_powerdown").step();
    vm.expect("reboot: Power down", STEP_TIMEOUT).step();
}

#[test]
fn safe_mode_skips_autoprobe_and_loads_only_the_modules_asked_for() {
    let image = test_image("safe-mode", &[]);
    let mut config = config(&image, "chaos.mode=safe chaos.modules=8139cp");
    config.qemu_args = ["-netdev", "user,id=n0", "-device", "e1000,netdev=n0"]
        .map(String::from)
        .to_vec();
    let mut vm = boot(&config);
    vm.expect("init: safe mode: no autoprobe", BOOT_TIMEOUT)
        .step();
    vm.expect("init: modules: loaded", STEP_TIMEOUT).step();
    vm.expect("8139cp (", STEP_TIMEOUT).step();
    vm.expect(
        "init: safe mode: no network autoconfiguration",
        STEP_TIMEOUT,
    )
    .step();
    vm.expect("@chaos ready", STEP_TIMEOUT).step();
    let console = vm.console();
    assert!(!console.contains("coldplug: e1000"), "{console}");
    assert!(!console.contains("e1000: Intel(R) PRO/1000"), "{console}");
}

#[test]
fn modules_for_another_kernel_are_refused_naming_both_releases() {
    let image = test_image_with("other-kernel", &[], |spec| {
        spec.remove(chaos_contract::paths::KERNEL_RELEASE).unwrap();
        spec.file(
            chaos_contract::paths::KERNEL_RELEASE,
            0o644,
            "5.10.0-99-amd64\n",
        )
        .unwrap();
    });
    let mut vm = boot(&config(&image, "").user_net());
    let release = &fixture().kernel.release;
    vm.expect(
        &format!(
            "this image was built for kernel 5.10.0-99-amd64, but the running kernel is {release}"
        ),
        BOOT_TIMEOUT,
    )
    .step();
    vm.expect("@chaos ready", STEP_TIMEOUT).step();
}

#[test]
fn expert_mode_configures_everything_then_starts_a_shell_on_the_console() {
    let image = test_image("expert-mode", &[]);
    let mut config = config(&image, "chaos.mode=expert");
    config.qemu_args = ["-netdev", "user,id=n0", "-device", "e1000,netdev=n0"]
        .map(String::from)
        .to_vec();
    let mut vm = boot(&config);
    for line in [
        "init: mode Expert",
        "init: coldplug: e1000 for",
        "@chaos lease interface=eth0 address=10.0.2.15/24",
        "@chaos ready host=node-",
        "init: expert mode: shell on the console (pid ",
    ] {
        vm.expect(line, BOOT_TIMEOUT).step();
    }
}
