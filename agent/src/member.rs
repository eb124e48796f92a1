// SPDX-License-Identifier: GPL-3.0-or-later
//! A member node's own state, as a drone's tyd keeps it with
//! `--manage-node` (what a chaos image's service asks for): once the head
//! admits the node, its clock and host name as the head gave them, the
//! cluster's accounts laid over the image's, the munge key, the hosts block
//! naming every member, the head's shares mounted, and last the joined
//! file that starts the services that run only on a member (munged,
//! slurmd); on leave the joined file goes, and those services and the
//! shares with it.
//!
//! It never talks to the network. Every file is written whole, to a
//! temporary name first, so a reader never sees half of one. The system
//! calls (clock, host name, owners) sit behind [`System`], so the logic is
//! tested on files under a scratch root.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chaos_contract::accounts::Accounts;
use chaos_contract::{member, paths};

use crate::files;
use crate::log::info;
use crate::proto::Welcome;
use crate::shares::Mounts;

/// A clock this far from the head's is set to the head's.
const CLOCK_SLACK: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the image's accounts ({path}): {0}", path = paths::ACCOUNTS_PASSWD)]
    ImageAccounts(String),
    #[error("the head's accounts: {0}")]
    SharedAccounts(String),
    #[error(
        "the head runs Slurm but this image has no munge account: build the image with \
         Slurm (cargo xtask image --cluster DIR)"
    )]
    NoMunge,
    #[error(transparent)]
    System(#[from] SystemError),
}

/// What the system refused tyd, and the kernel's reason.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct SystemError {
    pub what: String,
    pub source: nix::Error,
}

impl SystemError {
    fn of(what: impl Into<String>) -> impl FnOnce(nix::Error) -> SystemError {
        let what = what.into();
        move |source| SystemError { what, source }
    }
}

/// What tyd asks of the system for its node.
pub trait System {
    fn set_clock(&self, since_epoch: Duration) -> Result<(), SystemError>;
    fn set_hostname(&self, name: &str) -> Result<(), SystemError>;
    fn chown(&self, path: &Path, uid: u32, gid: u32) -> Result<(), SystemError>;
}

/// The running node.
#[derive(Debug)]
pub struct Linux;

impl System for Linux {
    fn set_clock(&self, since_epoch: Duration) -> Result<(), SystemError> {
        let time = nix::sys::time::TimeSpec::from_duration(since_epoch);
        nix::time::clock_settime(nix::time::ClockId::CLOCK_REALTIME, time)
            .map_err(SystemError::of("setting the clock"))
    }

    fn set_hostname(&self, name: &str) -> Result<(), SystemError> {
        nix::unistd::sethostname(name)
            .map_err(SystemError::of(format!("setting the host name {name}")))
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> Result<(), SystemError> {
        nix::unistd::chown(path, Some(uid.into()), Some(gid.into())).map_err(SystemError::of(
            format!("giving {} to {uid}:{gid}", path.display()),
        ))
    }
}

/// The node tyd keeps, with its files under `root` (`/` on a node).
pub struct Node<S: System> {
    root: PathBuf,
    system: S,
    /// The image's own accounts, read at the first admission.
    image: Option<Accounts>,
    shares: Mounts,
}

impl<S: System> Node<S> {
    pub fn new(root: impl Into<PathBuf>, system: S) -> Self {
        Node {
            root: root.into(),
            system,
            image: None,
            shares: Mounts::default(),
        }
    }

    fn path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// Everything a member needs, from the head's welcome and the members
    /// it knows of (overlay address, name) for the hosts block; the joined
    /// file last, so the member services find the rest in place.
    pub fn admitted(
        &mut self,
        welcome: &Welcome,
        head: Ipv4Addr,
        members: &[(Ipv4Addr, String)],
    ) -> Result<(), MemberError> {
        self.clock(welcome.clock_ns)?;
        if let Some(grant) = &welcome.slurm {
            let accounts = self.accounts(&grant.accounts)?;
            self.munge_key(&grant.munge_key, &accounts)?;
        }
        self.system
            .set_hostname(&welcome.name)
            .map_err(MemberError::System)?;
        self.write(paths::HOSTNAME, format!("{}\n", welcome.name), 0o644)?;
        self.members(members)?;
        let Some(grant) = &welcome.slurm else {
            return Ok(());
        };
        let joined = member::joined_file(head, &welcome.name, welcome.join);
        if grant.shares.is_empty() {
            return self.write(paths::JOINED, joined, 0o644);
        }
        // The services start once the shares are there to run jobs in.
        let path = self.path(paths::JOINED);
        let write = move || {
            if let Err(e) = files::replace(&path, joined.as_bytes(), 0o644, None) {
                info(format!("writing {}: {e}", path.display()));
            }
        };
        self.shares
            .admit(welcome.join, head, welcome.overlay, &grant.shares, write);
        Ok(())
    }

    /// The node's clock, set to the head's when it is off by more than
    /// [`CLOCK_SLACK`] (munge refuses credentials 5 minutes off).
    fn clock(&self, head_ns: u64) -> Result<(), MemberError> {
        let head = Duration::from_nanos(head_ns);
        let ours = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let off = head.abs_diff(ours);
        if off > CLOCK_SLACK {
            self.system.set_clock(head).map_err(MemberError::System)?;
            info(format!(
                "clock set to the head's (it was {} off)",
                chaos_contract::duration::show_rough(off)
            ));
        }
        Ok(())
    }

    /// The cluster's accounts over the image's own, in the live passwd and
    /// group files; what was written.
    pub fn accounts(&mut self, shared: &Accounts) -> Result<Accounts, MemberError> {
        shared.check().map_err(MemberError::SharedAccounts)?;
        if self.image.is_none() {
            let read = |path: &str| {
                std::fs::read_to_string(self.path(path)).or_else(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => Ok(String::new()),
                    _ => Err(MemberError::Io {
                        what: "reading",
                        path: self.path(path),
                        source: e,
                    }),
                })
            };
            let (passwd, group) = (read(paths::ACCOUNTS_PASSWD)?, read(paths::ACCOUNTS_GROUP)?);
            let image = Accounts::parse(&passwd, &group)
                .map_err(|e| MemberError::ImageAccounts(e.to_string()))?;
            self.image = Some(image);
        }
        let merged = self.image.as_ref().expect("read above").merged(shared);
        self.write(paths::PASSWD, merged.passwd(), 0o644)?;
        self.write(paths::GROUP, merged.group(), 0o644)?;
        Ok(merged)
    }

    /// The munge key, readable by munge alone, in a directory only munge
    /// may enter.
    fn munge_key(&self, key: &[u8], accounts: &Accounts) -> Result<(), MemberError> {
        let munge = accounts
            .users
            .iter()
            .find(|u| u.name == "munge")
            .ok_or(MemberError::NoMunge)?;
        let file = self.path(paths::MUNGE_KEY);
        let dir = file.parent().expect("the key is in a directory");
        let io = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| MemberError::Io { what, path, source }
        };
        files::directory(dir, 0o700, None).map_err(io("making", dir))?;
        self.system
            .chown(dir, munge.uid, munge.gid)
            .map_err(MemberError::System)?;
        // munged starts only once the joined file is written, after this.
        files::replace(&file, key, 0o400, None).map_err(io("writing", &file))?;
        self.system
            .chown(&file, munge.uid, munge.gid)
            .map_err(MemberError::System)
    }

    /// The hosts file's block of members: every member's name at its
    /// overlay address.
    pub fn members(&self, members: &[(Ipv4Addr, String)]) -> Result<(), MemberError> {
        let path = self.path(paths::HOSTS);
        let hosts = std::fs::read_to_string(&path).unwrap_or_default();
        self.write(
            paths::HOSTS,
            member::hosts_with_members(&hosts, members),
            0o644,
        )
    }

    /// No longer a member: the member services stop, and the shares go.
    pub fn left(&self) {
        let _ = std::fs::remove_file(self.path(paths::JOINED));
        self.shares.leave();
    }

    fn write(&self, path: &str, text: String, mode: u32) -> Result<(), MemberError> {
        let path = self.path(path);
        files::replace(&path, text.as_bytes(), mode, None).map_err(|source| MemberError::Io {
            what: "writing",
            path,
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Peer, SlurmGrant};
    use std::cell::RefCell;
    use std::os::unix::fs::PermissionsExt;

    #[derive(Default)]
    struct Recorder {
        calls: RefCell<Vec<String>>,
    }

    impl System for &Recorder {
        fn set_clock(&self, since_epoch: Duration) -> Result<(), SystemError> {
            self.calls
                .borrow_mut()
                .push(format!("clock {}", since_epoch.as_secs()));
            Ok(())
        }
        fn set_hostname(&self, name: &str) -> Result<(), SystemError> {
            self.calls.borrow_mut().push(format!("hostname {name}"));
            Ok(())
        }
        fn chown(&self, path: &Path, uid: u32, gid: u32) -> Result<(), SystemError> {
            let name = path.file_name().unwrap().to_string_lossy();
            self.calls
                .borrow_mut()
                .push(format!("chown {name} {uid}:{gid}"));
            Ok(())
        }
    }

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("chaos-member-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("etc/chaos")).unwrap();
        std::fs::create_dir_all(dir.join("run/chaos")).unwrap();
        std::fs::write(
            dir.join("etc/chaos/passwd"),
            "root:x:0:0::/root:/bin/sh\nmunge:x:102:110::/nonexistent:/usr/sbin/nologin\n",
        )
        .unwrap();
        std::fs::write(dir.join("etc/chaos/group"), "root:x:0:\nmunge:x:110:\n").unwrap();
        std::fs::write(dir.join("run/chaos/hosts"), "127.0.0.1\tlocalhost\n").unwrap();
        dir
    }

    fn welcome(slurm: bool) -> Welcome {
        let peer = |id: u8, name: &str| Peer {
            id: u32::from(id),
            hostname: name.into(),
            wireguard_key: [id; 32],
            overlay: Ipv4Addr::new(10, 99, 0, id),
            endpoint: None,
        };
        let shared = Accounts::parse(
            "alice:x:1000:1000::/home/alice:/bin/sh\n",
            "alice:x:1000:\n",
        )
        .unwrap();
        Welcome {
            id: 2,
            overlay: Ipv4Addr::new(10, 99, 0, 2),
            prefix_len: 16,
            heartbeat_ms: 2000,
            head_wireguard_port: 51820,
            members: vec![peer(1, "head"), peer(2, "drone1")],
            name: "drone1".into(),
            join: 7,
            // An hour ahead of this machine: the clock is set.
            clock_ns: (SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
                + Duration::from_secs(3600))
            .as_nanos() as u64,
            slurm: slurm.then(|| SlurmGrant {
                munge_key: vec![7; 1024],
                accounts: shared,
                shares: Vec::new(),
            }),
        }
    }

    /// The members the drone knows of as it is admitted, for the hosts block.
    fn hosts() -> Vec<(Ipv4Addr, String)> {
        vec![
            (Ipv4Addr::new(10, 99, 0, 1), "head".into()),
            (Ipv4Addr::new(10, 99, 0, 2), "drone1".into()),
        ]
    }

    #[test]
    fn an_admitted_node_gets_what_slurm_needs_and_the_joined_file_last() {
        let root = scratch("slurm");
        let recorder = Recorder::default();
        let mut node = Node::new(&root, &recorder);
        node.admitted(&welcome(true), Ipv4Addr::new(10, 99, 0, 1), &hosts())
            .unwrap();
        let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
        assert_eq!(
            read("run/chaos/passwd"),
            "root:x:0:0::/root:/bin/sh\nmunge:x:102:110::/nonexistent:/usr/sbin/nologin\n\
             alice:x:1000:1000::/home/alice:/bin/sh\n"
        );
        assert_eq!(
            read("run/chaos/group"),
            "root:x:0:\nmunge:x:110:\nalice:x:1000:\n"
        );
        let key = root.join("run/chaos/munge/munge.key");
        assert_eq!(std::fs::read(&key).unwrap(), vec![7; 1024]);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key), 0o400);
        assert_eq!(mode(key.parent().unwrap()), 0o700);
        assert!(read("run/chaos/hosts").contains("10.99.0.1\thead\n10.99.0.2\tdrone1\n"));
        assert_eq!(read("run/chaos/hostname"), "drone1\n");
        assert_eq!(
            read("run/chaos/joined"),
            "CHAOS_HEAD=10.99.0.1\nCHAOS_NODE=drone1\nCHAOS_JOIN=0000000000000007\n"
        );
        let calls = recorder.calls.borrow();
        assert!(calls[0].starts_with("clock "), "{calls:?}");
        assert_eq!(
            calls[1..],
            [
                "chown munge 102:110",
                "chown munge.key 102:110",
                "hostname drone1"
            ]
        );
        drop(calls);
        node.left();
        assert!(!root.join("run/chaos/joined").exists());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn without_slurm_there_is_no_key_and_no_joined_file() {
        let root = scratch("plain");
        let recorder = Recorder::default();
        Node::new(&root, &recorder)
            .admitted(&welcome(false), Ipv4Addr::new(10, 99, 0, 1), &hosts())
            .unwrap();
        assert!(!root.join("run/chaos/joined").exists());
        assert!(!root.join("run/chaos/munge").exists());
        assert!(root.join("run/chaos/hostname").exists());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn an_image_without_munge_or_with_bad_accounts_says_so() {
        let root = scratch("nomunge");
        std::fs::write(root.join("etc/chaos/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        let recorder = Recorder::default();
        let error = Node::new(&root, &recorder)
            .admitted(&welcome(true), Ipv4Addr::new(10, 99, 0, 1), &hosts())
            .unwrap_err();
        assert!(matches!(error, MemberError::NoMunge), "{error}");
        let mut hostile = welcome(true);
        hostile.slurm.as_mut().unwrap().accounts.users[0].shell = "/bin/sh\nroot2:x:0".into();
        let error = Node::new(&root, &recorder)
            .admitted(&hostile, Ipv4Addr::new(10, 99, 0, 1), &hosts())
            .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("the head's accounts: user alice"),
            "{error}"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
