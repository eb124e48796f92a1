//! A lab of PCs under QEMU, in network namespaces this process makes and
//! removes: a switch (a bridge) with a tap per PC, the lab's own DHCP and
//! DNS server (dnsmasq, naming each PC by its MAC address), `netboot serve`
//! in proxy-DHCP mode beside it, the head as a VM with the head image (the
//! build host's kernel need not have WireGuard), and PCs that boot from the
//! network, BIOS or UEFI, or from the ISO as a CD. [`Morning`] is the lab's
//! morning, for the QEMU test of the lab and for the bench. Needs root;
//! nothing leaves the namespaces.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chaos_contract::service::{Restart, Service};
use chaos_contract::{fact, paths};
use netboot::netns::{ip, Namespaces, Output};

use crate::cluster::{Membership, Role};
use crate::image::Written;
use crate::kernel::Kernel;
use crate::node::Binaries;
use crate::vm::{Config, Firmware, Vm};

/// The lab's LAN, /24: the DHCP and DNS server, netboot and the head have
/// fixed addresses, the PCs lease from [`RANGE`].
pub const DHCP_SERVER: Ipv4Addr = Ipv4Addr::new(192, 168, 92, 1);
pub const NETBOOT: Ipv4Addr = Ipv4Addr::new(192, 168, 92, 2);
pub const HEAD: Ipv4Addr = Ipv4Addr::new(192, 168, 92, 10);
pub const RANGE: (Ipv4Addr, Ipv4Addr) = (
    Ipv4Addr::new(192, 168, 92, 100),
    Ipv4Addr::new(192, 168, 92, 199),
);
/// The DNS domain of the lab's server: names in it are answered from its
/// own records and never forwarded.
pub const DOMAIN: &str = "lab";

/// Memory of a PC and of the head: enough for the RAM root with Slurm.
pub const PC_MEMORY_MIB: u32 = 384;
pub const HEAD_MEMORY_MIB: u32 = 512;

/// How long dnsmasq and netboot may take to report that they serve.
const START: Duration = Duration::from_secs(30);
/// How long the head VM may take to serve joins, under TCG.
const HEAD_BOOT: Duration = Duration::from_secs(300);

/// How a PC boots.
#[derive(Clone, Copy, Debug)]
pub enum Boot<'a> {
    /// From its NIC: SeaBIOS with the NIC's iPXE ROM, or OVMF's own PXE
    /// client loading ipxe.efi; either way netboot's script, then kernel
    /// and initramfs over HTTP.
    Network(Firmware),
    /// SeaBIOS from this ISO as a CD.
    Cd(&'a Path),
    /// QEMU loads this kernel and image with this command line (the head,
    /// and nodes a test tells something on their command line).
    Direct(&'a Path, &'a Written, &'a str),
}

/// The lab's namespaces: the switch with the PCs' taps (QEMU runs here),
/// the lab's own DHCP and DNS server, and `netboot serve`.
const SWITCH: &str = "sw";
const DHCP: &str = "dhcp";
const SERVE: &str = "serve";

/// The bridge, and a veth port on it for each server's namespace.
fn wire(namespaces: &Namespaces) -> anyhow::Result<()> {
    let sw = namespaces.get(SWITCH);
    ip(&["-n", sw, "link", "add", "br0", "type", "bridge"])?;
    ip(&["-n", sw, "link", "set", "br0", "up"])?;
    for (role, port, address) in [(DHCP, "v-dhcp", DHCP_SERVER), (SERVE, "v-serve", NETBOOT)] {
        let ns = namespaces.get(role);
        ip(&[
            "-n", sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ])?;
        ip(&["-n", sw, "link", "set", port, "master", "br0", "up"])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{address}/24"),
            "dev",
            "eth0",
        ])?;
        for dev in ["eth0", "lo"] {
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
    }
    Ok(())
}

/// A server the lab runs, with its output read line by line; stopped with
/// SIGTERM (netboot stops its own dnsmasq on the way out) when dropped.
pub struct Server {
    child: Child,
    pub output: Output,
}

impl Server {
    fn start(mut command: Command, what: &str) -> anyhow::Result<Server> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        let output = Output::of(&mut child);
        Ok(Server { child, output })
    }

    /// Waits for a line holding every one of `needles`.
    pub fn expect(&mut self, needles: &[&str], timeout: Duration) -> anyhow::Result<String> {
        self.output.expect(needles, timeout)
    }

    fn signal(&self, signal: libc::c_int) -> anyhow::Result<()> {
        let pid = libc::pid_t::try_from(self.child.id())?;
        // SAFETY: kill has no memory effects; the pid is our own child's,
        // not yet reaped (so not reused).
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(std::io::Error::last_os_error()).context("signalling a lab server");
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.signal(libc::SIGTERM);
            let _ = self.child.wait();
        }
    }
}

/// A lab's LAN and servers. Its VMs belong to the caller, who drops them
/// before the lab.
pub struct Lab {
    /// The lab's DHCP and DNS server.
    pub dhcp: Server,
    pub netboot: Option<Server>,
    dir: PathBuf,
    pcs: u8,
    // Removed last, after the servers in them have stopped.
    namespaces: Namespaces,
}

impl Lab {
    /// The LAN and its DHCP and DNS server, with `dir` for their files.
    pub fn start(tag: &str, dir: &Path) -> anyhow::Result<Lab> {
        let namespaces = Namespaces::new(&format!("chaos-lab-{tag}"), &[SWITCH, DHCP, SERVE])?;
        wire(&namespaces)?;
        std::fs::create_dir_all(dir)?;
        for file in ["leases", "dhcp-hosts", "hosts"] {
            std::fs::write(dir.join(file), "")?;
        }
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", namespaces.get(DHCP), "dnsmasq"])
            .args([
                "--keep-in-foreground",
                "--log-facility=-",
                "--conf-file=/dev/null",
            ])
            .args(["--interface=eth0", "--bind-interfaces", "--pid-file="])
            .arg(format!(
                "--dhcp-range={},{},255.255.255.0,1h",
                RANGE.0, RANGE.1
            ))
            .arg(format!("--dhcp-leasefile={}", dir.join("leases").display()))
            .arg(format!(
                "--dhcp-hostsfile={}",
                dir.join("dhcp-hosts").display()
            ))
            // DNS for the lab's own names only: nothing is forwarded.
            .args(["--no-resolv", "--no-hosts", "--log-queries"])
            .arg(format!("--addn-hosts={}", dir.join("hosts").display()))
            .arg(format!("--domain={DOMAIN}"))
            .arg(format!("--local=/{DOMAIN}/"));
        let dhcp = Server::start(command, "the lab's dnsmasq (package dnsmasq-base)")?;
        let mut lab = Lab {
            dhcp,
            netboot: None,
            dir: dir.to_path_buf(),
            pcs: 0,
            namespaces,
        };
        lab.wait_read().context("the lab's DHCP server")?;
        Ok(lab)
    }

    /// `netboot serve` for `tree` in proxy-DHCP mode, beside the lab's
    /// DHCP server, as an administrator runs it.
    pub fn serve(&mut self, tree: &Path) -> anyhow::Result<()> {
        let program = crate::pxe::netboot_binary()?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", self.namespaces.get(SERVE)])
            .arg(program)
            .args(["serve", "--interface", "eth0", "--http-port", "0", "--root"])
            .arg(tree);
        let mut netboot = Server::start(command, "netboot serve")?;
        netboot
            .expect(&[&format!("serving eth0 ({NETBOOT}): proxy-DHCP")], START)
            .context("netboot serve")?;
        self.netboot = Some(netboot);
        Ok(())
    }

    /// Makes `name` (in [`DOMAIN`]) resolve to `address` from now on.
    pub fn name(&mut self, name: &str, address: Ipv4Addr) -> anyhow::Result<()> {
        self.append("hosts", &format!("{address} {name}.{DOMAIN} {name}\n"))
    }

    /// Appends to one of dnsmasq's files and has it read them again.
    fn append(&mut self, file: &str, line: &str) -> anyhow::Result<()> {
        let path = self.dir.join(file);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .with_context(|| format!("writing {}", path.display()))?;
        self.dhcp.signal(libc::SIGHUP)?;
        self.dhcp.output.seen.clear();
        self.wait_read()
    }

    /// Waits for dnsmasq to say it read its DHCP hosts file, the last of
    /// the files it reads at start and on SIGHUP, so no older line of this
    /// kind is left to be mistaken for a later reading.
    fn wait_read(&mut self) -> anyhow::Result<()> {
        let hosts = self.dir.join("dhcp-hosts");
        self.dhcp
            .expect(&[&format!("read {}", hosts.display())], START)
            .map(drop)
    }

    /// The leases the lab's DHCP server has given, as its lease file says:
    /// (MAC address, IPv4 address, host name).
    pub fn leases(&self) -> anyhow::Result<Vec<(String, Ipv4Addr, String)>> {
        let path = self.dir.join("leases");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        text.lines()
            .map(|line| {
                let words: Vec<&str> = line.split_whitespace().collect();
                match words[..] {
                    [_, mac, address, name, ..] => Ok((
                        mac.to_string(),
                        address.parse().with_context(|| format!("{line:?}"))?,
                        name.to_string(),
                    )),
                    _ => bail!("{}: unexpected line {line:?}", path.display()),
                }
            })
            .collect()
    }

    /// A PC named `name` (by the lab's DHCP server, from its MAC address)
    /// on a new port of the switch, booting as `boot` says.
    pub fn pc(&mut self, name: &str, boot: Boot) -> anyhow::Result<Pc> {
        self.pcs += 1;
        let tap = format!("tap{}", self.pcs);
        let mac = format!("52:54:00:92:00:{:02x}", self.pcs);
        let sw = self.namespaces.get(SWITCH).to_string();
        let sw = sw.as_str();
        ip(&["-n", sw, "tuntap", "add", "dev", &tap, "mode", "tap"])?;
        ip(&["-n", sw, "link", "set", &tap, "master", "br0", "up"])?;
        self.append("dhcp-hosts", &format!("{mac},{name}\n"))?;
        let netdev = format!("tap,id=n0,ifname={tap},script=no,downscript=no");
        let device = format!("virtio-net-pci,netdev=n0,mac={mac}");
        let mut config = match boot {
            Boot::Network(Firmware::Uefi) => {
                // romfile= leaves the NIC to OVMF's own PXE client.
                crate::pxe::network_boot(Firmware::Uefi, &netdev, &format!("{device},romfile="))
            }
            Boot::Network(firmware) => crate::pxe::network_boot(firmware, &netdev, &device),
            Boot::Cd(iso) => {
                let drive = format!("file={},media=cdrom,if=ide,readonly=on", iso.display());
                Config::firmware(
                    Firmware::Bios,
                    &[
                        "-netdev", &netdev, "-device", &device, "-drive", &drive, "-boot", "d",
                    ],
                )
            }
            Boot::Direct(kernel, image, append) => {
                let append = format!("{append} {}", image.root_digest_arg());
                let mut config = Config::new(kernel, &image.path, append.trim());
                config.qemu_args = ["-netdev", &netdev, "-device", &device]
                    .map(String::from)
                    .to_vec();
                config
            }
        };
        config.memory_mib = PC_MEMORY_MIB;
        config.wrapper = ["ip", "netns", "exec", sw].map(String::from).to_vec();
        Ok(Pc {
            name: name.to_string(),
            mac,
            config,
        })
    }
}

/// A PC of the lab before it is powered on.
#[derive(Clone, Debug)]
pub struct Pc {
    pub name: String,
    pub mac: String,
    pub config: Config,
}

/// The ways into the lab a morning's PCs take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootPath {
    BiosPxe,
    UefiPxe,
    Cd,
}

impl BootPath {
    pub fn name(self) -> &'static str {
        match self {
            BootPath::BiosPxe => "BIOS PXE",
            BootPath::UefiPxe => "UEFI PXE",
            BootPath::Cd => "CD",
        }
    }
}

/// The morning's PCs: two BIOS and one UEFI that boot from the network,
/// one from the ISO as a CD; named so by the lab's DHCP server.
pub const PCS: &[(&str, BootPath)] = &[
    ("bios1", BootPath::BiosPxe),
    ("bios2", BootPath::BiosPxe),
    ("uefi1", BootPath::UefiPxe),
    ("cd1", BootPath::Cd),
];

/// On the head, once it is a member of its own cluster: prints how many
/// nodes are idle in Slurm whenever that changes, and once every PC of
/// [`PCS`] is, runs one job across them and prints the names they answer.
const PROBE: &str = r#"
idle=
ran=
while true; do
  now=$(sinfo -h -N -t idle -o %N 2>/dev/null | sort -u | wc -l)
  if [ "$now" != "$idle" ]; then echo "probe: idle $now nodes"; idle=$now; fi
  if [ -z "$ran" ] && [ "$now" -ge PCS ]; then
    ran=1
    echo "probe: srun $(srun -N PCS hostname 2>&1 | sort | tr '\n' ' ')"
  fi
  sleep 0.5
done
"#;

/// The probe's line once all [`PCS`] ran the job: their names, sorted.
pub fn srun_line() -> String {
    let mut names: Vec<&str> = PCS.iter().map(|(name, _)| *name).collect();
    names.sort_unstable();
    format!("probe: srun {} ", names.join(" "))
}

/// The probe's line when `count` nodes are idle in Slurm (a word after
/// the count, as the console's lines end in `\r\n`).
pub fn idle_line(count: usize) -> String {
    format!("probe: idle {count} nodes")
}

/// What a lab boots: the head's image, the drones' image, and the PXE
/// tree and ISO made from the drones' image.
pub struct Artifacts {
    pub head: Written,
    pub drone: Written,
    pub tree: PathBuf,
    pub iso: PathBuf,
}

/// Builds the lab's artifacts in `dir` for a fresh cluster identity,
/// which is removed once it is baked in: the head's image (with the probe)
/// and the drones' image (a drone found by beacon), the PXE tree and ISO.
pub fn artifacts(kernel: &Kernel, binaries: &Binaries, dir: &Path) -> anyhow::Result<Artifacts> {
    let identity = dir.join("identity");
    let _ = std::fs::remove_dir_all(&identity);
    crate::cluster::identity(&identity)?;
    let member = |role| Membership {
        dir: identity.clone(),
        role,
    };
    let mut head = crate::image::base_spec(kernel, binaries)?;
    crate::cluster::add(&mut head, kernel, &member(Role::Head))?;
    let probe_file = "/etc/chaos-lab/probe.sh";
    head.dir("/etc/chaos-lab", 0o755)?;
    head.file(
        probe_file,
        0o644,
        PROBE.replace("PCS", &PCS.len().to_string()),
    )?;
    let mut probe = Service::new("probe", "/bin/sh");
    probe.args = vec![probe_file.into()];
    probe.restart = Restart::Never;
    probe.when = Some(paths::JOINED.into());
    crate::image::add_service(&mut head, &probe)?;
    let head = crate::image::write(&head, &dir.join("head.cpio.gz"))?;

    let mut drone = crate::image::base_spec(kernel, binaries)?;
    crate::cluster::add(&mut drone, kernel, &member(Role::Drone { head: None }))?;
    let drone = crate::image::write(&drone, &dir.join("drone.cpio.gz"))?;
    std::fs::remove_dir_all(&identity)?;

    let tree = dir.join("pxe");
    let append = drone.root_digest_arg();
    crate::pxe::build(&kernel.vmlinuz, &drone.path, &append, &tree)?;
    let iso = dir.join("chaos.iso");
    crate::iso::build(&kernel.vmlinuz, &drone.path, &append, &iso)?;
    Ok(Artifacts {
        head,
        drone,
        tree,
        iso,
    })
}

/// Waits for `vm` to report that it joined the cluster.
pub fn joined(vm: &mut Vm, timeout: Duration) -> anyhow::Result<fact::Fact> {
    vm.expect_fact(fact::NODE, &[("state", "joined")], timeout)
}

/// A PC of the morning, powered on.
pub struct Running {
    pub name: String,
    pub path: BootPath,
    pub mac: String,
    pub powered_on: Instant,
    pub vm: Vm,
}

/// The lab's morning: its LAN, DHCP server and netboot up, the head VM
/// booted and serving; [`Morning::power_on`] then starts the PCs.
pub struct Morning {
    pub artifacts: Artifacts,
    pub kernel: Kernel,
    pub head: Vm,
    // Dropped after the head.
    pub lab: Lab,
}

impl Morning {
    /// Everything but the PCs, in build/lab/`tag`.
    pub fn start(kernel: &Kernel, binaries: &Binaries, tag: &str) -> anyhow::Result<Morning> {
        let dir = crate::build_dir().join("lab").join(tag);
        let artifacts = artifacts(kernel, binaries, &dir)?;
        let mut lab = Lab::start(tag, &dir.join("lan"))?;
        lab.serve(&artifacts.tree)?;
        lab.name("head", HEAD)?;
        let append = format!("ip={HEAD}:::255.255.255.0:head::off");
        let mut head = lab.pc(
            "head",
            Boot::Direct(&kernel.vmlinuz, &artifacts.head, &append),
        )?;
        head.config.memory_mib = HEAD_MEMORY_MIB;
        let mut head = Vm::start(&head.config)?;
        // tyd starts slurmctld (through init) before it serves joins.
        head.expect("init: started service slurmctld", HEAD_BOOT)?;
        head.expect_fact(fact::NODE, &[("state", "serving")], HEAD_BOOT)?;
        Ok(Morning {
            artifacts,
            kernel: kernel.clone(),
            head,
            lab,
        })
    }

    /// Powers on every PC of [`PCS`], one after another, as a lab's
    /// first users would.
    pub fn power_on(&mut self) -> anyhow::Result<Vec<Running>> {
        let mut running = Vec::new();
        for (name, path) in PCS {
            let boot = match path {
                BootPath::BiosPxe => Boot::Network(Firmware::Bios),
                BootPath::UefiPxe => Boot::Network(Firmware::Uefi),
                BootPath::Cd => Boot::Cd(&self.artifacts.iso),
            };
            let pc = self.lab.pc(name, boot)?;
            running.push(Running {
                name: pc.name,
                path: *path,
                mac: pc.mac,
                powered_on: Instant::now(),
                vm: Vm::start(&pc.config)?,
            });
        }
        Ok(running)
    }
}
