//! Boot artifacts. Empty until the PXE/ISO work lands: it will own the iPXE
//! first stage, the hybrid ISO and `netboot serve` (dnsmasq proxy-DHCP + HTTP).
