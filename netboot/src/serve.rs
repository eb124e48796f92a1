//! `netboot serve`: dnsmasq (proxy-DHCP or a DHCP range, TFTP for the iPXE
//! first stage) and the HTTP server for the boot script, kernel and
//! initramfs, on one interface, until SIGINT or SIGTERM. Whatever it started
//! it stops: dnsmasq is killed and its temporary configuration removed on
//! every exit path, including a failed start.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context};
use nix::sys::signal::{SigSet, Signal};

use crate::boot::{self, BIOS_FIRST_STAGE, INITRD, KERNEL, SCRIPT, UEFI_FIRST_STAGE};
use crate::dnsmasq::{self, Dhcp};

#[derive(Clone, Debug)]
pub struct Options {
    pub interface: String,
    pub dhcp: Dhcp,
    /// The PXE tree (`cargo xtask pxe` writes build/pxe).
    pub root: PathBuf,
    pub http_port: u16,
    /// Kernel arguments added to the boot script's command line.
    pub append: String,
}

/// How long dnsmasq may take to report that it is serving.
const DNSMASQ_START: Duration = Duration::from_secs(10);

pub fn log(line: &str) {
    println!("netboot: {line}");
}

/// The interface's IPv4 address and netmask, or an error naming the
/// interfaces that do exist.
pub fn interface_address(name: &str) -> anyhow::Result<(Ipv4Addr, Ipv4Addr)> {
    let addrs: Vec<_> = nix::ifaddrs::getifaddrs()
        .context("listing network interfaces")?
        .collect();
    let v4 = |a: &Option<nix::sys::socket::SockaddrStorage>| {
        a.as_ref().and_then(|s| s.as_sockaddr_in()).map(|s| s.ip())
    };
    if let Some((ip, mask)) = addrs
        .iter()
        .filter(|a| a.interface_name == name)
        .find_map(|a| Some((v4(&a.address)?, v4(&a.netmask)?)))
    {
        return Ok((ip, mask));
    }
    let mut names: Vec<&str> = addrs.iter().map(|a| a.interface_name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    if names.contains(&name) {
        bail!("interface {name} has no IPv4 address; give it the address the nodes should reach this server at");
    }
    bail!(
        "no network interface {name:?} (this host has: {})",
        names.join(", ")
    )
}

/// The files a PXE tree must hold; checked up front so a node never gets a
/// 404 in the middle of a boot.
fn check_tree(root: &Path) -> anyhow::Result<()> {
    let missing: Vec<&str> = [BIOS_FIRST_STAGE, UEFI_FIRST_STAGE, KERNEL, INITRD]
        .into_iter()
        .filter(|f| !root.join(f).is_file())
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} is not a PXE tree: {} missing (build one with `cargo xtask pxe`)",
            root.display(),
            missing.join(", ")
        );
    }
    Ok(())
}

fn find_dnsmasq() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join("dnsmasq"))
        .find(|p| p.is_file())
        .context(
            "dnsmasq not found: install Debian's dnsmasq-base package (`cargo xtask deps` does)",
        )
}

/// Removes the temporary directory and stops dnsmasq however serve ends.
struct Started {
    dir: PathBuf,
    dnsmasq: Option<Child>,
}

impl Drop for Started {
    fn drop(&mut self) {
        if let Some(child) = &mut self.dnsmasq {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM);
            }
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs until SIGINT or SIGTERM; returns an error if anything fails to start
/// or dnsmasq dies.
pub fn run(options: &Options) -> anyhow::Result<()> {
    // Blocked before any thread starts, so every thread inherits the mask
    // and the signals wait for the loop below instead of killing the
    // process with dnsmasq still running.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals
        .thread_block()
        .context("blocking SIGINT and SIGTERM")?;

    let root = std::fs::canonicalize(&options.root)
        .with_context(|| format!("PXE tree {}", options.root.display()))?;
    check_tree(&root)?;
    let dnsmasq_bin = find_dnsmasq()?;
    let (address, netmask) = interface_address(&options.interface)?;
    let http_addr = SocketAddr::from((address, options.http_port));
    let listener = crate::http::bind(http_addr)?;
    let http_addr = listener.local_addr()?;
    let base = format!("http://{http_addr}/");

    let dir = std::env::temp_dir().join(format!("netboot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut started = Started { dir, dnsmasq: None };
    let conf_path = started.dir.join("dnsmasq.conf");
    let config = dnsmasq::Config {
        interface: &options.interface,
        address,
        netmask,
        dhcp: options.dhcp.clone(),
        tftp_root: &root,
        lease_file: &started.dir.join("leases"),
        http_base: &base,
    };
    config.check().map_err(anyhow::Error::msg)?;
    std::fs::write(&conf_path, config.render())
        .with_context(|| format!("writing {}", conf_path.display()))?;

    let mut command = Command::new(&dnsmasq_bin);
    // SAFETY: the closure runs between fork and exec and only calls
    // sigemptyset and pthread_sigmask, which are async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            // dnsmasq must not inherit the blocked SIGTERM it is stopped with.
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            Ok(())
        });
    }
    let mut child = command
        .arg("--keep-in-foreground")
        .arg("--log-facility=-")
        .arg(format!("--conf-file={}", conf_path.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", dnsmasq_bin.display()))?;
    let stderr = child.stderr.take().context("dnsmasq's stderr")?;
    started.dnsmasq = Some(child);
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut early = Vec::new();
        let mut ready = Some(ready_tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            log(&line);
            // The TFTP line is the last dnsmasq prints once every socket
            // is bound.
            if line.contains("TFTP root is") {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(Ok(()));
                }
            } else if ready.is_some() {
                early.push(line);
            }
        }
        if let Some(tx) = ready {
            let _ = tx.send(Err(early.join("\n")));
        }
    });
    match ready_rx.recv_timeout(DNSMASQ_START) {
        Ok(Ok(())) => {}
        Ok(Err(output)) => bail!("dnsmasq failed to start:\n{output}"),
        Err(_) => bail!(
            "dnsmasq did not report serving TFTP within {} s",
            DNSMASQ_START.as_secs()
        ),
    }

    let tree_args = std::fs::read_to_string(root.join(boot::ARGS)).unwrap_or_default();
    let extra = format!("{} {}", tree_args.trim(), options.append);
    let site = crate::http::Site {
        root: root.clone(),
        rendered: [(
            SCRIPT.to_string(),
            boot::ipxe_script(&base, extra.trim()).into_bytes(),
        )]
        .into(),
    };
    let http = crate::http::Server::new(listener, site, crate::http::Limits::default())?;
    std::thread::spawn(move || {
        if let Err(e) = http.run(|l| log(&format!("http: {l}"))) {
            log(&format!("http: stopped: {e}"));
        }
    });

    let mode = match &options.dhcp {
        Dhcp::Proxy => "proxy-DHCP beside the LAN's DHCP server".to_string(),
        Dhcp::Range(a, b) => format!("DHCP for {a}-{b}"),
    };
    log(&format!(
        "serving {} ({address}): {mode}, TFTP and HTTP {base} from {}; Ctrl-C stops",
        options.interface,
        root.display()
    ));
    if options.dhcp == Dhcp::Proxy {
        log(&format!(
            "UEFI HTTP Boot PCs need the LAN's DHCP server to offer vendor class \
             HTTPClient and the file {} (PXE PCs need nothing)",
            config.http_boot_url()
        ));
    }

    let timeout = libc::timespec {
        tv_sec: 0,
        tv_nsec: 250_000_000,
    };
    loop {
        // SAFETY: the set and timeout are valid for the call; a null info
        // pointer is allowed.
        let signal =
            unsafe { libc::sigtimedwait(signals.as_ref(), std::ptr::null_mut(), &timeout) };
        if signal > 0 {
            log(&format!(
                "{} received: stopping dnsmasq and the HTTP server",
                Signal::try_from(signal).map_or("signal", |s| s.as_str())
            ));
            drop(started);
            log("stopped");
            return Ok(());
        }
        if let Some(status) = started
            .dnsmasq
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            started.dnsmasq = None;
            bail!("dnsmasq exited unexpectedly ({status})");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_interface_is_named_with_the_existing_ones() {
        let error = interface_address("no-such-if0").unwrap_err().to_string();
        assert!(
            error.starts_with("no network interface \"no-such-if0\" (this host has: "),
            "{error}"
        );
        assert!(error.contains("lo"), "{error}");
    }

    #[test]
    fn an_incomplete_tree_lists_what_is_missing() {
        let root = std::env::temp_dir().join(format!("netboot-tree-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join(KERNEL), b"k").unwrap();
        let error = check_tree(&root).unwrap_err().to_string();
        assert!(
            error.ends_with(
                "is not a PXE tree: undionly.kpxe, ipxe.efi, initrd.img missing (build one with `cargo xtask pxe`)"
            ),
            "{error}"
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
