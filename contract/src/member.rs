//! What a node holds while it is a member of a cluster, as tyd writes it
//! for init, the services and the resolver: the keys of the joined file
//! ([`crate::paths::JOINED`]), which the services that run only on a
//! member read through their `when =`, and the block of the hosts file
//! that names every member at its overlay address.

use std::net::Ipv4Addr;

/// The head's overlay address, where slurmd finds slurmctld.
pub const HEAD: &str = "CHAOS_HEAD";
/// This node's name in the cluster, unique among its members.
pub const NAME: &str = "CHAOS_NODE";
/// Changes whenever the head admits the node afresh (a first join, a
/// rejoin after expiry, a restarted head): the services restart, so Slurm
/// hears of the node again.
pub const JOIN: &str = "CHAOS_JOIN";

/// The joined file's text.
pub fn joined_file(head: Ipv4Addr, name: &str, join: u64) -> String {
    format!("{HEAD}={head}\n{NAME}={name}\n{JOIN}={join:016x}\n")
}

const BEGIN: &str = "# cluster members, kept by tyd";
const END: &str = "# end of cluster members";

/// `hosts` with its block of cluster members replaced by `members`
/// (overlay address, name); the rest of the file is left as it was.
pub fn hosts_with_members(hosts: &str, members: &[(Ipv4Addr, String)]) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in hosts.lines() {
        match line {
            BEGIN => inside = true,
            END => inside = false,
            _ if !inside => {
                out.push_str(line);
                out.push('\n');
            }
            _ => {}
        }
    }
    if !members.is_empty() {
        out.push_str(BEGIN);
        out.push('\n');
        for (address, name) in members {
            out.push_str(&format!("{address}\t{name}\n"));
        }
        out.push_str(END);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::env_lines;

    #[test]
    fn the_joined_file_is_the_environment_of_member_services() {
        let text = joined_file(Ipv4Addr::new(10, 99, 0, 1), "drone1", 0x2a);
        assert_eq!(
            env_lines(&text),
            [
                (HEAD.to_string(), "10.99.0.1".to_string()),
                (NAME.to_string(), "drone1".to_string()),
                (JOIN.to_string(), "000000000000002a".to_string()),
            ]
        );
    }

    #[test]
    fn the_member_block_is_replaced_and_the_rest_kept() {
        let base = "127.0.0.1\tlocalhost\n192.168.1.5\tdrone1\n";
        let members = vec![
            (Ipv4Addr::new(10, 99, 0, 1), "head".to_string()),
            (Ipv4Addr::new(10, 99, 0, 2), "drone1".to_string()),
        ];
        let once = hosts_with_members(base, &members);
        assert_eq!(
            once,
            "127.0.0.1\tlocalhost\n192.168.1.5\tdrone1\n\
             # cluster members, kept by tyd\n10.99.0.1\thead\n10.99.0.2\tdrone1\n\
             # end of cluster members\n"
        );
        let twice = hosts_with_members(&once, &members[..1]);
        assert_eq!(twice.matches("10.99.0.1").count(), 1);
        assert!(!twice.contains("10.99.0.2"));
        assert_eq!(hosts_with_members(&twice, &[]), base);
    }
}
