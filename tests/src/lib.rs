//! The integration tests' harness: test images are the shipped base image
//! (its busybox userland included) plus the test's own services (added
//! through mkimage, never through a switch in the node binaries), booted
//! under QEMU with the console captured; network namespaces the tests
//! create and remove.

use std::process::Command;
use std::sync::OnceLock;

use chaos_contract::service::Service;
use mkimage::Spec;
use xtask::image::KernelChoice;
use xtask::kernel::Kernel;
use xtask::node::Binaries;
use xtask::vm::{Config, Vm};

pub use std::time::Duration;
pub use xtask::image::Written;

/// Generous bounds for TCG boots on a loaded 2-core machine: a boot that
/// needs longer is broken, not slow.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Names the kernel the QEMU suite boots: `distribution` (default) or
/// `custom`. `cargo xtask test` runs the suite once with each.
pub const KERNEL_VAR: &str = "CHAOS_TEST_KERNEL";

pub struct Fixture {
    pub kernel: Kernel,
    pub binaries: Binaries,
}

/// The kernel this run of the suite boots (see [`KERNEL_VAR`]).
pub fn kernel_choice() -> KernelChoice {
    match std::env::var(KERNEL_VAR).as_deref() {
        Err(_) | Ok("distribution") => KernelChoice::Distribution,
        Ok("custom") => KernelChoice::Custom,
        Ok(other) => panic!("{KERNEL_VAR}={other}: expected distribution or custom"),
    }
}

/// The kernel and node binaries, built once per test process.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let sh = xtask::shell().expect("a shell");
        let choice = kernel_choice();
        Fixture {
            kernel: choice
                .get(&sh)
                .unwrap_or_else(|e| panic!("the {choice:?} kernel: {e:#}")),
            binaries: xtask::node::build().expect("the node binaries"),
        }
    })
}

/// The base image plus `services`; written to
/// build/tests/<name>-<kernel>.cpio.gz.
pub fn test_image(name: &str, services: &[Service]) -> Written {
    test_image_with(name, services, |_| {})
}

/// [`test_image`], with `change` applied to the spec last.
pub fn test_image_with(
    name: &str,
    services: &[Service],
    change: impl FnOnce(&mut Spec),
) -> Written {
    xtask::image::write(&test_spec(services, change), &test_image_path(name))
        .expect("writing the test image")
}

/// The spec of [`test_image_with`], for a test that writes it itself.
pub fn test_spec(services: &[Service], change: impl FnOnce(&mut Spec)) -> Spec {
    let fixture = fixture();
    let mut spec: Spec = xtask::image::base_spec(&fixture.kernel, &fixture.binaries)
        .unwrap_or_else(|e| panic!("the base image spec: {e:#}"));
    for service in services {
        xtask::image::add_service(&mut spec, service).expect("service file");
    }
    change(&mut spec);
    spec
}

/// Where test image `name` for this run's kernel goes.
pub fn test_image_path(name: &str) -> std::path::PathBuf {
    xtask::build_dir()
        .join("tests")
        .join(format!("{name}-{}.cpio.gz", fixture().kernel.release))
}

/// A fresh cluster identity for one test, with its munge key, under
/// build/tests; the caller removes it once it is baked into the images.
pub fn cluster_identity(tag: &str) -> std::path::PathBuf {
    let dir = xtask::build_dir()
        .join("tests")
        .join(format!("cluster-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    xtask::cluster::identity(&dir).step();
    chaos_agent::keys::munge_key(&dir).expect("the cluster's munge key");
    dir
}

/// A service running a shell script (the image's busybox sh).
pub fn script(name: &str, script: &str) -> Service {
    let mut service = Service::new(name, "/bin/sh");
    service.args = vec!["-c".to_string(), script.to_string()];
    service
}

/// Boots `image` on the suite's kernel with `append`, its manifest pinned
/// by `chaos.root_digest=` as a lab's boot configuration would pin it.
pub fn config(image: &Written, append: &str) -> Config {
    let append = format!("{append} {}", image.root_digest_arg());
    Config::new(&fixture().kernel.vmlinuz, &image.path, append.trim())
}

pub fn boot(config: &Config) -> Vm {
    Vm::start(config).expect("starting QEMU")
}

/// Unwraps a harness step, printing the full error (with the console) on failure.
pub trait Step<T> {
    fn step(self) -> T;
}

impl<T> Step<T> for anyhow::Result<T> {
    fn step(self) -> T {
        self.unwrap_or_else(|e| panic!("{e:#}"))
    }
}

/// Tests that make namespaces and taps need root; CI runs as root, so this
/// fails loudly instead of skipping.
pub fn require_root() {
    assert!(
        xtask::deps::is_root(),
        "this test makes network namespaces and taps: run it as root (CI does)"
    );
}

/// A network namespace made for one test, removed when dropped.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("chaos-{tag}-{}", std::process::id());
        // A namespace left by an earlier run of this pid; usually none.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        run(&["ip", "netns", "add", &name]);
        Netns { name }
    }

    /// Runs a command inside the namespace and asserts it succeeded.
    pub fn run(&self, argv: &[&str]) {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(argv);
        run(&full);
    }

    /// Runs a command inside the namespace; true if it succeeded.
    pub fn try_run(&self, argv: &[&str]) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(argv)
            .status()
            .is_ok_and(|s| s.success())
    }

    pub fn wrapper(&self) -> Vec<String> {
        ["ip", "netns", "exec", &self.name]
            .map(String::from)
            .to_vec()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run(argv: &[&str]) {
    let status = Command::new(argv[0])
        .args(&argv[1..])
        .status()
        .unwrap_or_else(|e| panic!("running {argv:?}: {e}"));
    assert!(status.success(), "{argv:?} failed with {status}");
}
