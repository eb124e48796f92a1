//! The node's addresses as the kernel holds them now, whoever set them:
//! init's network phase, the DHCP client, or an operator at the console
//! with `ifconfig` and `route`, and which of them is the node's LAN
//! address. `fix_hosts` names the node after it and the console screen
//! shows it. This module only reads; it never configures anything.

use std::net::Ipv4Addr;

/// The kernel's routing table in text, read for its default route.
const ROUTES: &str = "/proc/net/route";

/// Every interface's IPv4 addresses and Ethernet addresses, and the
/// interface of the default route.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Addresses {
    /// (interface, address), in the kernel's order.
    pub ipv4: Vec<(String, Ipv4Addr)>,
    /// (interface, MAC) of the interfaces that have one: Ethernet NICs,
    /// not loopback and not WireGuard, which carry no hardware address.
    pub macs: Vec<(String, [u8; 6])>,
    pub default_route: Option<String>,
}

impl Addresses {
    /// What the kernel has now.
    pub fn read() -> std::io::Result<Addresses> {
        let mut addresses = Addresses::default();
        for entry in nix::ifaddrs::getifaddrs()? {
            let Some(address) = entry.address else {
                continue;
            };
            if let Some(ip) = address.as_sockaddr_in() {
                addresses.ipv4.push((entry.interface_name, ip.ip()));
            } else if let Some(mac) = address.as_link_addr().and_then(|l| l.addr()) {
                if mac != [0; 6] {
                    addresses.macs.push((entry.interface_name, mac));
                }
            }
        }
        // A node without IPv4 routes has no such file to speak of.
        let routes = std::fs::read_to_string(ROUTES).unwrap_or_default();
        addresses.default_route = default_route_interface(&routes);
        Ok(addresses)
    }

    /// The first IPv4 address on `interface`.
    pub fn on(&self, interface: &str) -> Option<Ipv4Addr> {
        self.ipv4
            .iter()
            .find(|(name, _)| name == interface)
            .map(|(_, address)| *address)
    }

    /// The node's address on the LAN: the one on the NIC of the default
    /// route, else the first on any NIC (an interface with a MAC, so
    /// neither loopback nor the overlay).
    pub fn lan(&self) -> Option<Ipv4Addr> {
        let nic = |name: &str| self.macs.iter().any(|(n, _)| n == name);
        self.default_route
            .as_deref()
            .filter(|name| nic(name))
            .and_then(|name| self.on(name))
            .or_else(|| {
                self.ipv4
                    .iter()
                    .find(|(name, _)| nic(name))
                    .map(|(_, address)| *address)
            })
    }

    /// The MAC of the LAN's NIC (the one [`Addresses::lan`] picks), else of
    /// the first NIC: what a node's default name is made from.
    pub fn lan_mac(&self) -> Option<[u8; 6]> {
        let lan = self
            .lan()
            .and_then(|a| self.ipv4.iter().find(|(_, b)| *b == a))
            .map(|(name, _)| name.as_str());
        self.macs
            .iter()
            .find(|(name, _)| Some(name.as_str()) == lan)
            .or(self.macs.first())
            .map(|(_, mac)| *mac)
    }
}

/// The interface of the default IPv4 route in /proc/net/route's text
/// (destination and mask both 0), if there is one.
pub fn default_route_interface(routes: &str) -> Option<String> {
    routes.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [name, "00000000", _, _, _, _, _, "00000000", ..] => Some(name.to_string()),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &str = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth1\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
";

    fn node() -> Addresses {
        Addresses {
            ipv4: vec![
                ("lo".into(), Ipv4Addr::LOCALHOST),
                ("eth1".into(), Ipv4Addr::new(192, 168, 1, 21)),
                ("eth0".into(), Ipv4Addr::new(10, 0, 2, 15)),
                ("wg0".into(), Ipv4Addr::new(10, 99, 0, 2)),
            ],
            macs: vec![
                ("eth0".into(), [0x52, 0x54, 0, 0, 0, 1]),
                ("eth1".into(), [0x52, 0x54, 0, 0, 0, 2]),
            ],
            default_route: Some("eth0".into()),
        }
    }

    #[test]
    fn the_default_route_is_found_in_the_kernels_table() {
        assert_eq!(default_route_interface(ROUTES).as_deref(), Some("eth0"));
        let local_only = ROUTES.lines().take(2).collect::<Vec<_>>().join("\n");
        assert_eq!(default_route_interface(&local_only), None);
        assert_eq!(default_route_interface(""), None);
    }

    #[test]
    fn the_lan_address_is_the_default_routes_else_the_first_nics() {
        let mut node = node();
        assert_eq!(node.lan(), Some(Ipv4Addr::new(10, 0, 2, 15)));
        assert_eq!(node.lan_mac(), Some([0x52, 0x54, 0, 0, 0, 1]));
        node.default_route = None;
        assert_eq!(node.lan(), Some(Ipv4Addr::new(192, 168, 1, 21)));
        assert_eq!(node.lan_mac(), Some([0x52, 0x54, 0, 0, 0, 2]));
        // Neither loopback nor the overlay is the LAN.
        node.ipv4.retain(|(name, _)| !name.starts_with("eth"));
        assert_eq!(node.lan(), None);
        assert_eq!(node.on("wg0"), Some(Ipv4Addr::new(10, 99, 0, 2)));
        assert_eq!(node.lan_mac(), Some([0x52, 0x54, 0, 0, 0, 1]));
    }
}
