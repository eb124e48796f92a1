//! `netboot`: serve chaos to a lab of PCs over the network.

use std::path::PathBuf;

use argh::FromArgs;
use netboot::dnsmasq::{parse_range, Dhcp};

/// Serve chaos to PCs that boot from the network.
#[derive(FromArgs)]
struct Args {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Serve(Serve),
}

/// Answer PXE boots on one interface until Ctrl-C: dnsmasq in proxy-DHCP
/// mode (the LAN's DHCP server keeps handing out addresses; DNS off) with
/// TFTP for the iPXE first stage, and HTTP for the boot script, kernel and
/// initramfs, logging every node's download. Needs root (DHCP and TFTP
/// ports). HTTP bounds what each client controls: request heads of 8 KB,
/// 512 connections at once and 16 per address, 10 s to send a request,
/// 30 s without reading, 10 minutes per download.
#[derive(FromArgs)]
#[argh(subcommand, name = "serve")]
struct Serve {
    /// the interface facing the lab (its IPv4 address is what nodes reach)
    #[argh(option)]
    interface: String,
    /// be the DHCP server too, for an isolated network without one: hand
    /// out START-END, e.g. 192.168.90.100-192.168.90.200
    #[argh(option, from_str_fn(parse_range))]
    dhcp: Option<Dhcp>,
    /// the PXE tree from `cargo xtask pxe` (default build/pxe)
    #[argh(option, default = "PathBuf::from(\"build/pxe\")")]
    root: PathBuf,
    /// HTTP port (default 8080; 0 picks a free one)
    #[argh(option, default = "8080")]
    http_port: u16,
    /// kernel arguments for every node, e.g. "chaos.head=192.168.90.2"
    #[argh(option, default = "String::new()")]
    append: String,
}

fn main() -> std::process::ExitCode {
    let args: Args = argh::from_env();
    let Command::Serve(serve) = args.command;
    let options = netboot::serve::Options {
        interface: serve.interface,
        dhcp: serve.dhcp.unwrap_or(Dhcp::Proxy),
        root: serve.root,
        http_port: serve.http_port,
        append: serve.append,
    };
    match netboot::serve::run(&options) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netboot: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
