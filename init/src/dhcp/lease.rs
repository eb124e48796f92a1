//! A bound lease: its timers, the file other programs read it from, and the
//! console summary.
//!
//! The lease file, [`chaos_contract::paths::LEASE`], is for fix_hosts and tyd (and a person at
//! the console): `key=value` lines, lists comma-separated, absent keys
//! unknown. Times are whole seconds: `*_seconds` relative to `obtained`, and
//! `obtained` itself in seconds since the Unix epoch by the node's clock
//! (which may still be wrong this early in boot; the relative figures are not).
//!
//! ```text
//! interface=eth0
//! mac=52:54:00:12:34:56
//! address=10.0.2.15
//! prefix=24
//! server=10.0.2.2
//! routers=10.0.2.2
//! dns=10.0.2.3
//! domain=lab
//! hostname=drone3
//! ntp=10.0.2.2
//! obtained=1700000000
//! lease_seconds=86400          (or "infinite")
//! renew_seconds=43200
//! rebind_seconds=75600
//! ```

use std::fmt::Write;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime};

use super::packet::{Offer, MIN_LEASE};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub interface: String,
    pub mac: [u8; 6],
    pub offer: Offer,
    /// When the server's ACK arrived; the timers count from here.
    pub obtained: Instant,
    pub obtained_unix: u64,
}

impl Lease {
    pub fn new(interface: &str, mac: [u8; 6], offer: Offer) -> Lease {
        Lease {
            interface: interface.to_string(),
            mac,
            offer,
            obtained: Instant::now(),
            obtained_unix: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    /// T1, T2 and the lease's length; `None` for an infinite lease. RFC
    /// 2131's defaults (1/2 and 7/8 of the lease) stand in for what the
    /// server left out, and a T1 or T2 past the end is pulled back.
    pub fn timers(&self) -> Option<(Duration, Duration, Duration)> {
        let lease = self.offer.lease?;
        // A T1 or T2 of 0 would have the node renew without a pause.
        let floor = (MIN_LEASE / 2).min(lease);
        let rebind = self
            .offer
            .rebind
            .filter(|t| *t <= lease)
            .unwrap_or(lease * 7 / 8)
            .max(floor);
        let renew = self.offer.renew.unwrap_or(lease / 2).max(floor).min(rebind);
        Some((renew, rebind, lease))
    }

    /// The lease file's contents.
    pub fn render(&self) -> String {
        let o = &self.offer;
        let mut text = String::new();
        let mut line = |key: &str, value: String| {
            if !value.is_empty() {
                let _ = writeln!(text, "{key}={value}");
            }
        };
        line("interface", self.interface.clone());
        line("mac", mac(self.mac));
        line("address", o.address.to_string());
        line("prefix", o.prefix.to_string());
        line("server", o.server.to_string());
        line("routers", list(&o.routers));
        line("dns", list(&o.dns));
        line("domain", o.domain.clone().unwrap_or_default());
        line("hostname", o.hostname.clone().unwrap_or_default());
        line("ntp", list(&o.ntp));
        line("obtained", self.obtained_unix.to_string());
        match self.timers() {
            Some((renew, rebind, lease)) => {
                line("lease_seconds", lease.as_secs().to_string());
                line("renew_seconds", renew.as_secs().to_string());
                line("rebind_seconds", rebind.as_secs().to_string());
            }
            None => line("lease_seconds", "infinite".to_string()),
        }
        text
    }

    /// The kernel's own summary of an autoconfiguration, as ipconfig prints
    /// it and /proc/net/pnp keeps it, for a person at the console.
    pub fn summary(&self, hostname: &str) -> String {
        let o = &self.offer;
        let mut text = format!(
            "IP-Config: Complete: device={}, hwaddr={}, ipaddr={}, mask={}, gw={}, host={hostname}, domain={}, bootserver={}\n",
            self.interface,
            mac(self.mac),
            o.address,
            Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(o.prefix)).unwrap_or(0)),
            o.routers.first().map_or("none".to_string(), |r| r.to_string()),
            o.domain.as_deref().unwrap_or(""),
            o.server,
        );
        text.push_str("#PROTO: DHCP\n");
        if let Some(domain) = &o.domain {
            let _ = writeln!(text, "domain {domain}");
        }
        for server in &o.dns {
            let _ = writeln!(text, "nameserver {server}");
        }
        for server in &o.ntp {
            let _ = writeln!(text, "ntpserver {server}");
        }
        let _ = writeln!(text, "bootserver {}", o.server);
        text
    }
}

fn mac(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

fn list(addresses: &[Ipv4Addr]) -> String {
    addresses
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(lease: Option<u64>, renew: Option<u64>, rebind: Option<u64>) -> Lease {
        let s = |v: Option<u64>| v.map(Duration::from_secs);
        Lease {
            interface: "eth0".into(),
            mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
            offer: Offer {
                address: Ipv4Addr::new(192, 168, 99, 50),
                server: Ipv4Addr::new(192, 168, 99, 1),
                prefix: 24,
                routers: vec![Ipv4Addr::new(192, 168, 99, 1)],
                dns: vec![
                    Ipv4Addr::new(192, 168, 99, 1),
                    Ipv4Addr::new(192, 168, 99, 2),
                ],
                domain: Some("lab".into()),
                hostname: Some("drone3".into()),
                ntp: vec![Ipv4Addr::new(192, 168, 99, 1)],
                lease: s(lease),
                renew: s(renew),
                rebind: s(rebind),
                ignored: vec![],
            },
            obtained: Instant::now(),
            obtained_unix: 1_700_000_000,
        }
    }

    #[test]
    fn timers_default_and_stay_in_order() {
        let secs = |l: Lease| {
            l.timers()
                .map(|(a, b, c)| (a.as_secs(), b.as_secs(), c.as_secs()))
        };
        assert_eq!(
            secs(lease(Some(120), Some(60), Some(105))),
            Some((60, 105, 120))
        );
        assert_eq!(
            secs(lease(Some(3600), None, None)),
            Some((1800, 3150, 3600))
        );
        assert_eq!(
            secs(lease(Some(100), Some(500), Some(900))),
            Some((87, 87, 100))
        );
        assert_eq!(secs(lease(Some(100), Some(90), None)), Some((87, 87, 100)));
        assert_eq!(secs(lease(Some(60), Some(0), Some(0))), Some((5, 5, 60)));
        assert_eq!(secs(lease(None, Some(60), None)), None);
    }

    #[test]
    fn the_lease_file_is_key_value() {
        assert_eq!(
            lease(Some(120), Some(60), Some(105)).render(),
            "interface=eth0\nmac=52:54:00:12:34:56\naddress=192.168.99.50\nprefix=24\n\
             server=192.168.99.1\nrouters=192.168.99.1\ndns=192.168.99.1,192.168.99.2\n\
             domain=lab\nhostname=drone3\nntp=192.168.99.1\nobtained=1700000000\n\
             lease_seconds=120\nrenew_seconds=60\nrebind_seconds=105\n"
        );
        assert!(lease(None, None, None)
            .render()
            .ends_with("lease_seconds=infinite\n"));
    }

    #[test]
    fn the_summary_looks_like_the_kernels() {
        assert_eq!(
            lease(Some(120), None, None).summary("drone3"),
            "IP-Config: Complete: device=eth0, hwaddr=52:54:00:12:34:56, ipaddr=192.168.99.50, \
             mask=255.255.255.0, gw=192.168.99.1, host=drone3, domain=lab, bootserver=192.168.99.1\n\
             #PROTO: DHCP\ndomain lab\nnameserver 192.168.99.1\nnameserver 192.168.99.2\n\
             ntpserver 192.168.99.1\nbootserver 192.168.99.1\n"
        );
    }
}
