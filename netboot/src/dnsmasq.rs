//! The dnsmasq configuration `netboot serve` runs: TFTP for the iPXE first
//! stage only (PXE firmware, BIOS or UEFI), iPXE by HTTP for UEFI firmware
//! that boots over HTTP, the boot script over HTTP for iPXE itself, and
//! either proxy-DHCP (the LAN's DHCP server keeps allocating addresses) or,
//! with a range, a DHCP server of its own for an isolated network. DNS is
//! off.

use std::net::Ipv4Addr;
use std::path::Path;

use crate::boot::{BIOS_FIRST_STAGE, SCRIPT, UEFI_FIRST_STAGE};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dhcp {
    /// Answer only PXE clients, beside the LAN's own DHCP server.
    Proxy,
    /// Hand out addresses from this range (inclusive).
    Range(Ipv4Addr, Ipv4Addr),
}

#[derive(Clone, Debug)]
pub struct Config<'a> {
    pub interface: &'a str,
    pub address: Ipv4Addr,
    pub netmask: Ipv4Addr,
    pub dhcp: Dhcp,
    pub tftp_root: &'a Path,
    pub lease_file: &'a Path,
    /// netboot's HTTP server, `http://address:port/`: the boot script
    /// (for iPXE) and the UEFI first stage (for HTTP Boot) are under it.
    pub http_base: &'a str,
}

/// PXE client architectures (RFC 4578 option 93: dnsmasq's name and the
/// number) and the first stage each gets. UEFI x86-64 firmware reports 7 or
/// 9 depending on its vendor, so both are listed.
const FIRST_STAGES: &[(&str, u16, &str)] = &[
    ("x86PC", 0, BIOS_FIRST_STAGE),
    ("x86-64_EFI", 9, UEFI_FIRST_STAGE),
    ("BC_EFI", 7, UEFI_FIRST_STAGE),
];

/// RFC 4578's client architecture of x86-64 UEFI booting over HTTP (the
/// IANA registry's 16), which also calls itself `HTTPClient` (option 60).
const HTTP_BOOT_ARCH: u16 = 16;

/// Parses `--dhcp`'s `START-END`.
pub fn parse_range(text: &str) -> Result<Dhcp, String> {
    let (start, end) = text.split_once('-').ok_or_else(|| {
        format!("--dhcp {text:?}: expected a range START-END such as 192.168.90.100-192.168.90.200")
    })?;
    let parse = |what: &str, s: &str| {
        s.trim()
            .parse::<Ipv4Addr>()
            .map_err(|_| format!("--dhcp {text:?}: {what} {s:?} is not an IPv4 address"))
    };
    let (start, end) = (parse("start", start)?, parse("end", end)?);
    if u32::from(start) > u32::from(end) {
        return Err(format!("--dhcp {text:?}: start {start} is after end {end}"));
    }
    Ok(Dhcp::Range(start, end))
}

fn network(address: Ipv4Addr, netmask: Ipv4Addr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(address) & u32::from(netmask))
}

impl Config<'_> {
    /// Checks a DHCP range against the interface's subnet: dnsmasq would
    /// otherwise start and silently never answer.
    pub fn check(&self) -> Result<(), String> {
        if let Dhcp::Range(start, end) = self.dhcp {
            let net = network(self.address, self.netmask);
            for ip in [start, end] {
                if network(ip, self.netmask) != net {
                    return Err(format!(
                        "--dhcp: {ip} is outside {}'s subnet {net}/{}",
                        self.interface, self.netmask
                    ));
                }
            }
        }
        Ok(())
    }

    /// What UEFI HTTP Boot firmware should fetch: iPXE, over HTTP. In
    /// proxy mode the LAN's DHCP server must offer it (vendor class
    /// HTTPClient, this URL as the file), which `netboot serve` says.
    pub fn http_boot_url(&self) -> String {
        format!("{}{UEFI_FIRST_STAGE}", self.http_base)
    }

    pub fn render(&self) -> String {
        let mut out = String::from(
            "# Written by netboot serve for as long as it runs.\n\
             # No DNS: the LAN has its own, and nodes are told nothing about names.\n\
             port=0\n",
        );
        out.push_str(&format!(
            "interface={}\nbind-interfaces\npid-file=\ndhcp-leasefile={}\n",
            self.interface,
            self.lease_file.display()
        ));
        match self.dhcp {
            Dhcp::Proxy => out.push_str(&format!(
                "dhcp-range={},proxy,{}\n",
                network(self.address, self.netmask),
                self.netmask
            )),
            Dhcp::Range(start, end) => {
                out.push_str(&format!("dhcp-range={start},{end},{},1h\n", self.netmask))
            }
        }
        out.push_str(&format!(
            "enable-tftp\ntftp-root={}\n\
             # The loop breaker: iPXE says so in its user class (and option 175);\n\
             # it gets the script, everything else the iPXE first stage.\n\
             dhcp-userclass=set:ipxe,iPXE\n\
             dhcp-match=set:ipxe,175\n",
            self.tftp_root.display()
        ));
        match self.dhcp {
            Dhcp::Proxy => {
                for (arch, _, file) in FIRST_STAGES {
                    out.push_str(&format!("pxe-service=tag:!ipxe,{arch},\"chaos\",{file}\n"));
                }
            }
            // As the only DHCP server, name the file in the offer itself,
            // which every PXE client follows. pxe-service would instead
            // send UEFI clients to a boot server discovery on port 4011
            // that dnsmasq (2.90) leaves unanswered outside proxy mode,
            // and OVMF gives up: "PXE-E16: No valid offer received".
            Dhcp::Range(..) => {
                out.push_str("# The firmware's architecture picks the first stage.\n");
                for (_, number, file) in FIRST_STAGES {
                    out.push_str(&format!(
                        "dhcp-match=set:arch{number},option:client-arch,{number}\n\
                         dhcp-boot=tag:!ipxe,tag:arch{number},{file},,{}\n",
                        self.address
                    ));
                }
                // UEFI HTTP Boot takes a URL for its file, from an offer
                // that names itself HTTPClient (OVMF and PC firmware ignore
                // one that does not), and then needs no TFTP at all: iPXE,
                // and after it the script, kernel and initramfs, all come
                // over HTTP. A proxy cannot do this: dnsmasq answers only
                // PXE clients in proxy mode (see `http_boot_url`).
                out.push_str(&format!(
                    "dhcp-match=set:http,option:client-arch,{HTTP_BOOT_ARCH}\n\
                     dhcp-option-force=tag:http,tag:!ipxe,option:vendor-class,HTTPClient\n\
                     dhcp-boot=tag:http,tag:!ipxe,{}\n",
                    self.http_boot_url()
                ));
            }
        }
        // The server address is not optional. Without it dnsmasq sends a
        // ProxyDHCPACK with next-server 0.0.0.0 for a URL, and iPXE ignores
        // ProxyDHCPACKs that lack next-server + filename or a PXE menu: it
        // keeps its lease from the LAN's DHCP server, has no file name and
        // stops with "Nothing to boot". QEMU's BIOS NIC ROMs are iPXE, so
        // they take this path first.
        out.push_str(&format!(
            "dhcp-boot=tag:ipxe,{}{SCRIPT},,{}\n",
            self.http_base, self.address
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dhcp: Dhcp) -> Config<'static> {
        Config {
            interface: "eth0",
            address: Ipv4Addr::new(192, 168, 90, 2),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            dhcp,
            tftp_root: Path::new("/srv/pxe"),
            lease_file: Path::new("/tmp/leases"),
            http_base: "http://192.168.90.2:8080/",
        }
    }

    #[test]
    fn proxy_mode_answers_pxe_only_and_breaks_the_ipxe_loop() {
        let text = config(Dhcp::Proxy).render();
        for line in [
            "port=0",
            "interface=eth0",
            "bind-interfaces",
            "dhcp-range=192.168.90.0,proxy,255.255.255.0",
            "enable-tftp",
            "tftp-root=/srv/pxe",
            "dhcp-userclass=set:ipxe,iPXE",
            "dhcp-match=set:ipxe,175",
            "pxe-service=tag:!ipxe,x86PC,\"chaos\",undionly.kpxe",
            "pxe-service=tag:!ipxe,x86-64_EFI,\"chaos\",ipxe.efi",
            "pxe-service=tag:!ipxe,BC_EFI,\"chaos\",ipxe.efi",
            "dhcp-boot=tag:ipxe,http://192.168.90.2:8080/boot.ipxe,,192.168.90.2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
        assert!(config(Dhcp::Proxy).check().is_ok());
    }

    #[test]
    fn uefi_http_boot_gets_ipxe_by_url_from_the_dhcp_server() {
        let range = parse_range("192.168.90.100-192.168.90.200").unwrap();
        let text = config(range).render();
        for line in [
            "dhcp-match=set:http,option:client-arch,16",
            "dhcp-option-force=tag:http,tag:!ipxe,option:vendor-class,HTTPClient",
            "dhcp-boot=tag:http,tag:!ipxe,http://192.168.90.2:8080/ipxe.efi",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
        // A proxy's offers would be ignored: it leaves the URL to the LAN.
        assert!(!config(Dhcp::Proxy).render().contains("HTTPClient"));
        assert_eq!(
            config(Dhcp::Proxy).http_boot_url(),
            "http://192.168.90.2:8080/ipxe.efi"
        );
    }

    #[test]
    fn a_range_is_parsed_checked_and_served() {
        let range = parse_range("192.168.90.100-192.168.90.200").unwrap();
        let text = config(range.clone()).render();
        for line in [
            "dhcp-range=192.168.90.100,192.168.90.200,255.255.255.0,1h",
            "dhcp-match=set:arch0,option:client-arch,0",
            "dhcp-boot=tag:!ipxe,tag:arch0,undionly.kpxe,,192.168.90.2",
            "dhcp-match=set:arch7,option:client-arch,7",
            "dhcp-boot=tag:!ipxe,tag:arch7,ipxe.efi,,192.168.90.2",
            "dhcp-match=set:arch9,option:client-arch,9",
            "dhcp-boot=tag:!ipxe,tag:arch9,ipxe.efi,,192.168.90.2",
            "dhcp-boot=tag:ipxe,http://192.168.90.2:8080/boot.ipxe,,192.168.90.2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
        assert!(!text.contains("proxy"));
        assert!(!text.contains("pxe-service"), "{text}");
        assert!(config(range).check().is_ok());
        let outside = parse_range("192.168.91.1-192.168.91.9").unwrap();
        assert_eq!(
            config(outside).check().unwrap_err(),
            "--dhcp: 192.168.91.1 is outside eth0's subnet 192.168.90.0/255.255.255.0"
        );
    }

    #[test]
    fn bad_ranges_say_what_was_expected() {
        for (text, error) in [
            ("192.168.90.100", "expected a range START-END"),
            (
                "192.168.90.300-192.168.90.1",
                "start \"192.168.90.300\" is not an IPv4 address",
            ),
            (
                "192.168.90.9-192.168.90.1",
                "start 192.168.90.9 is after end 192.168.90.1",
            ),
        ] {
            let got = parse_range(text).unwrap_err();
            assert!(got.contains(error), "{text}: {got}");
        }
    }
}
