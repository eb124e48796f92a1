//! The jobs' shared files: which directories of the head a cluster may
//! share with its members, and where a member puts them. A drone's root
//! is the image, which certaintyd guards, so a share can land only on a
//! writable RAM mount that every image has for users' files: [`PLACES`].

use std::path::Path;

/// What `tyd serve --slurm` shares when told nothing else: the users'
/// homes, where `sbatch` writes a job's output by default.
pub const DEFAULT: &str = "/home";
/// The mounts (tmpfs, made by init on every node) under which shares
/// live: the homes, and the FHS's place for data a site serves.
pub const PLACES: &[&str] = &["/home", "/srv"];
/// The one port NFS version 4 needs: no portmapper, no mount daemon on
/// the wire.
pub const NFS_PORT: u16 = 2049;
/// A share's path, at most this long (the protocol's bound as well).
pub const MAX_PATH: usize = 255;
/// Shares a head may have.
pub const MAX_SHARES: usize = 16;

/// `path` if it can be shared: absolute, plain (no `.`, `..` or `//`), and
/// at or below one of [`PLACES`]; otherwise what is wrong with it.
pub fn check(path: &str) -> Result<(), String> {
    let places = PLACES.join(" or ");
    if path.len() > MAX_PATH {
        return Err(format!("{path:.40}...: longer than {MAX_PATH} bytes"));
    }
    let plain = path
        .strip_prefix('/')
        .is_some_and(|rest| rest.split('/').all(|s| !matches!(s, "" | "." | "..")));
    if !plain {
        return Err(format!(
            "{path}: not a plain absolute path (like {DEFAULT}/projects)"
        ));
    }
    let placed = PLACES
        .iter()
        .any(|place| Path::new(path).starts_with(place));
    if !placed {
        return Err(format!(
            "{path}: a share must be {places} or lie below them, the RAM mounts \
             where drones keep users' files (their root is the image, which \
             certaintyd guards)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_lie_on_the_places_for_users_files() {
        for good in ["/home", "/srv", "/home/alice", "/srv/data/inputs"] {
            assert_eq!(check(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("home", "plain absolute"),
            ("/home/", "plain absolute"),
            ("/home//alice", "plain absolute"),
            ("/home/../etc", "plain absolute"),
            ("/home/./alice", "plain absolute"),
            ("/", "plain absolute"),
            ("/homework", "must be /home or /srv"),
            ("/etc", "must be /home or /srv"),
            ("/var/data", "must be /home or /srv"),
        ] {
            let error = check(bad).unwrap_err();
            assert!(error.contains(why), "{bad}: {error}");
        }
        assert!(check(&format!("/home/{}", "a".repeat(300)))
            .unwrap_err()
            .contains("longer than 255"));
    }
}
