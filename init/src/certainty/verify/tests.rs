use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;

use mkimage::manifest::{embed, Digest};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::unistd::mkfifo;

use super::*;
use crate::certainty::fixture::{image, require_root, sample_spec, Scratch};
use crate::certainty::WRITABLE_MOUNTS;

fn lines(report: &Report) -> Vec<String> {
    report.differences.iter().map(|d| d.to_string()).collect()
}

/// Gives `path` CAP_NET_RAW as a permitted file capability, as `setcap
/// cap_net_raw+p` would (a VFS_CAP_REVISION_2 value).
fn set_capability(path: &Path) {
    const CAP_NET_RAW: u32 = 13;
    let mut value = Vec::new();
    for word in [0x0200_0000u32, 1 << CAP_NET_RAW, 0, 0, 0] {
        value.extend_from_slice(&word.to_le_bytes());
    }
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: both pointers are valid for the given lengths during the call.
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            c"security.capability".as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(rc, 0, "setxattr: {}", io::Error::last_os_error());
}

fn check(root: &Scratch, baseline: &Baseline) -> Vec<String> {
    lines(&verify(&root.0, baseline, WRITABLE_MOUNTS).unwrap())
}

#[test]
fn an_unchanged_root_has_no_differences() {
    let spec = sample_spec();
    let (root, baseline) = image("clean", &spec);
    let report = verify(&root.0, &baseline, WRITABLE_MOUNTS).unwrap();
    assert_eq!(lines(&report), Vec::<String>::new());
    assert_eq!(report.entries, spec.iter().count());
    assert_eq!(report.bytes, 300_000 + 6 + 12);
    // Once per file hashed, so a long pass can keep its heartbeat going.
    let files = spec
        .iter()
        .filter(|(_, e)| matches!(e.kind, mkimage::Kind::File(_)))
        .count();
    let mut calls = 0;
    verify_with(&root.0, &baseline, WRITABLE_MOUNTS, &mut || calls += 1).unwrap();
    assert_eq!(calls, files);
}

/// What a case is called, what it does to the root, what verify must say.
type Case = (&'static str, Box<dyn Fn(&Scratch)>, Vec<String>);

/// Each kind of difference, made on a fresh copy of the sample image.
#[test]
fn every_kind_of_difference_is_named() {
    let motd = Digest::of(b"hello\n");
    let cases: Vec<Case> = vec![
        (
            "same-size content",
            Box::new(|r| std::fs::write(r.path("/etc/motd"), "HELLO\n").unwrap()),
            vec![format!(
                "/etc/motd: content changed: sha256 {} -> {} (6 bytes)",
                &motd.hex()[..16],
                &Digest::of(b"HELLO\n").hex()[..16]
            )],
        ),
        (
            "longer content",
            Box::new(|r| std::fs::write(r.path("/etc/motd"), "hello!\n").unwrap()),
            vec!["/etc/motd: content changed: size 6 -> 7 bytes".into()],
        ),
        (
            "chmod",
            Box::new(|r| {
                let mode = std::fs::Permissions::from_mode(0o4755);
                std::fs::set_permissions(r.path("/bin/sh"), mode).unwrap()
            }),
            vec!["/bin/sh: mode changed: 0755 -> 4755".into()],
        ),
        (
            "file capabilities",
            Box::new(|r| set_capability(&r.path("/bin/sh"))),
            vec!["/bin/sh: file capabilities added (security.capability)".into()],
        ),
        (
            "chown",
            Box::new(|r| std::os::unix::fs::chown(r.path("/etc/motd"), Some(0), Some(5)).unwrap()),
            vec!["/etc/motd: owner changed: 0:0 -> 0:5".into()],
        ),
        (
            "file replaced by a directory",
            Box::new(|r| {
                std::fs::remove_file(r.path("/etc/motd")).unwrap();
                std::fs::create_dir(r.path("/etc/motd")).unwrap();
            }),
            vec!["/etc/motd: type changed: file -> directory".into()],
        ),
        (
            "directory replaced by a symlink",
            Box::new(|r| {
                std::fs::remove_dir_all(r.path("/srv/data")).unwrap();
                std::os::unix::fs::symlink("/tmp", r.path("/srv/data")).unwrap();
            }),
            vec!["/srv/data: type changed: directory -> symlink".into()],
        ),
        (
            "file replaced by a FIFO (must not hang)",
            Box::new(|r| {
                std::fs::remove_file(r.path("/etc/motd")).unwrap();
                mkfifo(&r.path("/etc/motd"), Mode::from_bits_truncate(0o644)).unwrap();
            }),
            vec!["/etc/motd: type changed: file -> named pipe".into()],
        ),
        (
            "symlink retargeted",
            Box::new(|r| {
                std::fs::remove_file(r.path("/etc/hosts")).unwrap();
                std::os::unix::fs::symlink("/tmp/evil hosts", r.path("/etc/hosts")).unwrap();
            }),
            vec!["/etc/hosts: symlink retargeted: /run/chaos/hosts -> /tmp/evil%20hosts".into()],
        ),
        (
            "device numbers",
            Box::new(|r| {
                std::fs::remove_file(r.path("/dev/console")).unwrap();
                let dev = makedev(1, 3);
                let mode = Mode::from_bits_truncate(0o600);
                mknod(&r.path("/dev/console"), SFlag::S_IFCHR, mode, dev).unwrap();
            }),
            vec!["/dev/console: device changed: 5:1 -> 1:3".into()],
        ),
        (
            "added file, added directory with contents, odd names",
            Box::new(|r| {
                std::fs::write(r.path("/etc/new"), "x").unwrap();
                std::fs::create_dir_all(r.path("/opt/a/b")).unwrap();
                std::fs::write(r.path("/opt/a/b/c"), "x").unwrap();
                std::fs::write(r.path("/etc/a b\n"), "x").unwrap();
                let odd = std::ffi::OsStr::from_bytes(b"\xff%");
                std::fs::write(r.path("/etc").join(odd), "x").unwrap();
                mkfifo(&r.path("/etc/fifo"), Mode::from_bits_truncate(0o600)).unwrap();
            }),
            vec![
                "/etc/%FF%25: added (file)".into(),
                "/etc/a%20b%0A: added (file)".into(),
                "/etc/fifo: added (named pipe)".into(),
                "/etc/new: added (file)".into(),
                "/opt: added (directory)".into(),
            ],
        ),
        (
            "removed file and removed directory with contents",
            Box::new(|r| {
                std::fs::remove_file(r.path("/bin/sh")).unwrap();
                std::fs::remove_dir_all(r.path("/srv")).unwrap();
            }),
            vec![
                "/bin/sh: removed (file)".into(),
                "/srv: removed (directory)".into(),
            ],
        ),
        (
            "a write to an unmounted /tmp lands in the root",
            Box::new(|r| std::fs::write(r.path("/tmp/scratch"), "x").unwrap()),
            vec!["/tmp/scratch: added (file)".into()],
        ),
        (
            "several changes to one path are each listed",
            Box::new(|r| {
                std::os::unix::fs::chown(r.path("/srv/data/x"), Some(0), Some(0)).unwrap();
                let mode = std::fs::Permissions::from_mode(0o666);
                std::fs::set_permissions(r.path("/srv/data/x"), mode).unwrap();
            }),
            vec![
                "/srv/data/x: mode changed: 0640 -> 0666".into(),
                "/srv/data/x: owner changed: 1000:100 -> 0:0".into(),
            ],
        ),
    ];
    for (what, change, want) in cases {
        let (root, baseline) = image("kinds", &sample_spec());
        change(&root);
        assert_eq!(check(&root, &baseline), want, "{what}");
    }
}

#[test]
fn the_manifest_is_covered_by_its_own_digest() {
    require_root();
    let mut spec = sample_spec();
    let manifest = embed(&mut spec).unwrap();
    let root = Scratch::new("manifest");
    crate::certainty::fixture::unpack(&spec, &root.0);
    let file = root.path(chaos_contract::paths::MANIFEST);

    let (baseline, digest) = Baseline::load(&file, Some(manifest.digest())).unwrap();
    assert_eq!(digest, manifest.digest());
    assert_eq!(check(&root, &baseline), Vec::<String>::new());

    // Editing the file after the daemon loaded it is a content change.
    let mut text = manifest.render();
    text.push_str("/zz dir 0755 0 0\n");
    std::fs::write(&file, &text).unwrap();
    let found = check(&root, &baseline);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("/etc/chaos/manifest: content changed: size "),
        "{found:?}"
    );

    // Loading it against the pinned digest is the forged-manifest case.
    let err = Baseline::load(&file, Some(manifest.digest())).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the manifest {} has digest {} but chaos.root_digest= pins {}: \
             it is forged or from another image",
            file.display(),
            Digest::of(text.as_bytes()),
            manifest.digest()
        )
    );
    // Without a pin it is trusted as found, and what it adds is then missing.
    let (unpinned, _) = Baseline::load(&file, None).unwrap();
    assert_eq!(check(&root, &unpinned), ["/zz: removed (directory)"]);

    std::fs::write(&file, "chaos-manifest 1\n/a dir 755 0 0\n").unwrap();
    let err = Baseline::load(&file, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the manifest {}: line 2: field 3 (mode) \"755\" is not 4 octal digits",
            file.display()
        )
    );
    std::fs::remove_file(&file).unwrap();
    let err = Baseline::load(&file, None).unwrap_err().to_string();
    assert!(err.starts_with("reading the manifest "), "{err}");
}

/// Mounts in a private mount namespace of a thread of our own, so nothing
/// leaks to the host or to other tests.
#[test]
fn mounts_are_skipped_only_where_writable_and_never_crossed() {
    require_root();
    std::thread::spawn(|| {
        // SAFETY: unshare has no memory-safety preconditions; CLONE_NEWNS
        // affects only this thread, which exits at the end of the test.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNS) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNS): {}",
            io::Error::last_os_error()
        );
        let private = MsFlags::MS_REC | MsFlags::MS_PRIVATE;
        mount(None::<&str>, "/", None::<&str>, private, None::<&str>).unwrap();

        let (root, baseline) = image("mounts", &sample_spec());
        let tmpfs = |path: &Path| {
            mount(
                Some("tmpfs"),
                path,
                Some("tmpfs"),
                MsFlags::empty(),
                None::<&str>,
            )
            .unwrap()
        };
        // Writable mounts: whatever happens inside them is not the root's.
        tmpfs(&root.path("/tmp"));
        tmpfs(&root.path("/run"));
        std::fs::write(root.path("/tmp/job.out"), "x").unwrap();
        std::fs::create_dir(root.path("/run/chaos")).unwrap();
        // A mount over a baseline directory, and a file bind-mounted from
        // another filesystem over a baseline file.
        tmpfs(&root.path("/srv/data"));
        std::fs::write(root.path("/run/sh"), "#!/bin/evil\n").unwrap();
        let bind = MsFlags::MS_BIND;
        mount(
            Some(&root.path("/run/sh")),
            &root.path("/bin/sh"),
            None::<&str>,
            bind,
            None::<&str>,
        )
        .unwrap();
        // A mount on a directory made for it: the directory is an addition.
        std::fs::create_dir(root.path("/mnt")).unwrap();
        tmpfs(&root.path("/mnt"));

        let found = check(&root, &baseline);
        for path in ["/tmp", "/run", "/srv/data", "/bin/sh", "/mnt"] {
            let _ = umount2(&root.path(path), MntFlags::MNT_DETACH);
        }
        assert_eq!(
            found,
            [
                "/bin/sh: mounted over: another filesystem hides it",
                "/mnt: added (directory)",
                "/srv/data: mounted over: another filesystem hides it",
            ]
        );
    })
    .join()
    .unwrap();
}

#[test]
fn a_missing_root_is_an_error() {
    let baseline = Baseline::new([]);
    let err = verify(Path::new("/nonexistent/root"), &baseline, &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "opening the root /nonexistent/root: ENOENT: No such file or directory"
    );
}
