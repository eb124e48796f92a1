//! fix_hosts, as CHAOS called it: once the network is configured, give the
//! node its name and make name lookup work — the host name (sethostname and
//! /etc/hostname), /etc/hosts with localhost and the node's own name and
//! address, /etc/resolv.conf from the DNS servers. It only writes what it is
//! given; choosing the name and addresses is the network phase's job, or,
//! for the `fix_hosts` command, the operator's, whose settings
//! [`Identity::configured`] reads back.
//!
//! The image links these /etc files into /run, so writing them leaves the
//! root filesystem exactly as built (the integrity watchdog relies on that).

use std::fmt::Write;
use std::net::Ipv4Addr;
use std::path::Path;

use crate::sys::System;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub hostname: String,
    /// The NIS domain from `ip=`'s hostname field (the text after its first dot).
    pub nis_domain: Option<String>,
    /// The DNS domain (DHCP option 15): the search domain and the name's
    /// fully qualified form.
    pub domain: Option<String>,
    pub address: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
}

impl Identity {
    /// The node as it is configured now, for `fix_hosts` after a hand
    /// configuration: the kernel's host name (`hostname`; else one from
    /// the LAN NIC's MAC) and NIS domain (`domainname`, "(none)" when
    /// unset), the LAN address, and the resolvers and search domain of
    /// the current resolv.conf, which `fix_hosts` keeps.
    pub fn configured(
        addresses: &chaos_contract::addresses::Addresses,
        hostname: &str,
        domainname: &str,
        resolv_conf: &str,
    ) -> Identity {
        let set = |name: &str| {
            let name = name.trim();
            (!name.is_empty() && name != "(none)").then(|| name.to_string())
        };
        let (dns, domain) = resolvers(resolv_conf);
        Identity {
            hostname: set(hostname)
                .or_else(|| addresses.lan_mac().map(name_from_mac))
                .unwrap_or_else(|| "chaos".into()),
            nis_domain: set(domainname),
            domain,
            address: addresses.lan(),
            dns,
        }
    }
}

/// The IPv4 name servers and the first search domain of a resolv.conf:
/// what [`resolv_conf`] writes, read back.
pub fn resolvers(text: &str) -> (Vec<Ipv4Addr>, Option<String>) {
    let mut dns = Vec::new();
    let mut domain = None;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("nameserver"), Some(server)) => dns.extend(server.parse::<Ipv4Addr>().ok()),
            (Some("search" | "domain"), Some(name)) if domain.is_none() => {
                domain = Some(name.to_string());
            }
            _ => {}
        }
    }
    (dns, domain)
}

/// A stable name for a node that was given none: the same PC gets the same
/// name on every boot. Lower-case hex of the MAC, as in `node-5254001234ab`.
pub fn name_from_mac(mac: [u8; 6]) -> String {
    mac.iter().fold(String::from("node-"), |mut name, b| {
        let _ = write!(name, "{b:02x}");
        name
    })
}

pub fn hosts_file(id: &Identity) -> String {
    let mut hosts =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    // Without an address of its own the name still has to resolve, for
    // programs that look up their own host name; 127.0.1.1 is Debian's habit.
    let address = id.address.unwrap_or(Ipv4Addr::new(127, 0, 1, 1));
    let _ = match id.domain.as_ref().or(id.nis_domain.as_ref()) {
        Some(domain) => writeln!(hosts, "{address}\t{}.{domain} {}", id.hostname, id.hostname),
        None => writeln!(hosts, "{address}\t{}", id.hostname),
    };
    hosts
}

pub fn resolv_conf(id: &Identity) -> String {
    let search = id
        .domain
        .as_ref()
        .map(|domain| format!("search {domain}\n"))
        .unwrap_or_default();
    id.dns.iter().fold(search, |mut text, server| {
        let _ = writeln!(text, "nameserver {server}");
        text
    })
}

pub fn apply(sys: &dyn System, id: &Identity) -> anyhow::Result<()> {
    use anyhow::Context;
    sys.set_hostname(&id.hostname)
        .with_context(|| format!("setting the host name to {}", id.hostname))?;
    if let Some(domain) = &id.nis_domain {
        sys.set_domainname(domain)
            .with_context(|| format!("setting the NIS domain to {domain}"))?;
    }
    let files = [
        ("/etc/hostname", format!("{}\n", id.hostname)),
        ("/etc/hosts", hosts_file(id)),
        ("/etc/resolv.conf", resolv_conf(id)),
    ];
    for (path, contents) in files {
        sys.write_file(Path::new(path), &contents, 0o644)
            .with_context(|| format!("writing {path}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::double::Recorder;

    fn node() -> Identity {
        Identity {
            hostname: "drone7".into(),
            nis_domain: Some("lab".into()),
            domain: None,
            address: Some(Ipv4Addr::new(192, 168, 77, 10)),
            dns: vec![Ipv4Addr::new(192, 168, 77, 1), Ipv4Addr::new(9, 9, 9, 9)],
        }
    }

    #[test]
    fn writes_name_hosts_and_resolvers() {
        let sys = Recorder::default();
        apply(&sys, &node()).unwrap();
        assert_eq!(*sys.calls.borrow(), ["hostname drone7", "domainname lab"]);
        let files = sys.files.borrow();
        let written: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, c)| (p.to_str().unwrap(), c.as_str()))
            .collect();
        assert_eq!(
            written,
            [
                ("/etc/hostname", "drone7\n"),
                (
                    "/etc/hosts",
                    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
                     192.168.77.10\tdrone7.lab drone7\n"
                ),
                (
                    "/etc/resolv.conf",
                    "nameserver 192.168.77.1\nnameserver 9.9.9.9\n"
                ),
            ]
        );
    }

    #[test]
    fn a_node_without_address_or_domain_still_resolves_its_name() {
        let id = Identity {
            hostname: "node-5254001234ab".into(),
            ..Identity::default()
        };
        assert!(hosts_file(&id).ends_with("127.0.1.1\tnode-5254001234ab\n"));
        assert_eq!(resolv_conf(&id), "");
    }

    #[test]
    fn a_dns_domain_is_searched_and_qualifies_the_name() {
        let id = Identity {
            hostname: "drone3".into(),
            domain: Some("lab.example".into()),
            address: Some(Ipv4Addr::new(10, 0, 2, 15)),
            dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
            ..Identity::default()
        };
        assert!(hosts_file(&id).ends_with("10.0.2.15\tdrone3.lab.example drone3\n"));
        assert_eq!(
            resolv_conf(&id),
            "search lab.example\nnameserver 10.0.2.3\n"
        );
    }

    #[test]
    fn resolv_conf_reads_back_what_it_was_written_from() {
        let id = node();
        let id = Identity {
            domain: Some("lab.example".into()),
            ..id
        };
        assert_eq!(
            resolvers(&resolv_conf(&id)),
            (id.dns.clone(), id.domain.clone())
        );
        assert_eq!(
            resolvers("# by hand\nnameserver fe80::1\nnameserver 9.9.9.9\ndomain lab\n"),
            (vec![Ipv4Addr::new(9, 9, 9, 9)], Some("lab".into()))
        );
    }

    #[test]
    fn a_hand_configured_node_is_read_back_as_it_was_set() {
        use chaos_contract::addresses::Addresses;
        let addresses = Addresses {
            ipv4: vec![
                ("lo".into(), Ipv4Addr::LOCALHOST),
                ("eth0".into(), Ipv4Addr::new(192, 168, 1, 21)),
            ],
            macs: vec![("eth0".into(), [0x52, 0x54, 0, 0x12, 0x34, 0xab])],
            default_route: Some("eth0".into()),
        };
        let id = Identity::configured(&addresses, "drone7\n", "(none)\n", "nameserver 1.1.1.1\n");
        assert_eq!(
            id,
            Identity {
                hostname: "drone7".into(),
                nis_domain: None,
                domain: None,
                address: Some(Ipv4Addr::new(192, 168, 1, 21)),
                dns: vec![Ipv4Addr::new(1, 1, 1, 1)],
            }
        );
        let unnamed = Identity::configured(&addresses, "", "lab", "");
        assert_eq!(unnamed.hostname, "node-5254001234ab");
        assert_eq!(unnamed.nis_domain.as_deref(), Some("lab"));
    }

    #[test]
    fn names_from_mac_are_stable_hex() {
        assert_eq!(
            name_from_mac([0x52, 0x54, 0x00, 0x12, 0x34, 0xab]),
            "node-5254001234ab"
        );
    }
}
