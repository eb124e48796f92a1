//! What the dynamic loader reads from an ELF file before it maps anything:
//! the program interpreter (`PT_INTERP`) and the dynamic section's
//! `DT_NEEDED`, `DT_SONAME`, `DT_RPATH` and `DT_RUNPATH`, found through the
//! program headers as the loader finds them (section headers may be
//! stripped).
//!
//! Both classes (32- and 64-bit) and both byte orders parse. The input is
//! untrusted bytes: every offset and size is checked against the file, so
//! a truncated or corrupt file is an [`ElfError`], never a panic or an
//! out-of-bounds read. This module parses only; finding the files named is
//! [`crate::payload`]'s.

use std::ops::Range;

const MAGIC: &[u8; 4] = b"\x7fELF";
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_STRSZ: u64 = 10;
const DT_SONAME: u64 = 14;
const DT_RPATH: u64 = 15;
const DT_RUNPATH: u64 = 29;
/// x86-64's `e_machine`.
pub const EM_X86_64: u16 = 62;

/// 32- or 64-bit (`EI_CLASS`); the loader only links objects of one class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Elf32,
    Elf64,
}

/// The loader-relevant facts of one ELF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elf {
    pub class: Class,
    /// `e_machine`: a library of another machine is skipped in a search.
    pub machine: u16,
    /// `PT_INTERP`: the loader the kernel starts for this program.
    pub interpreter: Option<String>,
    /// `DT_NEEDED`, in file order (the loader's breadth-first order).
    pub needed: Vec<String>,
    pub soname: Option<String>,
    /// `DT_RPATH`, split at `:`; the loader ignores it when `runpath` is set.
    pub rpath: Vec<String>,
    /// `DT_RUNPATH`, split at `:`.
    pub runpath: Vec<String>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ElfError {
    #[error("not an ELF file (it does not start with \\x7fELF)")]
    NotElf,
    #[error("truncated: the {what} at offset {offset} ({size} bytes) runs past the end of the file ({len} bytes)")]
    Truncated {
        what: &'static str,
        offset: u64,
        size: u64,
        len: usize,
    },
    #[error("{0}")]
    Invalid(String),
}

/// A bounds-checked view of the file in its class and byte order.
struct Reader<'a> {
    bytes: &'a [u8],
    class: Class,
    little: bool,
}

impl<'a> Reader<'a> {
    fn range(&self, what: &'static str, offset: u64, size: u64) -> Result<Range<usize>, ElfError> {
        let truncated = ElfError::Truncated {
            what,
            offset,
            size,
            len: self.bytes.len(),
        };
        let end = offset.checked_add(size).ok_or_else(|| truncated.clone())?;
        if end > self.bytes.len() as u64 {
            return Err(truncated);
        }
        // Both fit in usize: they are at most the slice's length.
        Ok(offset as usize..end as usize)
    }

    fn slice(&self, what: &'static str, offset: u64, size: u64) -> Result<&'a [u8], ElfError> {
        Ok(&self.bytes[self.range(what, offset, size)?])
    }

    fn uint(&self, what: &'static str, offset: u64, size: u64) -> Result<u64, ElfError> {
        let bytes = self.slice(what, offset, size)?;
        let fold = |acc: u64, b: &u8| (acc << 8) | u64::from(*b);
        Ok(if self.little {
            bytes.iter().rev().fold(0, fold)
        } else {
            bytes.iter().fold(0, fold)
        })
    }

    fn u16(&self, what: &'static str, offset: u64) -> Result<u16, ElfError> {
        // Two bytes always fit.
        Ok(self.uint(what, offset, 2)? as u16)
    }

    fn u32(&self, what: &'static str, offset: u64) -> Result<u32, ElfError> {
        Ok(self.uint(what, offset, 4)? as u32)
    }

    /// An address, offset or size: 4 bytes in ELF32, 8 in ELF64.
    fn word(&self, what: &'static str, offset: u64) -> Result<u64, ElfError> {
        self.uint(what, offset, self.word_size())
    }

    fn word_size(&self) -> u64 {
        match self.class {
            Class::Elf32 => 4,
            Class::Elf64 => 8,
        }
    }
}

/// One program header, the fields the loader's lookups need.
#[derive(Clone, Copy)]
struct Segment {
    kind: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

impl Elf {
    /// Parses the headers of an ELF executable or shared object.
    pub fn parse(bytes: &[u8]) -> Result<Elf, ElfError> {
        if !bytes.starts_with(MAGIC) {
            return Err(ElfError::NotElf);
        }
        let ident = |index: usize| bytes.get(index).copied().unwrap_or(0);
        let class = match ident(4) {
            1 => Class::Elf32,
            2 => Class::Elf64,
            other => {
                return Err(ElfError::Invalid(format!(
                    "ELF class {other} (expected 1 for 32-bit or 2 for 64-bit)"
                )))
            }
        };
        let little = match ident(5) {
            1 => true,
            2 => false,
            other => {
                return Err(ElfError::Invalid(format!(
                    "ELF data encoding {other} (expected 1 for little-endian or 2 for big-endian)"
                )))
            }
        };
        let r = Reader {
            bytes,
            class,
            little,
        };
        let kind = r.u16("ELF header", 16)?;
        if kind != ET_EXEC && kind != ET_DYN {
            return Err(ElfError::Invalid(format!(
                "ELF type {kind} is not an executable (2) or a shared object (3)"
            )));
        }
        let machine = r.u16("ELF header", 18)?;
        let (phoff, phentsize, phnum) = match class {
            Class::Elf32 => (
                r.word("ELF header", 28)?,
                r.u16("ELF header", 42)?,
                r.u16("ELF header", 44)?,
            ),
            Class::Elf64 => (
                r.word("ELF header", 32)?,
                r.u16("ELF header", 54)?,
                r.u16("ELF header", 56)?,
            ),
        };
        let segments = segments(&r, phoff, phentsize, phnum)?;
        let mut elf = Elf {
            class,
            machine,
            interpreter: None,
            needed: Vec::new(),
            soname: None,
            rpath: Vec::new(),
            runpath: Vec::new(),
        };
        for segment in segments.iter().filter(|s| s.kind == PT_INTERP) {
            let text = r.slice("interpreter", segment.offset, segment.filesz)?;
            elf.interpreter = Some(c_string("PT_INTERP", text)?);
        }
        if let Some(dynamic) = segments.iter().find(|s| s.kind == PT_DYNAMIC) {
            elf.read_dynamic(&r, dynamic, &segments)?;
        }
        Ok(elf)
    }

    fn read_dynamic(
        &mut self,
        r: &Reader,
        dynamic: &Segment,
        segments: &[Segment],
    ) -> Result<(), ElfError> {
        let entry = 2 * r.word_size();
        // Checked once, so the offsets below stay inside the file.
        r.range("dynamic section", dynamic.offset, dynamic.filesz)?;
        let mut tags = Vec::new();
        let (mut strtab, mut strsz) = (None, None);
        for index in 0..dynamic.filesz / entry {
            let at = dynamic.offset + index * entry;
            let tag = r.word("dynamic entry", at)?;
            let value = r.word("dynamic entry", at + r.word_size())?;
            match tag {
                DT_NULL => break,
                DT_STRTAB => strtab = Some(value),
                DT_STRSZ => strsz = Some(value),
                DT_NEEDED | DT_SONAME | DT_RPATH | DT_RUNPATH => tags.push((tag, value)),
                _ => {}
            }
        }
        if tags.is_empty() {
            return Ok(());
        }
        let (Some(address), Some(size)) = (strtab, strsz) else {
            return Err(ElfError::Invalid(
                "the dynamic section names libraries or paths but has no DT_STRTAB or DT_STRSZ"
                    .into(),
            ));
        };
        // DT_STRTAB is an address; the loader reads it from the segment that
        // maps it, and so does this.
        let load = segments
            .iter()
            .find(|s| s.kind == PT_LOAD && s.vaddr <= address && address - s.vaddr < s.filesz)
            .ok_or_else(|| {
                ElfError::Invalid(format!(
                    "DT_STRTAB address {address:#x} is in no loadable segment"
                ))
            })?;
        let start = load
            .offset
            .checked_add(address - load.vaddr)
            .ok_or_else(|| {
                ElfError::Invalid(format!(
                    "DT_STRTAB address {address:#x} maps past any file offset"
                ))
            })?;
        let strings = r.slice("string table", start, size)?;
        for (tag, offset) in tags {
            let name = match tag {
                DT_NEEDED => "DT_NEEDED",
                DT_SONAME => "DT_SONAME",
                DT_RPATH => "DT_RPATH",
                _ => "DT_RUNPATH",
            };
            let text = usize::try_from(offset)
                .ok()
                .and_then(|start| strings.get(start..))
                .ok_or_else(|| {
                    ElfError::Invalid(format!(
                        "{name} string offset {offset} is past the string table ({size} bytes)"
                    ))
                })?;
            let value = c_string(name, text)?;
            let paths = || value.split(':').map(String::from).collect::<Vec<_>>();
            match tag {
                DT_NEEDED => self.needed.push(value),
                DT_SONAME => self.soname = Some(value),
                DT_RPATH => self.rpath.extend(paths()),
                _ => self.runpath.extend(paths()),
            }
        }
        Ok(())
    }
}

fn segments(r: &Reader, phoff: u64, phentsize: u16, phnum: u16) -> Result<Vec<Segment>, ElfError> {
    let (want, offsets) = match r.class {
        // p_type, p_offset, p_vaddr, p_filesz
        Class::Elf32 => (32, [0, 4, 8, 16]),
        Class::Elf64 => (56, [0, 8, 16, 32]),
    };
    if phnum > 0 && phentsize != want {
        return Err(ElfError::Invalid(format!(
            "program header entry size {phentsize} (expected {want})"
        )));
    }
    let phentsize = u64::from(phentsize);
    r.range("program header table", phoff, phentsize * u64::from(phnum))?;
    (0..u64::from(phnum))
        .map(|index| {
            let at = phoff + index * phentsize;
            Ok(Segment {
                kind: r.u32("program header", at + offsets[0])?,
                offset: r.word("program header", at + offsets[1])?,
                vaddr: r.word("program header", at + offsets[2])?,
                filesz: r.word("program header", at + offsets[3])?,
            })
        })
        .collect()
}

/// The NUL-terminated UTF-8 string at the start of `bytes`.
fn c_string(what: &str, bytes: &[u8]) -> Result<String, ElfError> {
    let end = bytes
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| ElfError::Invalid(format!("{what} string has no terminating NUL")))?;
    String::from_utf8(bytes[..end].to_vec())
        .map_err(|_| ElfError::Invalid(format!("{what} string is not UTF-8")))
}

/// Small ELF files built in memory, for this module's and the payload's tests.
#[cfg(test)]
pub(crate) mod build {
    use super::*;

    /// What a test ELF declares.
    #[derive(Default, Clone)]
    pub struct Fake<'a> {
        pub elf32: bool,
        pub big_endian: bool,
        pub machine: Option<u16>,
        pub interpreter: Option<&'a str>,
        pub needed: &'a [&'a str],
        pub soname: Option<&'a str>,
        pub rpath: Option<&'a str>,
        pub runpath: Option<&'a str>,
    }

    /// Layout: ELF header, three program headers (PT_LOAD of the whole
    /// file at vaddr 0x10000, PT_INTERP, PT_DYNAMIC), the interpreter, the
    /// string table, the dynamic section.
    pub fn elf(fake: &Fake) -> Vec<u8> {
        let wide = !fake.elf32;
        let word = if wide { 8 } else { 4 };
        let (ehsize, phentsize) = if wide { (64, 56) } else { (52, 32) };
        let phnum = 3u64;
        let put = |out: &mut Vec<u8>, value: u64, size: usize| {
            let bytes = value.to_le_bytes();
            if fake.big_endian {
                out.extend(bytes[..size].iter().rev());
            } else {
                out.extend(&bytes[..size]);
            }
        };
        let interp_off = ehsize + phnum * phentsize;
        let interp = fake
            .interpreter
            .map(|i| format!("{i}\0"))
            .unwrap_or_default();
        let strtab_off = interp_off + interp.len() as u64;
        let mut strtab = vec![0u8];
        let mut dyns: Vec<(u64, u64)> = Vec::new();
        let mut string = |tag: u64, text: &str, dyns: &mut Vec<(u64, u64)>| {
            dyns.push((tag, strtab.len() as u64));
            strtab.extend(text.as_bytes());
            strtab.push(0);
        };
        for lib in fake.needed {
            string(DT_NEEDED, lib, &mut dyns);
        }
        for (tag, value) in [
            (DT_SONAME, fake.soname),
            (DT_RPATH, fake.rpath),
            (DT_RUNPATH, fake.runpath),
        ] {
            if let Some(value) = value {
                string(tag, value, &mut dyns);
            }
        }
        let base = 0x10000;
        dyns.push((DT_STRTAB, base + strtab_off));
        dyns.push((DT_STRSZ, strtab.len() as u64));
        dyns.push((DT_NULL, 0));
        let dyn_off = strtab_off + strtab.len() as u64;
        let dyn_size = dyns.len() as u64 * 2 * word as u64;
        let total = dyn_off + dyn_size;

        let mut out = MAGIC.to_vec();
        out.extend([
            if wide { 2 } else { 1 },
            if fake.big_endian { 2 } else { 1 },
            1,
        ]);
        out.resize(16, 0);
        put(&mut out, u64::from(ET_DYN), 2);
        put(&mut out, u64::from(fake.machine.unwrap_or(EM_X86_64)), 2);
        put(&mut out, 1, 4); // e_version
        put(&mut out, 0, word); // e_entry
        put(&mut out, ehsize, word); // e_phoff
        put(&mut out, 0, word); // e_shoff
        put(&mut out, 0, 4); // e_flags
        put(&mut out, ehsize, 2);
        put(&mut out, phentsize, 2);
        put(&mut out, phnum, 2);
        put(&mut out, 0, 6); // e_shentsize, e_shnum, e_shstrndx
        assert_eq!(out.len() as u64, ehsize);
        let interp_len = if fake.interpreter.is_some() {
            interp.len() as u64
        } else {
            0
        };
        for (kind, offset, size) in [
            (PT_LOAD, 0, total),
            // A PT_INTERP of size 0 would be invalid; a program without an
            // interpreter gets a harmless PT_LOAD instead.
            (
                if interp_len > 0 { PT_INTERP } else { PT_LOAD },
                interp_off,
                interp_len,
            ),
            (PT_DYNAMIC, dyn_off, dyn_size),
        ] {
            put(&mut out, u64::from(kind), 4);
            if wide {
                put(&mut out, 4, 4); // p_flags
            }
            put(&mut out, offset, word);
            put(&mut out, base + offset, word); // p_vaddr
            put(&mut out, base + offset, word); // p_paddr
            put(&mut out, size, word); // p_filesz
            put(&mut out, size, word); // p_memsz
            if !wide {
                put(&mut out, 4, 4); // p_flags
            }
            put(&mut out, 8, word); // p_align
        }
        out.extend(interp.as_bytes());
        out.extend(&strtab);
        for (tag, value) in dyns {
            put(&mut out, tag, word);
            put(&mut out, value, word);
        }
        assert_eq!(out.len() as u64, total);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::build::{elf, Fake};
    use super::*;

    const NEEDED: &[&str] = &["libslurmfull.so", "libc.so.6"];

    #[test]
    fn parses_every_class_and_byte_order() {
        for (elf32, big_endian) in [(false, false), (true, false), (false, true), (true, true)] {
            let fake = Fake {
                elf32,
                big_endian,
                interpreter: Some("/lib64/ld-linux-x86-64.so.2"),
                needed: NEEDED,
                soname: Some("libx.so.1"),
                rpath: Some("/opt/a:$ORIGIN/../lib"),
                runpath: Some("/usr/lib/x86_64-linux-gnu/slurm-wlm"),
                ..Fake::default()
            };
            let parsed = Elf::parse(&elf(&fake)).unwrap();
            assert_eq!(
                parsed,
                Elf {
                    class: if elf32 { Class::Elf32 } else { Class::Elf64 },
                    machine: EM_X86_64,
                    interpreter: Some("/lib64/ld-linux-x86-64.so.2".into()),
                    needed: vec!["libslurmfull.so".into(), "libc.so.6".into()],
                    soname: Some("libx.so.1".into()),
                    rpath: vec!["/opt/a".into(), "$ORIGIN/../lib".into()],
                    runpath: vec!["/usr/lib/x86_64-linux-gnu/slurm-wlm".into()],
                },
                "elf32={elf32} big_endian={big_endian}"
            );
        }
    }

    #[test]
    fn a_library_without_interpreter_or_paths() {
        let parsed = Elf::parse(&elf(&Fake {
            needed: &["libc.so.6"],
            ..Fake::default()
        }))
        .unwrap();
        assert_eq!(parsed.interpreter, None);
        assert_eq!(parsed.needed, ["libc.so.6"]);
        assert!(parsed.rpath.is_empty() && parsed.runpath.is_empty());
    }

    #[test]
    fn host_programs_parse() {
        // /bin/true exists on every Debian machine; its loader and libc are
        // what every dynamic program needs.
        let parsed = Elf::parse(&std::fs::read("/bin/true").unwrap()).unwrap();
        assert_eq!(parsed.class, Class::Elf64);
        assert!(parsed.interpreter.is_some(), "{parsed:?}");
        assert!(parsed.needed.iter().any(|n| n == "libc.so.6"), "{parsed:?}");
    }

    #[test]
    fn bad_headers_are_named() {
        let good = elf(&Fake {
            interpreter: Some("/lib/ld.so"),
            needed: NEEDED,
            ..Fake::default()
        });
        let with = |at: usize, bytes: &[u8]| {
            let mut copy = good.clone();
            copy[at..at + bytes.len()].copy_from_slice(bytes);
            copy
        };
        let too_many = format!(
            "truncated: the program header table at offset 64 ({} bytes) runs past the end of the file ({} bytes)",
            56 * 0xffff,
            good.len()
        );
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"#!/bin/sh\n".to_vec(), "not an ELF file (it does not start with \\x7fELF)"),
            (b"\x7fEL".to_vec(), "not an ELF file (it does not start with \\x7fELF)"),
            (b"\x7fELF".to_vec(), "ELF class 0 (expected 1 for 32-bit or 2 for 64-bit)"),
            (with(4, &[3]), "ELF class 3 (expected 1 for 32-bit or 2 for 64-bit)"),
            (with(5, &[0]), "ELF data encoding 0 (expected 1 for little-endian or 2 for big-endian)"),
            (with(16, &[1, 0]), "ELF type 1 is not an executable (2) or a shared object (3)"),
            (with(54, &[55, 0]), "program header entry size 55 (expected 56)"),
            (with(56, &[0xff, 0xff]), &too_many),
            (
                good[..100].to_vec(),
                "truncated: the program header table at offset 64 (168 bytes) runs past the end of the file (100 bytes)",
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(Elf::parse(&bytes).unwrap_err().to_string(), want);
        }
    }

    #[test]
    fn strings_out_of_bounds_or_unterminated_are_errors() {
        let good = elf(&Fake {
            needed: &["libc.so.6"],
            ..Fake::default()
        });
        // The dynamic section is last: NEEDED, STRTAB, STRSZ, NULL.
        let dyn_at = good.len() - 4 * 16;
        let set = |entry: usize, value: u64| {
            let mut copy = good.clone();
            let at = dyn_at + entry * 16 + 8;
            copy[at..at + 8].copy_from_slice(&value.to_le_bytes());
            copy
        };
        let cases = [
            (
                set(0, 999),
                "DT_NEEDED string offset 999 is past the string table (11 bytes)",
            ),
            (
                set(1, 0x90000),
                "DT_STRTAB address 0x90000 is in no loadable segment",
            ),
            (set(2, 10), "DT_NEEDED string has no terminating NUL"),
        ];
        for (bytes, want) in cases {
            assert_eq!(Elf::parse(&bytes).unwrap_err().to_string(), want);
        }
    }

    #[test]
    fn hostile_input_never_panics() {
        let good = elf(&Fake {
            interpreter: Some("/lib64/ld-linux-x86-64.so.2"),
            needed: NEEDED,
            runpath: Some("/r"),
            ..Fake::default()
        });
        // Every truncation of a valid file is an error.
        for len in 0..good.len() {
            assert!(Elf::parse(&good[..len]).is_err(), "truncated at {len}");
        }
        // Every single-byte corruption parses or fails, without panicking.
        for at in 0..good.len() {
            for value in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut copy = good.clone();
                copy[at] = value;
                let _ = Elf::parse(&copy);
            }
        }
        // And every pair of corruptions a few bytes apart: an offset and
        // the size beside it, or a tag and its value.
        for at in 0..good.len() {
            for gap in [1, 3, 8] {
                let mut copy = good.clone();
                copy[at] ^= 0xa5;
                if let Some(byte) = copy.get_mut(at + gap) {
                    *byte = byte.wrapping_add(0x80);
                }
                let _ = Elf::parse(&copy);
            }
        }
        // So do huge offsets that overflow when added to sizes.
        let mut copy = good.clone();
        copy[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(Elf::parse(&copy), Err(ElfError::Truncated { .. })));
    }
}
