//! One chaos node under QEMU (TCG: these machines have no usable KVM), with
//! its serial console captured so callers can wait for what it prints and
//! type on it, and a QMP socket to press its power button and keys. Used by `cargo xtask qemu`'s
//! non-interactive callers: the bench and the integration tests.
//!
//! Waiting is event-driven: a reader thread appends console output and
//! wakes waiters; every wait has a deadline and its error carries the whole
//! console, so a failed boot explains itself.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use chaos_contract::fact::Fact;

/// Kernel arguments every non-interactive boot gets: the serial console,
/// and a kernel panic ends the VM at once instead of hanging the caller.
pub const BASE_APPEND: &str = "console=ttyS0 panic=-1";

#[derive(Clone, Debug)]
pub struct Config {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Kernel command line after [`BASE_APPEND`].
    pub append: String,
    pub memory_mib: u32,
    /// Extra QEMU arguments: NICs and their backends.
    pub qemu_args: Vec<String>,
    /// A command QEMU runs under, such as `ip netns exec NS`.
    pub wrapper: Vec<String>,
    /// What starts the guest: QEMU loading the kernel (the default), or a
    /// firmware booting the devices in `qemu_args` (CD, disk, network).
    pub firmware: Firmware,
}

/// How a VM boots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Firmware {
    /// `-kernel`/`-initrd`/`-append`: no boot loader involved.
    #[default]
    Direct,
    /// SeaBIOS, booting from the attached devices.
    Bios,
    /// OVMF (package ovmf), booting from the attached devices.
    Uefi,
}

/// OVMF built as one flash image: no persistent variables, which a test VM
/// does not want anyway.
pub const OVMF: &str = "/usr/share/qemu/OVMF.fd";

/// How much of a console a failed wait reports.
const FAILURE_LINES: usize = 150;

/// The line of `text` that byte `at` is on, without its line end, and
/// where its newline is: None while the line is still arriving.
fn line_at(text: &str, at: usize) -> (&str, Option<usize>) {
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let end = text[at..].find('\n').map(|i| at + i);
    let line = &text[start..end.unwrap_or(text.len())];
    (line.trim_end_matches('\r'), end)
}

/// Whether a console line is drawn by the cluster screen, which ends each
/// of its lines by clearing the rest of it (or of the screen).
fn is_screen_frame(line: &str) -> bool {
    line.contains("\x1b[K") || line.contains("\x1b[J")
}

/// The last `lines` lines of `text`, all of it if it has fewer.
pub fn tail(text: &str, lines: usize) -> &str {
    if lines == 0 {
        return "";
    }
    // A final newline ends the last line rather than starting another.
    let body = text.strip_suffix('\n').unwrap_or(text);
    let start = body
        .rmatch_indices('\n')
        .nth(lines - 1)
        .map_or(0, |(at, _)| at + 1);
    &text[start..]
}

impl Config {
    pub fn new(kernel: &Path, initrd: &Path, append: &str) -> Self {
        Config {
            kernel: kernel.to_path_buf(),
            initrd: initrd.to_path_buf(),
            append: append.to_string(),
            memory_mib: 512,
            qemu_args: Vec::new(),
            wrapper: Vec::new(),
            firmware: Firmware::Direct,
        }
    }

    /// A VM that boots through `firmware` from the devices `qemu_args`
    /// attach; the boot media carry kernel and command line.
    pub fn firmware(firmware: Firmware, qemu_args: &[&str]) -> Self {
        let mut config = Config::new(Path::new(""), Path::new(""), "");
        config.firmware = firmware;
        config.qemu_args = qemu_args.iter().map(|a| a.to_string()).collect();
        config
    }

    /// One virtio NIC on QEMU's user-mode network: a private, emulated LAN
    /// (10.0.2.0/24) that reaches nothing the guest does not connect to.
    pub fn user_net(mut self) -> Self {
        self.qemu_args.extend(
            [
                "-netdev",
                "user,id=n0",
                "-device",
                "virtio-net-pci,netdev=n0",
            ]
            .map(String::from),
        );
        self
    }

    /// One more virtio NIC, on `hub`'s private Ethernet segment.
    pub fn hub_net(mut self, hub: &Hub) -> anyhow::Result<Self> {
        self.qemu_args.extend(hub.attach()?);
        Ok(self)
    }

    /// The full QEMU command line, with the wrapper first.
    pub fn command(&self, qmp: &Path) -> Vec<String> {
        let mut args = self.wrapper.clone();
        args.extend(
            [
                "qemu-system-x86_64",
                "-accel",
                "tcg",
                // A PC of the last dozen years: with RDRAND the kernel's
                // random pool is ready at boot, where QEMU's default CPU
                // leaves getrandom() (tyd's keys, munged, slurmctld)
                // waiting seconds for entropy that TCG hardly gives.
                "-cpu",
                "qemu64,+rdrand",
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-serial",
                "stdio",
                "-no-reboot",
            ]
            .map(String::from),
        );
        args.extend(["-m".into(), self.memory_mib.to_string()]);
        match self.firmware {
            Firmware::Direct => args.extend([
                "-kernel".into(),
                self.kernel.display().to_string(),
                "-initrd".into(),
                self.initrd.display().to_string(),
                "-append".into(),
                format!("{BASE_APPEND} {}", self.append).trim().to_string(),
            ]),
            Firmware::Bios => {}
            Firmware::Uefi => args.extend(["-bios".into(), OVMF.into()]),
        }
        args.extend([
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", qmp.display()),
        ]);
        args.extend(self.qemu_args.iter().cloned());
        args
    }
}

#[derive(Default)]
struct Console {
    text: String,
    closed: bool,
}

type Shared = Arc<(Mutex<Console>, Condvar)>;

pub struct Vm {
    child: Child,
    /// The serial console's input (QEMU's `-serial stdio`).
    serial: Option<ChildStdin>,
    console: Shared,
    qmp: PathBuf,
    /// Byte offset in the console after the last match of [`Vm::expect`].
    cursor: usize,
}

impl Vm {
    pub fn start(config: &Config) -> anyhow::Result<Vm> {
        let qmp = std::env::temp_dir().join(format!(
            "chaos-qmp-{}-{}.sock",
            std::process::id(),
            unique()
        ));
        let argv = config.command(&qmp);
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (is qemu-system-x86 installed? `cargo xtask deps`)",
                    argv[0]
                )
            })?;
        let console: Shared = Arc::default();
        for stream in netboot::netns::streams(&mut child) {
            let console = console.clone();
            std::thread::spawn(move || pump(stream, console));
        }
        Ok(Vm {
            serial: child.stdin.take(),
            child,
            console,
            qmp,
            cursor: 0,
        })
    }

    /// Everything the console has printed so far.
    pub fn console(&self) -> String {
        lock(&self.console).text.clone()
    }

    /// Waits until the console prints `needle` after the previous match, and
    /// returns the whole line it is on; so a sequence of expects asserts an
    /// order of events.
    pub fn expect(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        let mut lines = self.expect_all(&[needle], timeout)?;
        Ok(lines.remove(0))
    }

    /// [`Vm::expect`], returning the line only once it is complete: the
    /// console may deliver a line in pieces.
    pub fn expect_line(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        self.wait_for(&format!("{needle:?} to its line's end"), timeout, |text| {
            let at = text.find(needle)?;
            let (line, end) = line_at(text, at);
            Some((end? + 1, line.to_string()))
        })
    }

    /// Waits until the console prints every one of `needles` after the
    /// previous match, in any order (for events that race, such as two
    /// services' first lines); returns their lines in the order asked and
    /// moves past the last of them.
    pub fn expect_all(
        &mut self,
        needles: &[&str],
        timeout: Duration,
    ) -> anyhow::Result<Vec<String>> {
        self.wait_for(&format!("{needles:?}"), timeout, |text| {
            let found: Vec<usize> = needles
                .iter()
                .map(|n| text.find(n))
                .collect::<Option<_>>()?;
            let lines = found
                .iter()
                .map(|&at| line_at(text, at).0.to_string())
                .collect();
            let end = found
                .iter()
                .zip(needles)
                .map(|(at, n)| at + n.len())
                .max()
                .unwrap_or(0);
            Some((end, lines))
        })
    }

    /// Waits until the console reports a fact (see
    /// [`chaos_contract::fact`]) of `kind` with every one of `fields`
    /// after the previous match; returns it and moves past its line.
    pub fn expect_fact(
        &mut self,
        kind: &str,
        fields: &[(&str, &str)],
        timeout: Duration,
    ) -> anyhow::Result<Fact> {
        self.wait_for(&format!("fact {kind} {fields:?}"), timeout, |text| {
            let mut at = 0;
            for line in text.split_inclusive('\n') {
                at += line.len();
                // A line not yet complete may still grow.
                if !line.ends_with('\n') {
                    return None;
                }
                if let Some(fact) = Fact::parse(line).filter(|f| f.matches(kind, fields)) {
                    return Some((at, fact));
                }
            }
            None
        })
    }

    /// Waits until `find`, given the console after the previous match,
    /// finds what it looks for: the offset to move past, and the result.
    fn wait_for<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        find: impl Fn(&str) -> Option<(usize, T)>,
    ) -> anyhow::Result<T> {
        let started = Instant::now();
        let deadline = started + timeout;
        let wake = &self.console.1;
        let mut console = lock(&self.console);
        loop {
            if let Some((end, found)) = find(&console.text[self.cursor..]) {
                self.cursor += end;
                return Ok(found);
            }
            let now = Instant::now();
            if console.closed || now >= deadline {
                let why = if console.closed {
                    "QEMU exited"
                } else {
                    "timed out"
                };
                // The kernel's boot log is rarely the news, the cluster
                // screen's frames never, and a long report gets cut in
                // the middle: the last lines of the rest say why.
                let said: String = console
                    .text
                    .split_inclusive('\n')
                    .filter(|line| !is_screen_frame(line))
                    .collect();
                bail!(
                    "{why} after {:.1} s waiting for {what}; console, last {FAILURE_LINES} lines \
                     but the screen's:\n{}",
                    started.elapsed().as_secs_f64(),
                    tail(&said, FAILURE_LINES)
                );
            }
            console = wake
                .wait_timeout(console, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Sends one QMP command, such as `system_powerdown`.
    pub fn qmp(&self, command: &str) -> anyhow::Result<()> {
        self.qmp_with(command, "{}")
    }

    /// Types `text` (lower-case letters, digits, space and what a kernel
    /// command line needs: `.,:=/-_`; `\n` is Enter) on the VM's US
    /// keyboard, as a person at a boot menu would.
    pub fn type_keys(&self, text: &str) -> anyhow::Result<()> {
        let keys = text
            .chars()
            .map(|c| {
                Ok(match c {
                    '\n' => "ret".to_string(),
                    ' ' => "spc".to_string(),
                    'a'..='z' | '0'..='9' => c.to_string(),
                    '.' => "dot".to_string(),
                    ',' => "comma".to_string(),
                    '=' => "equal".to_string(),
                    '/' => "slash".to_string(),
                    '-' => "minus".to_string(),
                    ':' => "shift-semicolon".to_string(),
                    '_' => "shift-minus".to_string(),
                    _ => return Err(anyhow!("type_keys: no key for {c:?}")),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        self.press(&keys.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// Types `text` on the serial console, as a person at a terminal on the
    /// node's serial line would (`\n` is Enter, `\x1b` is Esc). QEMU takes
    /// it as fast as the guest's UART accepts it, so nothing is lost.
    pub fn type_serial(&mut self, text: &str) -> anyhow::Result<()> {
        let serial = self
            .serial
            .as_mut()
            .context("the serial console's input is closed")?;
        serial
            .write_all(text.as_bytes())
            .and_then(|()| serial.flush())
            .context("typing on the serial console")
    }

    /// Presses keys one after another, by QEMU key name (`down`, `ret`,
    /// `a`); `shift-semicolon` holds the keys joined by `-` together.
    pub fn press(&self, keys: &[&str]) -> anyhow::Result<()> {
        for key in keys {
            let held: Vec<String> = key
                .split('-')
                .map(|k| format!("{{\"type\":\"qcode\",\"data\":\"{k}\"}}"))
                .collect();
            self.qmp_with("send-key", &format!("{{\"keys\":[{}]}}", held.join(",")))?;
        }
        Ok(())
    }

    /// Sends one QMP command with its JSON `arguments` object.
    pub fn qmp_with(&self, command: &str, arguments: &str) -> anyhow::Result<()> {
        let mut stream = UnixStream::connect(&self.qmp)
            .with_context(|| format!("connecting to QMP at {}", self.qmp.display()))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut reply = String::new();
        let mut buf = [0u8; 4096];
        let mut read_reply = |stream: &mut UnixStream, reply: &mut String| -> anyhow::Result<()> {
            while !reply.contains("\"return\"") && !reply.contains("\"error\"") {
                let n = stream.read(&mut buf).context("reading from QMP")?;
                if n == 0 {
                    bail!("QMP closed the connection; got {reply:?}");
                }
                reply.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            Ok(())
        };
        stream.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")?;
        read_reply(&mut stream, &mut reply)?;
        reply.clear();
        stream.write_all(
            format!("{{\"execute\":\"{command}\",\"arguments\":{arguments}}}\n").as_bytes(),
        )?;
        read_reply(&mut stream, &mut reply)?;
        if reply.contains("\"error\"") {
            return Err(anyhow!("QMP {command} failed: {reply}"));
        }
        Ok(())
    }

    /// Waits for QEMU to exit (the guest powered off or rebooted: QEMU runs
    /// with -no-reboot) and returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let wake = &self.console.1;
        let mut console = lock(&self.console);
        // QEMU closes its stdout as it exits; the pump marks that.
        while !console.closed {
            let now = Instant::now();
            if now >= deadline {
                bail!(
                    "QEMU still running after {} s; console:\n{}",
                    timeout.as_secs(),
                    console.text
                );
            }
            console = wake
                .wait_timeout(console, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        drop(console);
        Ok(self.child.wait()?)
    }

    /// Guest time from the kernel handing over to /init until the console
    /// prints `line`, from printk timestamps (so host load matters less).
    pub fn guest_time_to(&mut self, line: &str) -> anyhow::Result<Duration> {
        let run = self.expect(crate::timeline::HANDOFF, Duration::from_secs(120))?;
        let seen = self
            .expect(line, Duration::from_secs(120))
            .with_context(|| format!("waiting for {line:?}"))?;
        let seconds = timestamp(&seen)? - timestamp(&run)?;
        Ok(Duration::from_secs_f64(seconds.max(0.0)))
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.qmp);
    }
}

/// Seconds from a console line's printk timestamp, `[    1.234567] ...`,
/// wherever on the line the kernel's record starts: the console screen may
/// have drawn part of a line before the kernel printed on it.
pub fn timestamp(line: &str) -> anyhow::Result<f64> {
    line.match_indices('[')
        .find_map(|(at, _)| {
            let (inner, _) = line[at + 1..].split_once(']')?;
            let inner = inner.trim();
            inner.contains('.').then(|| inner.parse().ok()).flatten()
        })
        .with_context(|| format!("no printk timestamp in {line:?}"))
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Console> {
    shared.0.lock().unwrap_or_else(|p| p.into_inner())
}

fn pump(mut stream: Box<dyn Read + Send>, console: Shared) {
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).unwrap_or(0);
        let mut state = lock(&console);
        if n == 0 {
            state.closed = true;
        } else {
            state.text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        console.1.notify_all();
        if n == 0 {
            return;
        }
    }
}

/// A number unique within this process, for socket names.
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A private Ethernet segment for VMs that needs no root: each VM's NIC is
/// a QEMU `dgram` socket on 127.0.0.1 that sends its frames to the hub,
/// which repeats every frame to all the other VMs (a hub, not a learning
/// switch: a handful of VMs never notice the difference). Nothing leaves
/// loopback, and frames from ports the hub did not hand out are ignored.
/// Like a capture on the wire, the hub notes every IPv4 packet it
/// repeats ([`Hub::packets`]).
pub struct Hub {
    address: SocketAddr,
    ports: Arc<Mutex<Vec<u16>>>,
    packets: Arc<Mutex<Vec<Packet>>>,
    watched: Arc<Mutex<Vec<Watched>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Bytes a test wants to know whether they crossed the segment in the
/// clear, and whether they did.
#[derive(Debug)]
struct Watched {
    bytes: Vec<u8>,
    seen: bool,
}

/// An IPv4 packet seen on a [`Hub`]: addresses, protocol and, for TCP and
/// UDP, ports (0 otherwise).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    pub source: Ipv4Addr,
    pub destination: Ipv4Addr,
    /// The IP protocol number: 1 ICMP, 6 TCP, 17 UDP.
    pub protocol: u8,
    pub source_port: u16,
    pub destination_port: u16,
}

/// The longest capture a hub keeps; later packets are not noted.
const MAX_PACKETS: usize = 100_000;

impl Packet {
    /// Reads an Ethernet frame carrying IPv4; `None` for anything else.
    pub fn parse(frame: &[u8]) -> Option<Packet> {
        const IPV4: [u8; 2] = [0x08, 0x00];
        let ip = frame.get(14..)?;
        if frame.get(12..14)? != IPV4 || ip.first()? >> 4 != 4 {
            return None;
        }
        let header = usize::from(ip[0] & 0x0f) * 4;
        let address = |at: usize| -> Option<Ipv4Addr> {
            Some(Ipv4Addr::from(
                <[u8; 4]>::try_from(ip.get(at..at + 4)?).ok()?,
            ))
        };
        let protocol = *ip.get(9)?;
        let port = |at: usize| -> u16 {
            match (protocol, ip.get(header + at..header + at + 2)) {
                (6 | 17, Some(&[high, low])) => u16::from_be_bytes([high, low]),
                _ => 0,
            }
        };
        Some(Packet {
            source: address(12)?,
            destination: address(16)?,
            protocol,
            source_port: port(0),
            destination_port: port(2),
        })
    }
}

impl Hub {
    pub fn start() -> anyhow::Result<Hub> {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).context("binding the L2 hub")?;
        let address = socket.local_addr()?;
        let ports: Arc<Mutex<Vec<u16>>> = Arc::default();
        let packets: Arc<Mutex<Vec<Packet>>> = Arc::default();
        let watched: Arc<Mutex<Vec<Watched>>> = Arc::default();
        let stop: Arc<AtomicBool> = Arc::default();
        let thread = {
            let (ports, packets, watched, stop) = (
                ports.clone(),
                packets.clone(),
                watched.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || repeat(&socket, &ports, &packets, &watched, &stop))
        };
        Ok(Hub {
            address,
            ports,
            packets,
            watched,
            stop,
            thread: Some(thread),
        })
    }

    /// From now on, notes whether `bytes` (at least 8 of them) appear in
    /// any frame, as a capture searched for them would.
    pub fn watch_for(&self, bytes: &[u8]) {
        assert!(bytes.len() >= 8, "too short to search a capture for");
        self.watched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Watched {
                bytes: bytes.to_vec(),
                seen: false,
            });
    }

    /// Whether `bytes`, watched for with [`Hub::watch_for`], crossed.
    pub fn saw(&self, bytes: &[u8]) -> bool {
        self.watched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|w| w.bytes == bytes && w.seen)
    }

    /// QEMU arguments for one more VM on the segment: a virtio NIC with a
    /// MAC address unique on this hub (52:54:00:77:xx:xx, QEMU's prefix)
    /// and a dgram backend on a free loopback port.
    pub fn attach(&self) -> anyhow::Result<Vec<String>> {
        // The kernel picks a free port; QEMU binds it a moment later.
        let port = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|probe| probe.local_addr())
            .context("finding a free loopback port for a VM's NIC")?
            .port();
        let mut ports = self.ports.lock().unwrap_or_else(|p| p.into_inner());
        ports.push(port);
        let n = ports.len();
        let hub = self.address.port();
        Ok(vec![
            "-netdev".into(),
            format!(
                "dgram,id=lan,local.type=inet,local.host=127.0.0.1,local.port={port},\
                 remote.type=inet,remote.host=127.0.0.1,remote.port={hub}"
            ),
            "-device".into(),
            format!(
                "virtio-net-pci,netdev=lan,mac=52:54:00:77:{:02x}:{:02x}",
                n >> 8,
                n & 0xff
            ),
        ])
    }

    /// One more port on the segment for this process itself: a socket
    /// bound on loopback and connected to the hub, which sends and
    /// receives raw Ethernet frames as a VM's NIC does (a port scanner on
    /// the LAN, say). It takes a place in [`Hub::attach`]'s MAC numbering,
    /// so a VM attached after it gets the next address but one.
    pub fn station(&self) -> anyhow::Result<UdpSocket> {
        let socket =
            UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a station on the L2 hub")?;
        let port = socket.local_addr()?.port();
        self.ports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(port);
        socket
            .connect(self.address)
            .context("connecting a station to the L2 hub")?;
        Ok(socket)
    }

    /// Every IPv4 packet the hub has repeated so far, in order.
    pub fn packets(&self) -> Vec<Packet> {
        self.packets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // An empty datagram wakes the thread from its receive.
        let _ =
            UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|s| s.send_to(&[], self.address));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn repeat(
    socket: &UdpSocket,
    ports: &Mutex<Vec<u16>>,
    packets: &Mutex<Vec<Packet>>,
    watched: &Mutex<Vec<Watched>>,
    stop: &AtomicBool,
) {
    // A jumbo frame's worth; QEMU sends one Ethernet frame per datagram.
    let mut frame = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let Ok((len, from)) = socket.recv_from(&mut frame) else {
            continue;
        };
        let ports = ports.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if !from.ip().is_loopback() || !ports.contains(&from.port()) {
            continue;
        }
        if let Some(packet) = Packet::parse(&frame[..len]) {
            let mut packets = packets.lock().unwrap_or_else(|p| p.into_inner());
            if packets.len() < MAX_PACKETS {
                packets.push(packet);
            }
        }
        for w in watched.lock().unwrap_or_else(|p| p.into_inner()).iter_mut() {
            w.seen = w.seen || frame[..len].windows(w.bytes.len()).any(|x| x == w.bytes);
        }
        for port in ports.into_iter().filter(|&p| p != from.port()) {
            // A VM not started yet (or gone) just misses the frame, as on a
            // real segment.
            let _ = socket.send_to(&frame[..len], (Ipv4Addr::LOCALHOST, port));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_printk_timestamps() {
        assert_eq!(timestamp("[    1.234500] init: ready").unwrap(), 1.2345);
        assert_eq!(
            timestamp(" state    joined\x1b[K\r[    5.1] init: started service x").unwrap(),
            5.1
        );
        assert!(timestamp("@chaos ready").is_err());
        assert!(timestamp("[abc] x").is_err());
        assert!(timestamp("[6n[a.b] x").is_err());
    }

    #[test]
    fn a_position_is_on_its_whole_line() {
        let text = "a\r\n[ 1.0] init: ready\r\npart";
        assert_eq!(line_at(text, 9), ("[ 1.0] init: ready", Some(22)));
        assert_eq!(line_at(text, 0), ("a", Some(2)));
        assert_eq!(line_at(text, 25), ("part", None));
    }

    #[test]
    fn the_screens_lines_are_told_from_the_logs() {
        assert!(is_screen_frame(" state    joined\x1b[K\r\n"));
        assert!(is_screen_frame(" Esc: leave\x1b[J\r\n"));
        assert!(!is_screen_frame("[    5.1] init: started service x\r\n"));
    }

    #[test]
    fn a_tail_is_whole_lines_from_the_end() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail("a\nb\nc\n", 5), "a\nb\nc\n");
        assert_eq!(tail("a\nb\npartial", 1), "partial");
        assert_eq!(tail("a\n", 0), "");
        assert_eq!(tail("", 3), "");
    }

    /// An Ethernet frame of EtherType `kind` around an IPv4 header from
    /// 10.77.0.2 to 10.77.0.3 with `protocol`, then `rest`.
    fn frame(kind: [u8; 2], protocol: u8, rest: &[u8]) -> Vec<u8> {
        let mut frame = vec![0; 12];
        frame.extend(kind);
        frame.extend([0x45, 0, 0, 0, 0, 0, 0, 0, 64, protocol, 0, 0]);
        frame.extend([10, 77, 0, 2, 10, 77, 0, 3]);
        frame.extend(rest);
        frame
    }

    #[test]
    fn packets_are_read_from_ethernet_frames() {
        let wireguard = [0xca, 0x6c, 0xca, 0x6c, 0, 8, 0, 0];
        let packet = |protocol, source_port, destination_port| Packet {
            source: Ipv4Addr::new(10, 77, 0, 2),
            destination: Ipv4Addr::new(10, 77, 0, 3),
            protocol,
            source_port,
            destination_port,
        };
        let ipv4 = [0x08, 0x00];
        assert_eq!(
            Packet::parse(&frame(ipv4, 17, &wireguard)),
            Some(packet(17, 51820, 51820))
        );
        assert_eq!(
            Packet::parse(&frame(ipv4, 1, &wireguard)),
            Some(packet(1, 0, 0))
        );
        assert_eq!(Packet::parse(&frame(ipv4, 6, &[0])), Some(packet(6, 0, 0)));
        assert_eq!(Packet::parse(&frame([0x08, 0x06], 17, &wireguard)), None);
        assert_eq!(Packet::parse(&frame(ipv4, 17, &[])[..20]), None);
    }
}
