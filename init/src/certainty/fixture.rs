//! Test fixtures: a scratch root directory laid out from an mkimage spec, as
//! the kernel would unpack the image, and the baseline that goes with it.
//! Test-only; it needs root (chown, mknod), and says so instead of skipping.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use mkimage::manifest::Manifest;
use mkimage::{Content, Kind, Spec};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};

use super::Baseline;

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (chown, mknod and mounts, as the node's certaintyd has); \
         run it as root, as CI does"
    );
}

/// A directory removed with everything in it when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("chaos-certainty-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self, image_path: &str) -> PathBuf {
        self.0.join(image_path.trim_start_matches('/'))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Creates every entry of `spec` under `root` with the spec's type, mode,
/// owner and device numbers.
pub fn unpack(spec: &Spec, root: &Path) {
    for (name, entry) in spec.iter() {
        let path = root.join(name);
        match &entry.kind {
            Kind::Dir => std::fs::create_dir(&path).unwrap(),
            Kind::File(Content::Bytes(bytes)) => std::fs::write(&path, bytes).unwrap(),
            Kind::File(Content::Host(host)) => {
                std::fs::copy(host, &path).unwrap();
            }
            Kind::Symlink(target) => std::os::unix::fs::symlink(target, &path).unwrap(),
            Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
                let kind = match entry.kind {
                    Kind::CharDev { .. } => SFlag::S_IFCHR,
                    _ => SFlag::S_IFBLK,
                };
                let dev = makedev((*major).into(), (*minor).into());
                mknod(&path, kind, Mode::empty(), dev).unwrap();
            }
        }
        std::os::unix::fs::lchown(&path, Some(entry.uid), Some(entry.gid)).unwrap();
        // After chown, which clears setuid and setgid bits.
        if !matches!(entry.kind, Kind::Symlink(_)) {
            let mode = std::fs::Permissions::from_mode(entry.mode);
            std::fs::set_permissions(&path, mode).unwrap();
        }
    }
}

/// A small image with every entry type, an owner, a sticky directory and
/// the writable mount points.
pub fn sample_spec() -> Spec {
    let mut spec = Spec::new();
    for (dir, mode) in [
        ("/dev", 0o755),
        ("/proc", 0o555),
        ("/run", 0o755),
        ("/tmp", 0o1777),
        ("/srv/data", 0o750),
    ] {
        spec.dir(dir, mode).unwrap();
    }
    spec.char_dev("/dev/console", 0o600, 5, 1).unwrap();
    spec.block_dev("/dev/sda", 0o660, 8, 0)
        .unwrap()
        .owner("/dev/sda", 0, 6)
        .unwrap();
    spec.file("/bin/sh", 0o755, "#!/bin/true\n").unwrap();
    spec.file("/etc/motd", 0o644, "hello\n").unwrap();
    spec.file("/srv/data/x", 0o640, vec![7u8; 300_000])
        .unwrap()
        .owner("/srv/data/x", 1000, 100)
        .unwrap();
    spec.symlink("/etc/hosts", "/run/chaos/hosts").unwrap();
    spec
}

/// `spec` unpacked into a fresh scratch root, with the baseline of its
/// manifest.
pub fn image(tag: &str, spec: &Spec) -> (Scratch, Baseline) {
    require_root();
    let root = Scratch::new(tag);
    unpack(spec, &root.0);
    let manifest = Manifest::from_spec(spec).unwrap();
    (root, Baseline::new(manifest.entries().iter().cloned()))
}
