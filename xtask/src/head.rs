//! The head on the administrator's own machine: `cargo xtask head`
//! installs tyd and netboot (the static tyd of the images, the host's
//! netboot) and runs `tyd serve --slurm` through systemd, as the unit
//! chaos-head.service, or in the foreground on a host without systemd.
//! `cargo xtask tyd ARGS` runs the same tyd by hand (`tyd init` first of
//! all), as the user who runs it.

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use chaos_agent::keys::HeadIdentity;
use xshell::{cmd, Shell};

/// Where the head's programs are installed.
pub const BIN_DIR: &str = "/usr/local/sbin";
pub const UNIT: &str = "chaos-head.service";
const UNIT_DIR: &str = "/etc/systemd/system";

/// The arguments of the head's `tyd serve`.
pub fn serve_args(dir: &Path, listen: Option<SocketAddrV4>) -> Vec<String> {
    let mut args = vec![
        "serve".to_string(),
        "--slurm".into(),
        "--dir".into(),
        dir.display().to_string(),
    ];
    if let Some(listen) = listen {
        args.extend(["--listen".into(), listen.to_string()]);
    }
    args
}

/// One word of an ExecStart= line, quoted as systemd reads it: no
/// specifier (`%`) or variable (`$`) expansion, blanks kept.
fn unit_word(word: &str) -> String {
    let mut out = String::from("\"");
    for c in word.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// chaos-head.service: `tyd` with `args`, restarted if it fails, started
/// at boot once the network is up.
pub fn unit(tyd: &Path, args: &[String]) -> String {
    let exec: Vec<String> = std::iter::once(tyd.display().to_string())
        .chain(args.iter().cloned())
        .map(|w| unit_word(&w))
        .collect();
    format!(
        "# Written by `cargo xtask head`: the head of a chaos cluster on this machine.\n\
         [Unit]\n\
         Description=chaos cluster head (tyd serve --slurm)\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         ExecStart={}\n\
         Restart=on-failure\n\
         RestartSec=2\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        exec.join(" ")
    )
}

/// Runs `program args` as root: directly when this is root, else through
/// sudo, which asks for the password on the terminal.
fn as_root(sh: &Shell, program: &str, args: &[String]) -> anyhow::Result<()> {
    let (program, args): (&str, Vec<String>) = if crate::deps::is_root() {
        (program, args.to_vec())
    } else {
        let mut all = vec![program.to_string()];
        all.extend_from_slice(args);
        ("sudo", all)
    };
    let line = args.join(" ");
    cmd!(sh, "{program} {args...}")
        .run()
        .with_context(|| format!("running {program} {line}"))
}

/// `cargo xtask tyd ARGS`: the node's static tyd with ARGS, as this user.
pub fn tyd(args: &[String]) -> anyhow::Result<()> {
    let tyd = crate::node::build()?.tyd;
    let status = std::process::Command::new(&tyd)
        .args(args)
        .status()
        .with_context(|| format!("running {}", tyd.display()))?;
    if !status.success() {
        bail!("tyd {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// `cargo xtask head`: installs the head's programs and starts the head
/// of the cluster whose identity is in `dir`.
pub fn command(dir: &Path, listen: Option<SocketAddrV4>) -> anyhow::Result<()> {
    let sh = crate::shell()?;
    let dir = std::path::absolute(dir).with_context(|| format!("--cluster {}", dir.display()))?;
    HeadIdentity::load(&dir).with_context(|| {
        format!(
            "reading the head's identity in {} (make one with `cargo xtask tyd init --dir {}`)",
            dir.display(),
            dir.display()
        )
    })?;
    // munged, slurmctld and Slurm's tools, from Debian's packages.
    crate::deps::install(&sh)?;
    println!("head: building tyd (static musl) and netboot");
    let tyd = crate::node::build()?.tyd;
    let netboot = crate::pxe::netboot_binary()?;
    let installed: Vec<PathBuf> = ["tyd", "netboot"]
        .iter()
        .map(|name| Path::new(BIN_DIR).join(name))
        .collect();
    for (from, to) in [&tyd, &netboot].into_iter().zip(&installed) {
        let words = ["-D", "-m", "0755"]
            .map(String::from)
            .into_iter()
            .chain([from.display().to_string(), to.display().to_string()])
            .collect::<Vec<_>>();
        as_root(&sh, "install", &words)?;
        println!("head: installed {}", to.display());
    }
    let args = serve_args(&dir, listen);
    if !Path::new("/run/systemd/system").is_dir() {
        println!(
            "head: no systemd on this machine: running tyd serve in the foreground \
             (Ctrl-C stops it; start `{} {}` from the machine's own service manager instead)",
            installed[0].display(),
            args.join(" ")
        );
        return as_root(&sh, &installed[0].display().to_string(), &args);
    }
    let staged = crate::build_dir().join(UNIT);
    std::fs::create_dir_all(crate::build_dir())?;
    std::fs::write(&staged, unit(&installed[0], &args))?;
    let target = Path::new(UNIT_DIR).join(UNIT);
    as_root(
        &sh,
        "install",
        &[
            "-m",
            "0644",
            &staged.display().to_string(),
            &target.display().to_string(),
        ]
        .map(String::from),
    )?;
    as_root(&sh, "systemctl", &["daemon-reload".into()])?;
    as_root(&sh, "systemctl", &["enable".into(), UNIT.into()])?;
    // Restarted, not started: a head already running takes the new tyd.
    as_root(&sh, "systemctl", &["restart".into(), UNIT.into()])?;
    println!(
        "head: {} runs tyd serve --slurm for the cluster in {}; it admits the lab's PCs \
         for 15 minutes from now (`sudo tyd enroll --for 15m` opens the window again, \
         `sudo tyd nodes --pending` lists those that wait). Its log: `journalctl -u {UNIT} -f`",
        target.display(),
        dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_runs_the_head_with_its_words_quoted() {
        let args = serve_args(
            Path::new("/home/ad min/lab%1"),
            Some("192.168.1.10:7700".parse().unwrap()),
        );
        let text = unit(Path::new("/usr/local/sbin/tyd"), &args);
        assert!(
            text.lines().any(|l| l
                == "ExecStart=\"/usr/local/sbin/tyd\" \"serve\" \"--slurm\" \"--dir\" \
                    \"/home/ad min/lab%%1\" \"--listen\" \"192.168.1.10:7700\""),
            "{text}"
        );
        for line in [
            "[Service]",
            "Restart=on-failure",
            "After=network-online.target",
            "WantedBy=multi-user.target",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
        assert_eq!(unit_word("a\"b\\c$d"), "\"a\\\"b\\\\c$$d\"");
    }

    /// systemd itself reads the unit (this machine need not run systemd):
    /// no unknown key, no bad quoting, an executable command.
    #[test]
    fn systemd_accepts_the_unit() {
        let dir = std::env::temp_dir().join(format!("chaos-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let args = serve_args(
            Path::new("/home/ad min/lab%1"),
            Some("192.168.1.10:7700".parse().unwrap()),
        );
        let path = dir.join(UNIT);
        // A stand-in for the installed tyd, which a test machine lacks.
        std::fs::write(&path, unit(Path::new("/bin/sh"), &args)).unwrap();
        let output = std::process::Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .expect("systemd-analyze (package systemd; `cargo xtask deps`)");
        let _ = std::fs::remove_dir_all(&dir);
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success() && said.trim().is_empty(), "{said}");
    }
}
