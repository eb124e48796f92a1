// SPDX-License-Identifier: GPL-3.0-or-later
//! A member's mounts of the head's shares (DESIGN.md "Jobs' files"): on
//! each admission, every share the head grants is mounted at the same
//! path over NFS version 4 on the overlay, and only then is the joined
//! file written, so slurmd never runs a job in a directory that is not
//! there yet. On leave they are unmounted.
//!
//! Mounting waits on the network (the head's NFS server may still be
//! starting, or not yet exporting to a member it admitted a moment ago),
//! so it runs in a thread of its own: tyd's event loop, which keeps the
//! heartbeats going, never waits on a mount. Each admission and each
//! leave starts a new generation; a thread that finds its generation
//! gone undoes what it mounted and writes nothing.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chaos_contract::fact::{self, Fact};
use chaos_contract::share::NFS_PORT;
use nix::mount::{MntFlags, MsFlags};

use crate::log::{fact as report, info};

/// How long a share is tried before the node runs jobs without it.
const PATIENCE: Duration = Duration::from_secs(60);
/// Between two tries: the head's export table follows a join within a
/// moment (every try until then is refused at once, for a few round
/// trips on the overlay), and the job services wait for the mount.
const RETRY: Duration = Duration::from_millis(100);

/// The options of every share's mount.
///
/// `hard`: a job's reads and writes wait while the head is away (a
/// restart) and go on when it is back, instead of failing with EIO and
/// losing output, which `soft` would do after `timeo` x `retrans`. A head
/// that does not come back does not hang jobs for ever either: the node
/// leaves, or is admitted afresh by a new head, and tyd then unmounts
/// with MNT_FORCE, which ends every waiting call with an error.
/// `timeo=100,retrans=3`: a try every 10 s, "server not responding" in the
/// kernel log after 30 s; TCP retransmits meanwhile, so a longer timeout
/// costs nothing. `addr` and `clientaddr` are the overlay addresses (the
/// kernel resolves no names), so NFS never leaves WireGuard.
pub fn mount_options(head: Ipv4Addr, own: Ipv4Addr) -> String {
    format!(
        "vers=4.2,proto=tcp,port={NFS_PORT},hard,timeo=100,retrans=3,addr={head},clientaddr={own}"
    )
}

#[derive(Debug, Default)]
struct State {
    generation: u64,
    /// The admission the mounts are for.
    join: Option<u64>,
    /// This node's overlay address the mounts were made from.
    own: Option<Ipv4Addr>,
    /// What this node has mounted, in mount order.
    mounted: Vec<String>,
}

/// What the mount thread is asked to do, in order.
enum Job {
    Mount {
        generation: u64,
        head: Ipv4Addr,
        options: String,
        shares: Vec<String>,
        then: Box<dyn FnOnce() + Send>,
    },
    Unmount(Vec<String>),
}

/// A member's mounts, and the one thread that makes and unmakes them (so
/// an unmount asked for first is done first).
pub struct Mounts {
    state: Arc<Mutex<State>>,
    jobs: Sender<Job>,
}

impl std::fmt::Debug for Mounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mounts")
            .field("state", &self.state)
            .finish()
    }
}

impl Default for Mounts {
    fn default() -> Self {
        let state: Arc<Mutex<State>> = Arc::default();
        let (jobs, queue) = mpsc::channel();
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for job in queue {
                work(&shared, job);
            }
        });
        Mounts { state, jobs }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl Mounts {
    /// Admission `join` grants `shares` from `head` to this node at
    /// `own`: mounts them (keeping those that still work from an earlier
    /// admission), then calls `then`. Again for the same admission (its
    /// session moving into the overlay), nothing.
    pub fn admit(
        &self,
        join: u64,
        head: Ipv4Addr,
        own: Ipv4Addr,
        shares: &[String],
        then: impl FnOnce() + Send + 'static,
    ) {
        let mut state = lock(&self.state);
        if state.join == Some(join) {
            return;
        }
        state.join = Some(join);
        state.generation += 1;
        // A new head may have given this node another address: the
        // server knows the node by it, so the mounts are made anew.
        if state.own.replace(own) != Some(own) {
            let stale = std::mem::take(&mut state.mounted);
            let _ = self.jobs.send(Job::Unmount(stale));
        }
        let _ = self.jobs.send(Job::Mount {
            generation: state.generation,
            head,
            options: mount_options(head, own),
            shares: shares.to_vec(),
            then: Box::new(then),
        });
    }

    /// No longer a member: every share unmounted, and a mount still being
    /// tried given up. The paths are gone at once; the kernel's last
    /// goodbye to the server, which a removed node cannot reach, waits in
    /// the mount thread, not here.
    pub fn leave(&self) {
        let mut state = lock(&self.state);
        state.generation += 1;
        state.join = None;
        let mounted = std::mem::take(&mut state.mounted);
        let _ = self.jobs.send(Job::Unmount(mounted));
    }
}

fn work(state: &Mutex<State>, job: Job) {
    match job {
        Job::Unmount(shares) => {
            for share in shares.iter().rev() {
                unmount(share);
            }
        }
        Job::Mount {
            generation,
            head,
            options,
            shares,
            then,
        } => {
            let started = Instant::now();
            for share in &shares {
                if !mount(state, generation, head, share, &options, started) {
                    return;
                }
            }
            if lock(state).generation == generation {
                then();
            }
        }
    }
}

/// One share, tried until [`PATIENCE`] runs out; false once the
/// generation is gone.
fn mount(
    state: &Mutex<State>,
    generation: u64,
    head: Ipv4Addr,
    share: &str,
    options: &str,
    started: Instant,
) -> bool {
    let target = Path::new(share);
    if lock(state).mounted.iter().any(|m| m == share) {
        // A restarted head may be another server (a head VM's shares
        // are in its RAM): handles from the old one are stale.
        match std::fs::metadata(target) {
            Ok(_) => return true,
            Err(e) => {
                info(format!("share {share}: {e}; mounting it again"));
                lock(state).mounted.retain(|m| m != share);
                unmount(share);
            }
        }
    }
    if let Err(e) = std::fs::create_dir_all(target) {
        info(format!("share {share}: making the mount point: {e}"));
        return true;
    }
    let source = format!("{head}:{share}");
    let mut said = String::new();
    while started.elapsed() < PATIENCE {
        if lock(state).generation != generation {
            return false;
        }
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        match nix::mount::mount(
            Some(source.as_str()),
            target,
            Some("nfs4"),
            flags,
            Some(options),
        ) {
            Ok(()) => {
                let mut now = lock(state);
                if now.generation != generation {
                    drop(now);
                    unmount(share);
                    return false;
                }
                now.mounted.push(share.to_string());
                let ms = started.elapsed().as_millis();
                info(format!("share {share}: mounted from {source} in {ms} ms"));
                report(shared(share, "mounted").with("ms", ms));
                return true;
            }
            Err(e) => {
                let now = e.desc().to_string();
                if now != said {
                    info(format!(
                        "share {share}: mounting {source}: {now}; trying again"
                    ));
                    said = now;
                }
            }
        }
        // A bounded retry against a server that is coming up.
        std::thread::sleep(RETRY);
    }
    info(format!(
        "share {share}: not mounted within {} s ({said}): jobs run without it",
        PATIENCE.as_secs()
    ));
    report(shared(share, "failed"));
    true
}

fn shared(path: &str, state: &str) -> Fact {
    Fact::new(fact::SHARE)
        .with("path", path)
        .with("state", state)
}

/// Unmounts a share this node mounted, even while the head is away or
/// jobs use it: pending calls end with an error, and open files keep the
/// old mount until they close. (Nothing here stats the share, which would
/// wait for an absent head.)
fn unmount(share: &str) {
    match nix::mount::umount2(share, MntFlags::MNT_FORCE | MntFlags::MNT_DETACH) {
        Ok(()) => {
            info(format!("share {share}: unmounted"));
            report(shared(share, "unmounted"));
        }
        Err(e) => info(format!("share {share}: unmounting: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mount_stays_on_the_overlay() {
        let options = mount_options(Ipv4Addr::new(10, 99, 0, 1), Ipv4Addr::new(10, 99, 0, 7));
        assert_eq!(
            options,
            "vers=4.2,proto=tcp,port=2049,hard,timeo=100,retrans=3,\
             addr=10.99.0.1,clientaddr=10.99.0.7"
        );
    }
}
