//! chaos's boot artifacts and how they are served. This crate owns the
//! text every boot path reads (the iPXE script, the isolinux and GRUB menus,
//! the dnsmasq configuration) and `netboot serve`, which runs dnsmasq for
//! proxy-DHCP and TFTP beside a small HTTP server for kernel and initramfs.
//! It never builds images or runs the imaging tools; xtask does that with the
//! text rendered here.

pub mod boot;
pub mod clients;
pub mod dnsmasq;
pub mod http;
pub mod netns;
pub mod serve;
