//! Kernel configuration. Empty until the compact-kernel work lands: it will own
//! the config fragments and the check that every requested option survived
//! `olddefconfig`. Until then chaos boots Debian's distribution kernel.
