//! The README's first command, as a script runs it: `cargo xtask
//! qemu-cluster --once` boots a head and a drone, shows the
//! demonstration's output (`srun hostname`, then the primes counted
//! across the drones) and exits with its outcome, stopping every VM.

use chaos_tests::kernel_choice;
use xtask::image::KernelChoice;

#[test]
fn qemu_cluster_once_shows_the_demonstration_and_exits_with_its_outcome() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    command
        .current_dir(xtask::root())
        .args(["xtask", "qemu-cluster", "-n", "1", "--once"]);
    if kernel_choice() == KernelChoice::Custom {
        command.arg("--custom");
    }
    // qemu-cluster gives up on its own after its deadline (ten minutes).
    let output = command.output().expect("running cargo xtask qemu-cluster");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "qemu-cluster --once: {}\n{stdout}\n{stderr}",
        output.status
    );
    let primes = format!(
        "qemu-cluster: primes below {}: {}, counted by 1 nodes",
        xtask::cluster::PRIMES_BELOW.0,
        xtask::cluster::PRIMES_BELOW.1
    );
    for wanted in [
        "qemu-cluster: all 1 drones joined, full mesh",
        // srun -N 1 hostname
        "qemu-cluster:   drone1",
        &primes,
        "qemu-cluster: finished: ok",
        "qemu-cluster: stopped 2 VMs",
    ] {
        assert!(stdout.contains(wanted), "{wanted:?} missing:\n{stdout}");
    }
}
