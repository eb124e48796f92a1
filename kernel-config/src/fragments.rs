//! The compact kernel's fragments: one data file per concern under
//! `kernel-config/fragments/`, compiled in so the build and its cache key
//! see exactly the same text. Merged onto `tinyconfig`, their union is what
//! `cargo xtask kernel --custom` requests. Everything is built in (`=y`) and
//! the module loader is off; the tests below hold every fragment to that.
//!
//! To support another device or feature, add its options to the fragment of
//! its concern (or a new fragment and a row in [`FRAGMENTS`]), with a
//! comment saying why the node needs it.

use std::collections::BTreeMap;

use crate::config::{Config, ParseError};

/// One fragment: its name (the file's, without `.config`) and its text.
#[derive(Clone, Copy, Debug)]
pub struct Fragment {
    pub name: &'static str,
    pub text: &'static str,
}

macro_rules! fragment {
    ($name:literal) => {
        Fragment {
            name: $name,
            text: include_str!(concat!("../fragments/", $name, ".config")),
        }
    };
}

/// Every fragment the custom kernel is built from.
pub const FRAGMENTS: &[Fragment] = &[
    fragment!("boot"),
    fragment!("init"),
    fragment!("console"),
    fragment!("net-core"),
    fragment!("wireguard-nftables"),
    fragment!("nics"),
    fragment!("watchdog"),
    fragment!("nfs"),
];

#[derive(Debug, thiserror::Error)]
pub enum FragmentError {
    #[error("fragment {fragment}.config: {source}")]
    Parse {
        fragment: &'static str,
        source: ParseError,
    },
    #[error(
        "fragments {first}.config and {second}.config disagree: {first_line} against {second_line}"
    )]
    Conflict {
        first: &'static str,
        first_line: String,
        second: &'static str,
        second_line: String,
    },
}

/// The union of [`FRAGMENTS`]: what the custom kernel requests.
pub fn requested() -> Result<Config, FragmentError> {
    merge_fragments(FRAGMENTS)
}

/// The union of `fragments`. Two fragments may request the same setting
/// (each says what its concern needs), but never different ones: unlike
/// merge_config.sh, where the later file silently wins, that is an error.
pub fn merge_fragments(fragments: &[Fragment]) -> Result<Config, FragmentError> {
    let mut merged = Config::new();
    let mut origin: BTreeMap<String, &'static str> = BTreeMap::new();
    for fragment in fragments {
        let config = parse(fragment)?;
        for (name, value) in config.iter() {
            if let Some(earlier) = merged.get(name).filter(|v| *v != value) {
                return Err(FragmentError::Conflict {
                    first: origin[name],
                    first_line: earlier.line(name),
                    second: fragment.name,
                    second_line: value.line(name),
                });
            }
            origin.entry(name.to_string()).or_insert(fragment.name);
            merged.set(name, value.clone());
        }
    }
    Ok(merged)
}

/// The names of the shipped fragments that request `name`, for messages
/// that point at the file to edit.
pub fn origins(name: &str) -> Vec<&'static str> {
    FRAGMENTS
        .iter()
        .filter(|f| parse(f).is_ok_and(|c| c.get(name).is_some()))
        .map(|f| f.name)
        .collect()
}

/// A short, stable digest of `fragments` (names and text), for cache keys.
/// FNV-1a: it only has to change when the text does, not resist an attacker,
/// and unlike std's hashers its output is fixed across Rust releases.
pub fn digest(fragments: &[Fragment]) -> String {
    let mut hash = Fnv::default();
    for fragment in fragments {
        hash.write(fragment.name.as_bytes());
        hash.write(&[0]);
        hash.write(fragment.text.as_bytes());
        hash.write(&[0]);
    }
    format!("{:016x}", hash.0)
}

/// 64-bit FNV-1a.
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

fn parse(fragment: &Fragment) -> Result<Config, FragmentError> {
    Config::parse(fragment.text).map_err(|source| FragmentError::Parse {
        fragment: fragment.name,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Value;

    #[test]
    fn shipped_fragments_parse_and_agree() {
        let requested = requested().unwrap();
        assert!(requested.len() > 50, "{} options", requested.len());
        for fragment in FRAGMENTS {
            assert!(
                !parse(fragment).unwrap().is_empty(),
                "{} is empty",
                fragment.name
            );
        }
    }

    #[test]
    fn everything_is_built_in_and_modules_are_off() {
        let requested = requested().unwrap();
        assert_eq!(requested.get("MODULES"), Some(&Value::NotSet));
        for (name, value) in requested.iter() {
            assert_ne!(value, &Value::Set("m".into()), "CONFIG_{name} is a module");
        }
    }

    #[test]
    fn what_init_needs_is_requested() {
        let requested = requested().unwrap();
        for name in [
            "DEVTMPFS",
            "PROC_FS",
            "SYSFS",
            "TMPFS",
            "CGROUPS",
            "UNIX98_PTYS",
            "SIGNALFD",
            "EPOLL",
            "EVENTFD",
            "FUTEX",
            "MULTIUSER",
            "ACPI_BUTTON",
            "INPUT_EVDEV",
            "PRINTK_TIME",
            "SERIAL_8250_CONSOLE",
            "RD_GZIP",
            "RD_ZSTD",
            "EFI_STUB",
            "64BIT",
            "UNIX",
            "WIREGUARD",
            "NFT_CT",
            "VIRTIO_NET",
            "E1000E",
            "I6300ESB_WDT",
            "WATCHDOG_NOWAYOUT",
        ] {
            assert_eq!(requested.get(name), Some(&Value::yes()), "CONFIG_{name}");
        }
    }

    #[test]
    fn disagreeing_fragments_are_an_error() {
        let fragments = [
            Fragment {
                name: "a",
                text: "CONFIG_NET=y\nCONFIG_SMP=y\n",
            },
            Fragment {
                name: "b",
                text: "CONFIG_NET=y\n# CONFIG_SMP is not set\n",
            },
        ];
        let err = merge_fragments(&fragments).unwrap_err();
        assert_eq!(
            err.to_string(),
            "fragments a.config and b.config disagree: CONFIG_SMP=y against # CONFIG_SMP is not set"
        );
    }

    #[test]
    fn a_malformed_fragment_is_named() {
        let fragments = [Fragment {
            name: "nics",
            text: "CONFIG_E1000=y\nCONFIG_R8169\n",
        }];
        let err = merge_fragments(&fragments).unwrap_err();
        assert!(
            err.to_string().starts_with("fragment nics.config: line 2:"),
            "{err}"
        );
    }

    #[test]
    fn origins_name_the_fragments() {
        assert_eq!(origins("E1000E"), ["nics"]);
        assert_eq!(origins("ACPI"), ["boot"]);
        assert!(origins("NO_SUCH_OPTION").is_empty());
    }

    #[test]
    fn digest_is_stable_and_follows_the_text() {
        let a = [Fragment {
            name: "a",
            text: "CONFIG_NET=y\n",
        }];
        let b = [Fragment {
            name: "a",
            text: "CONFIG_NET=y\nCONFIG_UNIX=y\n",
        }];
        assert_eq!(digest(&a), digest(&a));
        assert_eq!(digest(&a).len(), 16);
        assert_ne!(digest(&a), digest(&b));
        // The published FNV-1a test vector, so the hash cannot drift.
        let mut fnv = Fnv::default();
        fnv.write(b"a");
        assert_eq!(fnv.0, 0xaf63_dc4c_8601_ec8c);
    }
}
