//! Network figures for `cargo xtask bench`: what a NIC class costs in image
//! size, and how long a node takes from the kernel's hand-off to a DHCP
//! lease. Measured, never asserted.

use std::path::Path;
use std::time::Duration;

use crate::image;
use crate::kernel::Kernel;
use crate::node::Binaries;
use crate::vm::{Config, Vm};

/// One image variant's size.
#[derive(Clone, Debug)]
pub struct ClassSize {
    pub class: &'static str,
    /// Modules in the image (requests and their dependencies).
    pub modules: usize,
    /// The gzip-compressed image.
    pub size: u64,
}

/// The image with the lab NIC class (what ships) and with every wired
/// Ethernet driver of the kernel instead, written to build/bench/.
pub fn class_sizes(kernel: &Kernel, binaries: &Binaries) -> anyhow::Result<Vec<ClassSize>> {
    let scratch = crate::build_dir().join("bench");
    let mut sizes = Vec::new();
    for (class, nics) in [
        ("lab NIC class", image::LAB_NICS),
        (
            "@ethernet (every wired Ethernet driver)",
            &["@ethernet"][..],
        ),
    ] {
        let mut spec = image::moduleless_spec(binaries)?;
        image::add_modules(&mut spec, kernel, nics)?;
        let modules = spec
            .iter()
            .filter(|(path, _)| path.ends_with(".ko"))
            .count();
        let file = scratch.join(format!("nics-{}.cpio.gz", sizes.len()));
        let size = image::write(&spec, &file)?.size;
        sizes.push(ClassSize {
            class,
            modules,
            size,
        });
    }
    Ok(sizes)
}

/// Boots `image` with an e1000 on QEMU's user network and no `ip=`, and
/// returns the guest time from "Run /init" to the lease being applied.
pub fn handoff_to_lease(
    kernel: &Kernel,
    image: &Path,
    root_digest_arg: &str,
) -> anyhow::Result<Duration> {
    let mut config = Config::new(&kernel.vmlinuz, image, root_digest_arg);
    config.qemu_args = ["-netdev", "user,id=n0", "-device", "e1000,netdev=n0"]
        .map(String::from)
        .to_vec();
    let mut vm = Vm::start(&config)?;
    let bound = "@chaos lease interface=eth0";
    let took = vm.guest_time_to(bound)?;
    crate::timeline::print(
        &format!("kernel {}, e1000, DHCP", kernel.release),
        &crate::timeline::timeline(&vm.console(), bound)?,
    );
    Ok(took)
}
