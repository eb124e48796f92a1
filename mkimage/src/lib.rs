//! mkimage: builds chaos boot images.
//!
//! An image is described by a [`Spec`] (built in code or parsed from a
//! gen_init_cpio-style spec file by [`specfile`]), optionally extended with
//! a kernel-module closure from [`modules`] (devices matched to drivers by
//! [`modalias`]), and written by [`Spec::write`]
//! as a reproducible gzip-compressed newc cpio archive. [`list()`] reads such
//! an archive back. The library stays free of CLI concerns and heavy
//! dependencies so the node's static binaries can link it.

pub mod image;
pub mod list;
pub mod manifest;
pub mod modalias;
pub mod mode;
pub mod modules;
pub mod spec;
pub mod specfile;

pub use image::{source_date_epoch, EpochError, WriteError};
pub use list::{list, ListError, ListedEntry};
pub use modalias::AliasTable;
pub use modules::{Closure, Module, ModuleTree, ModulesError};
pub use spec::{Content, Entry, Kind, Spec, SpecError};
pub use specfile::SpecFileError;
