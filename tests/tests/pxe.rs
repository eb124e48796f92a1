//! Network boot under QEMU with real firmware, real iPXE and real dnsmasq:
//!
//! - BIOS through QEMU's user network: its TFTP hands the NIC's boot ROM
//!   (QEMU's ROMs are iPXE) the boot script, which fetches kernel and
//!   initramfs over HTTP from `netboot`'s server on the host's loopback.
//!   The same ROM also loads undionly.kpxe, the BIOS first stage, which
//!   then boots the node through the ROM's PXE stack.
//! - UEFI through QEMU's user network: OVMF's PXE client fetches the unified
//!   kernel image over TFTP (ipxe.efi is shown in the labs below, where
//!   dnsmasq breaks iPXE's chain-loading loop).
//! - A lab in network namespaces: the LAN's own DHCP server (a plain
//!   dnsmasq), `netboot serve` in proxy-DHCP mode beside it, a BIOS and a
//!   UEFI PC on a bridge; both boot, and `netboot` logs their downloads and
//!   stops everything it started on SIGTERM.
//! - An isolated network with `netboot serve --dhcp` as its only DHCP
//!   server: a BIOS and a UEFI PC boot and lease from its range.

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use chaos_tests::*;
use netboot::boot::{self, SCRIPT};
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
fn bios_pxe_over_the_user_network_fetches_the_kernel_over_http() {
    let (root, append) = tree("pxe-user-bios");
    let pxe = xtask::pxe::UserNetBios::serve(&root, &append).step();
    let mut vm = boot(&pxe.config(SCRIPT));
    vm.expect("init: ready", BOOT_TIMEOUT).step();
    let downloads = pxe.downloads.lock().unwrap().clone();
    for file in [boot::KERNEL, boot::INITRD] {
        assert!(
            downloads
                .iter()
                .any(|l| l.contains(&format!(" GET /{file} 200 "))),
            "no HTTP download of {file}: {downloads:?}"
        );
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
    let pxe = xtask::pxe::UserNetBios::serve(&root, &append).step();
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
    let mut vm = boot(&pxe.config(chain));
    vm.expect("init: ready", BOOT_TIMEOUT).step();
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
    vm.expect("init: ready", BOOT_TIMEOUT).step();
}

/// `netboot serve` as an administrator runs it; its output lines arrive on
/// a channel so the test waits for events, not for time.
struct Netboot {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
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
        let (tx, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        Netboot {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing every one of `needles`.
    fn expect(&mut self, needles: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self
                .seen
                .iter()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return line.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "netboot printed no line with {needles:?} in {} s; output:\n{}",
                    timeout.as_secs(),
                    self.seen.join("\n")
                ),
            }
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
    bios.expect("init: ready", BOOT_TIMEOUT).step();
    uefi.expect("init: ready", BOOT_TIMEOUT).step();

    // Each PC got its address from the LAN's server, its boot from netboot.
    let leases = std::fs::read_to_string(&leases).unwrap();
    for mac in ["52:54:00:00:90:01", "52:54:00:00:90:02"] {
        assert!(
            leases.contains(mac),
            "{mac} has no lease from the LAN's DHCP server:\n{leases}"
        );
    }
    netboot.expect(&["sent", "ipxe.efi to 192.168.90.1"], STEP_TIMEOUT);
    for file in [SCRIPT, boot::KERNEL, boot::INITRD] {
        // Two PCs, two downloads each, from the LAN's addresses.
        let mut from: Vec<String> = Vec::new();
        while from.len() < 2 {
            let line = netboot.expect(
                &["http: 192.168.90.1", &format!("GET /{file} 200")],
                STEP_TIMEOUT,
            );
            netboot.seen.retain(|l| l != &line);
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
        // The node's own DHCP, after the firmware's and iPXE's.
        let bound = vm
            .expect_line("init: dhcp: eth0: bound to ", BOOT_TIMEOUT)
            .step();
        vm.expect("init: ready", STEP_TIMEOUT).step();
        let address: Ipv4Addr = bound
            .split_once("bound to ")
            .and_then(|(_, rest)| rest.split_once('/'))
            .and_then(|(ip, _)| ip.parse().ok())
            .unwrap_or_else(|| panic!("no address in {bound:?}"));
        assert!(
            (first..=last).contains(&address),
            "{mac} was bound to {address}, outside {range}: {bound}"
        );
        assert!(bound.contains(" from 192.168.91.1 "), "{bound}");
        netboot.expect(&[&format!("DHCPACK(br0) {address} {mac}")], STEP_TIMEOUT);
    }
    for file in [boot::KERNEL, boot::INITRD] {
        netboot.expect(
            &["http: 192.168.91.1", &format!("GET /{file} 200")],
            STEP_TIMEOUT,
        );
    }
}

/// Whether any process has `needle` in its command line.
fn running_with(needle: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
    })
}
