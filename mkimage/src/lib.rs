//! mkimage: builds chaos boot images.
//!
//! An image is described by a [`Spec`] (built in code or parsed from a
//! gen_init_cpio-style spec file by [`specfile`]), optionally extended with
//! a kernel-module closure from [`modules`] (devices matched to drivers by
//! [`modalias`]) and with host programs and their shared-library closure
//! from [`payload`] (read by [`elf`]) and the [`accounts`] they run as, and written by [`Spec::write`]
//! as a reproducible sequence of gzip-compressed newc cpio archives, the
//! members compressed in parallel and kept between builds in a
//! [`MemberCache`]. [`list()`] reads such an image back as one. The library
//! stays free of CLI concerns and heavy dependencies so the node's static
//! binaries can link it.

pub mod accounts;
pub mod cache;
pub mod digests;
pub mod elf;
pub mod image;
pub mod list;
pub mod manifest;
pub mod modalias;
pub mod mode;
pub mod modules;
pub mod payload;
pub mod spec;
pub mod specfile;

pub use accounts::{Accounts, AccountsError, User};
pub use cache::{CacheError, MemberCache};
pub use image::{source_date_epoch, EpochError, WriteError, WriteStats};
pub use list::{list, ListError, ListedEntry};
pub use modalias::AliasTable;
pub use modules::{Closure, Module, ModuleTree, ModulesError};
pub use payload::{Payload, PayloadError};
pub use spec::{Content, Entry, Kind, Spec, SpecError};
pub use specfile::SpecFileError;
