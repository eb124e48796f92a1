//! Network boot under QEMU with real firmware, real iPXE and real dnsmasq:
//!
//! - BIOS through QEMU's user network: its TFTP hands the NIC's boot ROM
//!   (QEMU's ROMs are iPXE) the boot script, which fetches kernel and
//!   initramfs over HTTP from `netboot`'s server on the host's loopback
//!   (the guest reaches it as 10.0.2.2).
//! - UEFI through QEMU's user network: OVMF's PXE client fetches the unified
//!   kernel image over TFTP. The user network's DHCP cannot tell iPXE from
//!   the firmware, so chaining ipxe.efi there would load ipxe.efi for ever;
//!   that path is shown in the lab test below, where dnsmasq breaks the loop.
//! - A lab in network namespaces: the LAN's own DHCP server (a plain
//!   dnsmasq), `netboot serve` in proxy-DHCP mode beside it, a BIOS and a
//!   UEFI PC on a bridge; both boot, and `netboot` logs their downloads and
//!   stops everything it started on SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::Instant;

use chaos_tests::*;
use netboot::boot::{self, SCRIPT};
use xtask::vm::{Config, Firmware};

/// A PXE tree for a test image, in build/tests/<name>.
fn tree(name: &str) -> (PathBuf, String) {
    let image = test_image(name, &[]);
    let dir = xtask::build_dir().join("tests").join(name);
    let append = image.root_digest_arg();
    xtask::pxe::build(&fixture().kernel.vmlinuz, &image.path, &append, &dir).step();
    (dir, append)
}

static DOWNLOADS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn record(line: &str) {
    DOWNLOADS.lock().unwrap().push(line.to_string());
}

#[test]
fn bios_pxe_over_the_user_network_fetches_the_kernel_over_http() {
    let (root, append) = tree("pxe-user-bios");
    let listener = netboot::http::bind("127.0.0.1:0".parse().unwrap()).expect("an HTTP port");
    let port = listener.local_addr().unwrap().port();
    // 10.0.2.2 is the host as the user network's guests see it.
    let script = boot::ipxe_script(&format!("http://10.0.2.2:{port}/"), &append);
    let site = netboot::http::Site {
        root: root.clone(),
        rendered: Default::default(),
    };
    std::thread::spawn(move || netboot::http::serve(listener, site, record));
    let tftp = root.join("tftp");
    std::fs::create_dir_all(&tftp).unwrap();
    std::fs::write(tftp.join(SCRIPT), script).unwrap();

    let netdev = format!("user,id=n0,tftp={},bootfile={SCRIPT}", tftp.display());
    let config = Config::firmware(
        Firmware::Bios,
        &[
            "-netdev",
            &netdev,
            "-device",
            "virtio-net-pci,netdev=n0",
            "-boot",
            "n",
        ],
    );
    let mut vm = boot(&config);
    vm.expect("init: ready", BOOT_TIMEOUT).step();
    let downloads = DOWNLOADS.lock().unwrap().clone();
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
fn uefi_pxe_over_the_user_network_boots_the_unified_kernel_image() {
    let image = test_image("pxe-user-uefi", &[]);
    let tftp = xtask::build_dir().join("tests/pxe-user-uefi");
    std::fs::create_dir_all(&tftp).unwrap();
    xtask::uki::build(
        &fixture().kernel.vmlinuz,
        &image.path,
        &image.root_digest_arg(),
        &tftp.join("chaos.efi"),
    )
    .step();
    let netdev = format!("user,id=n0,tftp={},bootfile=chaos.efi", tftp.display());
    // romfile= leaves the NIC to OVMF's own virtio-net driver and PXE client.
    let config = Config::firmware(
        Firmware::Uefi,
        &[
            "-netdev",
            &netdev,
            "-device",
            "virtio-net-pci,netdev=n0,romfile=",
            "-boot",
            "n",
        ],
    );
    let mut vm = boot(&config);
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
    fn start(ns: &Netns, root: &Path) -> Netboot {
        let program = xtask::pxe::netboot_binary().step();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(program)
            .args(["serve", "--interface", "eth0", "--http-port", "0", "--root"])
            .arg(root)
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
}

impl Drop for Netboot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn proxy_dhcp_beside_the_lans_dhcp_server_boots_bios_and_uefi_pcs() {
    require_root();
    let (root, _) = tree("pxe-lab");
    // The lab: a switch (bridge) in one namespace, the LAN's DHCP server and
    // the head each in their own, the PCs on taps.
    let lab = Netns::new("pxe-lab");
    let lan = Netns::new("pxe-lan");
    let head = Netns::new("pxe-head");
    lab.run(&["ip", "link", "add", "br0", "type", "bridge"]);
    lab.run(&["ip", "link", "set", "br0", "up"]);
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
    for tap in ["tap0", "tap1"] {
        lab.run(&["ip", "tuntap", "add", "dev", tap, "mode", "tap"]);
        lab.run(&["ip", "link", "set", tap, "master", "br0", "up"]);
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

    let mut netboot = Netboot::start(&head, &root);
    netboot.expect(&["serving eth0 (192.168.90.2): proxy-DHCP"], STEP_TIMEOUT);

    let pc = |tap: &str, mac: &str, firmware: Firmware, rom: &str| {
        let netdev = format!("tap,id=n0,ifname={tap},script=no,downscript=no");
        let device = format!("virtio-net-pci,netdev=n0,mac={mac}{rom}");
        let mut config = Config::firmware(
            firmware,
            &["-netdev", &netdev, "-device", &device, "-boot", "n"],
        );
        config.wrapper = lab.wrapper();
        boot(&config)
    };
    // The BIOS PC's NIC ROM is QEMU's iPXE; the UEFI PC's firmware PXE
    // client loads ipxe.efi over TFTP first.
    let mut bios = pc("tap0", "52:54:00:00:90:01", Firmware::Bios, "");
    let mut uefi = pc("tap1", "52:54:00:00:90:02", Firmware::Uefi, ",romfile=");
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

    // SIGTERM stops dnsmasq and removes the configuration. `ip netns
    // exec` execs netboot, so the pid is netboot's.
    let pid = netboot.child.id().to_string();
    let conf_dir = format!("/tmp/netboot-{pid}");
    assert!(
        Path::new(&conf_dir).exists(),
        "{conf_dir} missing while serving"
    );
    assert!(
        running_with(&conf_dir),
        "no dnsmasq running with {conf_dir}"
    );
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
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

/// Whether any process has `needle` in its command line.
fn running_with(needle: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
    })
}
