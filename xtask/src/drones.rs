//! Which cluster the lab's served and burned artifacts join: the
//! `--cluster DIR [--head ADDR]` of `cargo xtask image`, `pxe`, `iso` and
//! `appliance`. The choice is remembered in build/ and every one of them
//! follows it, so a lab's PXE tree, its CD and its VM appliance join the
//! same cluster unless the administrator says otherwise; when the choice
//! changes, the artifacts built for the old one are named.
//!
//! These artifacts are drones only ([`Role::Drone`]): anyone on the LAN can
//! download a PXE image or read a CD, so the head's private key and the
//! munge key never go into them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use chaos_agent::keys::{self, ClusterIdentity};

use crate::cluster::{Membership, Role};

/// What `cargo xtask pxe`, `iso` and `appliance` build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Artifact {
    /// build/pxe and build/chaos.efi.
    Pxe,
    /// build/chaos.iso.
    Iso,
    /// build/chaos.iso and the appliance made from it.
    Appliance,
}

/// `cargo xtask pxe`, `iso` or `appliance`: `what` (and the image it is
/// made from) for `kernel`, drones of the cluster the options choose.
pub fn command(
    what: Artifact,
    kernel: crate::image::KernelChoice,
    cluster: Option<PathBuf>,
    head: Option<String>,
    no_cluster: bool,
) -> anyhow::Result<()> {
    let asked = Asked {
        cluster,
        head,
        no_cluster,
    };
    let mut built = vec![crate::image::default_path()];
    built.extend(match what {
        Artifact::Pxe => vec![crate::pxe::default_dir(), crate::uki::default_path()],
        Artifact::Iso => vec![crate::iso::default_path()],
        Artifact::Appliance => vec![crate::iso::default_path(), crate::appliance::default_path()],
    });
    build(&asked, &built, |membership| match what {
        Artifact::Pxe => crate::pxe::command(kernel, membership),
        Artifact::Iso => crate::iso::command(kernel, membership, false),
        Artifact::Appliance => crate::iso::command(kernel, membership, true),
    })
}

/// What a command was asked on its command line.
#[derive(Clone, Debug, Default)]
pub struct Asked {
    pub cluster: Option<PathBuf>,
    pub head: Option<String>,
    /// Build artifacts that join nothing, and forget the remembered choice.
    pub no_cluster: bool,
}

/// A cluster the artifacts join: the identity directory and, optionally,
/// the head's address baked in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    pub dir: PathBuf,
    pub head: Option<String>,
}

impl Choice {
    pub fn membership(&self) -> Membership {
        Membership {
            dir: self.dir.clone(),
            role: Role::Drone {
                head: self.head.clone(),
            },
        }
    }

    /// The cluster as an administrator recognises it: the directory and the
    /// fingerprint of the head's key, which its drones pin.
    fn describe(&self) -> anyhow::Result<String> {
        let identity = load(&self.dir)?;
        let found = match &self.head {
            Some(head) => format!("at {head}"),
            None => "by its beacon".into(),
        };
        Ok(format!(
            "the cluster in {} (head key {}), finding the head {found}",
            self.dir.display(),
            keys::fingerprint(&identity.head_public)
        ))
    }
}

/// The file that remembers the choice.
pub fn record_path() -> PathBuf {
    crate::build_dir().join("lab-cluster")
}

/// Every artifact in build/ that a lab serves or burns, by default path.
pub fn artifacts() -> [PathBuf; 5] {
    [
        crate::image::default_path(),
        crate::pxe::default_dir(),
        crate::uki::default_path(),
        crate::iso::default_path(),
        crate::appliance::default_path(),
    ]
}

fn load(dir: &Path) -> anyhow::Result<ClusterIdentity> {
    ClusterIdentity::load(dir).with_context(|| {
        format!(
            "reading the cluster identity in {} (make one with `cargo xtask tyd init --dir {}`)",
            dir.display(),
            dir.display()
        )
    })
}

/// The choice `asked` makes, given the one remembered (`recorded`).
pub fn decide(asked: &Asked, recorded: Option<Choice>) -> anyhow::Result<Option<Choice>> {
    match asked {
        Asked {
            cluster: Some(_),
            no_cluster: true,
            ..
        } => bail!("--cluster and --no-cluster contradict each other: give one"),
        Asked {
            cluster: None,
            head: Some(_),
            ..
        } => bail!("--head is the head of a cluster: give its --cluster too"),
        Asked {
            no_cluster: true, ..
        } => Ok(None),
        Asked {
            cluster: Some(dir),
            head,
            ..
        } => {
            // Absolute, so the record means the same from any directory.
            let dir =
                std::path::absolute(dir).with_context(|| format!("--cluster {}", dir.display()))?;
            if let Some(head) = head {
                chaos_agent::drone::parse_head(head).context("--head")?;
            }
            load(&dir)?;
            Ok(Some(Choice {
                dir,
                head: head.clone(),
            }))
        }
        Asked { .. } => Ok(recorded),
    }
}

/// The record's text: `cluster = DIR` and optionally `head = ADDR`.
fn render(choice: &Choice) -> String {
    let mut text = format!(
        "# The cluster the lab's artifacts join, chosen with --cluster and followed by\n\
         # cargo xtask image, pxe, iso and appliance; --no-cluster forgets it.\n\
         cluster = {}\n",
        choice.dir.display()
    );
    if let Some(head) = &choice.head {
        text.push_str(&format!("head = {head}\n"));
    }
    text
}

fn parse(text: &str, path: &Path) -> anyhow::Result<Choice> {
    let mut dir = None;
    let mut head = None;
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = || format!("{}: line {}", path.display(), number + 1);
        match line.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
            Some(("cluster", value)) if !value.is_empty() => dir = Some(PathBuf::from(value)),
            Some(("head", value)) if !value.is_empty() => head = Some(value.to_string()),
            _ => bail!(
                "{}: {line:?} (expected `cluster = DIR` or `head = ADDR`; \
                 --cluster or --no-cluster writes the file anew)",
                at()
            ),
        }
    }
    let dir = dir.with_context(|| {
        format!(
            "{}: no `cluster = DIR` line (--cluster or --no-cluster writes the file anew)",
            path.display()
        )
    })?;
    Ok(Choice { dir, head })
}

/// The remembered choice, if there is one.
pub fn recorded(path: &Path) -> anyhow::Result<Option<Choice>> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, path).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn remember(path: &Path, choice: Option<&Choice>) -> anyhow::Result<()> {
    match choice {
        Some(choice) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(path, render(choice))
                .with_context(|| format!("writing {}", path.display()))
        }
        None => match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", path.display()))
            }
            _ => Ok(()),
        },
    }
}

/// A path as the administrator typed it: relative to the workspace.
fn shown(path: &Path) -> String {
    path.strip_prefix(crate::root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Runs `build` (which writes `built`) for the cluster `asked` chooses,
/// remembers the choice, and says which cluster the result joins, or
/// loudly that it joins none; when the choice changed, names the other
/// artifacts in build/ that were made for the old one.
pub fn build(
    asked: &Asked,
    built: &[PathBuf],
    build: impl FnOnce(Option<&Membership>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let record = record_path();
    let before = recorded(&record)?;
    let choice = decide(asked, before.clone())?;
    build(choice.as_ref().map(Choice::membership).as_ref())?;
    remember(&record, choice.as_ref())?;
    let names = built
        .iter()
        .map(|p| shown(p))
        .collect::<Vec<_>>()
        .join(", ");
    let remembered = asked.cluster.is_none() && choice.is_some();
    match &choice {
        Some(choice) => println!(
            "lab: {names}: drones of {}{}",
            choice.describe()?,
            if remembered {
                format!(" (the --cluster remembered in {})", shown(&record))
            } else {
                String::new()
            }
        ),
        None => println!(
            "lab: WARNING: what was built ({names}) joins no cluster: tyd is in the image \
             but not started, so a PC that boots it comes up on its own. Make an identity \
             with `cargo xtask tyd init --dir DIR` and build with --cluster DIR."
        ),
    }
    if choice != before {
        let stale: Vec<String> = artifacts()
            .into_iter()
            .filter(|a| a.exists() && !built.contains(a))
            .map(|a| shown(&a))
            .collect();
        if !stale.is_empty() {
            println!(
                "lab: WARNING: the lab's cluster changed, and {} were built for the \
                 previous choice: rebuild them so that everything the lab boots joins \
                 one cluster",
                stale.join(", ")
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("drones-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        keys::init(&dir).unwrap();
        dir
    }

    #[test]
    fn the_choice_follows_the_record_until_told_otherwise() {
        let dir = identity("decide");
        let other = Choice {
            dir: "/elsewhere".into(),
            head: None,
        };
        let asked = |cluster: Option<&Path>, head: Option<&str>, no_cluster| Asked {
            cluster: cluster.map(Path::to_path_buf),
            head: head.map(String::from),
            no_cluster,
        };
        let ours = Choice {
            dir: dir.clone(),
            head: Some("10.0.0.1:7700".into()),
        };
        assert_eq!(
            decide(
                &asked(Some(&dir), Some("10.0.0.1:7700"), false),
                Some(other.clone())
            )
            .unwrap(),
            Some(ours)
        );
        assert_eq!(
            decide(&asked(None, None, false), Some(other.clone())).unwrap(),
            Some(other.clone())
        );
        assert_eq!(decide(&asked(None, None, false), None).unwrap(), None);
        assert_eq!(decide(&asked(None, None, true), Some(other)).unwrap(), None);
        for (asked, error) in [
            (
                asked(None, Some("10.0.0.1"), false),
                "give its --cluster too",
            ),
            (asked(Some(&dir), None, true), "contradict"),
            (
                asked(Some(&dir), Some("10.0.0.1:x"), false),
                "--head: head address \"10.0.0.1:x\"",
            ),
            (
                asked(Some(Path::new("/no/such/identity")), None, false),
                "make one with `cargo xtask tyd init --dir /no/such/identity`",
            ),
        ] {
            let got = format!("{:#}", decide(&asked, None).unwrap_err());
            assert!(got.contains(error), "{got}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_record_reads_back_and_a_broken_one_is_named() {
        let path = Path::new("build/lab-cluster");
        for choice in [
            Choice {
                dir: "/home/admin/lab".into(),
                head: None,
            },
            Choice {
                dir: "/srv/lab".into(),
                head: Some("head.lab:7700".into()),
            },
        ] {
            assert_eq!(parse(&render(&choice), path).unwrap(), choice);
        }
        assert_eq!(
            parse("head = 10.0.0.1\n", path).unwrap_err().to_string(),
            "build/lab-cluster: no `cluster = DIR` line (--cluster or --no-cluster writes the file anew)"
        );
        assert_eq!(
            parse("cluster = /x\ncolour = red\n", path)
                .unwrap_err()
                .to_string(),
            "build/lab-cluster: line 2: \"colour = red\" (expected `cluster = DIR` or \
             `head = ADDR`; --cluster or --no-cluster writes the file anew)"
        );
    }

    #[test]
    fn a_drone_carries_no_secret_of_the_head() {
        let dir = identity("secrets");
        keys::munge_key(&dir).unwrap();
        let choice = Choice {
            dir: dir.clone(),
            head: None,
        };
        let mut spec = mkimage::Spec::new();
        let builtin = crate::kernel::Kernel {
            release: "test".into(),
            vmlinuz: "bzImage".into(),
            modules: None,
        };
        crate::cluster::add(&mut spec, &builtin, &choice.membership()).unwrap();
        let head_key = std::fs::read_to_string(dir.join(keys::HEAD_KEY)).unwrap();
        let (munge, _) = keys::munge_key(&dir).unwrap();
        for (path, entry) in spec.iter() {
            assert!(!path.ends_with(keys::HEAD_KEY), "{path} in a drone");
            assert!(!path.ends_with(keys::MUNGE_KEY), "{path} in a drone");
            if let mkimage::Kind::File(mkimage::Content::Bytes(bytes)) = &entry.kind {
                let text = String::from_utf8_lossy(bytes);
                assert!(!text.contains(head_key.trim()), "the head key in {path}");
                assert!(
                    !bytes.windows(32).any(|w| w == &munge[..32]),
                    "the munge key in {path}"
                );
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
