//! Did the requested options survive? `make olddefconfig` resolves the
//! merged configuration against the kernel's Kconfig and quietly drops or
//! changes whatever it cannot honour: a misspelled name, an option whose
//! dependencies are off, a module request with modules disabled. This
//! module compares the request with the result and names every difference;
//! it never edits either configuration.

use std::fmt;

use crate::config::{Config, Value};

/// A requested setting the final configuration does not have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    pub name: String,
    pub requested: Value,
    /// The final setting; `None` when the option is absent altogether.
    pub found: Option<Value>,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let requested = self.requested.line(&self.name);
        match &self.found {
            None => write!(
                f,
                "{requested}: absent from the final .config (misspelled, or hidden by an unmet dependency)"
            ),
            Some(Value::NotSet) => write!(
                f,
                "{requested}: the final .config has `{}` (an unmet dependency, or a choice that went elsewhere)",
                Value::NotSet.line(&self.name)
            ),
            Some(found) if self.requested == Value::NotSet => write!(
                f,
                "{requested}: the final .config has `{}` (another option selects it)",
                found.line(&self.name)
            ),
            Some(found) => write!(
                f,
                "{requested}: the final .config has `{}` (Kconfig adjusted the value)",
                found.line(&self.name)
            ),
        }
    }
}

/// Every setting of `requested` that `final_config` does not carry, in name
/// order. A request that an option be off (`# CONFIG_X is not set`) is met
/// by the option being off or absent, since Kconfig leaves hidden options
/// out of the file; every other request needs the exact value.
pub fn check_survival(requested: &Config, final_config: &Config) -> Result<(), Vec<Missing>> {
    let missing: Vec<Missing> = requested
        .iter()
        .filter_map(|(name, wanted)| {
            let found = final_config.get(name);
            let survived = match wanted {
                Value::NotSet => matches!(found, None | Some(Value::NotSet)),
                Value::Set(_) => found == Some(wanted),
            };
            (!survived).then(|| Missing {
                name: name.to_string(),
                requested: wanted.clone(),
                found: found.cloned(),
            })
        })
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing)
    }
}

/// The symbols a Kconfig file declares (`config NAME`, `menuconfig NAME`),
/// so a caller holding the kernel source can tell a misspelled option (no
/// Kconfig declares it) from one whose dependencies are unmet.
pub fn declared_symbols(kconfig: &str) -> impl Iterator<Item = &str> {
    kconfig.lines().filter_map(|line| {
        let mut words = line.split_whitespace();
        let declaration = matches!(words.next(), Some("config" | "menuconfig"));
        let name = words.next();
        // Help text can start a line with "config"; a declaration is the
        // keyword, one name, and at most a comment.
        let rest_is_comment = !matches!(words.next(), Some(w) if !w.starts_with('#'));
        name.filter(|_| declaration && rest_is_comment)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FINAL: &str = include_str!("../fixtures/final.config");

    fn config(text: &str) -> Config {
        Config::parse(text).unwrap()
    }

    #[test]
    fn a_satisfied_request_passes() {
        let requested = config(include_str!("../fixtures/satisfied.config"));
        assert_eq!(check_survival(&requested, &config(FINAL)), Ok(()));
    }

    #[test]
    fn each_option_that_did_not_survive_is_named() {
        let requested = config(include_str!("../fixtures/broken.config"));
        let missing = check_survival(&requested, &config(FINAL)).unwrap_err();
        let names: Vec<&str> = missing.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["NF_TABLES_INET", "NR_CPUS", "SMP", "WIREGAURD"]);
        let messages: Vec<String> = missing.iter().map(Missing::to_string).collect();
        assert_eq!(
            messages,
            [
                "CONFIG_NF_TABLES_INET=y: absent from the final .config (misspelled, or hidden by an unmet dependency)",
                "CONFIG_NR_CPUS=512: the final .config has `CONFIG_NR_CPUS=64` (Kconfig adjusted the value)",
                "# CONFIG_SMP is not set: the final .config has `CONFIG_SMP=y` (another option selects it)",
                "CONFIG_WIREGAURD=y: absent from the final .config (misspelled, or hidden by an unmet dependency)",
            ]
        );
    }

    #[test]
    fn an_option_left_off_is_named() {
        let requested = config("CONFIG_IPV6=y\n");
        let missing = check_survival(&requested, &config(FINAL)).unwrap_err();
        assert_eq!(
            missing,
            [Missing {
                name: "IPV6".to_string(),
                requested: Value::yes(),
                found: Some(Value::NotSet),
            }]
        );
        assert_eq!(
            missing[0].to_string(),
            "CONFIG_IPV6=y: the final .config has `# CONFIG_IPV6 is not set` (an unmet dependency, or a choice that went elsewhere)"
        );
    }

    #[test]
    fn a_module_request_is_not_met_by_built_in() {
        // With modules off Kconfig turns =m into =y; the request still
        // said something else, and the fragments must say what they mean.
        let requested = config("CONFIG_WIREGUARD=m\n");
        let missing = check_survival(&requested, &config(FINAL)).unwrap_err();
        assert_eq!(missing[0].found, Some(Value::yes()));
    }

    #[test]
    fn declared_symbols_reads_config_and_menuconfig() {
        let kconfig = "\
menuconfig NETFILTER
\tbool \"Network packet filtering framework (Netfilter)\"
config NF_TABLES_INET
\tdepends on IPV6
\thelp
\t  config entries in help text are not declarations
if NETFILTER
config NFT_CT # conntrack expressions
endif
";
        let names: Vec<&str> = declared_symbols(kconfig).collect();
        assert_eq!(names, ["NETFILTER", "NF_TABLES_INET", "NFT_CT"]);
    }
}
