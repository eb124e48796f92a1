//! tyd, the cluster agent. Empty until the membership work lands: it will own
//! cluster identity, the Noise join protocol (its messages are defined here and
//! nowhere else), WireGuard and nftables over netlink and the status verbs.
