//! Kernel command line (placeholder, being written).
