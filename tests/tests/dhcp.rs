//! The node's own DHCP client under QEMU, against dnsmasq in a namespace the
//! test makes: of two NICs the one with a server gets the lease, which is
//! renewed, given back at power-off, and asked for again when it runs out;
//! an e1000e on QEMU's user network. Virtio and e1000e are in both kernels,
//! so these hold on either (the module-loading side is in modules.rs).

use chaos_contract::service::Restart;
use chaos_tests::*;

/// What the probe service prints: the host name, fix_hosts' files, the
/// lease file, addresses and routes.
const PROBE: &str = "echo hostname=$(hostname); cat /etc/resolv.conf /etc/hosts /run/chaos/lease; \
                     ip -4 addr show; ip -4 route";

fn probe() -> chaos_contract::service::Service {
    let mut probe = script("probe", PROBE);
    probe.restart = Restart::Never;
    probe
}

/// dnsmasq serving DHCP on the namespace's bridge only, logging to `log`.
fn dnsmasq(ns: &Netns, log: &std::path::Path) -> std::process::Child {
    let mut command = std::process::Command::new("ip");
    command.args(["netns", "exec", &ns.name, "dnsmasq", "--keep-in-foreground"]);
    command.args([
        "--conf-file=/dev/null",
        "--interface=br0",
        "--bind-interfaces",
        "--port=0",
        "--leasefile-ro",
        "--pid-file",
        "--log-dhcp",
        // dnsmasq's shortest lease: T1 at 60 s, T2 at 105 s.
        "--dhcp-range=192.168.99.50,192.168.99.60,255.255.255.0,2m",
        "--dhcp-option=option:router,192.168.99.1",
        "--dhcp-option=option:dns-server,192.168.99.1",
        "--dhcp-option=option:domain-name,lab",
        "--dhcp-option=option:ntp-server,192.168.99.1",
        "--dhcp-host=52:54:00:00:00:02,drone3",
    ]);
    command.arg(format!("--log-facility={}", log.display()));
    command
        .spawn()
        .expect("starting dnsmasq (package dnsmasq-base)")
}

/// The lab's side: a bridge in a namespace with dnsmasq on it, and a second
/// tap that no server listens on.
struct Lab {
    ns: Netns,
    dnsmasq: std::process::Child,
    log: std::path::PathBuf,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        require_root();
        let ns = Netns::new(tag);
        for command in [
            "ip link add br0 type bridge",
            "ip addr add 192.168.99.1/24 dev br0",
            "ip link set br0 up",
            // eth0's wire: up, but nothing answers on it.
            "ip tuntap add dev tap0 mode tap",
            "ip link set tap0 up",
            // eth1's wire: on the bridge with dnsmasq.
            "ip tuntap add dev tap1 mode tap",
            "ip link set tap1 master br0",
            "ip link set tap1 up",
        ] {
            ns.run(&command.split(' ').collect::<Vec<_>>());
        }
        let log =
            std::env::temp_dir().join(format!("chaos-{tag}-{}.dnsmasq.log", std::process::id()));
        let _ = std::fs::remove_file(&log);
        let dnsmasq = dnsmasq(&ns, &log);
        Lab { ns, dnsmasq, log }
    }

    /// Stops the DHCP server (the lab's server going away).
    fn stop_server(&mut self) {
        let _ = self.dnsmasq.kill();
        let _ = self.dnsmasq.wait();
    }

    /// Starts it again, logging to the same file.
    fn start_server(&mut self) {
        self.dnsmasq = dnsmasq(&self.ns, &self.log);
    }

    /// Waits until dnsmasq's log has `needle` `count` times. dnsmasq writes
    /// the line as it answers, so by the time the node shows the answer the
    /// line is there or about to be; the deadline covers the write.
    fn expect_logged(&self, needle: &str, count: usize) {
        let deadline = std::time::Instant::now() + STEP_TIMEOUT;
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if text.matches(needle).count() >= count {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "dnsmasq logged {needle:?} fewer than {count} times:\n{text}"
            );
            // Polling a file: dnsmasq gives no other signal that it wrote.
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_server();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Two virtio NICs: eth0 on the wire without a server, eth1 on dnsmasq's.
fn two_nics(lab: &Lab, image: &xtask::image::Written) -> xtask::vm::Config {
    let mut config = config(image, "ip=dhcp");
    config.wrapper = lab.ns.wrapper();
    config.qemu_args = [
        "-netdev",
        "tap,id=n0,ifname=tap0,script=no,downscript=no",
        "-device",
        "virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01",
        "-netdev",
        "tap,id=n1,ifname=tap1,script=no,downscript=no",
        "-device",
        "virtio-net-pci,netdev=n1,mac=52:54:00:00:00:02",
    ]
    .map(String::from)
    .to_vec();
    config
}

#[test]
fn of_two_nics_the_one_with_a_server_gets_the_lease_which_is_renewed_and_released() {
    let lab = Lab::new("dhcp2");
    let image = test_image("dhcp-two-nics", &[probe()]);
    let config = two_nics(&lab, &image);
    let mut vm = boot(&config);
    vm.expect("init: dhcp: asking for a lease on eth0, eth1", BOOT_TIMEOUT)
        .step();
    vm.expect(
        "@chaos lease interface=eth1 address=192.168.99.5",
        STEP_TIMEOUT,
    )
    .step();
    for line in [
        "@chaos ready host=drone3",
        "probe: hostname=drone3",
        "probe: search lab",
        "probe: nameserver 192.168.99.1",
        "probe: interface=eth1",
        "probe: ntp=192.168.99.1",
        "probe: lease_seconds=120",
        "probe: renew_seconds=60",
        // `ip -4 addr show` lists only interfaces with an address.
        "scope global eth1",
        "probe: default via 192.168.99.1 dev eth1",
    ] {
        vm.expect(line, STEP_TIMEOUT).step();
    }
    // None on eth0, the NIC without a server.
    vm.expect("init: service probe exited with status 0", STEP_TIMEOUT)
        .step();
    let console = vm.console();
    assert!(!console.contains("scope global eth0"), "{console}");
    assert!(!console.contains("eth0: bound"), "{console}");
    lab.expect_logged("DHCPACK(br0) 192.168.99.5", 1);

    // T1 is 60 s after the ACK: the renewal goes unicast to dnsmasq.
    vm.expect(
        "init: dhcp: eth1: renewing 192.168.99.5",
        Duration::from_secs(120),
    )
    .step();
    vm.expect("init: dhcp: eth1: lease of 192.168.99.5", STEP_TIMEOUT)
        .step();
    lab.expect_logged("DHCPACK(br0) 192.168.99.5", 2);

    vm.qmp("system_powerdown").step();
    vm.expect("init: dhcp: eth1: released 192.168.99.5", STEP_TIMEOUT)
        .step();
    lab.expect_logged("DHCPRELEASE(br0) 192.168.99.5", 1);
    vm.expect("reboot: Power down", STEP_TIMEOUT).step();
}

#[test]
fn a_lease_that_runs_out_is_given_up_and_a_new_one_acquired() {
    let mut lab = Lab::new("dhcplost");
    let image = test_image("dhcp-lost", &[]);
    let mut vm = boot(&two_nics(&lab, &image));
    vm.expect(
        "@chaos lease interface=eth1 address=192.168.99.5",
        BOOT_TIMEOUT,
    )
    .step();
    lab.stop_server();
    // Renewing from T1 (60 s), rebinding from T2 (105 s), expiry at 120 s.
    vm.expect(
        "init: dhcp: eth1: renewing 192.168.99.5",
        Duration::from_secs(120),
    )
    .step();
    vm.expect(
        "init: dhcp: eth1: rebinding 192.168.99.5",
        Duration::from_secs(120),
    )
    .step();
    vm.expect(
        "init: dhcp: eth1: lost the lease of 192.168.99.5",
        Duration::from_secs(60),
    )
    .step();
    lab.start_server();
    // The kernel-style summary comes first, the machine-read fact last.
    vm.expect(
        "init: IP-Config: Complete: device=eth1",
        Duration::from_secs(120),
    )
    .step();
    vm.expect(
        "@chaos lease interface=eth1 address=192.168.99.5",
        STEP_TIMEOUT,
    )
    .step();
    // dnsmasq appends to its log: the first lease and the new one.
    lab.expect_logged("DHCPACK(br0) 192.168.99.5", 2);
}

/// The Intel NIC of most lab PCs of the last decade (e1000e): built into
/// the custom kernel, probed as a module on Debian's; either way it gets
/// its lease from QEMU's user network with no ip= at all.
#[test]
fn an_e1000e_gets_its_lease_from_qemus_user_network() {
    let image = test_image("dhcp-e1000e", &[probe()]);
    let mut config = config(&image, "");
    config.qemu_args = [
        "-netdev",
        "user,id=n0,hostname=drone8,domainname=lab.test",
        "-device",
        "e1000e,netdev=n0",
    ]
    .map(String::from)
    .to_vec();
    let mut vm = boot(&config);
    for line in [
        "@chaos lease interface=eth0 address=10.0.2.15/24 server=10.0.2.2",
        "@chaos ready host=drone8",
        "probe: hostname=drone8",
        "inet 10.0.2.15/24",
        "probe: default via 10.0.2.2 dev eth0",
        "init: service probe exited with status 0",
    ] {
        vm.expect(line, BOOT_TIMEOUT).step();
    }
}
