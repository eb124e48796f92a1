//! The node's DHCP client under QEMU against a hostile DHCP server, one this
//! test writes with dhcproto and runs in a namespace it makes: offers with
//! a lease of 0 s, a repeated message type, more than 1500 bytes, or
//! another client's transaction; then one that is usable but names a router
//! outside the subnet, a host name with control characters, forty DNS
//! servers and a lease of 2^32-1 s (for ever); and an ACK for another
//! client's transaction before the node's own. The node keeps a sane
//! network (or none, when nothing usable comes), says why on its console,
//! and its boot goes on either way.

use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chaos_contract::service::Restart;
use chaos_tests::*;
use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use xtask::vm::Vm;

const SERVER: Ipv4Addr = Ipv4Addr::new(192, 168, 98, 1);
const OFFERED: Ipv4Addr = Ipv4Addr::new(192, 168, 98, 50);
/// The address in the replies meant for another client.
const OTHERS: Ipv4Addr = Ipv4Addr::new(192, 168, 98, 66);
const MAC: &str = "52:54:00:00:98:01";

/// What the test's server answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Script {
    /// Every kind of bad reply to each request, then a usable one with
    /// bad parts.
    Hostile,
    /// Only offers with a lease of 0 s.
    NothingUsable,
}

/// A reply of `kind` to `request` for `yiaddr`, with `options` after the
/// message type and server identifier, and `raw` bytes of options after
/// those (what dhcproto would not write).
fn reply(
    request: &Message,
    kind: MessageType,
    xid: u32,
    yiaddr: Ipv4Addr,
    options: Vec<DhcpOption>,
    raw: &[u8],
) -> Vec<u8> {
    let mut msg = Message::new_with_id(
        xid,
        Ipv4Addr::UNSPECIFIED,
        yiaddr,
        SERVER,
        Ipv4Addr::UNSPECIFIED,
        &request.chaddr()[..6],
    );
    msg.set_opcode(Opcode::BootReply)
        .set_flags(Flags::default().set_broadcast());
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ServerIdentifier(SERVER));
    opts.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
    for option in options {
        opts.insert(option);
    }
    let mut bytes = Vec::new();
    msg.encode(&mut Encoder::new(&mut bytes)).unwrap();
    // Before the End option.
    assert_eq!(bytes.pop(), Some(0xff));
    bytes.extend_from_slice(raw);
    bytes.push(0xff);
    bytes
}

/// What the script answers to `request`.
fn answers(script: Script, request: &Message) -> Vec<Vec<u8>> {
    let xid = request.xid();
    let someone_else = xid ^ 0x5a5a_5a5a;
    let lease = |s: u32| DhcpOption::AddressLeaseTime(s);
    let kind = match request.opts().msg_type() {
        Some(MessageType::Discover) => MessageType::Offer,
        Some(MessageType::Request) => MessageType::Ack,
        _ => return Vec::new(),
    };
    let zero = reply(request, kind, xid, OFFERED, vec![lease(0)], &[]);
    if script == Script::NothingUsable {
        return if kind == MessageType::Offer {
            vec![zero]
        } else {
            Vec::new()
        };
    }
    let others = reply(request, kind, someone_else, OTHERS, vec![lease(3600)], &[]);
    let mut dns = Vec::new();
    for n in 1..=40 {
        dns.push(Ipv4Addr::new(192, 168, 98, n));
    }
    let usable = reply(
        request,
        kind,
        xid,
        OFFERED,
        vec![
            lease(u32::MAX),
            DhcpOption::Router(vec![Ipv4Addr::new(10, 9, 9, 9), SERVER]),
            DhcpOption::Hostname("evil\x1b[2Jname".into()),
            DhcpOption::DomainNameServer(dns),
            DhcpOption::DomainName("lab".into()),
        ],
        &[],
    );
    if kind == MessageType::Ack {
        return vec![others, zero, usable];
    }
    let mut vendor = Vec::new();
    for _ in 0..6 {
        vendor.extend([43, 255]);
        vendor.extend([0; 255]);
    }
    vec![
        zero,
        reply(request, kind, xid, OFFERED, vec![lease(3600)], &[53, 1, 5]),
        reply(request, kind, xid, OFFERED, vec![lease(3600)], &vendor),
        others,
        usable,
    ]
}

/// The test's DHCP server on br0 of `ns`, until dropped.
struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(ns: &Netns, script: Script) -> Server {
        let path = format!("/run/netns/{}", ns.name);
        let stop = Arc::new(AtomicBool::new(false));
        let running = stop.clone();
        let thread = std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap();
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 67)).unwrap();
            socket.set_broadcast(true).unwrap();
            nix::sys::socket::setsockopt(
                &socket,
                nix::sys::socket::sockopt::BindToDevice,
                &std::ffi::OsString::from("br0"),
            )
            .unwrap();
            // To notice `stop`; not synchronisation.
            socket
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut buffer = [0; 1500];
            while !running.load(Ordering::Relaxed) {
                let Ok((len, _)) = socket.recv_from(&mut buffer) else {
                    continue;
                };
                let Ok(request) = Message::decode(&mut Decoder::new(&buffer[..len])) else {
                    continue;
                };
                for answer in answers(script, &request) {
                    socket.send_to(&answer, (Ipv4Addr::BROADCAST, 68)).unwrap();
                }
            }
        });
        Server {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A lab with the test's server on a bridge, and a node on a tap of it
/// asking for a lease with `ip=dhcp`, its probe printing what it got.
fn boot_against(tag: &str, script: Script) -> (Netns, Server, Vm) {
    require_root();
    let ns = Netns::new(tag);
    for command in [
        "ip link add br0 type bridge",
        "ip addr add 192.168.98.1/24 dev br0",
        "ip link set br0 up",
        "ip tuntap add dev tap0 mode tap",
        "ip link set tap0 master br0",
        "ip link set tap0 up",
    ] {
        ns.run(&command.split(' ').collect::<Vec<_>>());
    }
    let server = Server::start(&ns, script);
    let mut probe = script_service();
    probe.restart = Restart::Never;
    let image = test_image(&format!("dhcp-{tag}"), &[probe]);
    let mut config = config(&image, "ip=dhcp");
    config.wrapper = ns.wrapper();
    config.qemu_args = [
        "-netdev",
        "tap,id=n0,ifname=tap0,script=no,downscript=no",
        "-device",
        &format!("virtio-net-pci,netdev=n0,mac={MAC}"),
    ]
    .map(String::from)
    .to_vec();
    let vm = boot(&config);
    (ns, server, vm)
}

/// Once the node is ready: its resolver, routes and addresses.
fn script_service() -> chaos_contract::service::Service {
    script(
        "probe",
        "cat /etc/resolv.conf; ip -4 route; ip -4 addr show; echo probe: done",
    )
}

#[test]
fn a_hostile_server_leaves_the_node_a_sane_network_and_says_why() {
    let (_ns, _server, mut vm) = boot_against("dhcphostile", Script::Hostile);
    let ignoring = "init: dhcp: eth0: ignoring a reply from 192.168.98.1:67: ";
    for line in [
        format!("{ignoring}a lease of 0 s (this client takes 10 s at least)"),
        format!("{ignoring}option 53 appears more than once, but has one value"),
        format!("{ignoring}datagram of more than 1500 bytes, the most this client takes"),
        "@chaos lease interface=eth0 address=192.168.98.50/24 server=192.168.98.1 seconds=forever"
            .into(),
        "not using host name \"evil\\u{1b}[2Jname\" (expected a DNS name".into(),
        "not using router 10.9.9.9, outside 192.168.98.0/24 from 192.168.98.1".into(),
        "not using 37 of 40 DNS servers (the first 3 are kept) from 192.168.98.1".into(),
        "@chaos ready".into(),
        "probe: nameserver 192.168.98.3".into(),
        "probe: default via 192.168.98.1 dev eth0".into(),
        "probe: done".into(),
    ] {
        vm.expect(&line, BOOT_TIMEOUT).step();
    }
    let console = vm.console();
    assert!(!console.contains("nameserver 192.168.98.4"), "{console}");
    assert!(!console.contains("10.9.9.9 dev"), "{console}");
    assert!(
        !console.contains(&OTHERS.to_string()),
        "took another client's reply:\n{console}"
    );
    assert!(
        !console
            .lines()
            .any(|l| l.contains("init:") && l.contains('\x1b')),
        "a control character reached the console"
    );
}

#[test]
fn with_nothing_usable_on_offer_the_node_boots_without_a_lease() {
    let (_ns, _server, mut vm) = boot_against("dhcpnothing", Script::NothingUsable);
    for line in [
        "init: dhcp: eth0: ignoring a reply from 192.168.98.1:67: a lease of 0 s",
        "init: dhcp: no lease within 30 s; booting on, still asking in the background",
        "@chaos ready",
        "probe: done",
    ] {
        vm.expect(line, BOOT_TIMEOUT).step();
    }
    let console = vm.console();
    assert!(!console.contains("@chaos lease"), "{console}");
    assert!(!console.contains("scope global eth0"), "{console}");
}
