//! `cargo xtask <command>`: builds, boots, tests and measures chaos. Each
//! command is a function of the library; this file only parses arguments.

use std::path::PathBuf;

use anyhow::Context;
use argh::FromArgs;
use xshell::cmd;
use xtask::image::KernelChoice;
use xtask::{bench, compare, custom_kernel, deps, image, kernel, netbench, vm};

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
}

/// Install the Debian packages and the Rust target chaos needs, saying what
/// each is for; does nothing when all are present.
#[derive(FromArgs)]
#[argh(subcommand, name = "deps")]
struct Deps {}

/// Unpack Debian's current kernel package and its modules into build/kernel
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
    /// head.key) and starts `tyd join` at boot; without it tyd is in the
    /// image but not started
    #[argh(option)]
    cluster: Option<PathBuf>,
    /// with --cluster: the head's LAN address[:port] to bake in (default:
    /// chaos.head= on the kernel command line, else the address in the
    /// head's signed beacon on the LAN)
    #[argh(option)]
    head: Option<String>,
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
/// (PXE tree, unified kernel image, ISO, appliance) and the PXE boot time
/// of the BIOS and UEFI paths. Artifacts go to build/bench/.
#[derive(FromArgs)]
#[argh(subcommand, name = "bench")]
struct Bench {
    /// how many boots to time per kernel and per PXE path (default 3)
    #[argh(option, default = "3")]
    boots: usize,
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
}

/// Build build/chaos.iso: boots as a CD or, written to a USB stick, as a
/// disk, under BIOS and UEFI; menu: normal, expert, safe, kernel options.
#[derive(FromArgs)]
#[argh(subcommand, name = "iso")]
struct Iso {
    /// use the compact custom kernel (`cargo xtask kernel --custom`)
    #[argh(switch)]
    custom: bool,
}

/// Build build/chaos-drone.qcow2 (the ISO as a qcow2 disk): a drone VM for
/// QEMU, libvirt, VirtualBox or UTM on a workstation.
#[derive(FromArgs)]
#[argh(subcommand, name = "appliance")]
struct Appliance {
    /// use the compact custom kernel (`cargo xtask kernel --custom`)
    #[argh(switch)]
    custom: bool,
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
        }) => {
            if head.is_some() && cluster.is_none() {
                anyhow::bail!("--head is the head of a cluster: give its --cluster too");
            }
            let membership = cluster.map(|dir| xtask::cluster::Membership {
                dir,
                role: xtask::cluster::Role::Drone { head },
            });
            let out = out.unwrap_or_else(image::default_path);
            image::build_for(&out, choice(custom), membership.as_ref()).map(drop)
        }
        Command::QemuCluster(QemuCluster { drones, custom }) => {
            deps::install(&sh)?;
            xtask::cluster::run(choice(custom), drones)
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
        Command::Bench(Bench { boots }) => bench::run(&sh, boots),
        Command::Pxe(Pxe { custom }) => xtask::pxe::command(choice(custom)),
        Command::Iso(Iso { custom }) => xtask::iso::command(choice(custom), false),
        Command::Appliance(Appliance { custom }) => xtask::iso::command(choice(custom), true),
        Command::Netboot(Netboot { args }) => xtask::pxe::netboot(&args),
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
