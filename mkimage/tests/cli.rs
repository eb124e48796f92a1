//! End-to-end tests of the `mkimage` binary: reproducibility, `list`
//! round-trips, error reporting, and acceptance by GNU cpio as an
//! independent reader.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const GNU_CPIO: &str = "/usr/bin/cpio";
const BIG: usize = mkimage::image::MEMBER_ALONE;

/// A spec covering every entry type, with inputs in its own temp dir.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("init"), b"#!/bin/sh\necho init\n").unwrap();
        fs::write(dir.path().join("motd"), b"welcome to chaos\n").unwrap();
        // Large enough to be a member of its own: the image is a sequence.
        let big: Vec<u8> = (0..BIG).map(|n| (n % 251) as u8).collect();
        fs::write(dir.path().join("big"), big).unwrap();
        fs::write(
            dir.path().join("spec.txt"),
            "# every entry type\n\
             dir /dev 0755 0 0\n\
             nod /dev/console 0600 0 0 c 5 1\n\
             nod /dev/sda 0660 0 6 b 8 0\n\
             dir /root 0700 0 0\n\
             dir /home/user 0750 1000 100\n\
             file /sbin/init init 0755 0 0\n\
             file /etc/motd ${MOTD_DIR}/motd 0644 0 0\n\
             file /lib/big big 0644 0 0\n\
             slink /bin sbin 0777 0 0\n\
             slink /etc/mtab /proc/mounts 0777 0 0\n",
        )
        .unwrap();
        Fixture { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `mkimage build` into `out` with the given SOURCE_DATE_EPOCH.
    fn build(&self, out: &str, epoch: Option<&str>) -> Output {
        self.build_with(out, epoch, &[])
    }

    fn build_with(&self, out: &str, epoch: Option<&str>, args: &[&str]) -> Output {
        let mut command = mkimage();
        command
            .arg("build")
            .arg(self.path("spec.txt"))
            .arg("-o")
            .arg(self.path(out))
            .args(args)
            .env("MOTD_DIR", self.dir.path())
            .env_remove("SOURCE_DATE_EPOCH");
        if let Some(epoch) = epoch {
            command.env("SOURCE_DATE_EPOCH", epoch);
        }
        command.output().unwrap()
    }

    fn build_ok(&self, out: &str, epoch: Option<&str>) -> Vec<u8> {
        self.build_ok_with(out, epoch, &[])
    }

    fn build_ok_with(&self, out: &str, epoch: Option<&str>, args: &[&str]) -> Vec<u8> {
        let output = self.build_with(out, epoch, args);
        assert!(
            output.status.success(),
            "mkimage build failed: {}",
            stderr(&output)
        );
        fs::read(self.path(out)).unwrap()
    }
}

fn mkimage() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mkimage"))
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn gunzip(gz: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(gz)
        .read_to_end(&mut out)
        .unwrap();
    out
}

const LISTING: &str = "\
lrwxrwxrwx     0     0          4 bin -> sbin
drwxr-xr-x     0     0          0 dev
crw-------     0     0       5, 1 dev/console
brw-rw----     0     6       8, 0 dev/sda
drwxr-xr-x     0     0          0 etc
-rw-r--r--     0     0         17 etc/motd
lrwxrwxrwx     0     0         12 etc/mtab -> /proc/mounts
drwxr-xr-x     0     0          0 home
drwxr-x---  1000   100          0 home/user
drwxr-xr-x     0     0          0 lib
-rw-r--r--     0     0     262144 lib/big
drwx------     0     0          0 root
drwxr-xr-x     0     0          0 sbin
-rwxr-xr-x     0     0         20 sbin/init
";

#[test]
fn builds_are_byte_for_byte_reproducible() {
    let fixture = Fixture::new();
    let first = fixture.build_ok("a.cpio.gz", None);
    let second = fixture.build_ok("b.cpio.gz", None);
    assert_eq!(first, second, "two builds of the same spec differ");

    let dated = fixture.build_ok("c.cpio.gz", Some("1700000000"));
    assert_ne!(first, dated, "SOURCE_DATE_EPOCH did not change the output");
    let entries = mkimage::list(dated.as_slice()).unwrap();
    assert!(entries.iter().all(|e| e.mtime == 1_700_000_000));

    // One byte of one input file changes the image.
    let mut motd = fs::read(fixture.path("motd")).unwrap();
    motd[0] ^= 1;
    fs::write(fixture.path("motd"), motd).unwrap();
    let changed = fixture.build_ok("d.cpio.gz", None);
    assert_ne!(
        first, changed,
        "changing an input byte did not change the image"
    );
    let (first, changed) = (gunzip(&first), gunzip(&changed));
    let differing = first.iter().zip(&changed).filter(|(a, b)| a != b).count();
    assert_eq!(
        (first.len(), differing),
        (changed.len(), 1),
        "only that byte should differ"
    );
}

#[test]
fn a_warm_cache_gives_the_bytes_of_a_cold_one() {
    let fixture = Fixture::new();
    let uncached = fixture.build_ok("plain.cpio.gz", None);
    let cache = fixture.path("cache");
    let cache_arg = ["--cache", cache.to_str().unwrap()];
    let cold = fixture.build_ok_with("cold.cpio.gz", None, &cache_arg);
    let members = fs::read_dir(&cache).unwrap().count();
    assert_eq!(members, 3, "one cache entry per member");
    let warm = fixture.build_ok_with("warm.cpio.gz", None, &cache_arg);
    assert!(cold == uncached, "a cold cache changed the image");
    assert!(warm == uncached, "a warm cache changed the image");
    assert_eq!(fs::read_dir(&cache).unwrap().count(), members);

    let output = fixture.build_with(
        "never.cpio.gz",
        None,
        &["--cache", fixture.path("motd/cache").to_str().unwrap()],
    );
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("member cache "),
        "{}",
        stderr(&output)
    );
}

#[test]
fn list_round_trips_the_spec() {
    let fixture = Fixture::new();
    fixture.build_ok("image.cpio.gz", None);
    let output = mkimage()
        .arg("list")
        .arg(fixture.path("image.cpio.gz"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(String::from_utf8(output.stdout).unwrap(), LISTING);

    // Three archives (before, at and after the large file); inode numbers
    // are sequential from a fixed start in each, nlink follows type.
    let image = fs::read(fixture.path("image.cpio.gz")).unwrap();
    let archives = mkimage::list::archives(image.as_slice()).unwrap();
    assert_eq!(archives.len(), 3);
    for archive in archives {
        let entries = mkimage::list(archive.as_slice()).unwrap();
        for (entry, ino) in entries.iter().zip(mkimage::image::FIRST_INO..) {
            assert_eq!(entry.ino, ino, "{}", entry.name);
            let dir = entry.mode & 0o170_000 == 0o040_000;
            assert_eq!(entry.nlink, if dir { 2 } else { 1 }, "{}", entry.name);
        }
    }
}

#[test]
fn errors_name_what_was_wrong() {
    let fixture = Fixture::new();
    fs::write(
        fixture.path("bad.txt"),
        "dir /etc 0755 0 0\n\ndir /etc/chaos 07x5 0 0\n",
    )
    .unwrap();
    let output = mkimage()
        .arg("build")
        .arg(fixture.path("bad.txt"))
        .args(["-o", "/nonexistent/never-written"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let want = format!(
        "{}:3: dir: mode \"07x5\" is not an octal number",
        fixture.path("bad.txt").display()
    );
    assert!(stderr(&output).contains(&want), "{}", stderr(&output));

    let output = fixture.build("image.cpio.gz", Some("yesterday"));
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("SOURCE_DATE_EPOCH=\"yesterday\""),
        "{}",
        stderr(&output)
    );
    assert!(!fixture.path("image.cpio.gz").exists());

    // A host file that vanished: no image, and no partial file left behind.
    fs::remove_file(fixture.path("init")).unwrap();
    let output = fixture.build("image.cpio.gz", None);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("/sbin/init: reading "),
        "{}",
        stderr(&output)
    );
    let leftovers: Vec<_> = fs::read_dir(fixture.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|name| name.to_string_lossy().contains("image"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let mut junk = b"070701 this is not a header".to_vec();
    junk.resize(200, b'.');
    fs::write(fixture.path("junk"), junk).unwrap();
    let output = mkimage()
        .arg("list")
        .arg(fixture.path("junk"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("header field c_ino at byte 6 is not 8 hex digits: \" this is\""),
        "{}",
        stderr(&output)
    );
}

#[test]
fn help_explains_each_subcommand() {
    let output = mkimage().arg("--help").output().unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(
        help.contains("build") && help.contains("gen_init_cpio"),
        "{help}"
    );
    assert!(help.contains("list") && help.contains("ls -l"), "{help}");
}

/// Runs GNU cpio in `dir` with `archive` on stdin.
fn gnu_cpio(dir: &Path, args: &[&str], archive: &[u8]) -> String {
    assert!(
        Path::new(GNU_CPIO).exists(),
        "{GNU_CPIO} is missing: install the cpio package (apt-get install cpio) to run this test"
    );
    let mut child = Command::new(GNU_CPIO)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(archive).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "cpio {args:?} failed: {}",
        stderr(&output)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// GNU cpio stops at an archive's trailer, so it reads an image one
/// archive at a time; its output for all of them, concatenated.
fn gnu_cpio_each(dir: &Path, args: &[&str], image: &[u8]) -> String {
    mkimage::list::archives(image)
        .unwrap()
        .iter()
        .map(|archive| gnu_cpio(dir, args, archive))
        .collect()
}

#[test]
fn gnu_cpio_reads_the_archive() {
    let fixture = Fixture::new();
    let archive = fixture.build_ok("image.cpio.gz", None);
    // Our own reader is pinned to LISTING by list_round_trips_the_spec.
    let entries = mkimage::list(archive.as_slice()).unwrap();

    // Names, in order, exactly as stored.
    let names = gnu_cpio_each(fixture.dir.path(), &["-t", "--quiet"], &archive);
    let ours: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names.lines().collect::<Vec<_>>(), ours);

    // Mode strings and symlink targets, as GNU cpio renders them.
    let verbose = gnu_cpio_each(
        fixture.dir.path(),
        &["-tv", "--quiet", "--numeric-uid-gid"],
        &archive,
    );
    assert_eq!(verbose.lines().count(), entries.len(), "{verbose}");
    for (line, entry) in verbose.lines().zip(&entries) {
        assert_eq!(line[..10], mkimage::mode::ls_string(entry.mode), "{line}");
    }
    assert!(verbose.contains(" bin -> sbin\n"), "{verbose}");
    assert!(verbose.contains(" etc/mtab -> /proc/mounts\n"), "{verbose}");

    // Extraction: device nodes need root, so leave them out.
    let root = fixture.path("root");
    fs::create_dir(&root).unwrap();
    gnu_cpio_each(
        &root,
        &[
            "-i",
            "--quiet",
            "-d",
            "--no-preserve-owner",
            "--nonmatching",
            "dev/*",
        ],
        &archive,
    );
    let mode = |path: &str| {
        fs::symlink_metadata(root.join(path))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    for (path, want) in [
        ("sbin/init", 0o755),
        ("etc/motd", 0o644),
        ("root", 0o700),
        ("home/user", 0o750),
        ("dev", 0o755),
        ("lib/big", 0o644),
    ] {
        assert_eq!(mode(path), want, "{path}: {:o}", mode(path));
    }
    assert_eq!(
        fs::read(root.join("sbin/init")).unwrap(),
        fs::read(fixture.path("init")).unwrap()
    );
    assert_eq!(
        fs::read(root.join("etc/motd")).unwrap(),
        b"welcome to chaos\n"
    );
    assert_eq!(fs::read_link(root.join("bin")).unwrap(), Path::new("sbin"));
    assert_eq!(
        fs::read_link(root.join("etc/mtab")).unwrap(),
        Path::new("/proc/mounts")
    );
    assert!(!root.join("dev/console").exists());
}
