//! Users and groups as passwd and group files hold them, and the rules by
//! which a cluster shares them: the head hands its cluster users (uid and
//! gid from 1000, and the system accounts Slurm needs) to every member,
//! which lays them over the image's own accounts, so a job runs with the
//! same uid on every node. Passwords never travel: the files hold `x`.

use std::fmt;

/// The first id of an ordinary user (Debian's FIRST_UID and FIRST_GID).
pub const FIRST_ID: u32 = 1000;
/// `nobody` and `nogroup`, never a cluster user.
pub const NOBODY: u32 = 65534;
/// The longest name a passwd or group entry may have here.
const MAX_NAME: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub home: String,
    pub shell: String,
}

impl User {
    /// The superuser, whose shell is the image's.
    pub fn root() -> User {
        User {
            name: "root".into(),
            uid: 0,
            gid: 0,
            gecos: "root".into(),
            home: "/root".into(),
            shell: "/bin/sh".into(),
        }
    }

    /// A system account: no home, no login shell.
    pub fn system(name: &str, uid: u32, gid: u32) -> User {
        User {
            name: name.into(),
            uid,
            gid,
            gecos: String::new(),
            home: "/nonexistent".into(),
            shell: "/usr/sbin/nologin".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Accounts {
    pub users: Vec<User>,
    pub groups: Vec<Group>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file} line {line}: {what}")]
pub struct AccountsError {
    pub file: &'static str,
    pub line: usize,
    pub what: String,
}

/// A name usable in passwd and group files and by Slurm.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && !name.ends_with('.')
}

/// A field that keeps a passwd line one line of seven fields.
pub fn valid_field(field: &str) -> bool {
    !field.contains([':', '\n', '\r', '\0'])
}

impl Accounts {
    /// Reads passwd and group texts; a malformed line is an error naming it.
    pub fn parse(passwd: &str, group: &str) -> Result<Accounts, AccountsError> {
        let mut accounts = Accounts::default();
        for (i, line) in lines(passwd) {
            let fail = |what: String| AccountsError {
                file: "passwd",
                line: i,
                what,
            };
            let fields: Vec<&str> = line.split(':').collect();
            let [name, _, uid, gid, gecos, home, shell] = fields[..] else {
                return Err(fail(format!(
                    "{line:?} has {} fields, expected 7 (name:x:uid:gid:gecos:home:shell)",
                    fields.len()
                )));
            };
            accounts.users.push(User {
                name: checked_name(name).map_err(fail)?,
                uid: id(uid).map_err(fail)?,
                gid: id(gid).map_err(fail)?,
                gecos: gecos.to_string(),
                home: home.to_string(),
                shell: shell.to_string(),
            });
        }
        for (i, line) in lines(group) {
            let fail = |what: String| AccountsError {
                file: "group",
                line: i,
                what,
            };
            let fields: Vec<&str> = line.split(':').collect();
            let [name, _, gid, members] = fields[..] else {
                return Err(fail(format!(
                    "{line:?} has {} fields, expected 4 (name:x:gid:members)",
                    fields.len()
                )));
            };
            let members = members
                .split(',')
                .filter(|m| !m.is_empty())
                .map(|m| checked_name(m).map_err(&fail))
                .collect::<Result<_, _>>()?;
            accounts.groups.push(Group {
                name: checked_name(name).map_err(fail)?,
                gid: id(gid).map_err(fail)?,
                members,
            });
        }
        Ok(accounts)
    }

    /// Whether every name and field would be written back as read; what
    /// arrives from elsewhere is checked before it is written to a file.
    pub fn check(&self) -> Result<(), String> {
        for user in &self.users {
            if !valid_name(&user.name) {
                return Err(format!("user name {:?} is not usable", user.name));
            }
            for field in [&user.gecos, &user.home, &user.shell] {
                if !valid_field(field) {
                    return Err(format!("user {}: field {field:?} is not usable", user.name));
                }
            }
        }
        for group in &self.groups {
            if !valid_name(&group.name) || !group.members.iter().all(|m| valid_name(m)) {
                return Err(format!(
                    "group {:?} or one of its members is not usable",
                    group.name
                ));
            }
        }
        Ok(())
    }

    /// The passwd file.
    pub fn passwd(&self) -> String {
        self.users
            .iter()
            .map(|u| {
                format!(
                    "{}:x:{}:{}:{}:{}:{}\n",
                    u.name, u.uid, u.gid, u.gecos, u.home, u.shell
                )
            })
            .collect()
    }

    /// The group file.
    pub fn group(&self) -> String {
        self.groups
            .iter()
            .map(|g| format!("{}:x:{}:{}\n", g.name, g.gid, g.members.join(",")))
            .collect()
    }

    /// What a head shares with its members: users with a uid from
    /// [`FIRST_ID`] (but not nobody) and the `system` accounts by name;
    /// groups with a gid from [`FIRST_ID`], the `system` ones, and those
    /// of the shared users.
    pub fn cluster_share(&self, system: &[&str]) -> Accounts {
        let ordinary = |id: u32| (FIRST_ID..NOBODY).contains(&id);
        let users: Vec<User> = self
            .users
            .iter()
            .filter(|u| ordinary(u.uid) || system.contains(&u.name.as_str()))
            .cloned()
            .collect();
        let groups = self
            .groups
            .iter()
            .filter(|g| {
                ordinary(g.gid)
                    || system.contains(&g.name.as_str())
                    || users.iter().any(|u| u.gid == g.gid)
            })
            .cloned()
            .collect();
        Accounts { users, groups }
    }

    /// These accounts (an image's own) with `shared`'s laid over them: an
    /// entry of `shared` replaces every one here with its name or its id.
    pub fn merged(&self, shared: &Accounts) -> Accounts {
        Accounts {
            users: laid_over(&self.users, &shared.users, |a, b| {
                a.name == b.name || a.uid == b.uid
            }),
            groups: laid_over(&self.groups, &shared.groups, |a, b| {
                a.name == b.name || a.gid == b.gid
            }),
        }
    }
}

/// `own` without the entries that one of `shared` stands for (`same`),
/// then `shared`.
fn laid_over<T: Clone>(own: &[T], shared: &[T], same: impl Fn(&T, &T) -> bool) -> Vec<T> {
    own.iter()
        .filter(|o| !shared.iter().any(|s| same(s, o)))
        .chain(shared)
        .cloned()
        .collect()
}

impl fmt::Display for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.uid)
    }
}

fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

fn checked_name(name: &str) -> Result<String, String> {
    if valid_name(name) {
        Ok(name.to_string())
    } else {
        Err(format!("name {name:?} is not usable"))
    }
}

fn id(text: &str) -> Result<u32, String> {
    text.parse()
        .map_err(|_| format!("id {text:?} is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        munge:x:102:110::/nonexistent:/usr/sbin/nologin\n\
        slurm:x:64030:64030::/nonexistent:/usr/sbin/nologin\n\
        alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash\n\
        bob:x:1001:100::/home/bob:/bin/sh\n\
        nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
    const GROUP: &str = "root:x:0:\nusers:x:100:alice\nmunge:x:110:\n\
        slurm:x:64030:\nalice:x:1000:\nlab:x:1500:alice,bob\nnogroup:x:65534:\n";

    fn names(a: &Accounts) -> (Vec<&str>, Vec<&str>) {
        (
            a.users.iter().map(|u| u.name.as_str()).collect(),
            a.groups.iter().map(|g| g.name.as_str()).collect(),
        )
    }

    #[test]
    fn files_read_back_as_written() {
        let accounts = Accounts::parse(PASSWD, GROUP).unwrap();
        assert_eq!(accounts.passwd(), PASSWD);
        assert_eq!(accounts.group(), GROUP);
        assert_eq!(accounts.groups[5].members, ["alice", "bob"]);
        accounts.check().unwrap();
    }

    #[test]
    fn a_head_shares_its_users_and_slurm_but_not_its_system_accounts() {
        let shared = Accounts::parse(PASSWD, GROUP)
            .unwrap()
            .cluster_share(&["slurm"]);
        assert_eq!(
            names(&shared),
            (
                vec!["slurm", "alice", "bob"],
                vec!["users", "slurm", "alice", "lab"]
            )
        );
    }

    #[test]
    fn shared_accounts_replace_the_images_by_name_and_by_id() {
        let image = Accounts::parse(
            "root:x:0:0::/root:/bin/sh\nslurm:x:64030:64030::/:/bin/false\n\
             chaos:x:1000:1000::/:/bin/sh\n",
            "root:x:0:\nslurm:x:64030:\nchaos:x:1000:\n",
        )
        .unwrap();
        let shared = Accounts::parse(PASSWD, GROUP)
            .unwrap()
            .cluster_share(&["slurm"]);
        let merged = image.merged(&shared);
        assert_eq!(
            names(&merged),
            (
                vec!["root", "slurm", "alice", "bob"],
                vec!["root", "users", "slurm", "alice", "lab"]
            )
        );
        assert_eq!(merged.users[2].uid, 1000);
    }

    #[test]
    fn malformed_lines_are_named() {
        let table: &[(&str, &str, &str)] = &[
            (
                "a:x:1:1",
                "",
                "passwd line 1: \"a:x:1:1\" has 4 fields, expected 7",
            ),
            (
                "a:x:one:1:::",
                "",
                "passwd line 1: id \"one\" is not a number",
            ),
            (
                "\n-a:x:1:1:::",
                "",
                "passwd line 2: name \"-a\" is not usable",
            ),
            ("", "g:x:1", "group line 1: \"g:x:1\" has 3 fields"),
            ("", "g:x:1:a b", "group line 1: name \"a b\" is not usable"),
        ];
        for (passwd, group, message) in table {
            let error = Accounts::parse(passwd, group).unwrap_err().to_string();
            assert!(error.starts_with(message), "{error}");
        }
    }

    #[test]
    fn fields_that_would_break_the_file_are_refused() {
        let mut accounts = Accounts::parse(PASSWD, GROUP).unwrap();
        accounts.users[3].shell = "/bin/sh\nevil:x:0:0::/:/bin/sh".into();
        assert!(accounts.check().unwrap_err().contains("alice"));
        let mut accounts = Accounts::parse(PASSWD, GROUP).unwrap();
        accounts.groups[0].members.push("root:x".into());
        assert!(accounts.check().is_err());
    }
}
