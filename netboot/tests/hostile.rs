//! `netboot serve` against hostile clients on its LAN, as the real program
//! runs it (dnsmasq in proxy-DHCP mode and the HTTP server) in a network
//! namespace made by the test, the clients in another: a 1.5 GB request
//! line and 3,000 idle connections each leave the server below 64 MB of
//! memory, and a PC fetching boot.ipxe, the kernel and the initramfs
//! meanwhile gets every byte. Needs root, as CI has.

use std::time::Duration;

use netboot::clients::{self, Lab, PC_FILES};

/// The server's memory budget under attack (DESIGN.md).
const MAX_RSS_KIB: u64 = 64 * 1024;
/// What a PC fetches from [`clients::tree`]: kernel, initramfs and script.
const PC_BYTES: u64 = 12 << 20;
const LOG_TIMEOUT: Duration = Duration::from_secs(10);

fn lab(tag: &str) -> Lab {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test makes network namespaces: run it as root (CI does)"
    );
    let tree = std::env::temp_dir().join(format!("netboot-{tag}-{}", std::process::id()));
    clients::tree(&tree).unwrap();
    let netboot = std::path::Path::new(env!("CARGO_BIN_EXE_netboot"));
    Lab::start(netboot, &tree, tag).unwrap_or_else(|e| panic!("{e:#}"))
}

/// The PC got every file, whole, and netboot logged each download.
fn pc_booted(lab: &mut Lab, fetched: &anyhow::Result<u64>) {
    match fetched {
        Ok(bytes) => assert!(*bytes > PC_BYTES, "the PC fetched only {bytes} bytes"),
        Err(e) => panic!("the PC during the attack: {e:#}"),
    }
    let pc = clients::lab_pc();
    for file in PC_FILES {
        lab.expect(&[&format!("http: {pc} GET /{file} 200 ")], LOG_TIMEOUT)
            .unwrap();
    }
}

#[test]
fn an_endless_request_line_is_cut_off_while_a_pc_boots() {
    let mut lab = lab("line");
    let run = lab
        .endless_line_attack(1_500_000_000)
        .unwrap_or_else(|e| panic!("{e:#}"));
    pc_booted(&mut lab, &run.pc);
    assert!(
        run.attack.sent < 64 << 20,
        "the server took {} bytes of an endless line",
        run.attack.sent
    );
    assert_eq!(
        run.attack.answer.as_deref(),
        Some("HTTP/1.1 400 Bad Request")
    );
    let attacker = clients::lab_client(0);
    lab.expect(
        &[&format!(
            "http: {attacker} refused with 400: request line longer than 2048 bytes"
        )],
        LOG_TIMEOUT,
    )
    .unwrap();
    assert!(
        run.peak_rss_kib < MAX_RSS_KIB,
        "netboot's peak RSS was {} KiB",
        run.peak_rss_kib
    );
}

#[test]
fn three_thousand_idle_connections_leave_room_for_a_pc() {
    // Room for the attacker's sockets; netboot keeps its own bound.
    let nofile = nix::sys::resource::Resource::RLIMIT_NOFILE;
    let (_, hard) = nix::sys::resource::getrlimit(nofile).unwrap();
    nix::sys::resource::setrlimit(nofile, hard, hard).unwrap();
    assert!(
        hard >= 4000,
        "RLIMIT_NOFILE's hard limit {hard} is below 4000"
    );
    let mut lab = lab("idle");
    let run = lab.idle_attack(3000).unwrap_or_else(|e| panic!("{e:#}"));
    pc_booted(&mut lab, &run.pc);
    assert!(run.attack >= 3000, "only {} connections opened", run.attack);
    // The main thread, the reader of dnsmasq's output and the HTTP loop:
    // none per client.
    assert!(run.threads <= 3, "netboot ran {} threads", run.threads);
    let limits = netboot::http::Limits::default();
    assert!(
        run.descriptors <= limits.connections + 32,
        "netboot held {} descriptors",
        run.descriptors
    );
    // It made room for the PC by closing connections that sent nothing.
    lab.expect(&["dropped: no request in "], LOG_TIMEOUT)
        .unwrap();
    assert!(
        run.peak_rss_kib < MAX_RSS_KIB,
        "netboot's peak RSS was {} KiB",
        run.peak_rss_kib
    );
}
