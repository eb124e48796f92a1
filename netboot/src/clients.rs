//! netboot's HTTP server's clients, for the hostile-client tests and for
//! `cargo xtask bench`: PCs that boot from it, clients that attack it (an
//! endless request line, thousands of idle connections), a lab of network
//! namespaces with `netboot serve` in it, and the thread-per-connection
//! server netboot had before its event loop, kept only as the baseline the
//! bench measures throughput against. Asserts nothing itself.

use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::boot::{INITRD, KERNEL, SCRIPT};
use crate::netns::{ip, Namespaces, Output};

/// What a PC fetches over HTTP to boot, in order.
pub const PC_FILES: [&str; 3] = [SCRIPT, KERNEL, INITRD];

/// A PC gives up on one file after this long.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// A TCP connection to `server` from `source`, an address of this host
/// (any address of it with `None`).
pub fn connect(server: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrStorage};
    let Some(source) = source else {
        return TcpStream::connect(server);
    };
    let family = match server {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    socket::bind(
        fd.as_raw_fd(),
        &SockaddrStorage::from(SocketAddr::new(source, 0)),
    )?;
    socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(server))?;
    Ok(TcpStream::from(fd))
}

/// One GET as iPXE makes it; the body's length, checked against the
/// answer's Content-Length.
pub fn get(server: SocketAddr, source: Option<IpAddr>, path: &str) -> anyhow::Result<u64> {
    let mut stream =
        connect(server, source).with_context(|| format!("connecting to {server} for {path}"))?;
    stream.set_read_timeout(Some(FETCH_TIMEOUT))?;
    write!(
        stream,
        "GET /{path} HTTP/1.1\r\nHost: {server}\r\nUser-Agent: iPXE/1.21.1\r\n\r\n"
    )?;
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status)?;
    if !status.starts_with("HTTP/1.1 200 ") {
        bail!("GET /{path}: {:?}", status.trim_end());
    }
    let mut length = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 {
            bail!("GET /{path}: the answer ends within its head");
        }
        if header.trim_end().is_empty() {
            break;
        }
        if let Some(value) = header.strip_prefix("Content-Length: ") {
            length = value.trim_end().parse::<u64>().ok();
        }
    }
    let length = length.with_context(|| format!("GET /{path}: no Content-Length"))?;
    let got = std::io::copy(&mut reader, &mut std::io::sink())
        .with_context(|| format!("GET /{path}: reading the body"))?;
    if got != length {
        bail!("GET /{path}: {got} bytes of {length}");
    }
    Ok(got)
}

/// A PC booting: [`PC_FILES`] one after the other; the bytes fetched.
pub fn boot(server: SocketAddr, source: Option<IpAddr>) -> anyhow::Result<u64> {
    PC_FILES.iter().map(|file| get(server, source, file)).sum()
}

/// `pcs` PCs booting at once, PC `i` from `source(i)`: the wall time until
/// the last is done and the bytes fetched in all.
pub fn boot_at_once(
    server: SocketAddr,
    pcs: usize,
    source: impl Fn(usize) -> Option<IpAddr>,
) -> anyhow::Result<(Duration, u64)> {
    let start = Barrier::new(pcs + 1);
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..pcs)
            .map(|i| {
                let (start, source) = (&start, source(i));
                scope.spawn(move || {
                    start.wait();
                    boot(server, source)
                })
            })
            .collect();
        start.wait();
        let started = Instant::now();
        let mut bytes = 0;
        for (i, thread) in threads.into_iter().enumerate() {
            let fetched = thread.join().expect("a PC thread panicked");
            bytes += fetched.with_context(|| format!("PC {i}"))?;
        }
        Ok((started.elapsed(), bytes))
    })
}

/// PC `i`'s loopback address for [`boot_at_once`] on loopback: each PC its
/// own, as on a LAN (127.0.0.2 on).
pub fn loopback_pc(i: usize) -> Option<IpAddr> {
    let n = u32::try_from(i).ok()? + 2;
    Some(IpAddr::V4(Ipv4Addr::from(
        u32::from(Ipv4Addr::LOCALHOST) + n - 1,
    )))
}

/// What the server did with an endless request line.
#[derive(Debug)]
pub struct CutOff {
    /// Bytes the client got into the connection before the server closed it.
    pub sent: u64,
    /// The first line of the server's answer, if one arrived.
    pub answer: Option<String>,
}

/// Sends up to `bytes` bytes of a request line that never ends, reading
/// the server's answer meanwhile.
pub fn endless_line(
    server: SocketAddr,
    source: Option<IpAddr>,
    bytes: u64,
) -> anyhow::Result<CutOff> {
    let mut stream = connect(server, source)?;
    stream.set_write_timeout(Some(FETCH_TIMEOUT))?;
    let reader = stream.try_clone()?;
    reader.set_read_timeout(Some(FETCH_TIMEOUT))?;
    let answer = std::thread::spawn(move || {
        let mut line = String::new();
        BufReader::new(reader).read_line(&mut line).ok()?;
        (!line.is_empty()).then(|| line.trim_end().to_string())
    });
    stream.write_all(b"GET /")?;
    let chunk = vec![b'a'; 64 * 1024];
    let mut sent = 5;
    while sent < bytes {
        let n = chunk
            .len()
            .min(usize::try_from(bytes - sent).unwrap_or(usize::MAX));
        match stream.write(&chunk[..n]) {
            Ok(n) => sent += n as u64,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let answer = answer.join().expect("the reading thread panicked");
    Ok(CutOff { sent, answer })
}

/// Connections that never send a byte, spread over several source
/// addresses, as a slowloris attack holds them.
pub struct IdleFlood {
    server: SocketAddr,
    sources: Vec<IpAddr>,
    streams: Vec<TcpStream>,
    opened: u64,
}

impl IdleFlood {
    /// Opens `count` connections to `server` from `sources` round-robin.
    pub fn open(server: SocketAddr, sources: &[IpAddr], count: usize) -> anyhow::Result<Self> {
        let mut flood = IdleFlood {
            server,
            sources: sources.to_vec(),
            streams: Vec::with_capacity(count),
            opened: 0,
        };
        for i in 0..count {
            let stream = flood.connect(i)?;
            flood.streams.push(stream);
        }
        Ok(flood)
    }

    fn connect(&mut self, i: usize) -> anyhow::Result<TcpStream> {
        let source = self.sources.get(i % self.sources.len().max(1)).copied();
        let stream = connect(self.server, source)
            .with_context(|| format!("idle connection {i} to {}", self.server))?;
        stream.set_nonblocking(true)?;
        self.opened += 1;
        Ok(stream)
    }

    /// Keeps every connection open, opening again each one the server
    /// closes, until `stop` is set; then closes them and returns how many
    /// connections were opened in all.
    pub fn hold(mut self, stop: &AtomicBool) -> anyhow::Result<u64> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        while !stop.load(Ordering::Relaxed) {
            // Readable means the server answered (a refusal) or closed.
            let closed: Vec<usize> = {
                let mut fds: Vec<PollFd> = self
                    .streams
                    .iter()
                    .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN))
                    .collect();
                poll(&mut fds, PollTimeout::from(100u8))?;
                fds.iter()
                    .enumerate()
                    .filter(|(_, fd)| fd.revents().is_some_and(|r| !r.is_empty()))
                    .map(|(i, _)| i)
                    .collect()
            };
            for i in closed {
                self.streams[i] = self.connect(i)?;
            }
        }
        Ok(self.opened)
    }
}

/// A number from /proc/PID/status, such as `VmHWM:` (in KiB).
fn status_field(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// A process's peak resident memory (VmHWM), in KiB.
pub fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_field(pid, "VmHWM:")
}

/// The thread-per-connection server netboot had before its event loop,
/// with nothing bounded: the bench's baseline, never served to a lab.
pub fn baseline_serve(listener: TcpListener, root: &Path) {
    for stream in listener.incoming().flatten() {
        let root = root.to_path_buf();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stream.try_clone().ok()?);
            let mut request = String::new();
            reader.read_line(&mut request).ok()?;
            loop {
                let mut header = String::new();
                match reader.read_line(&mut header) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if header.trim().is_empty() => break,
                    Ok(_) => {}
                }
            }
            let name = request.split_whitespace().nth(1)?.strip_prefix('/')?;
            let file = File::open(root.join(name)).ok()?;
            let len = file.metadata().ok()?.len();
            let mut stream = stream;
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
            )
            .ok()?;
            std::io::copy(&mut file.take(len), &mut stream).ok()
        });
    }
}

/// The prefix of the namespaces the lab makes; a second run removes what
/// a killed one left.
const LAB_PREFIX: &str = "chaos-nb";

/// The [`Lab`]'s veth pair, the server's address and the clients'.
fn wire(namespaces: &Namespaces) -> anyhow::Result<()> {
    let (s, c) = (namespaces.get(SERVER), namespaces.get(CLIENT));
    ip(&[
        "link", "add", "nb0", "netns", s, "type", "veth", "peer", "name", "nb1", "netns", c,
    ])?;
    ip(&[
        "-n",
        s,
        "addr",
        "add",
        &format!("{LAB_SERVER}/24"),
        "dev",
        "nb0",
    ])?;
    for i in 0..=ATTACKERS {
        let address = format!("{}/24", lab_client(i));
        ip(&["-n", c, "addr", "add", &address, "dev", "nb1"])?;
    }
    for (ns, dev) in [(s, "nb0"), (c, "nb1"), (s, "lo"), (c, "lo")] {
        ip(&["-n", ns, "link", "set", dev, "up"])?;
    }
    Ok(())
}

/// The [`Lab`]'s namespaces: `netboot serve`'s and its clients'.
const SERVER: &str = "s";
const CLIENT: &str = "c";

/// A lab in two network namespaces joined by a veth pair: `netboot serve`
/// in the server's, on 10.79.0.1/24, and the clients' with the addresses
/// 10.79.0.2 and up. Everything is stopped and removed when dropped.
pub struct Lab {
    netboot: Child,
    output: Output,
    /// netboot's HTTP address.
    pub http: SocketAddr,
    // Dropped after netboot is stopped.
    namespaces: Namespaces,
}

/// The server's address in a [`Lab`].
pub const LAB_SERVER: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 1);

/// Attacking clients in a [`Lab`]: so many addresses that the bound per
/// client alone does not stop them.
pub const ATTACKERS: u8 = 100;

/// Client address `i` in a [`Lab`] (0 is 10.79.0.2); attackers are
/// 0..[`ATTACKERS`], the PC comes after them.
pub fn lab_client(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 79, 0, 2 + i))
}

/// The address of the PC that boots during an attack.
pub fn lab_pc() -> IpAddr {
    lab_client(ATTACKERS)
}

impl Lab {
    /// Serves the PXE tree `tree` with the `netboot` program at `netboot`
    /// in proxy-DHCP mode. Needs root.
    pub fn start(netboot: &Path, tree: &Path, tag: &str) -> anyhow::Result<Lab> {
        let namespaces = Namespaces::new(&format!("{LAB_PREFIX}-{tag}"), &[SERVER, CLIENT])?;
        wire(&namespaces)?;
        let mut child = Command::new("ip")
            .args(["netns", "exec", namespaces.get(SERVER)])
            .arg(netboot)
            .args(["serve", "--interface", "nb0", "--http-port", "0", "--root"])
            .arg(tree)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting netboot serve")?;
        let output = Output::of(&mut child);
        let mut lab = Lab {
            netboot: child,
            output,
            http: SocketAddr::from((LAB_SERVER, 0)),
            namespaces,
        };
        let serving = lab.expect(&["TFTP and HTTP http://"], Duration::from_secs(30))?;
        let base = serving
            .split("HTTP http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .with_context(|| format!("no HTTP address in {serving:?}"))?;
        lab.http = base
            .parse()
            .with_context(|| format!("HTTP address {base:?} in {serving:?}"))?;
        Ok(lab)
    }

    /// netboot's process id (`ip netns exec` execs it).
    pub fn pid(&self) -> u32 {
        self.netboot.id()
    }

    /// Waits for a line of netboot's output containing every one of
    /// `needles`.
    pub fn expect(&mut self, needles: &[&str], timeout: Duration) -> anyhow::Result<String> {
        self.output
            .expect(needles, timeout)
            .context("netboot serve")
    }

    /// Runs `f` on a thread inside the clients' namespace, where the
    /// sockets it opens stay.
    pub fn client<T: Send>(&self, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
        let path = format!("/run/netns/{}", self.namespaces.get(CLIENT));
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = File::open(&path).with_context(|| format!("opening {path}"))?;
                nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("entering {path}"))?;
                Ok(f())
            })
            .join()
            .expect("a client thread panicked")
        })
    }
}

/// A PC's boot during an attack, and what the attack cost the server.
#[derive(Debug)]
pub struct UnderAttack<T> {
    /// The PC's bytes, or why its boot failed.
    pub pc: anyhow::Result<u64>,
    pub pc_took: Duration,
    /// The attack's own figures.
    pub attack: T,
    /// netboot's threads and open descriptors while the PC booted.
    pub threads: usize,
    pub descriptors: usize,
    /// netboot's peak resident memory so far.
    pub peak_rss_kib: u64,
}

impl Lab {
    /// A PC boots while an attacker sends endless request lines of
    /// `line` bytes, starting over whenever the server cuts one off; the
    /// attack's figures are those of its first line.
    pub fn endless_line_attack(&self, line: u64) -> anyhow::Result<UnderAttack<CutOff>> {
        let http = self.http;
        let stop = AtomicBool::new(false);
        self.under_attack(
            || {
                let first = endless_line(http, Some(lab_client(0)), line);
                while !stop.load(Ordering::Relaxed) {
                    endless_line(http, Some(lab_client(0)), line)?;
                }
                first
            },
            &stop,
        )
    }

    /// A PC boots while [`ATTACKERS`] addresses hold `count` idle
    /// connections; the attack's figure is the connections opened in all.
    pub fn idle_attack(&self, count: usize) -> anyhow::Result<UnderAttack<u64>> {
        let sources: Vec<IpAddr> = (0..ATTACKERS).map(lab_client).collect();
        let http = self.http;
        let stop = AtomicBool::new(false);
        let flood = self.client(|| IdleFlood::open(http, &sources, count))??;
        self.under_attack(|| flood.hold(&stop), &stop)
    }

    /// Runs `attack` in the clients' namespace until the PC, booting
    /// meanwhile, is done and sets `stop`.
    fn under_attack<T: Send>(
        &self,
        attack: impl FnOnce() -> anyhow::Result<T> + Send,
        stop: &AtomicBool,
    ) -> anyhow::Result<UnderAttack<T>> {
        let (http, pid) = (self.http, self.pid());
        let (pc, pc_took, threads, descriptors, attack) = self.client(|| {
            std::thread::scope(|s| {
                let attacking = s.spawn(attack);
                let started = Instant::now();
                let pc = boot(http, Some(lab_pc()));
                let pc_took = started.elapsed();
                let threads = status_field(pid, "Threads:");
                let descriptors = std::fs::read_dir(format!("/proc/{pid}/fd")).map(Iterator::count);
                stop.store(true, Ordering::Relaxed);
                let attack = attacking.join().expect("the attacking thread panicked");
                (pc, pc_took, threads, descriptors, attack)
            })
        })?;
        Ok(UnderAttack {
            pc,
            pc_took,
            attack: attack.context("the attack")?,
            threads: usize::try_from(threads?)?,
            descriptors: descriptors.context("netboot's descriptors")?,
            peak_rss_kib: peak_rss_kib(pid)?,
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // SIGTERM, so netboot stops its dnsmasq on the way out.
        if let Ok(pid) = i32::try_from(self.netboot.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = self.netboot.wait();
    }
}

/// A PXE tree for the lab: first stages of a few KB, a kernel of 8 MiB and
/// an initramfs of 4 MiB, about a real tree's sizes, in `dir`.
pub fn tree(dir: &Path) -> anyhow::Result<()> {
    use crate::boot::{BIOS_FIRST_STAGE, UEFI_FIRST_STAGE};
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, len) in [
        (BIOS_FIRST_STAGE, 70 << 10),
        (UEFI_FIRST_STAGE, 1 << 20),
        (KERNEL, 8 << 20),
        (INITRD, 4 << 20),
    ] {
        // Bytes that vary, so nothing along the way could shortcut them.
        let bytes: Vec<u8> = (0..len)
            .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        std::fs::write(dir.join(name), bytes)
            .with_context(|| format!("writing {}", dir.join(name).display()))?;
    }
    Ok(())
}
