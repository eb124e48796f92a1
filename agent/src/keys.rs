// SPDX-License-Identifier: GPL-3.0-or-later
//! Keys and the files that hold them: the head's static key pair and the
//! cluster key (made once by `tyd init`), the head's beacon signing key
//! (derived from its static key), a node's own key (made in RAM at boot),
//! fingerprints, and the Noise handshake states built from them.
//!
//! Secret files are created 0600 and never overwritten: losing the head key
//! means re-imaging every drone, so `init` refuses to replace one.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::proto::{NOISE_PATTERN, PROLOGUE};

pub const HEAD_KEY: &str = "head.key";
pub const HEAD_PUB: &str = "head.pub";
/// The public half of the head's beacon signing key, which drones pin.
pub const BEACON_PUB: &str = "beacon.pub";
pub const CLUSTER_KEY: &str = "cluster.key";
pub const NODE_KEY: &str = "node.key";
/// The head's LAN address baked into a drone image (optional): `addr[:port]`.
pub const HEAD_ADDRESS: &str = "head.address";
/// The cluster's munge key, made by the first `tyd serve --slurm`; only the
/// head holds it in a file, members get it over their session.
pub const MUNGE_KEY: &str = "munge.key";
/// The munge key's length, as `mungekey` makes it.
const MUNGE_KEY_LEN: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: expected 64 hexadecimal digits (a 32-byte key), found {found}")]
    Format { path: PathBuf, found: String },
    #[error(
        "{path} exists: this directory already holds a cluster identity \
         (drones pin its head key; remove the files yourself to start a new cluster)"
    )]
    Exists { path: PathBuf },
    #[error("generating a key: {0}")]
    Random(String),
    #[error(
        "{path} is missing: this cluster identity predates the head's beacon; \
         `tyd init --dir {}` on the head adds it (then rebuild the drone images)",
        path.parent().unwrap_or(Path::new(".")).display()
    )]
    NoBeaconKey { path: PathBuf },
}

/// A Curve25519 key pair (Noise static keys and WireGuard keys alike).
#[derive(Clone)]
pub struct Keypair {
    pub private: [u8; 32],
    pub public: [u8; 32],
}

impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keypair")
            .field("public", &hex(&self.public))
            .finish_non_exhaustive()
    }
}

impl Keypair {
    pub fn generate() -> Result<Self, KeyError> {
        let keypair = builder()
            .generate_keypair()
            .map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self {
            private: to_key(&keypair.private),
            public: to_key(&keypair.public),
        })
    }

    /// The public half of a private key.
    pub fn from_private(private: [u8; 32]) -> Self {
        // X25519 of the private scalar with the base point, as Noise does.
        let public = x25519_public(&private);
        Self { private, public }
    }
}

fn to_key(bytes: &[u8]) -> [u8; 32] {
    let mut key = [0; 32];
    key.copy_from_slice(&bytes[..32]);
    key
}

/// X25519 of the private key and the base point, through snow's own
/// implementation (so no second curve library is linked).
fn x25519_public(private: &[u8; 32]) -> [u8; 32] {
    use snow::resolvers::{CryptoResolver, DefaultResolver};
    let mut dh = DefaultResolver
        .resolve_dh(&snow::params::DHChoice::Curve25519)
        .expect("the default resolver has Curve25519");
    dh.set(private);
    to_key(dh.pubkey())
}

/// Random bytes from the kernel.
pub fn random<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut bytes = [0; N];
    getrandom::getrandom(&mut bytes).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(bytes)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn parse_hex_key(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut key = [0; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(key)
}

/// What an administrator compares and types: 80 bits of the key's SHA-256,
/// in groups of four hex digits.
pub fn fingerprint(public: &[u8; 32]) -> String {
    let digest = Sha256::digest(public);
    let digits = hex(&digest[..10]);
    digits
        .as_bytes()
        .chunks(4)
        .map(|group| std::str::from_utf8(group).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("-")
}

pub fn read_key(path: &Path) -> Result<[u8; 32], KeyError> {
    let text = fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.into(),
        source,
    })?;
    parse_hex_key(&text).ok_or_else(|| KeyError::Format {
        path: path.into(),
        found: describe(&text),
    })
}

fn describe(text: &str) -> String {
    let text = text.trim();
    if text.is_empty() {
        "an empty file".into()
    } else {
        format!("{} characters", text.chars().count())
    }
}

/// Writes a key file that must not exist yet, with `mode` from the start
/// (never briefly world-readable).
fn write_new(path: &Path, key: &[u8; 32], mode: u32) -> Result<(), KeyError> {
    write_new_bytes(path, format!("{}\n", hex(key)).as_bytes(), mode)
}

fn write_new_bytes(path: &Path, contents: &[u8], mode: u32) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.into(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => KeyError::Exists { path: path.into() },
            _ => io(source),
        })?;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)
}

/// The cluster's munge key in `dir`, made on first use.
pub fn munge_key(dir: &Path) -> Result<(Vec<u8>, bool), KeyError> {
    let path = dir.join(MUNGE_KEY);
    match fs::read(&path) {
        Ok(key) if key.len() >= 32 => return Ok((key, false)),
        Ok(key) => {
            return Err(KeyError::Format {
                path,
                found: format!("{} bytes, expected a munge key of 32 or more", key.len()),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(KeyError::Io { path, source }),
    }
    let key = random::<MUNGE_KEY_LEN>()?.to_vec();
    write_new_bytes(&path, &key, 0o600)?;
    Ok((key, true))
}

/// What the head keeps: its static key pair and the cluster key.
#[derive(Debug, Clone)]
pub struct HeadIdentity {
    pub keypair: Keypair,
    pub cluster_key: [u8; 32],
}

/// What every drone carries in its image: the head's public key, the
/// public half of its beacon key, and the cluster key.
#[derive(Debug, Clone)]
pub struct ClusterIdentity {
    pub head_public: [u8; 32],
    pub beacon_public: [u8; 32],
    pub cluster_key: [u8; 32],
}

/// The head's beacon signing key. X25519 keys cannot sign, so the head
/// signs with an Ed25519 key derived from its static private key: one
/// secret to guard and back up, and `tyd init` can publish the public half.
pub fn beacon_key(head_private: &[u8; 32]) -> ed25519_dalek::SigningKey {
    let mut hash = Sha256::new();
    hash.update(b"chaos tyd beacon signing key 1\0");
    hash.update(head_private);
    ed25519_dalek::SigningKey::from_bytes(&hash.finalize().into())
}

/// Creates a new cluster identity in `dir`; the files it wrote, in order.
/// An identity made before beacons existed only gains its `beacon.pub`.
pub fn init(dir: &Path) -> Result<Vec<PathBuf>, KeyError> {
    fs::create_dir_all(dir).map_err(|source| KeyError::Io {
        path: dir.into(),
        source,
    })?;
    let paths = [HEAD_KEY, HEAD_PUB, BEACON_PUB, CLUSTER_KEY].map(|name| dir.join(name));
    let exists = paths.clone().map(|p| p.exists());
    if exists == [true, true, false, true] {
        let head = read_key(&paths[0])?;
        let beacon = beacon_key(&head).verifying_key().to_bytes();
        write_new(&paths[2], &beacon, 0o644)?;
        return Ok(vec![paths[2].clone()]);
    }
    if let Some(existing) = paths.iter().find(|p| p.exists()) {
        return Err(KeyError::Exists {
            path: existing.clone(),
        });
    }
    let head = Keypair::generate()?;
    let cluster_key = random::<32>()?;
    write_new(&paths[0], &head.private, 0o600)?;
    write_new(&paths[1], &head.public, 0o644)?;
    let beacon = beacon_key(&head.private).verifying_key().to_bytes();
    write_new(&paths[2], &beacon, 0o644)?;
    write_new(&paths[3], &cluster_key, 0o600)?;
    Ok(paths.to_vec())
}

impl HeadIdentity {
    pub fn load(dir: &Path) -> Result<Self, KeyError> {
        Ok(Self {
            keypair: Keypair::from_private(read_key(&dir.join(HEAD_KEY))?),
            cluster_key: read_key(&dir.join(CLUSTER_KEY))?,
        })
    }

    pub fn beacon_key(&self) -> ed25519_dalek::SigningKey {
        beacon_key(&self.keypair.private)
    }
}

impl ClusterIdentity {
    pub fn load(dir: &Path) -> Result<Self, KeyError> {
        Ok(Self {
            head_public: read_key(&dir.join(HEAD_PUB))?,
            beacon_public: read_key(&dir.join(BEACON_PUB)).map_err(|e| match e {
                KeyError::Io { path, source } if source.kind() == std::io::ErrorKind::NotFound => {
                    KeyError::NoBeaconKey { path }
                }
                other => other,
            })?,
            cluster_key: read_key(&dir.join(CLUSTER_KEY))?,
        })
    }
}

/// This node's key for this boot: read from `dir` (a RAM file system) if an
/// earlier run of tyd made one, else made and stored there. Restarts of tyd
/// keep the node's identity; a reboot gives it a new one.
pub fn node_key(dir: &Path) -> Result<Keypair, KeyError> {
    let path = dir.join(NODE_KEY);
    if path.exists() {
        return read_key(&path).map(Keypair::from_private);
    }
    fs::create_dir_all(dir).map_err(|source| KeyError::Io {
        path: dir.into(),
        source,
    })?;
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    let keypair = Keypair::generate()?;
    // Published whole or not at all, and only once: when two start at the
    // same time (the node's tyd and `tyd -f init` at the console), both
    // end up with the key of whichever linked it first.
    let partial = dir.join(format!(".{NODE_KEY}.{}", hex(&random::<6>()?)));
    write_new(&partial, &keypair.private, 0o600)?;
    let linked = fs::hard_link(&partial, &path);
    let _ = fs::remove_file(&partial);
    match linked {
        Ok(()) => Ok(keypair),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read_key(&path).map(Keypair::from_private)
        }
        Err(source) => Err(KeyError::Io { path, source }),
    }
}

fn builder() -> snow::Builder<'static> {
    let params = NOISE_PATTERN.parse().expect("a valid Noise pattern");
    snow::Builder::new(params).prologue(PROLOGUE)
}

/// The drone's side of the handshake.
pub fn initiator(
    node: &Keypair,
    cluster: &ClusterIdentity,
) -> Result<snow::HandshakeState, snow::Error> {
    builder()
        .local_private_key(&node.private)
        .remote_public_key(&cluster.head_public)
        .psk(1, &cluster.cluster_key)
        .build_initiator()
}

/// The head's side of the handshake.
pub fn responder(head: &HeadIdentity) -> Result<snow::HandshakeState, snow::Error> {
    builder()
        .local_private_key(&head.keypair.private)
        .psk(1, &head.cluster_key)
        .build_responder()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_keys_round_trip_and_bad_ones_are_refused() {
        let key = [0xa5; 32];
        assert_eq!(parse_hex_key(&format!("{}\n", hex(&key))), Some(key));
        for bad in ["", "abc", &"g".repeat(64), &"é".repeat(32), &"0".repeat(66)] {
            assert_eq!(parse_hex_key(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_node_key_is_made_once_even_when_asked_for_at_once() {
        let dir = std::env::temp_dir().join(format!("tyd-node-key-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let keys: Vec<[u8; 32]> = std::thread::scope(|scope| {
            let asked: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| node_key(&dir).unwrap().public))
                .collect();
            asked.into_iter().map(|t| t.join().unwrap()).collect()
        });
        assert!(keys.iter().all(|k| *k == keys[0]), "two node keys made");
        assert_eq!(node_key(&dir).unwrap().public, keys[0]);
        let left: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [NODE_KEY], "no partial files left");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fingerprints_are_stable_and_grouped() {
        let fp = fingerprint(&[0; 32]);
        assert_eq!(fp, "6668-7aad-f862-bd77-6c8f");
        assert_eq!(fingerprint(&[0; 32]), fp);
    }

    #[test]
    fn a_public_key_is_derived_from_its_private_key() {
        let pair = Keypair::generate().unwrap();
        assert_eq!(Keypair::from_private(pair.private).public, pair.public);
    }

    #[test]
    fn init_writes_private_files_and_refuses_to_overwrite() {
        let dir = std::env::temp_dir().join(format!("tyd-keys-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let written = init(&dir).unwrap();
        assert_eq!(written.len(), 4);
        let mode = |name| fs::metadata(dir.join(name)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(HEAD_KEY), 0o600);
        assert_eq!(mode(CLUSTER_KEY), 0o600);
        assert_eq!(mode(HEAD_PUB), 0o644);
        assert_eq!(mode(BEACON_PUB), 0o644);
        let head = HeadIdentity::load(&dir).unwrap();
        let cluster = ClusterIdentity::load(&dir).unwrap();
        assert_eq!(head.keypair.public, cluster.head_public);
        assert_eq!(
            head.beacon_key().verifying_key().to_bytes(),
            cluster.beacon_public
        );
        assert!(matches!(init(&dir), Err(KeyError::Exists { .. })));
        // An identity from before beacons: loading says what to do, and
        // init adds the missing file and nothing else.
        fs::remove_file(dir.join(BEACON_PUB)).unwrap();
        let error = ClusterIdentity::load(&dir).unwrap_err().to_string();
        assert!(error.contains("predates the head's beacon"), "{error}");
        assert_eq!(init(&dir).unwrap(), vec![dir.join(BEACON_PUB)]);
        assert_eq!(
            ClusterIdentity::load(&dir).unwrap().beacon_public,
            cluster.beacon_public
        );
        fs::write(dir.join(HEAD_PUB), "nonsense\n").unwrap();
        let error = ClusterIdentity::load(&dir).unwrap_err().to_string();
        assert!(error.contains("expected 64 hexadecimal digits"), "{error}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
