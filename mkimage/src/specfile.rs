//! The spec-file text format: the Linux kernel's gen_init_cpio input
//! (`usr/gen_init_cpio.c`), parsed into a [`Spec`].
//!
//! One entry per line, fields separated by spaces or tabs; blank lines and
//! lines starting with `#` are ignored:
//!
//! ```text
//! file  <name> <location> <mode> <uid> <gid>
//! dir   <name> <mode> <uid> <gid>
//! nod   <name> <mode> <uid> <gid> <dev_type> <maj> <min>
//! slink <name> <target> <mode> <uid> <gid>
//! binary <path>
//! ```
//!
//! `<name>` is the path in the image (a leading `/` is optional, as in
//! gen_init_cpio); `<mode>` is octal permission bits; `<uid>`, `<gid>`,
//! `<maj>`, `<min>` are decimal; `<dev_type>` is `c` or `b`. `<location>`
//! is a host file, relative to the spec file's directory unless absolute,
//! and may contain `${VAR}` environment references. gen_init_cpio's `pipe`
//! and `sock` entries and `file` hard links are rejected: a chaos image has
//! no use for them. `binary` is chaos's own: the build host's ELF program
//! or library at `<path>` goes in at the same path with its interpreter,
//! libraries and the symlinks on the way ([`crate::payload`]), added after
//! every other line. This module owns the text format only; tree rules
//! (conflicts, implicit parents) are the spec's.

use std::path::{Path, PathBuf};

use crate::payload::Payload;
use crate::spec::{Content, Entry, Kind, Spec, SpecError};

#[derive(Debug, thiserror::Error)]
pub enum SpecFileError {
    #[error("reading spec file {path}: {source}", path = path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}:{line}: {message}", file = file.display())]
    Line {
        file: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{file}:{line}: {source}", file = file.display())]
    Spec {
        file: PathBuf,
        line: usize,
        source: SpecError,
    },
    #[error("{file}: adding the binary lines' files: {source}", file = file.display())]
    Binaries { file: PathBuf, source: SpecError },
}

/// The known directives and their fields, for the field-count message.
const DIRECTIVES: [(&str, &[&str]); 4] = [
    ("file", &["name", "location", "mode", "uid", "gid"]),
    ("dir", &["name", "mode", "uid", "gid"]),
    (
        "nod",
        &["name", "mode", "uid", "gid", "dev_type", "maj", "min"],
    ),
    ("slink", &["name", "target", "mode", "uid", "gid"]),
];

/// Reads and parses the spec file at `path`, expanding `${VAR}` from the
/// process environment.
pub fn parse_file(path: &Path) -> Result<Spec, SpecFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| SpecFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path, |var| std::env::var(var).ok())
}

/// Parses spec text that came from `path`; `path` names the file in errors
/// and anchors relative locations. `env` looks up `${VAR}` references.
pub fn parse(
    text: &str,
    path: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Spec, SpecFileError> {
    let base = path.parent().unwrap_or(Path::new(""));
    let mut spec = Spec::new();
    let mut payload: Option<Payload> = None;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let fields: Vec<&str> = raw.split_whitespace().collect();
        let Some((&directive, args)) = fields.split_first() else {
            continue;
        };
        if directive.starts_with('#') {
            continue;
        }
        let fail = |message| SpecFileError::Line {
            file: path.to_owned(),
            line,
            message,
        };
        if directive == "binary" {
            let &[binary] = args else {
                return Err(fail(format!(
                    "binary: expected 1 field (binary <path>), found {}",
                    args.len()
                )));
            };
            let host = match &mut payload {
                Some(payload) => payload,
                None => {
                    payload.insert(Payload::from_host().map_err(|e| fail(format!("binary: {e}")))?)
                }
            };
            host.binary(binary)
                .map_err(|e| fail(format!("binary: {e}")))?;
            continue;
        }
        let (name, entry) = parse_line(directive, args, base, &env).map_err(fail)?;
        spec.insert(&name, entry)
            .map_err(|source| SpecFileError::Spec {
                file: path.to_owned(),
                line,
                source,
            })?;
    }
    // Last, so that a host symlink meets the directories the lines made.
    if let Some(payload) = payload {
        payload
            .add_to(&mut spec)
            .map_err(|source| SpecFileError::Binaries {
                file: path.to_owned(),
                source,
            })?;
    }
    Ok(spec)
}

/// One non-comment line, as (image path, entry) or a message without the
/// `file:line: ` prefix.
fn parse_line(
    directive: &str,
    args: &[&str],
    base: &Path,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(String, Entry), String> {
    let Some((_, names)) = DIRECTIVES.iter().find(|(d, _)| *d == directive) else {
        return Err(match directive {
            "pipe" | "sock" => {
                format!("{directive}: named pipes and sockets are not supported in chaos images")
            }
            _ => format!(
                "unknown entry type {directive:?} (expected file, dir, nod, slink or binary)"
            ),
        });
    };
    if directive == "file" && args.len() > names.len() {
        return Err(format!(
            "file: hard links ({:?}...) are not supported",
            args[names.len()]
        ));
    }
    let number = |field: &str, text: &str, radix: u32, what: &str| {
        // from_str_radix alone would accept a leading '+'.
        let digits = !text.is_empty() && text.chars().all(|c| c.is_digit(radix));
        digits
            .then(|| u32::from_str_radix(text, radix).ok())
            .flatten()
            .ok_or_else(|| format!("{directive}: {field} {text:?} is not {what}"))
    };
    let decimal = |field, text| number(field, text, 10, "a decimal number");

    let (name, kind, mode, uid, gid) = match (directive, args) {
        ("file", &[name, location, mode, uid, gid]) => {
            let location = expand(location, env).map_err(|e| format!("file: location: {e}"))?;
            let kind = Kind::File(Content::Host(base.join(location)));
            (name, kind, mode, uid, gid)
        }
        ("dir", &[name, mode, uid, gid]) => (name, Kind::Dir, mode, uid, gid),
        ("slink", &[name, target, mode, uid, gid]) => {
            (name, Kind::Symlink(target.to_owned()), mode, uid, gid)
        }
        ("nod", &[name, mode, uid, gid, dev_type, major, minor]) => {
            let (major, minor) = (decimal("maj", major)?, decimal("min", minor)?);
            let kind = match dev_type {
                "c" => Kind::CharDev { major, minor },
                "b" => Kind::BlockDev { major, minor },
                other => return Err(format!("nod: dev_type {other:?} is not \"c\" or \"b\"")),
            };
            (name, kind, mode, uid, gid)
        }
        // The directive is known, so only the field count can be wrong.
        _ => {
            let usage: Vec<String> = names.iter().map(|n| format!("<{n}>")).collect();
            return Err(format!(
                "{directive}: expected {} fields ({directive} {}), found {}",
                names.len(),
                usage.join(" "),
                args.len()
            ));
        }
    };
    let entry = Entry {
        kind,
        mode: number("mode", mode, 8, "an octal number")?,
        uid: decimal("uid", uid)?,
        gid: decimal("gid", gid)?,
    };
    let path = if name.starts_with('/') {
        name.to_owned()
    } else {
        format!("/{name}")
    };
    Ok((path, entry))
}

/// Expands `${VAR}` references, as gen_init_cpio does for locations.
fn expand(text: &str, env: &impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated \"${{\" in {text:?}"))?;
        let var = &after[..end];
        let value = env(var).ok_or_else(|| format!("environment variable {var:?} is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Spec, SpecFileError> {
        parse(text, Path::new("conf/spec.txt"), |var| {
            (var == "BUILD").then(|| "/build".to_owned())
        })
    }

    #[test]
    fn parses_every_directive() {
        let spec = parse_str(
            "# a comment\n\
             \n\
             dir /dev 0755 0 0\n\
             nod /dev/console 600 0 0 c 5 1\n\
             nod\t/dev/sda\t0660\t0\t6\tb\t8\t0\n\
             \t# indented comment\n\
             dir root 0700 0 0\n\
             file /sbin/init ${BUILD}/init 0755 0 0\n\
             file /etc/motd motd 0644 0 0\n\
             slink /bin usr/bin 777 0 0\n",
        )
        .unwrap();
        let entries: Vec<(&str, &Entry)> = spec.iter().collect();
        let want = [
            ("bin", Entry::new(Kind::Symlink("usr/bin".into()), 0o777)),
            ("dev", Entry::new(Kind::Dir, 0o755)),
            (
                "dev/console",
                Entry::new(Kind::CharDev { major: 5, minor: 1 }, 0o600),
            ),
            (
                "dev/sda",
                Entry {
                    gid: 6,
                    ..Entry::new(Kind::BlockDev { major: 8, minor: 0 }, 0o660)
                },
            ),
            ("etc", Entry::new(Kind::Dir, 0o755)),
            (
                "etc/motd",
                Entry::new(Kind::File(Content::Host("conf/motd".into())), 0o644),
            ),
            ("root", Entry::new(Kind::Dir, 0o700)),
            ("sbin", Entry::new(Kind::Dir, 0o755)),
            (
                "sbin/init",
                Entry::new(Kind::File(Content::Host("/build/init".into())), 0o755),
            ),
        ];
        assert_eq!(entries.len(), want.len());
        for ((name, entry), (want_name, want_entry)) in entries.into_iter().zip(&want) {
            assert_eq!((name, entry), (*want_name, want_entry));
        }
    }

    #[test]
    fn errors_name_file_line_field_and_expectation() {
        let cases = [
            ("dir /etc 07x5 0 0", "conf/spec.txt:1: dir: mode \"07x5\" is not an octal number"),
            ("dir /etc 0755 -1 0", "conf/spec.txt:1: dir: uid \"-1\" is not a decimal number"),
            ("dir /etc 0755 0 +1", "conf/spec.txt:1: dir: gid \"+1\" is not a decimal number"),
            ("dir /etc 0755 0 99999999999", "conf/spec.txt:1: dir: gid \"99999999999\" is not a decimal number"),
            ("\n\ndir /etc 0755 0", "conf/spec.txt:3: dir: expected 4 fields (dir <name> <mode> <uid> <gid>), found 3"),
            ("nod /dev/x 0600 0 0 x 1 2", "conf/spec.txt:1: nod: dev_type \"x\" is not \"c\" or \"b\""),
            ("nod /dev/x 0600 0 0 c 1 y", "conf/spec.txt:1: nod: min \"y\" is not a decimal number"),
            ("slink /l t 0777 0", "conf/spec.txt:1: slink: expected 5 fields (slink <name> <target> <mode> <uid> <gid>), found 4"),
            ("file /f ${NOPE}/f 0644 0 0", "conf/spec.txt:1: file: location: environment variable \"NOPE\" is not set"),
            ("file /f ${BUILD/f 0644 0 0", "conf/spec.txt:1: file: location: unterminated \"${\" in \"${BUILD/f\""),
            ("file /f f 0644 0 0 /g", "conf/spec.txt:1: file: hard links (\"/g\"...) are not supported"),
            ("pipe /p 0644 0 0", "conf/spec.txt:1: pipe: named pipes and sockets are not supported in chaos images"),
            ("fiel /f f 0644 0 0", "conf/spec.txt:1: unknown entry type \"fiel\" (expected file, dir, nod, slink or binary)"),
            ("binary", "conf/spec.txt:1: binary: expected 1 field (binary <path>), found 0"),
            ("binary /nonexistent/x", "conf/spec.txt:1: binary: /nonexistent/x: no such file on the build host"),
            ("dir /etc 0755 0 0\nslink /etc x 0777 0 0", "conf/spec.txt:2: /etc: already in the image as a directory; the new symlink differs (only directories may be declared twice)"),
            ("dir /etc 10755 0 0", "conf/spec.txt:1: /etc: mode 0o10755 has bits outside the permission mask 0o7777"),
        ];
        for (text, want) in cases {
            assert_eq!(parse_str(text).unwrap_err().to_string(), want, "{text:?}");
        }
    }

    #[test]
    fn a_binary_line_brings_the_program_and_its_libraries() {
        let spec = parse_str("dir /lib/modules 0755 0 0\nbinary /bin/true\n").unwrap();
        let real = std::fs::canonicalize("/bin/true").unwrap();
        let real = real.to_str().unwrap();
        assert_eq!(
            spec.get(real).map(|e| &e.kind),
            Some(&Kind::File(Content::Host(real.into())))
        );
        assert!(
            spec.iter().any(|(name, _)| name.ends_with("/libc.so.6")),
            "no libc.so.6"
        );
        assert_eq!(spec.get("/lib/modules").map(|e| &e.kind), Some(&Kind::Dir));
    }

    #[test]
    fn missing_spec_file_is_named() {
        let err = parse_file(Path::new("/nonexistent/spec.txt"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("reading spec file /nonexistent/spec.txt: "),
            "{err}"
        );
    }
}
