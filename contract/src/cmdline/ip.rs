//! `ip=` and its alias `nfsaddrs=`, in the kernel's syntax
//! (Documentation/admin-guide/nfs/nfsroot.rst) plus dracut's
//! `ip=<device>:<autoconf>` and one entry per device. A malformed entry turns
//! into DHCP (on its device, when that field was valid), because a node that
//! tries DHCP can still join the cluster while a half-understood static
//! configuration leaves it unreachable.

use std::net::Ipv4Addr;

use super::{decimal, is_dotted_digits, is_label, Keyword};

/// The kernel's field names, in order; messages and help name fields by them.
const FIELDS: [&str; 10] = [
    "client-ip",
    "server-ip",
    "gw-ip",
    "netmask",
    "hostname",
    "device",
    "autoconf",
    "dns0-ip",
    "dns1-ip",
    "ntp0-ip",
];
const CLIENT: usize = 0;
const SERVER: usize = 1;
const GATEWAY: usize = 2;
const NETMASK: usize = 3;
const HOSTNAME: usize = 4;
const DEVICE: usize = 5;
const AUTOCONF: usize = 6;
const DNS0: usize = 7;
const DNS1: usize = 8;
const NTP0: usize = 9;

/// The end of every `ip=` message: what the entry became instead.
const FALLBACK: &str = "using DHCP instead";

/// The `<autoconf>` field: how the interface gets its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Autoconf {
    /// `off`/`none`: no autoconfiguration. Static with a client address;
    /// without one the interface is left unconfigured (the kernel's `ip=off`).
    Off,
    /// `on`/`any`: any protocol; the kernel's default.
    #[default]
    Any,
    Dhcp,
    Bootp,
    Rarp,
    /// BOOTP and RARP but not DHCP; the kernel keeps it for old setups.
    Both,
}

impl Keyword for Autoconf {
    const WORDS: &'static [(&'static str, Self)] = &[
        ("off", Self::Off),
        ("none", Self::Off),
        ("on", Self::Any),
        ("any", Self::Any),
        ("dhcp", Self::Dhcp),
        ("bootp", Self::Bootp),
        ("rarp", Self::Rarp),
        ("both", Self::Both),
    ];
}

/// The DHCP client identifier (option 61) of `dhcp,<type>,<value>`, sent as
/// the type byte followed by the value's bytes, as the kernel does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientId {
    pub kind: u8,
    pub value: String,
}

/// One `ip=` entry. Unset fields are `None`: the protocol (or nobody) fills them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IpConfig {
    pub client: Option<Ipv4Addr>,
    pub server: Option<Ipv4Addr>,
    pub gateway: Option<Ipv4Addr>,
    /// As given; see [`IpConfig::effective_netmask`].
    pub netmask: Option<Ipv4Addr>,
    /// The hostname field up to its first '.'.
    pub hostname: Option<String>,
    /// The hostname field after its first '.'.
    pub nis_domain: Option<String>,
    /// `None`: any NIC.
    pub device: Option<String>,
    pub autoconf: Autoconf,
    /// dns0-ip then dns1-ip, unset ones left out.
    pub dns: Vec<Ipv4Addr>,
    pub ntp: Option<Ipv4Addr>,
    pub client_id: Option<ClientId>,
}

impl IpConfig {
    /// A static address: autoconf off and a client address. Autoconf off
    /// without one means: leave the interface unconfigured.
    pub fn is_static(&self) -> bool {
        self.autoconf == Autoconf::Off && self.client.is_some()
    }

    /// The netmask given, else the class default of the client address (the
    /// kernel's rule); `None` without a client address or for class D/E.
    pub fn effective_netmask(&self) -> Option<Ipv4Addr> {
        self.netmask.or_else(|| classful_netmask(self.client?))
    }

    /// [`IpConfig::effective_netmask`] as a prefix length; `None` also for a
    /// non-contiguous netmask built by hand (the parser rejects those).
    pub fn prefix_len(&self) -> Option<u8> {
        prefix_len(self.effective_netmask()?)
    }
}

/// The field layout for messages: `<client-ip>:...:<ntp0-ip>`.
pub(super) fn syntax() -> String {
    FIELDS.map(|field| format!("<{field}>")).join(":")
}

pub(super) fn help(out: &mut String) {
    out.push_str(&format!(
        "  ip={}\n      \
         static address or autoconfiguration, as in the kernel's nfsroot.rst;\n      \
         empty fields and 0.0.0.0 are unset; <hostname> is <host>[.<NIS domain>];\n      \
         <autoconf>: {}\n  \
         ip=<autoconf>   ip=dhcp,<client-id-type>,<client-id-value>   ip=<device>:<autoconf>\n      \
         short forms; repeat ip= once per device; nfsaddrs= is the same\n",
        syntax(),
        Autoconf::words(" "),
    ));
}

/// Parses `value` of `key` (`ip` or `nfsaddrs`) and adds it to `entries` with
/// dracut's semantics: entries for different devices are all kept, a later
/// entry for the same device (or the second without one) replaces the earlier.
pub(super) fn add(entries: &mut Vec<IpConfig>, key: &str, value: &str, problems: &mut Vec<String>) {
    let entry = parse(key, value, problems);
    match entries.iter_mut().find(|old| old.device == entry.device) {
        Some(old) => {
            problems.push(match &entry.device {
                Some(device) => {
                    format!("{key}=: {value:?} replaces the earlier entry for device {device:?}")
                }
                None => format!("{key}=: {value:?} replaces the earlier entry without a device"),
            });
            *old = entry;
        }
        None => entries.push(entry),
    }
}

fn parse(key: &str, value: &str, problems: &mut Vec<String>) -> IpConfig {
    let mut f = Fields::new(key, value, problems);
    let client = f.get(CLIENT, client_ip).flatten();
    let server = f.get(SERVER, ipv4).flatten();
    let gateway = f.get(GATEWAY, ipv4).flatten();
    let netmask = f.get(NETMASK, netmask).flatten();
    let (hostname, nis_domain) = f.get(HOSTNAME, hostname).unwrap_or_default();
    let device = f.get(DEVICE, device);
    // An empty autoconf with a client address is static: the kernel skips
    // autoconfiguration when the address is complete.
    let (autoconf, client_id) = f.get(AUTOCONF, autoconf).unwrap_or(match client {
        Some(_) => (Autoconf::Off, None),
        None => (Autoconf::Any, None),
    });
    let dns: Vec<_> = [DNS0, DNS1]
        .into_iter()
        .filter_map(|i| f.get(i, ipv4).flatten())
        .collect();
    let ntp = f.get(NTP0, ipv4).flatten();

    let static_fields = server.is_some()
        || gateway.is_some()
        || netmask.is_some()
        || hostname.is_some()
        || nis_domain.is_some()
        || !dns.is_empty()
        || ntp.is_some();
    if autoconf == Autoconf::Off && client.is_none() && static_fields {
        let reason = format!(
            "is not set, but autoconf {:?} makes this a static configuration",
            f.raw[AUTOCONF]
        );
        f.fail(CLIENT, &reason);
    }
    if f.failed {
        return IpConfig {
            device,
            client_id,
            autoconf: Autoconf::Dhcp,
            ..IpConfig::default()
        };
    }
    IpConfig {
        client,
        server,
        gateway,
        netmask,
        hostname,
        nis_domain,
        device,
        autoconf,
        dns,
        ntp,
        client_id,
    }
}

/// The raw fields of one entry, and the messages about them.
struct Fields<'a> {
    key: &'a str,
    raw: [&'a str; 10],
    problems: &'a mut Vec<String>,
    failed: bool,
}

impl<'a> Fields<'a> {
    /// Lays the three forms out on the kernel's ten fields.
    fn new(key: &'a str, value: &'a str, problems: &'a mut Vec<String>) -> Self {
        let mut f = Fields {
            key,
            raw: [""; 10],
            problems,
            failed: false,
        };
        let parts: Vec<&str> = value.split(':').collect();
        // `ip=<autoconf>`; a client id may contain ':' (a MAC address), and
        // the kernel checks for this form before splitting.
        if value.starts_with("dhcp,")
            || (parts.len() == 1 && !value.is_empty() && !is_dotted_digits(value))
        {
            f.raw[AUTOCONF] = value;
        } else if let [first, second] = parts[..] {
            if first.is_empty() || is_dotted_digits(first) {
                f.raw[CLIENT] = first;
                f.raw[SERVER] = second;
            } else {
                f.raw[DEVICE] = first;
                f.raw[AUTOCONF] = second;
            }
        } else {
            if parts.len() > FIELDS.len() {
                f.report(format!(
                    "{value:?} has {} fields, expected at most {}",
                    parts.len(),
                    FIELDS.len()
                ));
            }
            for (slot, part) in f.raw.iter_mut().zip(parts) {
                *slot = part;
            }
        }
        f
    }

    /// Field `index` parsed, or `None` when it is empty or malformed (reported).
    fn get<T>(&mut self, index: usize, parse: fn(&str) -> Result<T, String>) -> Option<T> {
        let raw = self.raw[index];
        if raw.is_empty() {
            return None;
        }
        parse(raw).map_err(|reason| self.fail(index, &reason)).ok()
    }

    fn fail(&mut self, index: usize, reason: &str) {
        let raw = self.raw[index];
        self.report(format!(
            "field {} ({}) {raw:?} {reason}",
            index + 1,
            FIELDS[index]
        ));
    }

    fn report(&mut self, what: String) {
        self.failed = true;
        self.problems
            .push(format!("{}=: {what}; {FALLBACK}", self.key));
    }
}

/// An address, `None` for 0.0.0.0, which the kernel treats as unset.
fn ipv4(raw: &str) -> Result<Option<Ipv4Addr>, String> {
    let addr: Ipv4Addr = raw
        .parse()
        .map_err(|_| "is not an IPv4 address".to_owned())?;
    Ok(Some(addr).filter(|a| !a.is_unspecified()))
}

fn client_ip(raw: &str) -> Result<Option<Ipv4Addr>, String> {
    let addr = ipv4(raw)?;
    match addr {
        Some(a) if classful_netmask(a).is_none() => {
            Err("is a class D or E address, expected a unicast address".to_owned())
        }
        _ => Ok(addr),
    }
}

fn netmask(raw: &str) -> Result<Option<Ipv4Addr>, String> {
    let mask = ipv4(raw)?;
    match mask {
        Some(m) if prefix_len(m).is_none() => {
            Err("is not a contiguous netmask, expected one like 255.255.255.0".to_owned())
        }
        _ => Ok(mask),
    }
}

/// `<host>[.<NIS domain>]`, split at the first '.' as the kernel does.
fn hostname(raw: &str) -> Result<(Option<String>, Option<String>), String> {
    let (host, domain) = raw.split_once('.').unwrap_or((raw, ""));
    // 64 is the kernel's limit for both (__NEW_UTS_LEN).
    if !host.is_empty() && !is_label(host, 64) {
        return Err(format!(
            "has host name {host:?}, expected 1-64 letters, digits or '-', not starting or ending with '-'"
        ));
    }
    if domain.len() > 64 || !domain.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "has NIS domain {domain:?}, expected at most 64 printable characters"
        ));
    }
    let non_empty = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
    Ok((non_empty(host), non_empty(domain)))
}

/// The kernel's `dev_valid_name`, restricted to printable ASCII.
fn device(raw: &str) -> Result<String, String> {
    // IFNAMSIZ is 16, including the terminating NUL.
    if raw.len() <= 15
        && raw != "."
        && raw != ".."
        && raw.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
    {
        Ok(raw.to_owned())
    } else {
        Err(
            "is not an interface name, expected at most 15 characters without '/' or spaces"
                .to_owned(),
        )
    }
}

fn autoconf(raw: &str) -> Result<(Autoconf, Option<ClientId>), String> {
    let Some(id) = raw.strip_prefix("dhcp,") else {
        return Ok((Autoconf::from_word(raw)?, None));
    };
    let client_id = id.split_once(',').and_then(|(kind, value)| {
        // Option 61 carries at most 255 bytes, one of them the type.
        let valid = !value.is_empty() && value.len() <= 254;
        Some(ClientId {
            kind: decimal(kind)?,
            value: value.to_owned(),
        })
        .filter(|_| valid)
    });
    match client_id {
        Some(id) => Ok((Autoconf::Dhcp, Some(id))),
        None => Err(
            "is not dhcp,<client-id-type>,<client-id-value> with a type of 0-255 and 1-254 \
                     characters of value"
                .to_owned(),
        ),
    }
}

/// The netmask of the address's class; `None` for class D (multicast) and E.
fn classful_netmask(addr: Ipv4Addr) -> Option<Ipv4Addr> {
    let ones = match addr.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        192..=223 => 24,
        _ => return None,
    };
    Some(Ipv4Addr::from(u32::MAX << (32 - ones)))
}

/// The prefix length of a contiguous netmask.
fn prefix_len(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let ones = bits.leading_ones();
    (ones + bits.trailing_zeros() == 32)
        .then_some(ones)
        .and_then(|n| u8::try_from(n).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Option<Ipv4Addr> {
        Some(s.parse().unwrap())
    }

    fn s(s: &str) -> Option<String> {
        Some(s.to_owned())
    }

    fn parse_one(value: &str) -> (IpConfig, Vec<String>) {
        let mut problems = Vec::new();
        let config = parse("ip", value, &mut problems);
        (config, problems)
    }

    fn dhcp_on(device: Option<&str>) -> IpConfig {
        IpConfig {
            device: device.map(str::to_owned),
            autoconf: Autoconf::Dhcp,
            ..IpConfig::default()
        }
    }

    #[test]
    fn valid_entries() {
        let any = IpConfig::default();
        let table = [
            ("", any.clone()),
            ("0.0.0.0:0.0.0.0:0.0.0.0:0.0.0.0::::0.0.0.0:0.0.0.0:0.0.0.0", any.clone()),
            (":::::::::", any.clone()),
            (
                "10.0.0.2:10.0.0.1:10.0.0.254:255.255.255.0:node1.lab:eth0:off:10.0.0.53:10.0.0.54:10.0.0.123",
                IpConfig {
                    client: a("10.0.0.2"),
                    server: a("10.0.0.1"),
                    gateway: a("10.0.0.254"),
                    netmask: a("255.255.255.0"),
                    hostname: s("node1"),
                    nis_domain: s("lab"),
                    device: s("eth0"),
                    autoconf: Autoconf::Off,
                    dns: vec![a("10.0.0.53").unwrap(), a("10.0.0.54").unwrap()],
                    ntp: a("10.0.0.123"),
                    client_id: None,
                },
            ),
            ("10.0.0.2", IpConfig { client: a("10.0.0.2"), autoconf: Autoconf::Off, ..any.clone() }),
            ("10.0.0.2::::::", IpConfig { client: a("10.0.0.2"), autoconf: Autoconf::Off, ..any.clone() }),
            ("10.0.0.2:10.0.0.1", IpConfig { client: a("10.0.0.2"), server: a("10.0.0.1"), autoconf: Autoconf::Off, ..any.clone() }),
            ("10.0.0.2:::::eth0:dhcp", IpConfig { client: a("10.0.0.2"), ..dhcp_on(Some("eth0")) }),
            (":10.0.0.1", IpConfig { server: a("10.0.0.1"), ..any.clone() }),
            ("::10.0.0.254", IpConfig { gateway: a("10.0.0.254"), ..any.clone() }),
            (":::255.255.0.0", IpConfig { netmask: a("255.255.0.0"), ..any.clone() }),
            ("::::node1", IpConfig { hostname: s("node1"), ..any.clone() }),
            ("::::node1.lab.example::dhcp", IpConfig { hostname: s("node1"), nis_domain: s("lab.example"), ..dhcp_on(None) }),
            ("::::.lab", IpConfig { nis_domain: s("lab"), ..any.clone() }),
            ("::::n.", IpConfig { hostname: s("n"), ..any.clone() }),
            (":::::eth0", IpConfig { device: s("eth0"), ..any.clone() }),
            (":::::eth0:off", IpConfig { device: s("eth0"), autoconf: Autoconf::Off, ..any.clone() }),
            (":::::::10.0.0.53", IpConfig { dns: vec![a("10.0.0.53").unwrap()], ..any.clone() }),
            ("::::::::10.0.0.54", IpConfig { dns: vec![a("10.0.0.54").unwrap()], ..any.clone() }),
            (":::::::::10.0.0.123", IpConfig { ntp: a("10.0.0.123"), ..any.clone() }),
            // Every autoconf word, alone and in its field.
            ("off", IpConfig { autoconf: Autoconf::Off, ..any.clone() }),
            ("none", IpConfig { autoconf: Autoconf::Off, ..any.clone() }),
            ("on", any.clone()),
            ("any", any.clone()),
            ("dhcp", dhcp_on(None)),
            ("bootp", IpConfig { autoconf: Autoconf::Bootp, ..any.clone() }),
            ("rarp", IpConfig { autoconf: Autoconf::Rarp, ..any.clone() }),
            ("both", IpConfig { autoconf: Autoconf::Both, ..any.clone() }),
            ("::::::none", IpConfig { autoconf: Autoconf::Off, ..any.clone() }),
            ("::::::on", any.clone()),
            ("::::::dhcp", dhcp_on(None)),
            ("::::::bootp", IpConfig { autoconf: Autoconf::Bootp, ..any.clone() }),
            ("::::::rarp", IpConfig { autoconf: Autoconf::Rarp, ..any.clone() }),
            ("::::::both", IpConfig { autoconf: Autoconf::Both, ..any.clone() }),
            // DHCP client identifiers.
            ("dhcp,1,52:54:00:12:34:56", IpConfig { client_id: Some(ClientId { kind: 1, value: "52:54:00:12:34:56".into() }), ..dhcp_on(None) }),
            ("dhcp,0,node,7", IpConfig { client_id: Some(ClientId { kind: 0, value: "node,7".into() }), ..dhcp_on(None) }),
            (":::::eth1:dhcp,255,x", IpConfig { client_id: Some(ClientId { kind: 255, value: "x".into() }), ..dhcp_on(Some("eth1")) }),
            // dracut's <device>:<autoconf>.
            ("eth0:dhcp", dhcp_on(Some("eth0"))),
            ("enp0s3:on", IpConfig { device: s("enp0s3"), ..any.clone() }),
            ("eth0:any", IpConfig { device: s("eth0"), ..any.clone() }),
            ("eth0:off", IpConfig { device: s("eth0"), autoconf: Autoconf::Off, ..any.clone() }),
            ("eth0:bootp", IpConfig { device: s("eth0"), autoconf: Autoconf::Bootp, ..any.clone() }),
            ("eth0:", IpConfig { device: s("eth0"), ..any.clone() }),
            ("eth0:dhcp,1,id", IpConfig { client_id: Some(ClientId { kind: 1, value: "id".into() }), ..dhcp_on(Some("eth0")) }),
        ];
        for (value, expected) in table {
            assert_eq!(parse_one(value), (expected, vec![]), "ip={value}");
        }
    }

    #[test]
    fn netmask_defaults_by_class() {
        let table: &[(&str, &str, Option<&str>, Option<u8>)] = &[
            ("10.1.2.3", "", Some("255.0.0.0"), Some(8)),
            ("127.0.0.1", "", Some("255.0.0.0"), Some(8)),
            ("128.0.0.1", "", Some("255.255.0.0"), Some(16)),
            ("172.16.0.5", "", Some("255.255.0.0"), Some(16)),
            ("192.168.1.5", "", Some("255.255.255.0"), Some(24)),
            ("223.255.255.1", "", Some("255.255.255.0"), Some(24)),
            ("10.1.2.3", "0.0.0.0", Some("255.0.0.0"), Some(8)),
            (
                "10.1.2.3",
                "255.255.255.128",
                Some("255.255.255.128"),
                Some(25),
            ),
            ("192.168.1.5", "255.255.0.0", Some("255.255.0.0"), Some(16)),
            (
                "10.1.2.3",
                "255.255.255.255",
                Some("255.255.255.255"),
                Some(32),
            ),
            ("", "255.255.255.0", Some("255.255.255.0"), Some(24)),
            ("", "", None, None),
        ];
        for &(client, mask, expected, prefix) in table {
            let (config, problems) = parse_one(&format!("{client}:::{mask}"));
            assert_eq!(problems, Vec::<String>::new(), "{client} {mask}");
            assert_eq!(
                config.effective_netmask(),
                expected.and_then(a),
                "{client} {mask}"
            );
            assert_eq!(config.prefix_len(), prefix, "{client} {mask}");
        }
        let by_hand = IpConfig {
            client: a("224.0.0.1"),
            netmask: None,
            ..IpConfig::default()
        };
        assert_eq!(
            (by_hand.effective_netmask(), by_hand.prefix_len()),
            (None, None)
        );
        let by_hand = IpConfig {
            netmask: a("255.0.255.0"),
            ..IpConfig::default()
        };
        assert_eq!(by_hand.prefix_len(), None);
    }

    #[test]
    fn static_means_off_with_an_address() {
        let table = [
            ("10.0.0.2", true),
            ("10.0.0.2:::::eth0:off", true),
            ("10.0.0.2::::::dhcp", false),
            ("off", false),
            ("dhcp", false),
        ];
        for (value, expected) in table {
            assert_eq!(parse_one(value).0.is_static(), expected, "ip={value}");
        }
    }

    #[test]
    fn malformed_fields_fall_back_to_dhcp() {
        let table: &[(&str, &[&str], Option<&str>)] = &[
            (
                "10.0.0.256",
                &[
                    r#"ip=: field 1 (client-ip) "10.0.0.256" is not an IPv4 address; using DHCP instead"#,
                ],
                None,
            ),
            (
                "10.0.0.2.",
                &[
                    r#"ip=: field 1 (client-ip) "10.0.0.2." is not an IPv4 address; using DHCP instead"#,
                ],
                None,
            ),
            (
                "010.0.0.2",
                &[
                    r#"ip=: field 1 (client-ip) "010.0.0.2" is not an IPv4 address; using DHCP instead"#,
                ],
                None,
            ),
            (
                "224.0.0.1:::::eth0",
                &[
                    r#"ip=: field 1 (client-ip) "224.0.0.1" is a class D or E address, expected a unicast address; using DHCP instead"#,
                ],
                Some("eth0"),
            ),
            (
                "240.0.0.1:::255.255.255.0",
                &[
                    r#"ip=: field 1 (client-ip) "240.0.0.1" is a class D or E address, expected a unicast address; using DHCP instead"#,
                ],
                None,
            ),
            (
                "10.0.0.2:x",
                &[r#"ip=: field 2 (server-ip) "x" is not an IPv4 address; using DHCP instead"#],
                None,
            ),
            (
                "10.0.0.2::10.0.0",
                &[r#"ip=: field 3 (gw-ip) "10.0.0" is not an IPv4 address; using DHCP instead"#],
                None,
            ),
            (
                "10.0.0.2:::255.255.0.300",
                &[
                    r#"ip=: field 4 (netmask) "255.255.0.300" is not an IPv4 address; using DHCP instead"#,
                ],
                None,
            ),
            (
                "10.0.0.2:::255.0.255.0:::off",
                &[
                    r#"ip=: field 4 (netmask) "255.0.255.0" is not a contiguous netmask, expected one like 255.255.255.0; using DHCP instead"#,
                ],
                None,
            ),
            (
                "10.0.0.2::::my_host.lab:eth0",
                &[
                    r#"ip=: field 5 (hostname) "my_host.lab" has host name "my_host", expected 1-64 letters, digits or '-', not starting or ending with '-'; using DHCP instead"#,
                ],
                Some("eth0"),
            ),
            (
                "::::-node",
                &[
                    r#"ip=: field 5 (hostname) "-node" has host name "-node", expected 1-64 letters, digits or '-', not starting or ending with '-'; using DHCP instead"#,
                ],
                None,
            ),
            (
                "::::node-",
                &[
                    r#"ip=: field 5 (hostname) "node-" has host name "node-", expected 1-64 letters, digits or '-', not starting or ending with '-'; using DHCP instead"#,
                ],
                None,
            ),
            (
                "::::aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                &[
                    r#"ip=: field 5 (hostname) "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" has host name "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", expected 1-64 letters, digits or '-', not starting or ending with '-'; using DHCP instead"#,
                ],
                None,
            ),
            (
                "::::n.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                &[
                    r#"ip=: field 5 (hostname) "n.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" has NIS domain "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", expected at most 64 printable characters; using DHCP instead"#,
                ],
                None,
            ),
            (
                "::::n.a b",
                &[
                    r#"ip=: field 5 (hostname) "n.a b" has NIS domain "a b", expected at most 64 printable characters; using DHCP instead"#,
                ],
                None,
            ),
            (
                ":::::eth0/1",
                &[
                    r#"ip=: field 6 (device) "eth0/1" is not an interface name, expected at most 15 characters without '/' or spaces; using DHCP instead"#,
                ],
                None,
            ),
            (
                ":::::abcdefghijklmnop",
                &[
                    r#"ip=: field 6 (device) "abcdefghijklmnop" is not an interface name, expected at most 15 characters without '/' or spaces; using DHCP instead"#,
                ],
                None,
            ),
            (
                ":::::..",
                &[
                    r#"ip=: field 6 (device) ".." is not an interface name, expected at most 15 characters without '/' or spaces; using DHCP instead"#,
                ],
                None,
            ),
            (
                ":::::eth0:static",
                &[
                    r#"ip=: field 7 (autoconf) "static" is not one of off, none, on, any, dhcp, bootp, rarp, both; using DHCP instead"#,
                ],
                Some("eth0"),
            ),
            (
                "dhpc",
                &[
                    r#"ip=: field 7 (autoconf) "dhpc" is not one of off, none, on, any, dhcp, bootp, rarp, both; using DHCP instead"#,
                ],
                None,
            ),
            (
                "DHCP",
                &[
                    r#"ip=: field 7 (autoconf) "DHCP" is not one of off, none, on, any, dhcp, bootp, rarp, both; using DHCP instead"#,
                ],
                None,
            ),
            (
                "eth0:static",
                &[
                    r#"ip=: field 7 (autoconf) "static" is not one of off, none, on, any, dhcp, bootp, rarp, both; using DHCP instead"#,
                ],
                Some("eth0"),
            ),
            (
                "dhcp,300,x",
                &[
                    r#"ip=: field 7 (autoconf) "dhcp,300,x" is not dhcp,<client-id-type>,<client-id-value> with a type of 0-255 and 1-254 characters of value; using DHCP instead"#,
                ],
                None,
            ),
            (
                "dhcp,+1,x",
                &[
                    r#"ip=: field 7 (autoconf) "dhcp,+1,x" is not dhcp,<client-id-type>,<client-id-value> with a type of 0-255 and 1-254 characters of value; using DHCP instead"#,
                ],
                None,
            ),
            (
                "dhcp,1",
                &[
                    r#"ip=: field 7 (autoconf) "dhcp,1" is not dhcp,<client-id-type>,<client-id-value> with a type of 0-255 and 1-254 characters of value; using DHCP instead"#,
                ],
                None,
            ),
            (
                "dhcp,1,",
                &[
                    r#"ip=: field 7 (autoconf) "dhcp,1," is not dhcp,<client-id-type>,<client-id-value> with a type of 0-255 and 1-254 characters of value; using DHCP instead"#,
                ],
                None,
            ),
            (
                "10.0.0.2:::::::8.8.8",
                &[r#"ip=: field 8 (dns0-ip) "8.8.8" is not an IPv4 address; using DHCP instead"#],
                None,
            ),
            (
                "10.0.0.2::::::::x",
                &[r#"ip=: field 9 (dns1-ip) "x" is not an IPv4 address; using DHCP instead"#],
                None,
            ),
            (
                "10.0.0.2:::::::::ntp.lab",
                &[
                    r#"ip=: field 10 (ntp0-ip) "ntp.lab" is not an IPv4 address; using DHCP instead"#,
                ],
                None,
            ),
            (
                "10.0.0.2:::::eth0:off::::extra",
                &[
                    r#"ip=: "10.0.0.2:::::eth0:off::::extra" has 11 fields, expected at most 10; using DHCP instead"#,
                ],
                Some("eth0"),
            ),
            (
                ":10.0.0.1:10.0.0.254:255.255.255.0::eth0:off",
                &[
                    r#"ip=: field 1 (client-ip) "" is not set, but autoconf "off" makes this a static configuration; using DHCP instead"#,
                ],
                Some("eth0"),
            ),
            (
                "0.0.0.0::::node1::none",
                &[
                    r#"ip=: field 1 (client-ip) "0.0.0.0" is not set, but autoconf "none" makes this a static configuration; using DHCP instead"#,
                ],
                None,
            ),
            (
                "10.0.0.x:::255.255.0.300:::bogus",
                &[
                    r#"ip=: field 1 (client-ip) "10.0.0.x" is not an IPv4 address; using DHCP instead"#,
                    r#"ip=: field 4 (netmask) "255.255.0.300" is not an IPv4 address; using DHCP instead"#,
                    r#"ip=: field 7 (autoconf) "bogus" is not one of off, none, on, any, dhcp, bootp, rarp, both; using DHCP instead"#,
                ],
                None,
            ),
        ];
        for &(value, messages, device) in table {
            assert_eq!(
                parse_one(value),
                (
                    dhcp_on(device),
                    messages.iter().map(|m| m.to_string()).collect()
                ),
                "ip={value}"
            );
        }
    }

    #[test]
    fn a_fallback_keeps_a_valid_client_id() {
        let (config, problems) = parse_one("10.0.0.x:::::eth0:dhcp,1,node7");
        assert_eq!(
            config,
            IpConfig {
                client_id: Some(ClientId {
                    kind: 1,
                    value: "node7".into()
                }),
                ..dhcp_on(Some("eth0"))
            }
        );
        assert_eq!(problems.len(), 1);
    }

    #[test]
    fn nfsaddrs_is_an_alias_named_in_messages() {
        let got =
            super::super::parse("nfsaddrs=10.0.0.2:::255.0.0.0:::off nfsaddrs=10.0.0.300:::::eth1");
        assert_eq!(
            got.ip,
            [
                IpConfig {
                    client: a("10.0.0.2"),
                    netmask: a("255.0.0.0"),
                    autoconf: Autoconf::Off,
                    ..IpConfig::default()
                },
                dhcp_on(Some("eth1"))
            ]
        );
        assert_eq!(
            got.problems,
            [
                r#"nfsaddrs=: field 1 (client-ip) "10.0.0.300" is not an IPv4 address; using DHCP instead"#
            ]
        );
    }

    /// Each entry's device and autoconf.
    type Shape = &'static [(Option<&'static str>, Autoconf)];

    #[test]
    fn repeated_entries_keep_one_per_device() {
        let table: &[(&str, Shape, &[&str])] = &[
            (
                "ip=eth0:dhcp ip=eth1:dhcp",
                &[
                    (Some("eth0"), Autoconf::Dhcp),
                    (Some("eth1"), Autoconf::Dhcp),
                ],
                &[],
            ),
            (
                "ip=dhcp nfsaddrs=eth0:off",
                &[(None, Autoconf::Dhcp), (Some("eth0"), Autoconf::Off)],
                &[],
            ),
            (
                "ip=eth0:dhcp ip=10.0.0.2:::::eth0",
                &[(Some("eth0"), Autoconf::Off)],
                &[r#"ip=: "10.0.0.2:::::eth0" replaces the earlier entry for device "eth0""#],
            ),
            (
                "ip=dhcp ip=off",
                &[(None, Autoconf::Off)],
                &[r#"ip=: "off" replaces the earlier entry without a device"#],
            ),
            (
                "ip=eth0:dhcp ip=eth1:dhcp nfsaddrs=eth0:bootp",
                &[
                    (Some("eth0"), Autoconf::Bootp),
                    (Some("eth1"), Autoconf::Dhcp),
                ],
                &[r#"nfsaddrs=: "eth0:bootp" replaces the earlier entry for device "eth0""#],
            ),
            (
                "ip=eth0:off ip=eth0:bogus",
                &[(Some("eth0"), Autoconf::Dhcp)],
                &[
                    r#"ip=: field 7 (autoconf) "bogus" is not one of off, none, on, any, dhcp, bootp, rarp, both; using DHCP instead"#,
                    r#"ip=: "eth0:bogus" replaces the earlier entry for device "eth0""#,
                ],
            ),
        ];
        for &(cmdline, entries, messages) in table {
            let got = super::super::parse(cmdline);
            let shape: Vec<_> = got
                .ip
                .iter()
                .map(|e| (e.device.as_deref(), e.autoconf))
                .collect();
            assert_eq!(shape, entries, "{cmdline}");
            assert_eq!(got.problems, messages, "{cmdline}");
        }
    }
}
