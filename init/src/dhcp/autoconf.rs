//! DHCP autoconfiguration of the node: a thread per candidate NIC waits for
//! its carrier and asks for a lease; the first lease bound wins, is applied
//! (address, default route, the lease file, fix_hosts) and kept by its
//! thread for the life of the node; the other threads stop and give back
//! anything they were granted. The boot waits a bounded time for the first
//! lease and then goes on; a lease that comes later is applied all the same.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use super::{acquire, give_back, keep, set_bound, Client, Kept, Lease};
use crate::hosts::{self, Identity};
use crate::net::{Link, Netlink};
use crate::sys::{Linux, System};
use crate::{error, info, warn};
use chaos_contract::fact::{self, Fact};

/// How long a NIC may take to get carrier before DHCP gives up on it.
const CARRIER_WAIT: Duration = Duration::from_secs(60);
/// A failed DHCP thread (socket or netlink error) tries again after this.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(5);

/// What the node asks for and what the command line fixed already.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `ip=`'s host name: sent to the server, and it wins over option 12
    /// (the kernel's rule).
    pub hostname: Option<String>,
    pub nis_domain: Option<String>,
    /// `ip=`'s DNS servers: they win over the lease's.
    pub dns: Vec<Ipv4Addr>,
    /// Option 61, type byte first.
    pub client_id: Option<Vec<u8>>,
}

impl Settings {
    fn client(&self, mac: [u8; 6]) -> Client {
        Client {
            mac,
            hostname: self.hostname.clone(),
            client_id: self.client_id.clone(),
        }
    }

    /// The node's identity under `lease`: host name from `ip=`, else
    /// option 12 (up to its first dot), else the stable name from the MAC.
    pub fn identity(&self, lease: &Lease) -> Identity {
        let offered = lease.offer.hostname.as_deref().map(|name| {
            let (host, domain) = name.split_once('.').unwrap_or((name, ""));
            (
                host.to_string(),
                Some(domain.to_string()).filter(|d| !d.is_empty()),
            )
        });
        let hostname = self
            .hostname
            .clone()
            .or_else(|| offered.as_ref().map(|(host, _)| host.clone()))
            .unwrap_or_else(|| hosts::name_from_mac(lease.mac));
        Identity {
            hostname,
            nis_domain: self.nis_domain.clone(),
            domain: lease
                .offer
                .domain
                .clone()
                .or_else(|| offered.and_then(|(_, domain)| domain)),
            address: Some(lease.offer.address),
            dns: if self.dns.is_empty() {
                lease.offer.dns.clone()
            } else {
                self.dns.clone()
            },
        }
    }
}

/// Starts DHCP on each of `links` and waits up to `wait` for the first
/// lease, which is applied before it is returned. `None`: no lease yet;
/// the threads go on trying.
pub fn start(links: &[Link], settings: &Settings, wait: Duration) -> Option<(Lease, Identity)> {
    let won = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    for link in links {
        let Some(mac) = link.mac else {
            warn!(
                "dhcp: {} has no hardware address; not trying DHCP there",
                link.name
            );
            continue;
        };
        let name = link.name.clone();
        let (link, settings, won, tx) = (link.clone(), settings.clone(), won.clone(), tx.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("dhcp-{name}"))
            .spawn(move || run(&link, mac, &settings, &won, &tx));
        if let Err(e) = spawned {
            error!("dhcp: {name}: starting its thread: {e}");
        }
    }
    drop(tx);
    rx.recv_timeout(wait).ok()
}

/// One NIC's thread: carrier, lease, then keeping it if it won.
fn run(
    link: &Link,
    mac: [u8; 6],
    settings: &Settings,
    won: &AtomicBool,
    boot: &mpsc::Sender<(Lease, Identity)>,
) {
    let client = settings.client(mac);
    let lost_race = || won.load(Ordering::Relaxed);
    let lease = loop {
        match carrier_then_lease(link, &client, &lost_race) {
            Ok(Some(lease)) => break lease,
            Ok(None) => return,
            Err(e) => {
                error!(
                    "dhcp: {}: {e:#}; trying again in {} s",
                    link.name,
                    RETRY_AFTER_ERROR.as_secs()
                );
                // Not synchronisation: a pause before retrying a failed socket.
                std::thread::sleep(RETRY_AFTER_ERROR);
            }
        }
    };
    if won.swap(true, Ordering::SeqCst) {
        // Another NIC was faster; this lease is not needed.
        give_back(&lease, &client);
        return;
    }
    let mut lease = lease;
    let mut first = Some(boot);
    // A renewal changes nothing on the interface worth announcing again.
    let mut announce = true;
    let mut applied: Option<Identity> = None;
    loop {
        let identity = settings.identity(&lease);
        match apply(link, &lease, &client, &identity, announce) {
            Ok(()) => {
                // The boot takes the identity to fix_hosts itself while it
                // waits; after that this thread applies it.
                let waiting = first
                    .take()
                    .is_some_and(|tx| tx.send((lease.clone(), identity.clone())).is_ok());
                if !waiting && applied.as_ref() != Some(&identity) {
                    match hosts::apply(&Linux, &identity) {
                        Ok(()) => info!("dhcp: host name {}", identity.hostname),
                        Err(e) => error!("dhcp: {}: fix_hosts: {e:#}", link.name),
                    }
                }
                applied = Some(identity);
            }
            Err(e) => error!("dhcp: {}: applying the lease: {e:#}", link.name),
        }
        announce = false;
        lease = match keep(&lease, &client) {
            Ok(None) => return,
            Ok(Some(Kept::Extended(renewed))) => {
                info!(
                    "dhcp: {}: lease of {} extended by {} for {} s",
                    link.name,
                    renewed.offer.address,
                    renewed.offer.server,
                    renewed.offer.lease.map_or(0, |l| l.as_secs())
                );
                *renewed
            }
            Ok(Some(Kept::Lost(why))) => {
                warn!(
                    "dhcp: {}: lost the lease of {}: {why}; asking again",
                    link.name, lease.offer.address
                );
                withdraw(link, &lease);
                announce = true;
                reacquire(link, &client)
            }
            Err(e) => {
                error!("dhcp: {}: keeping the lease: {e}; asking again", link.name);
                withdraw(link, &lease);
                announce = true;
                reacquire(link, &client)
            }
        };
    }
}

/// Waits for the link's carrier, then asks until a lease or `stop`.
fn carrier_then_lease(
    link: &Link,
    client: &Client,
    stop: &dyn Fn() -> bool,
) -> anyhow::Result<Option<Lease>> {
    let mut netlink = Netlink::open()?;
    netlink.set_up(link.index)?;
    let started = Instant::now();
    let index = link.index;
    if netlink
        .wait_for_carrier(|l| l.index == index, started + CARRIER_WAIT)?
        .is_none()
    {
        warn!(
            "dhcp: {} got no carrier within {} s; not trying DHCP there",
            link.name,
            CARRIER_WAIT.as_secs()
        );
        return Ok(None);
    }
    if stop() {
        return Ok(None);
    }
    info!(
        "dhcp: {} has carrier after {} ms; asking for a lease",
        link.name,
        started.elapsed().as_millis()
    );
    match acquire(&link.name, client, stop) {
        Ok(lease) => Ok(Some(lease)),
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context("asking for a lease")),
    }
}

/// After a lost lease: ask until one comes, however long that takes.
fn reacquire(link: &Link, client: &Client) -> Lease {
    loop {
        match acquire(&link.name, client, &|| false) {
            Ok(lease) => return lease,
            Err(e) => {
                error!(
                    "dhcp: {}: asking for a lease: {e}; again in {} s",
                    link.name,
                    RETRY_AFTER_ERROR.as_secs()
                );
                // Not synchronisation: a pause before retrying a failed socket.
                std::thread::sleep(RETRY_AFTER_ERROR);
            }
        }
    }
}

/// Configures the interface with the lease and records it; `announce`
/// prints the summary (a new lease, not a renewed one).
fn apply(
    link: &Link,
    lease: &Lease,
    client: &Client,
    identity: &Identity,
    announce: bool,
) -> anyhow::Result<()> {
    let o = &lease.offer;
    let mut netlink = Netlink::open()?;
    netlink.add_address(link.index, o.address, o.prefix)?;
    if let Some(router) = o.routers.first() {
        netlink.replace_default_route(*router, Some(link.index))?;
    }
    Linux.write_file(
        std::path::Path::new(chaos_contract::paths::LEASE),
        &lease.render(),
        0o644,
    )?;
    set_bound(Some((lease.clone(), client.clone())));
    if announce {
        info!(
            "dhcp: {}: bound to {}/{} from {} for {}",
            link.name,
            o.address,
            o.prefix,
            o.server,
            o.lease
                .map_or("ever".to_string(), |l| format!("{} s", l.as_secs()))
        );
        info!("{}", lease.summary(&identity.hostname));
        let mut lease_fact = Fact::new(fact::LEASE)
            .with("interface", &link.name)
            .with("address", format!("{}/{}", o.address, o.prefix))
            .with("server", o.server)
            .with(
                "seconds",
                o.lease
                    .map_or("forever".to_string(), |l| l.as_secs().to_string()),
            );
        if let Some(router) = o.routers.first() {
            lease_fact = lease_fact.with("router", router);
        }
        info!("{lease_fact}");
        for what in &o.ignored {
            warn!("dhcp: {}: not using {what} from {}", link.name, o.server);
        }
    }
    Ok(())
}

/// Takes a lost lease's address off the interface.
fn withdraw(link: &Link, lease: &Lease) {
    set_bound(None);
    let o = &lease.offer;
    let removed = Netlink::open().and_then(|mut n| n.del_address(link.index, o.address, o.prefix));
    if let Err(e) = removed {
        error!(
            "dhcp: {}: removing {}/{}: {e}",
            link.name, o.address, o.prefix
        );
    }
    let _ = std::fs::remove_file(chaos_contract::paths::LEASE);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::Offer;

    fn lease(hostname: Option<&str>, domain: Option<&str>) -> Lease {
        Lease::new(
            "eth0",
            [0x52, 0x54, 0, 0x12, 0x34, 0xab],
            Offer {
                address: Ipv4Addr::new(10, 0, 2, 15),
                server: Ipv4Addr::new(10, 0, 2, 2),
                prefix: 24,
                routers: vec![Ipv4Addr::new(10, 0, 2, 2)],
                dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
                domain: domain.map(String::from),
                hostname: hostname.map(String::from),
                ntp: vec![],
                lease: None,
                renew: None,
                rebind: None,
                ignored: vec![],
            },
        )
    }

    #[test]
    fn the_host_name_comes_from_ip_then_the_lease_then_the_mac() {
        let none = Settings::default();
        let id = none.identity(&lease(None, None));
        assert_eq!(id.hostname, "node-5254001234ab");
        assert_eq!(id.dns, [Ipv4Addr::new(10, 0, 2, 3)]);
        assert_eq!(id.address, Some(Ipv4Addr::new(10, 0, 2, 15)));

        let id = none.identity(&lease(Some("drone3.lab.example"), None));
        assert_eq!(
            (id.hostname.as_str(), id.domain.as_deref()),
            ("drone3", Some("lab.example"))
        );
        let id = none.identity(&lease(Some("drone3.x"), Some("lab")));
        assert_eq!(
            (id.hostname.as_str(), id.domain.as_deref()),
            ("drone3", Some("lab"))
        );

        let given = Settings {
            hostname: Some("head".into()),
            dns: vec![Ipv4Addr::new(9, 9, 9, 9)],
            ..Settings::default()
        };
        let id = given.identity(&lease(Some("drone3"), None));
        assert_eq!(id.hostname, "head");
        assert_eq!(id.dns, [Ipv4Addr::new(9, 9, 9, 9)]);
    }
}
