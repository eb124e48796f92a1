//! The head's share as a drone sees it, for `cargo xtask bench`
//! (DESIGN.md "Jobs' files"): how long a drone takes from its welcome to
//! /home mounted, and what the share moves beside a plain TCP copy
//! between the same two VMs over the overlay, so the ratio tells what NFS
//! costs on top of WireGuard. Measured, never asserted.
//!
//! One QEMU cluster, a head and one drone booted as `qemu-cluster` boots
//! them but both in expert mode, so the bench types on their serial
//! consoles. Their images are qemu-cluster's (without the demonstration)
//! with [`SCRIPT`] beside, whose every step ends in one line for the host
//! to read; times are the guests' own (/proc/uptime), not the host's.
//!
//! There is no copy over the bare LAN: each node's firewall drops every
//! LAN port it does not know, and busybox's nc cannot choose a client's
//! port, which a simultaneous open (each end dialling the other, each
//! firewall taking the other's packets for replies) would need.

use std::time::Duration;

use anyhow::{bail, Context};
use chaos_contract::fact::{self, Fact};

use crate::cluster::{self, Role};
use crate::kernel::Kernel;
use crate::node::Binaries;
use crate::vm::{Hub, Vm};

/// The size of every copy, in MiB (the script's `mb`).
pub const SIZE_MIB: u64 = 64;
const BYTES: u64 = SIZE_MIB * 1024 * 1024;

/// Where both images carry the bench's steps.
const SCRIPT: &str = "/usr/local/lib/chaos-sharebench.sh";

/// What every step's line starts with. The commands typed, which the
/// shell echoes, never hold it.
const MARK: &str = "sharebench: ";

/// The bench's steps (after `mb=`[`SIZE_MIB`]), typed at the expert
/// shells as `sh SCRIPT <step> <args>`; each prints one line
/// `sharebench: <name> key=value...`. Root on a drone is nobody on the
/// share, so the directory is everyone's. A TCP copy runs with `nc -e`
/// at both ends, so nc, which moves a few kB at a time, is not in the
/// data path: `dd` writes the connection in blocks of 1 MiB and the
/// receiver's `sink` reads it so (whole blocks: this busybox's dd counts
/// records, not bytes). The sink times the copy from the connection up
/// to the sender's end, so the handshake is not in it.
const SCRIPT_TEXT: &str = r#"set -u
dir=/home/bench
now() { read up rest < /proc/uptime; echo "$up"; }
size() { stat -c %s "$1" 2>/dev/null || echo 0; }
case "$1" in
prepare)
    mkdir -p $dir && chmod 1777 $dir && dd if=/dev/zero of=$dir/f bs=1M count=$mb status=none
    echo "sharebench: prepared rc=$? bytes=$(size $dir/f)" ;;
read)
    a=$(now); cat $dir/f > /dev/null; rc=$?; b=$(now)
    echo "sharebench: read rc=$rc bytes=$(size $dir/f) start=$a end=$b" ;;
write)
    rm -f $dir/w
    a=$(now); dd if=/dev/zero of=$dir/w bs=1M count=$mb conv=fsync status=none; rc=$?; b=$(now)
    echo "sharebench: write rc=$rc bytes=$(size $dir/w) start=$a end=$b" ;;
sink)
    a=$(now); r=$(dd of=/dev/null bs=1M iflag=fullblock 2>&1); rc=$?; b=$(now)
    blocks=${r%% records in*}
    case "$blocks" in
    *+0) n=$((${blocks%+0} * 1048576)) ;;
    *) n="unknown($blocks)" ;;
    esac
    echo "sharebench: $2 rc=$rc bytes=$n start=$a end=$b" >&2 ;;
listen)
    nc -l -p "$2" -e sh "$0" sink "$3" < /dev/null &
    # Until nc listens, for 10 s.
    i=0
    until netstat -tln 2>/dev/null | grep -q ":$2 "; do
        i=$((i + 1))
        [ $i -le 100 ] || break
        sleep 0.1
    done
    netstat -tln 2>/dev/null | grep -q ":$2 "
    echo "sharebench: listening rc=$? port=$2" ;;
send)
    nc "$2" "$3" -e dd if=/dev/zero bs=1M count=$mb status=none
    echo "sharebench: sent rc=$?" ;;
*)
    echo "sharebench: $1 rc=2 unknown step" ;;
esac
"#;

fn script() -> String {
    format!("mb={SIZE_MIB}\n{SCRIPT_TEXT}")
}

/// What init prints once the expert shell is on the console.
const SHELL_UP: &str = "expert mode: shell on the console";
/// Deadlines: a boot (TCG, a loaded machine), and one step of the bench.
const BOOT: Duration = Duration::from_secs(300);
const STEP: Duration = Duration::from_secs(180);

/// One copy as its timing end saw it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Transfer {
    pub bytes: u64,
    pub took: Duration,
}

impl Transfer {
    pub fn mib_per_s(&self) -> f64 {
        self.bytes as f64 / (1024.0 * 1024.0) / self.took.as_secs_f64().max(1e-3)
    }
}

/// The figures of one cluster boot.
#[derive(Debug)]
pub struct Share {
    /// Per drone, its welcome to /home mounted, as tyd timed it.
    pub mounts: Vec<Duration>,
    /// On the drone: `cat` of the head's file, and `dd ... conv=fsync`.
    pub read: Transfer,
    pub write: Transfer,
    /// Drone to head, over the overlay (WireGuard).
    pub tcp_overlay: Transfer,
}

/// Boots a head and a drone on `kernel` and measures the share and the
/// TCP copy (a few minutes under TCG).
pub fn measure(kernel: &Kernel, binaries: &Binaries) -> anyhow::Result<Share> {
    let dir = crate::build_dir().join("bench").join("share");
    cluster::identity(&dir)?;
    println!("bench: share: building a head's and a drone's image with the bench's script");
    let with_script =
        |spec: &mut mkimage::Spec| Ok(spec.file(SCRIPT, 0o644, script()).map(drop)?);
    let head_image =
        cluster::member_image(kernel, binaries, &dir, Role::Head, "head", with_script)?;
    let drone = Role::Drone { head: None };
    let drone_image = cluster::member_image(kernel, binaries, &dir, drone, "drone", with_script)?;
    let hub = Hub::start()?;
    println!("bench: share: booting the head (expert mode)");
    let mut head = Vm::start(&cluster::node_config(
        kernel,
        &head_image,
        &hub,
        0,
        "chaos.mode=expert",
    )?)?;
    let serving = head
        .expect_fact(fact::NODE, &[("state", "serving")], BOOT)
        .context("the head's tyd serving")?;
    let head_overlay = address(&serving, "overlay")?;
    shell_up(&mut head).context("the head's expert shell")?;
    // Before the drone boots, so its mount is timed on a quiet head.
    println!("bench: share: the head writes {SIZE_MIB} MiB to /home/bench");
    step(&mut head, "prepare", "prepared", STEP)
        .and_then(|said| moved(&said, BYTES))
        .context("on the head")?;

    println!("bench: share: booting the drone (expert mode)");
    let mut drone = Vm::start(&cluster::node_config(
        kernel,
        &drone_image,
        &hub,
        1,
        "chaos.mode=expert",
    )?)?;
    let share = drone
        .expect_fact(fact::SHARE, &[("path", "/home")], BOOT)
        .context("the drone mounting /home")?;
    if share.get("state") != Some("mounted") {
        bail!("the drone did not mount /home: {share}");
    }
    let mount = share
        .get("ms")
        .and_then(|ms| ms.parse().ok())
        .map(Duration::from_millis)
        .with_context(|| format!("no time in {share}"))?;
    println!(
        "bench: share: the drone mounted /home {} ms after its welcome",
        mount.as_millis()
    );
    shell_up(&mut drone).context("the drone's expert shell")?;

    println!("bench: share: the drone reads the {SIZE_MIB} MiB file from the share");
    let read = step(&mut drone, "read", "read", STEP)
        .and_then(|said| transfer(&said, BYTES))
        .context("reading the share on the drone")?;
    println!("bench: share: read at {:.1} MiB/s", read.mib_per_s());
    println!("bench: share: the drone writes {SIZE_MIB} MiB to the share");
    let write = step(&mut drone, "write", "write", STEP)
        .and_then(|said| transfer(&said, BYTES))
        .context("writing the share on the drone")?;
    println!("bench: share: wrote at {:.1} MiB/s", write.mib_per_s());

    let port = chaos_agent::slurm::SRUN_PORTS.0;
    println!(
        "bench: share: TCP copy of {SIZE_MIB} MiB drone -> head over the overlay, port {port}"
    );
    let tcp_overlay = copy(&mut head, &mut drone, &head_overlay, port)
        .context("the TCP copy over the overlay")?;
    println!(
        "bench: share: TCP over the overlay at {:.1} MiB/s",
        tcp_overlay.mib_per_s()
    );

    Ok(Share {
        mounts: vec![mount],
        read,
        write,
        tcp_overlay,
    })
}

/// qemu-cluster's image of `role` from `dir`'s identity, with [`SCRIPT`].
/// The address in a fact's `key` (`10.99.0.1/16`), without its prefix.
fn address(fact: &Fact, key: &str) -> anyhow::Result<String> {
    fact.get(key)
        .and_then(|value| value.split('/').next())
        .filter(|address| address.parse::<std::net::Ipv4Addr>().is_ok())
        .map(str::to_string)
        .with_context(|| format!("no IPv4 address in {key} of {fact}"))
}

/// Waits for the expert shell, which init starts once its services are,
/// so before or after what the caller waited for.
fn shell_up(vm: &mut Vm) -> anyhow::Result<()> {
    if !vm.console().contains(SHELL_UP) {
        vm.expect(SHELL_UP, BOOT)?;
    }
    Ok(())
}

/// Types `sh SCRIPT <args>` and returns the line named `name` it prints.
fn step(vm: &mut Vm, args: &str, name: &str, timeout: Duration) -> anyhow::Result<Said> {
    vm.type_serial(&format!("sh {SCRIPT} {args}\n"))?;
    said(vm, name, timeout).with_context(|| format!("`sh {SCRIPT} {args}`"))
}

/// The next line named `name`.
fn said(vm: &mut Vm, name: &str, timeout: Duration) -> anyhow::Result<Said> {
    let line = vm.expect_line(&format!("{MARK}{name} "), timeout)?;
    Said::parse(&line).with_context(|| format!("no step's line in {line:?}"))
}

/// A copy from the drone to the head's `address`, port `port`: the
/// head listens, then the drone sends; the head's end times it.
fn copy(head: &mut Vm, drone: &mut Vm, address: &str, port: u16) -> anyhow::Result<Transfer> {
    let listening =
        step(head, &format!("listen {port} tcp"), "listening", STEP).context("on the head")?;
    if listening.get("rc") != Some("0") {
        bail!("the head does not listen: {}", listening.line);
    }
    drone.type_serial(&format!("sh {SCRIPT} send {address} {port}\n"))?;
    let received = said(head, "tcp", STEP).context("the head receiving")?;
    let sent = said(drone, "sent", STEP).context("the drone sending")?;
    if sent.get("rc") != Some("0") {
        bail!("the drone's copy failed: {}", sent.line);
    }
    transfer(&received, BYTES)
}

/// Fails unless a step's line reports `bytes` moved without an error.
fn moved(said: &Said, bytes: u64) -> anyhow::Result<()> {
    if said.get("rc") != Some("0") {
        bail!("{} failed: {}", said.name, said.line);
    }
    let moved: u64 = said.number("bytes")?;
    if moved != bytes {
        bail!(
            "{} moved {moved} bytes, expected {bytes}: {}",
            said.name,
            said.line
        );
    }
    Ok(())
}

/// The copy a step's line reports, if it moved `bytes` without an error.
fn transfer(said: &Said, bytes: u64) -> anyhow::Result<Transfer> {
    moved(said, bytes)?;
    let (start, end): (f64, f64) = (said.number("start")?, said.number("end")?);
    if end < start {
        bail!("{} ended before it started: {}", said.name, said.line);
    }
    Ok(Transfer {
        bytes,
        took: Duration::from_secs_f64(end - start),
    })
}

/// One line of [`SCRIPT`]'s: `sharebench: <name> key=value...`, wherever
/// on the console's line it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Said {
    name: String,
    fields: Vec<(String, String)>,
    line: String,
}

impl Said {
    fn parse(line: &str) -> Option<Said> {
        let start = line.find(MARK)? + MARK.len();
        let mut words = line[start..].split_ascii_whitespace();
        let name = words.next()?.to_string();
        let fields = words
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Some(Said {
            name,
            fields,
            line: line[start - MARK.len()..].trim_end().to_string(),
        })
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn number<T: std::str::FromStr>(&self, key: &str) -> anyhow::Result<T> {
        self.get(key)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no number {key}= in {}", self.line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_steps_lines_and_their_timings() {
        let said = Said::parse(
            "[   41.2] tyd: x\r sharebench: read rc=0 bytes=67108864 start=40.12 end=44.62\r",
        )
        .unwrap();
        assert_eq!(said.name, "read");
        assert_eq!(
            said.line,
            "sharebench: read rc=0 bytes=67108864 start=40.12 end=44.62"
        );
        let copy = transfer(&said, BYTES).unwrap();
        assert_eq!(copy.took, Duration::from_millis(4500));
        assert!((copy.mib_per_s() - 64.0 / 4.5).abs() < 1e-9);

        let prepared = Said::parse("sharebench: prepared rc=0 bytes=67108864").unwrap();
        assert!(moved(&prepared, BYTES).is_ok());
        assert!(transfer(&prepared, BYTES).is_err(), "it times nothing");

        for (line, why) in [
            ("sharebench: read rc=1 bytes=0 start=1 end=2", "failed"),
            (
                "sharebench: write rc=0 bytes=1000 start=1 end=2",
                "moved 1000 bytes",
            ),
            (
                "sharebench: tcp rc=0 bytes=unknown(63+1) start=1 end=2",
                "no number bytes=",
            ),
            (
                "sharebench: write rc=0 bytes=67108864 start=9.5 end=2",
                "ended before",
            ),
            ("sharebench: read rc=0 start=1 end=2", "no number bytes="),
        ] {
            let error = transfer(&Said::parse(line).unwrap(), BYTES).unwrap_err();
            assert!(format!("{error:#}").contains(why), "{line}: {error:#}");
        }
        // The command typed, which the shell echoes, is no step's line.
        assert_eq!(Said::parse(&format!("head:/tmp# sh {SCRIPT} read")), None);
        assert_eq!(Said::parse("sharebench: "), None);
    }

    #[test]
    fn the_script_is_one_the_shell_reads() {
        let status = std::process::Command::new("sh")
            .args(["-n", "-c", &script()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}
