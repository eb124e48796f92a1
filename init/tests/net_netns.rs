// SPDX-License-Identifier: GPL-3.0-or-later
//! Drives `chaos_init::net` against the kernel, as root, each test in a
//! network namespace of its own so that nothing touches the host's links.
//! `ip` is used only to build the test's links and to check the results from
//! outside the module. Only 192.168.77.0/24 and 192.168.78.0/24 inside those
//! namespaces are configured, and no traffic is sent.

use std::io;
use std::process::Command;
use std::time::{Duration, Instant};

use chaos_init::net::{Link, Netlink};

const VETH: &str = "chaos-veth0";
const PEER: &str = "chaos-veth1";
const ALWAYS_ON: &str = "chaos-on0";

/// Runs `body` on a thread of its own inside a fresh network namespace:
/// unshare(CLONE_NEWNET) moves only the calling thread, and the `ip`
/// processes it spawns inherit that namespace. The namespace disappears with
/// the thread and its children.
fn in_netns(body: impl FnOnce() + Send + 'static) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "needs root: run as root or in CI");
    let thread = std::thread::spawn(move || {
        // SAFETY: unshare takes no pointers; it only changes this thread's
        // network namespace, which no other thread of the test shares.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {} (needs root with CAP_SYS_ADMIN)",
            io::Error::last_os_error()
        );
        body();
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

fn ip(args: &[&str]) -> String {
    let output = Command::new("ip")
        .args(args)
        .output()
        .expect("running ip (iproute2 must be installed)");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("ip prints UTF-8")
}

/// A veth pair, both ends down, and a link that has carrier as soon as it is
/// up: a dummy, or an empty bridge on kernels built without the dummy driver
/// (the project's CI machines run one).
fn add_test_links() {
    ip(&["link", "add", VETH, "type", "veth", "peer", "name", PEER]);
    let dummy = Command::new("ip")
        .args(["link", "add", ALWAYS_ON, "type", "dummy"])
        .output()
        .expect("running ip (iproute2 must be installed)");
    if !dummy.status.success() {
        ip(&["link", "add", ALWAYS_ON, "type", "bridge"]);
    }
}

fn find<'a>(links: &'a [Link], name: &str) -> &'a Link {
    links
        .iter()
        .find(|link| link.name == name)
        .unwrap_or_else(|| panic!("no link {name} in {links:?}"))
}

#[test]
fn configures_loopback_address_and_default_route() {
    in_netns(|| {
        add_test_links();
        let mut netlink = Netlink::open().unwrap();

        let links = netlink.links().unwrap();
        let lo = find(&links, "lo").clone();
        assert!(
            lo.loopback && !lo.up && !lo.carrier && lo.mac.is_none(),
            "{lo:?}"
        );
        let veth = find(&links, VETH).clone();
        assert!(!veth.loopback && !veth.up && !veth.carrier, "{veth:?}");
        assert!(veth.mac.is_some_and(|mac| mac != [0; 6]), "{veth:?}");

        // Twice: setting an up link up again is not an error.
        netlink.set_up(lo.index).unwrap();
        netlink.set_up(lo.index).unwrap();
        netlink.set_up(veth.index).unwrap();
        let links = netlink.links().unwrap();
        let lo = find(&links, "lo");
        assert!(lo.up && lo.carrier, "{lo:?}");
        assert!(find(&links, VETH).up);
        assert!(
            !find(&links, ALWAYS_ON).up,
            "only the links asked for go up"
        );
        assert!(ip(&["-j", "addr", "show", "dev", "lo"]).contains(r#""local":"127.0.0.1""#));

        let address = "192.168.77.2".parse().unwrap();
        netlink.add_address(veth.index, address, 24).unwrap();
        netlink.add_address(veth.index, address, 24).unwrap();
        let addrs = ip(&["-j", "-4", "addr", "show", "dev", VETH]);
        assert_eq!(
            addrs.matches(r#""local":"192.168.77.2""#).count(),
            1,
            "{addrs}"
        );
        assert!(addrs.contains(r#""prefixlen":24"#), "{addrs}");
        assert!(addrs.contains(r#""broadcast":"192.168.77.255""#), "{addrs}");

        let gateway = "192.168.77.1".parse().unwrap();
        netlink
            .replace_default_route(gateway, Some(veth.index))
            .unwrap();
        netlink
            .replace_default_route(gateway, Some(veth.index))
            .unwrap();
        netlink.replace_default_route(gateway, None).unwrap();
        let routes = ip(&["-j", "-4", "route", "show", "default"]);
        assert_eq!(routes.matches(r#""dst":"default""#).count(), 1, "{routes}");
        assert!(routes.contains(r#""gateway":"192.168.77.1""#), "{routes}");
        assert!(routes.contains(&format!(r#""dev":"{VETH}""#)), "{routes}");
    });
}

#[test]
fn waits_for_carrier_from_link_notifications() {
    in_netns(|| {
        add_test_links();
        let mut netlink = Netlink::open().unwrap();
        let links = netlink.links().unwrap();
        for name in ["lo", ALWAYS_ON, VETH] {
            netlink.set_up(find(&links, name).index).unwrap();
        }
        let is_veth = |link: &Link| link.name == VETH;

        // lo and the always-on link have carrier but are not asked for; the
        // veth has none while its peer is down.
        let start = Instant::now();
        let found = netlink
            .wait_for_carrier(is_veth, start + Duration::from_millis(300))
            .unwrap();
        assert_eq!(found, None);
        let waited = start.elapsed();
        assert!(
            (Duration::from_millis(300)..Duration::from_secs(3)).contains(&waited),
            "waited {waited:?} for a 300 ms deadline"
        );

        // The peer comes up only after the wait has begun, so only a
        // notification can end it early.
        let mut peer_up = Command::new("sh")
            .args(["-c", &format!("sleep 0.3 && exec ip link set {PEER} up")])
            .spawn()
            .unwrap();
        let start = Instant::now();
        let found = netlink
            .wait_for_carrier(is_veth, start + Duration::from_secs(20))
            .unwrap()
            .expect("the veth gets carrier once its peer is up");
        let waited = start.elapsed();
        assert!(peer_up.wait().unwrap().success());
        assert_eq!(found.name, VETH);
        assert!(found.up && found.carrier, "{found:?}");
        assert!(
            (Duration::from_millis(250)..Duration::from_secs(10)).contains(&waited),
            "carrier after {waited:?}, the peer came up after 300 ms"
        );

        // A link that already has carrier is found by the first dump.
        let start = Instant::now();
        let found = netlink
            .wait_for_carrier(|link| !link.loopback, start + Duration::from_secs(20))
            .unwrap();
        assert!(found.is_some_and(|link| link.carrier));
        assert!(start.elapsed() < Duration::from_secs(2));

        // A deadline already past still looks once, and does not block.
        let found = netlink.wait_for_carrier(is_veth, start).unwrap();
        assert_eq!(found.map(|link| link.name), Some(VETH.to_string()));
    });
}

#[test]
fn errors_name_the_operation_and_the_object() {
    in_netns(|| {
        add_test_links();
        let mut netlink = Netlink::open().unwrap();
        let veth = find(&netlink.links().unwrap(), VETH).index;

        let error = netlink
            .add_address(999_999, "192.168.77.9".parse().unwrap(), 24)
            .unwrap_err();
        assert!(error.errno().is_some(), "{error:?}");
        assert_eq!(
            error.to_string(),
            "adding 192.168.77.9/24 to link #999999: No such device (os error 19)"
        );

        let error = netlink.set_up(999_999).unwrap_err();
        assert_eq!(
            error.to_string(),
            "setting link #999999 up: No such device (os error 19)"
        );

        // No address on the veth: the gateway is not on any of its subnets.
        netlink.set_up(veth).unwrap();
        let error = netlink
            .replace_default_route("192.168.78.1".parse().unwrap(), Some(veth))
            .unwrap_err();
        assert!(error.errno().is_some(), "{error:?}");
        let message = error.to_string();
        assert!(
            message.starts_with(&format!(
                "adding default route via 192.168.78.1 dev {VETH}: "
            )),
            "{message}"
        );
        assert!(message.contains("(os error "), "{message}");
    });
}
