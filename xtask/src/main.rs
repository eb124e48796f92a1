//! `cargo xtask <command>`: builds, boots, tests and measures chaos. Each
//! command is a function of the library; this file only parses arguments.

use std::path::PathBuf;

use anyhow::Context;
use argh::FromArgs;
use xshell::cmd;
use xtask::image::KernelChoice;
use xtask::{bench, custom_kernel, deps, image, kernel, vm};

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
    Test(Test),
    Bench(Bench),
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
/// kernel hand-off to ready under QEMU.
#[derive(FromArgs)]
#[argh(subcommand, name = "bench")]
struct Bench {
    /// how many boots to time (default 3)
    #[argh(option, default = "3")]
    boots: usize,
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
        Command::Image(Image { out, custom }) => {
            image::build(&out.unwrap_or_else(image::default_path), choice(custom)).map(drop)
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
    }
}
