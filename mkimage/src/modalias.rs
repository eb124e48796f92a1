//! Device aliases: which modules claim a device, by its modalias.
//!
//! Every device the kernel knows has a modalias (`pci:v00008086d0000100Esv...`,
//! `acpi:LNXPWRBN:`, `virtio:d00000001v00001AF4`), and every driver declares
//! the patterns it handles; depmod gathers them in `modules.alias`, one
//! `alias <pattern> <module>` per line. The patterns are fnmatch(3) globs with
//! no flags, exactly as modprobe and udev match them: `*` any run of
//! characters, `?` one character, `[...]` a set (`!` or `^` negates, `a-z`
//! ranges, `[:digit:]`-style classes), and `\` quotes the next character.
//!
//! This module parses, prunes, writes and looks up that table; it never reads
//! /sys and never loads anything. The same code runs in mkimage (pruning the
//! kernel's table to an image's modules) and in init (matching the devices).

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write;

/// One `alias` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    pub pattern: String,
    /// Normalised module name (`_`, never `-`).
    pub module: String,
}

/// A modules.alias table, indexed for lookups. A lookup only runs the globs
/// whose literal beginning (the text before the first special character)
/// starts the modalias, so matching a device costs a few hash probes and a
/// handful of globs, not one glob per line of the table.
#[derive(Debug, Clone, Default)]
pub struct AliasTable {
    aliases: Vec<Alias>,
    by_prefix: HashMap<String, Vec<usize>>,
}

impl AliasTable {
    /// Parses modules.alias text; `Err((line, reason))` for the first bad
    /// line. Comments (`#`) and blank lines are skipped.
    pub fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut table = AliasTable::default();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            match (words.next(), words.next(), words.next(), words.next()) {
                (Some("alias"), Some(pattern), Some(module), None) => {
                    table.push(Alias {
                        pattern: pattern.to_owned(),
                        module: module.replace('-', "_"),
                    });
                }
                _ => {
                    return Err((
                        index + 1,
                        format!("expected \"alias <pattern> <module>\", found {line:?}"),
                    ))
                }
            }
        }
        Ok(table)
    }

    fn push(&mut self, alias: Alias) {
        let prefix = literal_prefix(&alias.pattern).to_owned();
        self.by_prefix
            .entry(prefix)
            .or_default()
            .push(self.aliases.len());
        self.aliases.push(alias);
    }

    pub fn len(&self) -> usize {
        self.aliases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.aliases.is_empty()
    }

    /// The aliases of the given modules only, in the table's order.
    pub fn pruned(&self, modules: &BTreeSet<String>) -> AliasTable {
        let mut table = AliasTable::default();
        for alias in self.aliases.iter().filter(|a| modules.contains(&a.module)) {
            table.push(alias.clone());
        }
        table
    }

    /// The table as modules.alias text.
    pub fn render(&self) -> String {
        self.aliases.iter().fold(String::new(), |mut text, alias| {
            let _ = writeln!(text, "alias {} {}", alias.pattern, alias.module);
            text
        })
    }

    /// Every module with a pattern matching `modalias`, each once, sorted.
    pub fn lookup(&self, modalias: &str) -> Vec<&str> {
        let mut found = BTreeSet::new();
        for end in 0..=modalias.len() {
            if !modalias.is_char_boundary(end) {
                continue;
            }
            let Some(indices) = self.by_prefix.get(&modalias[..end]) else {
                continue;
            };
            for &i in indices {
                let alias = &self.aliases[i];
                if glob_match(&alias.pattern, modalias) {
                    found.insert(alias.module.as_str());
                }
            }
        }
        found.into_iter().collect()
    }
}

/// The pattern up to its first glob special character.
fn literal_prefix(pattern: &str) -> &str {
    let end = pattern.find(['*', '?', '[', '\\']).unwrap_or(pattern.len());
    &pattern[..end]
}

/// fnmatch(pattern, text, 0): the whole text must match.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Where to resume after the last `*`: the pattern after it, and the
    // text position it has consumed up to. One `*` of backtracking
    // suffices: a later `*` can absorb whatever an earlier one would.
    let mut resume: Option<(usize, usize)> = None;
    while ti < t.len() {
        if let Some((matched, width)) = step(&p[pi..], t[ti]) {
            if matched {
                pi += width;
                ti += 1;
                continue;
            }
        } else if p.get(pi) == Some(&b'*') {
            pi += 1;
            resume = Some((pi, ti));
            continue;
        }
        match resume {
            Some((star_pi, star_ti)) => {
                pi = star_pi;
                ti = star_ti + 1;
                resume = Some((star_pi, star_ti + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

/// Matches one text byte against the pattern's next element: `Some((whether
/// it matches, the element's width))`, or `None` at a `*` or the pattern's end.
fn step(p: &[u8], c: u8) -> Option<(bool, usize)> {
    match *p.first()? {
        b'*' => None,
        b'?' => Some((true, 1)),
        b'[' => Some(bracket(p, c).unwrap_or((c == b'[', 1))),
        // A trailing backslash stands for itself.
        b'\\' => Some(match p.get(1) {
            Some(&quoted) => (c == quoted, 2),
            None => (c == b'\\', 1),
        }),
        literal => Some((c == literal, 1)),
    }
}

/// A `[...]` set at the start of `p`: whether `c` is in it and the set's
/// width; `None` if the set is not closed (then `[` is an ordinary character).
fn bracket(p: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(p.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let mut low = *p.get(i)?;
        if low == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if low == b'[' && p.get(i + 1) == Some(&b':') {
            let rest = &p[i + 2..];
            if let Some(end) = rest.windows(2).position(|w| w == b":]") {
                matched |= in_class(&rest[..end], c);
                i += 2 + end + 2;
                continue;
            }
        }
        if low == b'\\' {
            i += 1;
            low = *p.get(i)?;
        }
        i += 1;
        if p.get(i) == Some(&b'-') && p.get(i + 1).is_some_and(|&b| b != b']') {
            let mut high = p[i + 1];
            i += 2;
            if high == b'\\' {
                high = *p.get(i)?;
                i += 1;
            }
            matched |= (low..=high).contains(&c);
        } else {
            matched |= c == low;
        }
    }
}

/// POSIX character classes in the C locale; an unknown name matches nothing.
fn in_class(name: &[u8], c: u8) -> bool {
    match name {
        b"alnum" => c.is_ascii_alphanumeric(),
        b"alpha" => c.is_ascii_alphabetic(),
        b"digit" => c.is_ascii_digit(),
        b"xdigit" => c.is_ascii_hexdigit(),
        b"lower" => c.is_ascii_lowercase(),
        b"upper" => c.is_ascii_uppercase(),
        b"space" => c.is_ascii_whitespace() || c == 0x0b,
        b"punct" => c.is_ascii_punctuation(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_follow_fnmatch() {
        let cases = [
            (
                "pci:v00008086d0000100Esv*sd*bc*sc*i*",
                "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00",
                true,
            ),
            (
                "pci:v00008086d0000100Esv*sd*bc*sc*i*",
                "pci:v00008086d0000100Fsv00001AF4sd00001100bc02sc00i00",
                false,
            ),
            (
                "pci:v*d00008139sv000010ECsd00008139bc*sc*i*",
                "pci:v000010ECd00008139sv000010ECsd00008139bc02sc00i00",
                true,
            ),
            ("acpi*:PNP0C0C:*", "acpi:PNP0C0C:", true),
            ("acpi*:PNP0C0C:*", "acpi:LNXPWRBN:", false),
            (
                "input:b*v*p*e*-e*1,*k*r*a*m*l*s*f*w*",
                "input:b0019v0000p0001e0000-e0,1,k74,ramlsfw",
                true,
            ),
            ("*", "", true),
            ("", "", true),
            ("", "a", false),
            ("a*", "a", true),
            ("*a", "ba", true),
            ("*a", "ab", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("[abc]x", "bx", true),
            ("[abc]x", "dx", false),
            ("[!abc]x", "dx", true),
            ("[^abc]x", "ax", false),
            ("[a-f]", "e", true),
            ("[a-f]", "g", false),
            ("[]a]", "]", true),
            ("[!]a]", "]", false),
            ("[a-]", "-", true),
            ("[[:digit:]]x", "7x", true),
            ("[[:digit:]]x", "ax", false),
            ("[[:xdigit:][:upper:]]", "Z", true),
            ("[abc", "[abc", true),
            ("[abc", "a", false),
            ("\\*", "*", true),
            ("\\*", "x", false),
            ("[\\]]", "]", true),
            ("a\\", "a\\", true),
            (
                "dmi*:svnQEMU:*",
                "dmi:bvnSeaBIOS:svnQEMU:pnStandardPC",
                true,
            ),
        ];
        for (pattern, text, want) in cases {
            assert_eq!(glob_match(pattern, text), want, "{pattern:?} ~ {text:?}");
        }
    }

    const TABLE: &str = "\
# Aliases extracted from modules themselves.
alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias virtio:d00000001v* virtio_net
alias pci:v*d00008139sv*sd*bc*sc*i* 8139too
alias pci:v000010ECd00008139sv*sd*bc*sc*i* 8139cp
alias acpi*:LNXPWRBN:* button
alias input:b*v*p*e*-e*k*r*a*m*l*s*f*w* evdev
alias crypto-crc32c crc32c-intel
";

    #[test]
    fn lookup_finds_every_matching_module() {
        let table = AliasTable::parse(TABLE).unwrap();
        assert_eq!(table.len(), 8);
        let cases: [(&str, &[&str]); 6] = [
            (
                "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00",
                &["e1000"],
            ),
            (
                "pci:v000010ECd00008139sv00001AF4sd00001100bc02sc00i00",
                &["8139cp", "8139too"],
            ),
            ("virtio:d00000001v00001AF4", &["virtio_net"]),
            ("acpi:LNXPWRBN:", &["button"]),
            ("crypto-crc32c", &["crc32c_intel"]),
            ("pci:v00001234d00001111sv00001AF4sd00001100bc03sc00i00", &[]),
        ];
        for (modalias, want) in cases {
            assert_eq!(table.lookup(modalias), want, "{modalias}");
        }
    }

    #[test]
    fn pruning_keeps_the_named_modules_in_order() {
        let table = AliasTable::parse(TABLE).unwrap();
        let keep = ["virtio_net", "e1000"].map(String::from).into();
        let pruned = table.pruned(&keep);
        assert_eq!(
            pruned.render(),
            "alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000\nalias virtio:d00000001v* virtio_net\n"
        );
        assert_eq!(AliasTable::parse(&pruned.render()).unwrap().len(), 2);
        assert!(pruned
            .lookup("pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00")
            .is_empty());
    }

    #[test]
    fn malformed_lines_are_named() {
        for (text, want) in [
            (
                "alias a\n",
                (
                    1,
                    "expected \"alias <pattern> <module>\", found \"alias a\"",
                ),
            ),
            (
                "\nalias a b c\n",
                (
                    2,
                    "expected \"alias <pattern> <module>\", found \"alias a b c\"",
                ),
            ),
            (
                "options e1000 x=1\n",
                (
                    1,
                    "expected \"alias <pattern> <module>\", found \"options e1000 x=1\"",
                ),
            ),
        ] {
            let err = AliasTable::parse(text).unwrap_err();
            assert_eq!((err.0, err.1.as_str()), want, "{text:?}");
        }
    }
}
