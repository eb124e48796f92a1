//! The compact kernel's configuration: the fragments it is built from (one
//! data file per concern under `fragments/`), the `.config` format they and
//! the kernel's own output are written in, and the check that every
//! requested option survived `make olddefconfig`.
//!
//! Kconfig silently drops a requested option whose dependencies are unmet
//! or whose name is misspelled, and `merge_config.sh` only warns; this crate
//! turns that into an error naming each option. It only reads and writes
//! text: running `make` is `cargo xtask kernel --custom`'s job.

pub mod config;
pub mod fragments;
pub mod survival;

pub use config::{Config, Override, ParseError, Value};
pub use fragments::{requested, Fragment, FragmentError, FRAGMENTS};
pub use survival::{check_survival, declared_symbols, Missing};
