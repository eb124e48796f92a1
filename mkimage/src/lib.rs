//! mkimage
