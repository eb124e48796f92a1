//! The integration tests' harness: test images are the shipped base image
//! plus busybox and the test's own services (added through mkimage, never
//! through a switch in the node binaries), booted under QEMU with the
//! console captured; network namespaces the tests create and remove.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use chaos_init::service::Service;
use mkimage::Spec;
use xtask::image::SERVICES_DIR;
use xtask::kernel::Kernel;
use xtask::node::Binaries;
use xtask::vm::{Config, Vm};

pub use std::time::Duration;

/// Generous bounds for TCG boots on a loaded 2-core machine: a boot that
/// needs longer is broken, not slow.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Busybox applets the test services call by name.
const APPLETS: &[&str] = &[
    "sh", "cat", "echo", "hostname", "ip", "sleep", "true", "false",
];

pub struct Fixture {
    pub kernel: Kernel,
    pub binaries: Binaries,
}

/// The kernel and node binaries, built once per test process.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let sh = xtask::shell().expect("a shell");
        Fixture {
            kernel: xtask::kernel::distribution(&sh)
                .expect("the distribution kernel (`cargo xtask kernel`)"),
            binaries: xtask::node::build().expect("the node binaries"),
        }
    })
}

/// The base image plus busybox at /bin and `services`; written to
/// build/tests/<name>.cpio.gz.
pub fn test_image(name: &str, services: &[Service]) -> PathBuf {
    test_image_with(name, services, |_| {})
}

/// [`test_image`], with `change` applied to the spec last.
pub fn test_image_with(
    name: &str,
    services: &[Service],
    change: impl FnOnce(&mut Spec),
) -> PathBuf {
    let fixture = fixture();
    let mut spec: Spec =
        xtask::image::base_spec(&fixture.kernel, &fixture.binaries).expect("the base image spec");
    let busybox = "/bin/busybox";
    assert!(
        std::path::Path::new(busybox).exists(),
        "{busybox} missing: install busybox-static (`cargo xtask deps`)"
    );
    spec.file_from(busybox, 0o755, busybox).expect("busybox");
    for applet in APPLETS {
        spec.symlink(&format!("/bin/{applet}"), "busybox")
            .expect("applet link");
    }
    for service in services {
        spec.file(
            &format!("{SERVICES_DIR}/{}", service.name),
            0o644,
            service.render(),
        )
        .expect("service file");
    }
    change(&mut spec);
    let out = xtask::build_dir()
        .join("tests")
        .join(format!("{name}.cpio.gz"));
    xtask::image::write(&spec, &out).expect("writing the test image");
    out
}

/// A service running a busybox shell script.
pub fn script(name: &str, script: &str) -> Service {
    let mut service = Service::new(name, "/bin/sh");
    service.args = vec!["-c".to_string(), script.to_string()];
    service
}

pub fn config(image: &std::path::Path, append: &str) -> Config {
    Config::new(&fixture().kernel.vmlinuz, image, append)
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
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
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
