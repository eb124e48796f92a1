//! build/chaos.efi: a UEFI unified kernel image, the single-file UEFI
//! artifact for PXE and USB: systemd's EFI stub (systemd-boot-efi) with the
//! kernel, initramfs, command line and an os-release added as PE sections
//! by objcopy. objcopy stamps the build time into the PE header, so the
//! stamp is rewritten to SOURCE_DATE_EPOCH and the checksum recomputed.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use xshell::cmd;

const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

pub fn default_path() -> PathBuf {
    crate::build_dir().join("chaos.efi")
}

pub fn build(kernel: &Path, initrd: &Path, append: &str, out: &Path) -> anyhow::Result<u64> {
    let sh = crate::shell()?;
    let stub = std::fs::read(STUB).with_context(|| {
        format!("reading {STUB} (package systemd-boot-efi; `cargo xtask deps`)")
    })?;
    let staging = crate::partial(&out.with_extension("sections"));
    std::fs::create_dir_all(&staging)?;
    let osrel = staging.join("os-release");
    std::fs::write(
        &osrel,
        "NAME=chaos\nID=chaos\nPRETTY_NAME=\"chaos cluster node\"\n",
    )?;
    let cmdline = staging.join("cmdline");
    std::fs::write(
        &cmdline,
        netboot::boot::cmdline(&netboot::boot::ENTRIES[0], append),
    )?;

    // Each section after the stub's own, in that order; the kernel on a
    // 2 MiB boundary as its PE header asks.
    let mut next = pe::end_of_sections(&stub)?;
    let mut args = Vec::new();
    for (name, file, align) in [
        (".osrel", osrel.as_path(), 0x1_0000),
        (".cmdline", cmdline.as_path(), 0x1_0000),
        (".linux", kernel, 0x20_0000),
        (".initrd", initrd, 0x1_0000),
    ] {
        let vma = next.next_multiple_of(align);
        let len = std::fs::metadata(file)
            .with_context(|| file.display().to_string())?
            .len();
        args.push(format!("--add-section={name}={}", file.display()));
        args.push(format!("--change-section-vma={name}={vma:#x}"));
        next = vma + len;
    }
    let partial = crate::partial(out);
    cmd!(sh, "objcopy {args...} {STUB} {partial}")
        .quiet()
        .run()
        .context("objcopy (package binutils)")?;
    let mut image = std::fs::read(&partial)?;
    pe::set_timestamp(&mut image, crate::mtime()?)?;
    std::fs::write(&partial, &image)?;
    std::fs::rename(&partial, out)?;
    std::fs::remove_dir_all(&staging)?;
    println!(
        "uki: {} ({:.1} MiB)",
        out.display(),
        image.len() as f64 / (1024.0 * 1024.0)
    );
    Ok(image.len() as u64)
}

/// Just enough of the PE format to place sections and make the header
/// reproducible.
mod pe {
    use super::*;

    fn u16_at(b: &[u8], at: usize) -> anyhow::Result<u16> {
        b.get(at..at + 2)
            .map(|s| u16::from_le_bytes([s[0], s[1]]))
            .context("PE header truncated")
    }

    fn u32_at(b: &[u8], at: usize) -> anyhow::Result<u32> {
        b.get(at..at + 4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
            .context("PE header truncated")
    }

    /// Offset of the COFF header (after "PE\0\0").
    fn coff(b: &[u8]) -> anyhow::Result<usize> {
        let pe = u32_at(b, 0x3c)? as usize;
        if b.get(pe..pe + 4) != Some(b"PE\0\0") {
            bail!("not a PE image (no PE signature)");
        }
        Ok(pe + 4)
    }

    /// The first virtual address past every section.
    pub fn end_of_sections(b: &[u8]) -> anyhow::Result<u64> {
        let coff = coff(b)?;
        let count = u16_at(b, coff + 2)? as usize;
        let table = coff + 20 + u16_at(b, coff + 16)? as usize;
        (0..count)
            .map(|i| {
                let s = table + i * 40;
                Ok(u64::from(u32_at(b, s + 12)?) + u64::from(u32_at(b, s + 8)?))
            })
            .try_fold(0, |end, e: anyhow::Result<u64>| Ok(end.max(e?)))
    }

    /// Sets the COFF time stamp and recomputes the optional header's
    /// checksum over the result.
    pub fn set_timestamp(b: &mut [u8], epoch: u64) -> anyhow::Result<()> {
        let coff = coff(b)?;
        let stamp = u32::try_from(epoch).context("SOURCE_DATE_EPOCH past 2106")?;
        b[coff + 4..coff + 8].copy_from_slice(&stamp.to_le_bytes());
        let sum_at = coff + 20 + 64;
        u32_at(b, sum_at)?;
        b[sum_at..sum_at + 4].fill(0);
        let sum = checksum(b);
        b[sum_at..sum_at + 4].copy_from_slice(&sum.to_le_bytes());
        Ok(())
    }

    /// The PE checksum: 16-bit one's-complement-style sum with carries
    /// folded, plus the file length (the checksum field itself zero).
    pub fn checksum(b: &[u8]) -> u32 {
        let mut sum: u64 = 0;
        for chunk in b.chunks(2) {
            let word = u16::from_le_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
            sum += u64::from(word);
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum = (sum & 0xffff) + (sum >> 16);
        (sum as u32).wrapping_add(b.len() as u32)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_stub_is_read_and_restamped_reproducibly() {
            let Ok(stub) = std::fs::read(STUB) else {
                panic!("{STUB} missing: install systemd-boot-efi (`cargo xtask deps`)");
            };
            assert!(end_of_sections(&stub).unwrap() > 0x1000);
            let mut a = stub.clone();
            let mut b = stub.clone();
            let stamp = coff(&b).unwrap() + 4;
            b[stamp] ^= 0xff;
            set_timestamp(&mut a, 1_700_000_000).unwrap();
            set_timestamp(&mut b, 1_700_000_000).unwrap();
            assert_eq!(a, b);
            assert_eq!(u32_at(&a, coff(&a).unwrap() + 4).unwrap(), 1_700_000_000);
            assert!(end_of_sections(b"MZ not a PE file at all, far too short").is_err());
        }

        #[test]
        fn checksum_folds_carries_and_adds_the_length() {
            assert_eq!(checksum(&[0xff, 0xff, 0x01, 0x00]), 1 + 4);
            assert_eq!(checksum(&[0x01]), 1 + 1);
        }
    }
}
