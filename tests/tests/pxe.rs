//! Network boot under QEMU with real firmware, real iPXE and real dnsmasq:
//!
//! - BIOS and UEFI through QEMU's user network: its TFTP hands the NIC's
//!   boot ROM (QEMU's ROMs are iPXE, for SeaBIOS and for OVMF) the boot
//!   script, which fetches kernel and initramfs over HTTP from `netboot`'s
//!   server on the host's loopback. The same ROM also loads
//!   undionly.kpxe, the BIOS first stage, which then boots the node
//!   through the ROM's PXE stack.
//! - UEFI through QEMU's user network: OVMF's PXE client fetches the unified
//!   kernel image over TFTP (ipxe.efi is shown in the labs below, where
//!   dnsmasq breaks iPXE's chain-loading loop).
//! - A lab in network namespaces: the LAN's own DHCP server (a plain
//!   dnsmasq), `netboot serve` in proxy-DHCP mode beside it, a BIOS and a
//!   UEFI PC on a bridge; both boot, and `netboot` logs their downloads and
//!   stops everything it started on SIGTERM.
//! - An isolated network with `netboot serve --dhcp` as its only DHCP
//!   server: a BIOS and a UEFI PC boot and lease from its range.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use chaos_contract::fact;
use chaos_tests::*;
use netboot::boot::{self, SCRIPT};
use netboot::netns::Output;
use xtask::vm::{Firmware, Vm};

/// A PXE tree for a test image, in build/tests/<name>.
fn tree(name: &str) -> (PathBuf, String) {
    let image = test_image(name, &[]);
    let dir = xtask::build_dir().join("tests").join(name);
    let append = image.root_digest_arg();
    xtask::pxe::build(&fixture().kernel.vmlinuz, &image.path, &append, &dir).step();
    (dir, append)
}

#[test]
fn pxe_over_the_user_network_fetches_the_kernel_over_http_on_bios_and_uefi() {
    let (root, append) = tree("pxe-user-http");
    for firmware in [Firmware::Bios, Firmware::Uefi] {
        let pxe = xtask::pxe::UserNet::serve(&root, &append).step();
        let mut vm = boot(&pxe.config(firmware, SCRIPT));
        vm.expect("@chaos ready", BOOT_TIMEOUT).step();
        let downloads = pxe.downloads.lock().unwrap().clone();
        for file in [boot::KERNEL, boot::INITRD] {
            assert!(
                downloads
                    .iter()
                    .any(|l| l.contains(&format!(" GET /{file} 200 "))),
                "{firmware:?}: no HTTP download of {file}: {downloads:?}"
            );
        }
    }
}

#[test]
fn undionly_kpxe_boots_the_node_through_the_nic_roms_pxe_stack() {
    // undionly.kpxe is what dnsmasq gives a BIOS PC whose NIC ROM is not
    // iPXE, but every QEMU NIC ROM is iPXE, which dnsmasq hands the script
    // at once. iPXE's ROM offers the PXE API (UNDI) to what it loads, as a
    // vendor's PXE ROM does, so here the ROM loads undionly.kpxe as any PXE
    // program and undionly drives the NIC through that API.
    let (root, append) = tree("pxe-undionly");
    let pxe = xtask::pxe::UserNet::serve(&root, &append).step();
    xtask::pxe::copy(
        &root.join(boot::BIOS_FIRST_STAGE),
        &pxe.tftp.join(boot::BIOS_FIRST_STAGE),
    )
    .step();
    // The ROM gets this script first and loads undionly.kpxe; undionly
    // gets it again (the ROM's DHCP reply, handed on) and, seeing its own
    // driver, takes the tree's script over HTTP, which the ROM never does.
    let chain = "chain.ipxe";
    std::fs::write(
        pxe.tftp.join(chain),
        format!(
            "#!ipxe\n\
             iseq ${{net0/chip}} undionly && chain {}{SCRIPT} || chain {}\n",
            pxe.base,
            boot::BIOS_FIRST_STAGE
        ),
    )
    .unwrap();
    let mut vm = boot(&pxe.config(Firmware::Bios, chain));
    vm.expect("@chaos ready", BOOT_TIMEOUT).step();
    let downloads = pxe.downloads.lock().unwrap().clone();
    for file in [SCRIPT, boot::KERNEL, boot::INITRD] {
        assert!(
            downloads
                .iter()
                .any(|l| l.contains(&format!(" GET /{file} 200 "))),
            "no HTTP download of {file} by undionly.kpxe: {downloads:?}"
        );
    }
}

#[test]
fn uefi_pxe_over_the_user_network_boots_the_unified_kernel_image() {
    let image = test_image("pxe-user-uefi", &[]);
    let uki = xtask::build_dir().join("tests/pxe-user-uefi/chaos.efi");
    std::fs::create_dir_all(uki.parent().unwrap()).unwrap();
    xtask::uki::build(
        &fixture().kernel.vmlinuz,
        &image.path,
        &image.root_digest_arg(),
        &uki,
    )
    .step();
    let mut vm = boot(&xtask::pxe::uefi_user_net(&uki).step());
    vm.expect("NBP filename is chaos.efi", BOOT_TIMEOUT).step();
    vm.expect("@chaos ready", BOOT_TIMEOUT).step();
}

/// `netboot serve` as an administrator runs it; its output lines arrive on
/// a channel so the test waits for events, not for time.
struct Netboot {
    child: Child,
    output: Output,
}

impl Netboot {
    /// `netboot serve --root ROOT ARGS...` in `ns`, on a free HTTP port.
    fn start(ns: &Netns, root: &Path, args: &[&str]) -> Netboot {
        let program = xtask::pxe::netboot_binary().step();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(program)
            .args(["serve", "--http-port", "0", "--root"])
            .arg(root)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting netboot");
        let output = Output::of(&mut child);
        Netboot { child, output }
    }

    /// Waits for a line containing every one of `needles`.
    fn expect(&mut self, needles: &[&str], timeout: Duration) -> String {
        self.output
            .expect(needles, timeout)
            .unwrap_or_else(|e| panic!("netboot serve: {e:#}"))
    }

    /// Waits until netboot's HTTP server has sent the kernel and the
    /// initramfs to one of `addresses` (a PC's, as its firmware and iPXE
    /// may each lease one): the large files went over HTTP, not TFTP.
    fn expect_http_boot(&mut self, addresses: &[String]) {
        for file in [boot::KERNEL, boot::INITRD] {
            let request = format!("GET /{file} 200");
            self.output
                .expect_where(
                    |l| {
                        l.contains(&request)
                            && addresses.iter().any(|a| l.contains(&format!("http: {a} ")))
                    },
                    &format!("with {request:?} from one of {addresses:?}"),
                    STEP_TIMEOUT,
                )
                .unwrap_or_else(|e| panic!("netboot serve: {e:#}"));
        }
    }

    /// Sends SIGTERM, as Ctrl-C or a service manager would. `ip netns exec`
    /// execs netboot, so the pid is netboot's.
    fn terminate(&self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
    }
}

impl Drop for Netboot {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL, even when a test failed: netboot stops its
        // dnsmasq on the way out, which a killed netboot would leave behind.
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
            let _ = self.child.wait();
        }
    }
}

/// A switch (bridge br0) in `lab` with one tap per PC.
fn switch(lab: &Netns, taps: &[&str]) {
    lab.run(&["ip", "link", "add", "br0", "type", "bridge"]);
    lab.run(&["ip", "link", "set", "br0", "up"]);
    for tap in taps {
        lab.run(&["ip", "tuntap", "add", "dev", tap, "mode", "tap"]);
        lab.run(&["ip", "link", "set", tap, "master", "br0", "up"]);
    }
}

/// A PC on `tap` of `lab`'s switch that boots from the network. The BIOS
/// PC's NIC ROM is QEMU's iPXE; the UEFI PC's firmware PXE client loads
/// ipxe.efi over TFTP first.
fn pc(lab: &Netns, tap: &str, mac: &str, firmware: Firmware) -> Vm {
    let netdev = format!("tap,id=n0,ifname={tap},script=no,downscript=no");
    let rom = if firmware == Firmware::Uefi {
        ",romfile="
    } else {
        ""
    };
    let device = format!("virtio-net-pci,netdev=n0,mac={mac}{rom}");
    let mut config = xtask::pxe::network_boot(firmware, &netdev, &device);
    config.wrapper = lab.wrapper();
    boot(&config)
}

#[test]
fn proxy_dhcp_beside_the_lans_dhcp_server_boots_bios_and_uefi_pcs() {
    require_root();
    let (root, _) = tree("pxe-lab");
    // The lab: a switch in one namespace, the LAN's DHCP server and the
    // head each in their own, the PCs on taps.
    let lab = Netns::new("pxe-lab");
    let lan = Netns::new("pxe-lan");
    let head = Netns::new("pxe-head");
    switch(&lab, &["tap0", "tap1"]);
    for (ns, port, addr) in [
        (&lan, "v-lan", "192.168.90.1/24"),
        (&head, "v-head", "192.168.90.2/24"),
    ] {
        lab.run(&[
            "ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ]);
        lab.run(&["ip", "link", "set", port, "master", "br0", "up"]);
        ns.run(&["ip", "addr", "add", addr, "dev", "eth0"]);
        ns.run(&["ip", "link", "set", "eth0", "up"]);
    }
    let leases = root.join("lan.leases");
    let mut lan_dhcp = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lan.name,
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
        ])
        .args([
            "--port=0",
            "--interface=eth0",
            "--bind-interfaces",
            "--pid-file=",
        ])
        .arg("--dhcp-range=192.168.90.100,192.168.90.150,255.255.255.0,1h")
        .arg(format!("--dhcp-leasefile={}", leases.display()))
        .spawn()
        .expect("starting the LAN's dnsmasq");

    let mut netboot = Netboot::start(&head, &root, &["--interface", "eth0"]);
    netboot.expect(&["serving eth0 (192.168.90.2): proxy-DHCP"], STEP_TIMEOUT);

    let mut bios = pc(&lab, "tap0", "52:54:00:00:90:01", Firmware::Bios);
    let mut uefi = pc(&lab, "tap1", "52:54:00:00:90:02", Firmware::Uefi);
    bios.expect("@chaos ready", BOOT_TIMEOUT).step();
    uefi.expect("@chaos ready", BOOT_TIMEOUT).step();

    // Each PC got its address from the LAN's server, its boot from netboot.
    let leases = std::fs::read_to_string(&leases).unwrap();
    for mac in ["52:54:00:00:90:01", "52:54:00:00:90:02"] {
        assert!(
            leases.contains(mac),
            "{mac} has no lease from the LAN's DHCP server:\n{leases}"
        );
    }
    // The UEFI PC took only iPXE by TFTP: its kernel and initramfs came
    // over HTTP, to an address the LAN's server leased it (its firmware,
    // iPXE and the node may each have taken one).
    let uefi_addresses: Vec<String> = leases
        .lines()
        .filter(|l| l.contains("52:54:00:00:90:02"))
        .filter_map(|l| l.split_whitespace().nth(2).map(String::from))
        .collect();
    netboot.expect_http_boot(&uefi_addresses);
    netboot.expect(&["sent", "ipxe.efi to 192.168.90.1"], STEP_TIMEOUT);
    for file in [SCRIPT, boot::KERNEL, boot::INITRD] {
        // Two PCs, two downloads each, from the LAN's addresses.
        let mut from: Vec<String> = Vec::new();
        while from.len() < 2 {
            let line = netboot.expect(
                &["http: 192.168.90.1", &format!("GET /{file} 200")],
                STEP_TIMEOUT,
            );
            netboot.output.seen.retain(|l| l != &line);
            from.push(line);
        }
    }

    // SIGTERM stops dnsmasq and removes the configuration.
    let conf_dir = format!("/tmp/netboot-{}", netboot.child.id());
    assert!(
        Path::new(&conf_dir).exists(),
        "{conf_dir} missing while serving"
    );
    assert!(
        running_with(&conf_dir),
        "no dnsmasq running with {conf_dir}"
    );
    netboot.terminate();
    netboot.expect(&["netboot: stopped"], STEP_TIMEOUT);
    let status = netboot.child.wait().unwrap();
    assert!(status.success(), "netboot ended with {status}");
    assert!(!Path::new(&conf_dir).exists(), "{conf_dir} left behind");
    assert!(
        !running_with(&conf_dir),
        "dnsmasq still running after netboot stopped"
    );
    let _ = lan_dhcp.kill();
    let _ = lan_dhcp.wait();
}

#[test]
fn netboot_as_the_only_dhcp_server_leases_from_its_range_to_bios_and_uefi_pcs() {
    require_root();
    let (root, _) = tree("pxe-range");
    // An isolated network: the head's interface is the switch itself, and
    // nothing but netboot answers DHCP on it.
    let lab = Netns::new("pxe-range");
    switch(&lab, &["tap0", "tap1"]);
    lab.run(&["ip", "addr", "add", "192.168.91.1/24", "dev", "br0"]);
    let (first, last) = (
        Ipv4Addr::new(192, 168, 91, 100),
        Ipv4Addr::new(192, 168, 91, 109),
    );
    let range = format!("{first}-{last}");
    let mut netboot = Netboot::start(&lab, &root, &["--interface", "br0", "--dhcp", &range]);
    netboot.expect(
        &[&format!("serving br0 (192.168.91.1): DHCP for {range}")],
        STEP_TIMEOUT,
    );

    let pcs = [
        (
            "52:54:00:00:91:01",
            pc(&lab, "tap0", "52:54:00:00:91:01", Firmware::Bios),
        ),
        (
            "52:54:00:00:91:02",
            pc(&lab, "tap1", "52:54:00:00:91:02", Firmware::Uefi),
        ),
    ];
    for (mac, mut vm) in pcs {
        let uefi = mac.ends_with(":02");
        // The node's own DHCP, after the firmware's and iPXE's.
        let bound = vm
            .expect_fact(fact::LEASE, &[("interface", "eth0")], BOOT_TIMEOUT)
            .step();
        vm.expect("@chaos ready", STEP_TIMEOUT).step();
        let address: Ipv4Addr = bound
            .get("address")
            .and_then(|a| a.split_once('/'))
            .and_then(|(ip, _)| ip.parse().ok())
            .unwrap_or_else(|| panic!("no address in {bound}"));
        assert!(
            (first..=last).contains(&address),
            "{mac} was bound to {address}, outside {range}: {bound}"
        );
        assert_eq!(bound.get("server"), Some("192.168.91.1"), "{bound}");
        netboot.expect(&[&format!("DHCPACK(br0) {address} {mac}")], STEP_TIMEOUT);
        if uefi {
            // Every address netboot gave the UEFI PC (firmware, iPXE, node).
            let addresses: Vec<String> = netboot
                .output
                .seen
                .iter()
                .filter_map(|l| {
                    let mut words = l.split_whitespace().skip_while(|w| *w != "DHCPACK(br0)");
                    let (_, ip, to) = (words.next()?, words.next()?, words.next()?);
                    (to == mac).then(|| ip.to_string())
                })
                .collect();
            netboot.expect_http_boot(&addresses);
        }
    }
    for file in [boot::KERNEL, boot::INITRD] {
        netboot.expect(
            &["http: 192.168.91.1", &format!("GET /{file} 200")],
            STEP_TIMEOUT,
        );
    }
}

#[test]
fn uefi_http_boot_from_netboot_as_the_dhcp_server_needs_no_tftp() {
    require_root();
    let (root, _) = tree("pxe-http-boot");
    let lab = Netns::new("pxe-http");
    switch(&lab, &["tap0"]);
    lab.run(&["ip", "addr", "add", "192.168.92.1/24", "dev", "br0"]);
    let args = [
        "--interface",
        "br0",
        "--dhcp",
        "192.168.92.100-192.168.92.109",
    ];
    let mut netboot = Netboot::start(&lab, &root, &args);
    netboot.expect(&["serving br0 (192.168.92.1)"], STEP_TIMEOUT);
    http_boot(
        &lab,
        "52:54:00:00:92:01",
        &mut netboot,
        "http: 192.168.92.1",
    );
}

/// Boots a UEFI PC set to HTTP Boot on `lab`'s tap0 and checks that the
/// firmware fetched iPXE, and iPXE the script, kernel and initramfs, all
/// from netboot's HTTP server (log lines starting `from`), and nothing
/// from its TFTP server.
fn http_boot(lab: &Netns, mac: &str, netboot: &mut Netboot, from: &str) {
    let netdev = "tap,id=n0,ifname=tap0,script=no,downscript=no";
    let device = format!("virtio-net-pci,netdev=n0,mac={mac},romfile=");
    let mut config = xtask::pxe::uefi_http_boot(netdev, &device);
    config.wrapper = lab.wrapper();
    let mut vm = boot(&config);
    vm.expect("Start HTTP Boot over IPv4", BOOT_TIMEOUT).step();
    vm.expect("@chaos ready", BOOT_TIMEOUT).step();
    for file in [boot::UEFI_FIRST_STAGE, SCRIPT, boot::KERNEL, boot::INITRD] {
        netboot.expect(&[from, &format!("GET /{file} 200")], STEP_TIMEOUT);
    }
    let tftp: Vec<&String> = netboot
        .output
        .seen
        .iter()
        .filter(|l| l.contains("dnsmasq-tftp") && !l.contains("TFTP root is"))
        .collect();
    assert!(tftp.is_empty(), "TFTP was used: {tftp:?}");
}

/// Whether any process has `needle` in its command line.
fn running_with(needle: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
    })
}
