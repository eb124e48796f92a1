//! The image's users and groups: the accounts the image's programs run as
//! or look up by name, stored at [`paths::ACCOUNTS_PASSWD`] and
//! [`paths::ACCOUNTS_GROUP`] in the format of
//! [`chaos_contract::accounts`], which the live files start from.
//!
//! Checked as they are added: names and fields that would break a line
//! (`:`, newline), a name or id used twice, a user whose primary group is
//! not there. Lines come out sorted by id, so the files are the same
//! whatever order the accounts were added in. Passwords are never set
//! (`x`, and no shadow file): nobody logs in to an image with one.

use std::collections::BTreeMap;

pub use chaos_contract::accounts::User;
use chaos_contract::accounts::{self, Group};
use chaos_contract::paths;

use crate::spec::{Spec, SpecError};

/// Where programs look accounts up, as (link, target): the live files,
/// which init starts from the image's own and tyd lays the cluster's over.
pub const LOOKUP_LINKS: [(&str, &str); 2] =
    [("/etc/passwd", paths::PASSWD), ("/etc/group", paths::GROUP)];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AccountsError {
    #[error("account {field} {value:?} {reason}")]
    Field {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("{what} {name:?}: {id_kind} {id} already belongs to {owner:?}")]
    IdTaken {
        what: &'static str,
        name: String,
        id_kind: &'static str,
        id: u32,
        owner: String,
    },
    #[error("{what} {name:?} is already defined")]
    NameTaken { what: &'static str, name: String },
    #[error("user {user:?}: primary group {gid} is not defined")]
    NoGroup { user: String, gid: u32 },
    #[error("group {0:?} is not defined")]
    UnknownGroup(String),
    #[error("user {0:?} is not defined")]
    UnknownUser(String),
}

/// The accounts of an image; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    users: BTreeMap<u32, User>,
    groups: BTreeMap<u32, Group>,
}

impl Accounts {
    pub fn new() -> Accounts {
        Accounts::default()
    }

    pub fn group(&mut self, name: &str, gid: u32) -> Result<&mut Self, AccountsError> {
        check("group name", name, true)?;
        if let Some(owner) = self.groups.get(&gid) {
            return Err(AccountsError::IdTaken {
                what: "group",
                name: name.into(),
                id_kind: "gid",
                id: gid,
                owner: owner.name.clone(),
            });
        }
        if self.groups.values().any(|g| g.name == name) {
            return Err(AccountsError::NameTaken {
                what: "group",
                name: name.into(),
            });
        }
        self.groups.insert(
            gid,
            Group {
                name: name.into(),
                gid,
                members: Vec::new(),
            },
        );
        Ok(self)
    }

    pub fn user(&mut self, user: User) -> Result<&mut Self, AccountsError> {
        check("user name", &user.name, true)?;
        for (field, value) in [
            ("gecos", &user.gecos),
            ("home", &user.home),
            ("shell", &user.shell),
        ] {
            check(field, value, false)?;
        }
        if let Some(owner) = self.users.get(&user.uid) {
            return Err(AccountsError::IdTaken {
                what: "user",
                name: user.name,
                id_kind: "uid",
                id: user.uid,
                owner: owner.name.clone(),
            });
        }
        if self.uid(&user.name).is_some() {
            return Err(AccountsError::NameTaken {
                what: "user",
                name: user.name,
            });
        }
        if !self.groups.contains_key(&user.gid) {
            return Err(AccountsError::NoGroup {
                user: user.name,
                gid: user.gid,
            });
        }
        self.users.insert(user.uid, user);
        Ok(self)
    }

    /// Makes `user` a supplementary member of `group`.
    pub fn member(&mut self, group: &str, user: &str) -> Result<&mut Self, AccountsError> {
        if self.uid(user).is_none() {
            return Err(AccountsError::UnknownUser(user.into()));
        }
        let group = self
            .groups
            .values_mut()
            .find(|g| g.name == group)
            .ok_or_else(|| AccountsError::UnknownGroup(group.into()))?;
        if !group.members.iter().any(|m| m == user) {
            group.members.push(user.into());
        }
        Ok(self)
    }

    pub fn uid(&self, name: &str) -> Option<u32> {
        self.users.values().find(|u| u.name == name).map(|u| u.uid)
    }

    pub fn gid(&self, name: &str) -> Option<u32> {
        self.groups
            .iter()
            .find(|(_, g)| g.name == name)
            .map(|(gid, _)| *gid)
    }

    /// Users and groups by id.
    fn sorted(&self) -> accounts::Accounts {
        accounts::Accounts {
            users: self.users.values().cloned().collect(),
            groups: self.groups.values().cloned().collect(),
        }
    }

    /// The `passwd` file, one line per user by uid.
    pub fn passwd(&self) -> String {
        self.sorted().passwd()
    }

    /// The `group` file, one line per group by gid.
    pub fn groups(&self) -> String {
        self.sorted().group()
    }

    /// Writes the files into `spec`, world-readable as every program that
    /// maps names and ids reads them, with the [`LOOKUP_LINKS`].
    pub fn add_to(&self, spec: &mut Spec) -> Result<(), SpecError> {
        spec.file(paths::ACCOUNTS_PASSWD, 0o644, self.passwd())?;
        spec.file(paths::ACCOUNTS_GROUP, 0o644, self.groups())?;
        for (link, target) in LOOKUP_LINKS {
            spec.symlink(link, target)?;
        }
        Ok(())
    }
}

fn check(field: &'static str, value: &str, name: bool) -> Result<(), AccountsError> {
    let reason = if name && value.is_empty() {
        "is empty"
    } else if !accounts::valid_field(value) {
        "contains ':' or a newline, which would break the line"
    } else if name && !accounts::valid_name(value) {
        "is not a name (letters, digits, '_', '.' and '-', at most 32)"
    } else {
        return Ok(());
    };
    Err(AccountsError::Field {
        field,
        value: value.into(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Content, Kind};

    fn base() -> Accounts {
        let mut accounts = Accounts::new();
        accounts
            .group("nogroup", 65534)
            .unwrap()
            .group("root", 0)
            .unwrap()
            .group("slurm", 64030)
            .unwrap();
        accounts
            .user(User::root())
            .unwrap()
            .user(User::system("nobody", 65534, 65534))
            .unwrap()
            .user(User::system("slurm", 64030, 64030))
            .unwrap();
        accounts
    }

    #[test]
    fn renders_sorted_lines() {
        let mut accounts = base();
        accounts.member("slurm", "root").unwrap();
        assert_eq!(
            accounts.passwd(),
            "root:x:0:0:root:/root:/bin/sh\n\
             slurm:x:64030:64030::/nonexistent:/usr/sbin/nologin\n\
             nobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\n"
        );
        assert_eq!(
            accounts.groups(),
            "root:x:0:\nslurm:x:64030:root\nnogroup:x:65534:\n"
        );
        assert_eq!(
            (accounts.uid("slurm"), accounts.gid("nogroup")),
            (Some(64030), Some(65534))
        );
        let mut spec = Spec::new();
        accounts.add_to(&mut spec).unwrap();
        let entry = spec.get(paths::ACCOUNTS_PASSWD).unwrap();
        assert_eq!(entry.mode, 0o644);
        assert_eq!(
            entry.kind,
            Kind::File(Content::Bytes(accounts.passwd().into_bytes()))
        );
        assert_eq!(
            spec.get("/etc/group").unwrap().kind,
            Kind::Symlink(paths::GROUP.into())
        );
        // What tyd reads back as the image's own.
        let read = accounts::Accounts::parse(&accounts.passwd(), &accounts.groups()).unwrap();
        assert_eq!(read.passwd(), accounts.passwd());
    }

    #[test]
    fn bad_accounts_are_named() {
        let mut accounts = base();
        let cases = [
            (
                accounts.group("wheel", 0).err(),
                "group \"wheel\": gid 0 already belongs to \"root\"",
            ),
            (
                accounts.group("slurm", 5).err(),
                "group \"slurm\" is already defined",
            ),
            (
                accounts.user(User::system("munge", 64030, 0)).err(),
                "user \"munge\": uid 64030 already belongs to \"slurm\"",
            ),
            (
                accounts.user(User::system("slurm", 7, 0)).err(),
                "user \"slurm\" is already defined",
            ),
            (
                accounts.user(User::system("munge", 101, 101)).err(),
                "user \"munge\": primary group 101 is not defined",
            ),
            (
                accounts.user(User::system("a:b", 101, 0)).err(),
                "account user name \"a:b\" contains ':' or a newline, which would break the line",
            ),
            (
                accounts
                    .user(User {
                        home: "/home/x\n".into(),
                        ..User::system("x", 101, 0)
                    })
                    .err(),
                "account home \"/home/x\\n\" contains ':' or a newline, which would break the line",
            ),
            (
                accounts.group("", 9).err(),
                "account group name \"\" is empty",
            ),
            (
                accounts.group("a,b", 9).err(),
                "account group name \"a,b\" is not a name (letters, digits, '_', '.' and '-', at most 32)",
            ),
            (
                accounts.member("wheel", "root").err(),
                "group \"wheel\" is not defined",
            ),
            (
                accounts.member("slurm", "alice").err(),
                "user \"alice\" is not defined",
            ),
        ];
        for (err, want) in cases {
            assert_eq!(err.expect(want).to_string(), want);
        }
        // Nothing failed half-way.
        assert_eq!(accounts.passwd(), base().passwd());
        assert_eq!(accounts.groups(), base().groups());
    }
}
