//! `cargo xtask <command>`: builds, boots, tests and measures chaos. Each
//! command is a function of the library; this file only parses arguments.

use std::path::PathBuf;

use anyhow::Context;
use argh::FromArgs;
use xshell::cmd;
use xtask::drones::Artifact;
use xtask::image::KernelChoice;
use xtask::{bench, compare, custom_kernel, deps, drones, image, kernel, netbench, vm};

/// Build, boot, test and measure chaos.
#[derive(FromArgs)]
struct Args {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Deps(Deps),
    Kernel(Kernel),
    Image(Image),
    Qemu(Qemu),
    QemuCluster(QemuCluster),
    Test(Test),
    Bench(Bench),
    Compare(Compare),
    Pxe(Pxe),
    Iso(Iso),
    Appliance(Appliance),
    Netboot(Netboot),
    Tyd(Tyd),
    Head(HeadCommand),
    Fuzz(Fuzz),
}

/// Install the Debian packages and the Rust target chaos needs, saying what
/// each is for; does nothing when all are present.
#[derive(FromArgs)]
#[argh(subcommand, name = "deps")]
struct Deps {}

/// Unpack Debian's current kernel package and its modules into build/debian
/// (cached by package version; no root needed) and print where it is; with
/// --custom, build the compact module-free kernel from kernel-config/.
#[derive(FromArgs)]
#[argh(subcommand, name = "kernel")]
struct Kernel {
    /// build the compact kernel from Debian's linux-source package and the
    /// kernel-config/ fragments (cached in build/custom-kernel/)
    #[argh(switch)]
    custom: bool,
    /// kernel source tree for --custom (default: Debian's linux-source-6.1)
    #[argh(option)]
    source: Option<PathBuf>,
}

/// Build the node image: static musl init, boot modules, service table,
/// written reproducibly to build/chaos.cpio.gz (or --out).
#[derive(FromArgs)]
#[argh(subcommand, name = "image")]
struct Image {
    /// where to write the image (default build/chaos.cpio.gz)
    #[argh(option)]
    out: Option<PathBuf>,
    /// for the compact custom kernel (no modules) instead of Debian's
    #[argh(switch)]
    custom: bool,
    /// make it a drone of the cluster whose identity `tyd init --dir D`
    /// made: bakes in D's head.pub, beacon.pub and cluster.key (never
    /// head.key) and starts `tyd join` at boot; remembered in
    /// build/lab-cluster for image, pxe, iso and appliance
    #[argh(option)]
    cluster: Option<PathBuf>,
    /// with --cluster: the head's LAN address[:port] to bake in (default:
    /// chaos.head= on the kernel command line, else the address in the
    /// head's signed beacon on the LAN)
    #[argh(option)]
    head: Option<String>,
    /// join no cluster (tyd in the image but not started), and forget the
    /// remembered --cluster
    #[argh(switch)]
    no_cluster: bool,
}

/// Boot a head and N drones under QEMU on a private Ethernet segment on
/// loopback (10.77.0.0/24; no root needed), print a live table of the
/// nodes as they join and mesh, and stop every VM on Ctrl-C. The cluster
/// identity and images live in build/cluster/, with each console's log.
#[derive(FromArgs)]
#[argh(subcommand, name = "qemu-cluster")]
struct QemuCluster {
    /// how many drones (default 2)
    #[argh(option, short = 'n', default = "2")]
    drones: usize,
    /// boot the compact custom kernel (built on first use) instead of Debian's
    #[argh(switch)]
    custom: bool,
    /// run the demonstration job, then stop every VM and exit with its
    /// outcome (for scripts and CI)
    #[argh(switch)]
    once: bool,
}

/// Boot one node under QEMU with its serial console on this terminal
/// (Ctrl-A X quits QEMU). Installs what it needs first.
#[derive(FromArgs)]
#[argh(subcommand, name = "qemu")]
struct Qemu {
    /// kernel command line (default: a static ip= on QEMU's user network);
    /// the image's chaos.root_digest= is always added
    #[argh(option)]
    append: Option<String>,
    /// boot the compact custom kernel (built on first use) instead of Debian's
    #[argh(switch)]
    custom: bool,
}

/// Run every check CI runs: install dependencies, rustfmt, clippy, then all
/// unit and integration tests (QEMU boots and network namespaces need root).
#[derive(FromArgs)]
#[argh(subcommand, name = "test")]
struct Test {}

/// Measure the DESIGN.md budgets: binary and image sizes, image build time,
/// kernel hand-off to ready under QEMU, the size of every boot artifact
/// (PXE tree, unified kernel image, ISO, appliance), the PXE boot time
/// of the BIOS and UEFI paths and, as root, the lab's morning under QEMU
/// (first PC's power-on to all idle in Slurm, power-on to joined by BIOS
/// PXE, UEFI PXE and CD). Artifacts go to build/bench/.
#[derive(FromArgs)]
#[argh(subcommand, name = "bench")]
struct Bench {
    /// how many boots to time per kernel and per PXE path (default 3)
    #[argh(option, default = "3")]
    boots: usize,
    /// measure only the lab's morning (root; a few minutes)
    #[argh(switch)]
    lab: bool,
    /// measure only the sizes of the binaries and images, the images with
    /// Slurm and the QEMU clusters of 1 to 4 drones, idle in Slurm and
    /// running a job (builds the custom kernel if it is not cached; then a
    /// few minutes)
    #[argh(switch)]
    slurm: bool,
}

/// Build the image's initramfs with mkimage, Debian's mkinitramfs and
/// dracut for the same kernel and modules and compare time and size; then
/// the image's size per NIC class and the hand-off to DHCP lease time under
/// QEMU. Needs root and initramfs-tools-core and dracut-core.
#[derive(FromArgs)]
#[argh(subcommand, name = "compare")]
struct Compare {}

/// Build build/pxe (iPXE first stages for BIOS and UEFI, boot script,
/// kernel, initramfs) for `netboot serve`, and build/chaos.efi, the unified
/// kernel image (kernel, initramfs and command line in one UEFI program).
#[derive(FromArgs)]
#[argh(subcommand, name = "pxe")]
struct Pxe {
    /// use the compact custom kernel (`cargo xtask kernel --custom`)
    #[argh(switch)]
    custom: bool,
    /// make drones of the cluster `tyd init --dir D` made (remembered, as
    /// `cargo xtask image --cluster` says)
    #[argh(option)]
    cluster: Option<PathBuf>,
    /// with --cluster: the head's LAN address[:port] to bake in
    #[argh(option)]
    head: Option<String>,
    /// join no cluster, and forget the remembered --cluster
    #[argh(switch)]
    no_cluster: bool,
}

/// Build build/chaos.iso: boots as a CD or, written to a USB stick, as a
/// disk, under BIOS and UEFI; menu: normal, expert, safe, kernel options.
#[derive(FromArgs)]
#[argh(subcommand, name = "iso")]
struct Iso {
    /// use the compact custom kernel (`cargo xtask kernel --custom`)
    #[argh(switch)]
    custom: bool,
    /// make drones of the cluster `tyd init --dir D` made (remembered, as
    /// `cargo xtask image --cluster` says)
    #[argh(option)]
    cluster: Option<PathBuf>,
    /// with --cluster: the head's LAN address[:port] to bake in
    #[argh(option)]
    head: Option<String>,
    /// join no cluster, and forget the remembered --cluster
    #[argh(switch)]
    no_cluster: bool,
}

/// Build build/chaos-drone.qcow2 (the ISO as a qcow2 disk): a drone VM for
/// QEMU, libvirt, VirtualBox or UTM on a workstation.
#[derive(FromArgs)]
#[argh(subcommand, name = "appliance")]
struct Appliance {
    /// use the compact custom kernel (`cargo xtask kernel --custom`)
    #[argh(switch)]
    custom: bool,
    /// make drones of the cluster `tyd init --dir D` made (remembered, as
    /// `cargo xtask image --cluster` says)
    #[argh(option)]
    cluster: Option<PathBuf>,
    /// with --cluster: the head's LAN address[:port] to bake in
    #[argh(option)]
    head: Option<String>,
    /// join no cluster, and forget the remembered --cluster
    #[argh(switch)]
    no_cluster: bool,
}

/// Run `netboot` (e.g. `cargo xtask netboot serve --interface eth1`) from
/// the workspace, serving build/pxe; `cargo xtask netboot serve --help`
/// explains its options.
#[derive(FromArgs)]
#[argh(subcommand, name = "netboot")]
struct Netboot {
    /// netboot's arguments
    #[argh(positional, greedy)]
    args: Vec<String>,
}

/// Run the cluster agent tyd (the static one of the images) with ARGS as
/// this user, e.g. `cargo xtask tyd init --dir ~/lab` to make a cluster
/// identity; `cargo xtask tyd init --help` explains a verb.
#[derive(FromArgs)]
#[argh(subcommand, name = "tyd")]
struct Tyd {
    /// tyd's arguments
    #[argh(positional, greedy)]
    args: Vec<String>,
}

/// Make this machine the head of the cluster in --cluster: install tyd and
/// netboot in /usr/local/sbin and run `tyd serve --slurm` as systemd's
/// chaos-head.service (enabled at boot), or in the foreground where there
/// is no systemd. Uses sudo when not root.
#[derive(FromArgs)]
#[argh(subcommand, name = "head")]
struct HeadCommand {
    /// the cluster identity `tyd init --dir D` made (head.key stays there)
    #[argh(option)]
    cluster: PathBuf,
    /// accept joins on this address:port only (e.g. 192.168.1.10:7700),
    /// and beacon only on its LAN (default: every IPv4 LAN of this machine)
    #[argh(option)]
    listen: Option<std::net::SocketAddrV4>,
}

/// Fuzz the parsers of untrusted bytes (network and users' files) under
/// libFuzzer on stable Rust, from and into the corpora in fuzz/corpus/;
/// prints what each target found and fails on a crash or hang. Needs g++
/// (build-essential, `cargo xtask deps`); the first build takes minutes.
#[derive(FromArgs)]
#[argh(subcommand, name = "fuzz")]
struct Fuzz {
    /// one target (default: every one): cmdline, dhcp, proto, frames,
    /// beacon, manifest, service, cpio, modules, http
    #[argh(positional)]
    target: Option<String>,
    /// how long each target runs (default 60)
    #[argh(option, default = "60")]
    seconds: u64,
}

/// The address plan of QEMU's user network, given statically so the node
/// needs no DHCP: guest 10.0.2.15, gateway 10.0.2.2, DNS 10.0.2.3.
const QEMU_USER_IP: &str = "ip=10.0.2.15::10.0.2.2:255.255.255.0:chaos::off:10.0.2.3";

fn choice(custom: bool) -> KernelChoice {
    if custom {
        KernelChoice::Custom
    } else {
        KernelChoice::Distribution
    }
}

fn main() -> anyhow::Result<()> {
    let args: Args = argh::from_env();
    let sh = xtask::shell()?;
    match args.command {
        Command::Deps(_) => deps::install(&sh),
        Command::Kernel(Kernel {
            custom: true,
            source,
        }) => custom_kernel::build(&sh, source.as_deref()).map(drop),
        Command::Kernel(Kernel {
            source: Some(_), ..
        }) => {
            anyhow::bail!(
                "--source is for --custom; the distribution kernel comes from its package"
            )
        }
        Command::Kernel(_) => {
            let kernel = kernel::distribution(&sh)?;
            println!("kernel: {} at {}", kernel.release, kernel.vmlinuz.display());
            Ok(())
        }
        Command::Image(Image {
            out,
            custom,
            cluster,
            head,
            no_cluster,
        }) => {
            let out = out.unwrap_or_else(image::default_path);
            let asked = drones::Asked {
                cluster,
                head,
                no_cluster,
            };
            drones::build(&asked, std::slice::from_ref(&out), |membership| {
                xtask::cluster::build_image(&out, choice(custom), membership).map(drop)
            })
        }
        Command::QemuCluster(QemuCluster {
            drones,
            custom,
            once,
        }) => {
            deps::install(&sh)?;
            xtask::cluster::run(choice(custom), drones, once)
        }
        Command::Qemu(Qemu { append, custom }) => {
            deps::install(&sh)?;
            let (kernel, image) = image::build(&image::default_path(), choice(custom))?;
            let append = format!(
                "{} {}",
                append.as_deref().unwrap_or(QEMU_USER_IP),
                image.root_digest_arg()
            );
            let config = vm::Config::new(&kernel.vmlinuz, &image.path, &append).user_net();
            let mut argv = config.command(&xtask::build_dir().join("qemu-qmp.sock"));
            // Interactive: the console multiplexed with QEMU's monitor.
            if let Some(serial) = argv.iter().position(|a| a == "stdio") {
                argv[serial] = "mon:stdio".into();
            }
            println!("qemu: booting {} (Ctrl-A X quits)", kernel.release);
            let (program, rest) = argv.split_first().context("empty QEMU command")?;
            cmd!(sh, "{program} {rest...}").run()?;
            Ok(())
        }
        Command::Test(_) => {
            deps::install(&sh)?;
            println!("test: rustfmt");
            cmd!(sh, "cargo fmt --all --check").run()?;
            println!("test: clippy");
            cmd!(
                sh,
                "cargo clippy --workspace --all-targets --locked -- -D warnings"
            )
            .run()?;
            println!("test: unit and integration tests");
            xtask::testing::run_all(&sh)
        }
        Command::Bench(Bench { boots, lab, slurm }) => {
            let only = match (lab, slurm) {
                (true, true) => anyhow::bail!("bench: --lab or --slurm, not both"),
                (true, false) => Some(bench::Only::Lab),
                (false, true) => Some(bench::Only::Slurm),
                (false, false) => None,
            };
            bench::run(&sh, boots, only)
        }
        Command::Pxe(a) => drones::command(
            Artifact::Pxe,
            choice(a.custom),
            a.cluster,
            a.head,
            a.no_cluster,
        ),
        Command::Iso(a) => drones::command(
            Artifact::Iso,
            choice(a.custom),
            a.cluster,
            a.head,
            a.no_cluster,
        ),
        Command::Appliance(a) => drones::command(
            Artifact::Appliance,
            choice(a.custom),
            a.cluster,
            a.head,
            a.no_cluster,
        ),
        Command::Tyd(Tyd { args }) => xtask::head::tyd(&args),
        Command::Head(HeadCommand { cluster, listen }) => xtask::head::command(&cluster, listen),
        Command::Netboot(Netboot { args }) => xtask::pxe::netboot(&args),
        Command::Fuzz(Fuzz { target, seconds }) => {
            deps::install(&sh)?;
            xtask::fuzz::run(target.as_deref(), seconds).map(drop)
        }
        Command::Compare(_) => {
            let binaries = xtask::node::build()?;
            let kernel = kernel::distribution(&sh)?;
            compare::print(&compare::run(&sh, &kernel, &binaries)?);
            for class in netbench::class_sizes(&kernel, &binaries)? {
                println!(
                    "image with the {}: {} modules, {} KiB",
                    class.class,
                    class.modules,
                    class.size / 1024
                );
            }
            let (_, image) = image::build(&image::default_path(), KernelChoice::Distribution)?;
            let lease = netbench::handoff_to_lease(&kernel, &image.path, &image.root_digest_arg())?;
            println!(
                "kernel hand-off -> DHCP lease (e1000, QEMU user network, TCG): {} ms",
                lease.as_millis()
            );
            Ok(())
        }
    }
}
