//! mkimage: the command-line front end of the image builder. It parses
//! arguments, reads the environment and files, and reports errors with
//! context; everything else is the library's.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use argh::FromArgs;

/// Build and inspect chaos boot images (gzip-compressed newc cpio archives).
#[derive(FromArgs)]
struct Cli {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Build(Build),
    List(List),
}

/// Build a reproducible image from a spec file in the kernel's gen_init_cpio
/// format (file, dir, nod, slink lines), plus `binary PATH` lines: the host
/// program or library at PATH with its loader, libraries and symlinks,
/// found in its ELF headers; every mtime is SOURCE_DATE_EPOCH, or 0 when
/// it is unset. The image is a sequence of gzip members, one archive each,
/// compressed on every core; with --cache, members an earlier build
/// compressed are reused (the bytes are the same either way).
#[derive(FromArgs)]
#[argh(subcommand, name = "build")]
struct Build {
    /// the spec file
    #[argh(positional)]
    spec: PathBuf,
    /// where to write the image (.cpio.gz)
    #[argh(option, short = 'o')]
    output: PathBuf,
    /// a directory keeping compressed members between builds, keyed by
    /// content (made if missing; the least recently used go beyond 256 MiB)
    #[argh(option)]
    cache: Option<PathBuf>,
}

/// Print an image's entries one per line, like `ls -l`: mode, uid, gid,
/// size (or device numbers), name and symlink target.
#[derive(FromArgs)]
#[argh(subcommand, name = "list")]
struct List {
    /// the image (gzip-compressed or plain newc cpio)
    #[argh(positional)]
    image: PathBuf,
}

fn main() -> Result<()> {
    let cli: Cli = argh::from_env();
    match cli.command {
        Command::Build(build) => run_build(&build),
        Command::List(list) => run_list(&list.image),
    }
}

fn run_build(build: &Build) -> Result<()> {
    let mtime = mkimage::source_date_epoch(std::env::var_os("SOURCE_DATE_EPOCH"))?;
    let spec = mkimage::specfile::parse_file(&build.spec)?;
    let cache = build
        .cache
        .as_deref()
        .map(mkimage::MemberCache::open)
        .transpose()?;
    // Write beside the target and rename, so a failed build never leaves a
    // truncated image where a bootable one is expected.
    let mut partial = build.output.clone().into_os_string();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let written = write_image(&spec, &partial, mtime, cache.as_ref()).and_then(|()| {
        std::fs::rename(&partial, &build.output).with_context(|| {
            format!(
                "renaming {} to {}",
                partial.display(),
                build.output.display()
            )
        })
    });
    if written.is_err() {
        // Best effort: the write error is the one worth reporting.
        let _ = std::fs::remove_file(&partial);
    }
    written.with_context(|| {
        format!(
            "building {} from {}",
            build.output.display(),
            build.spec.display()
        )
    })
}

fn write_image(
    spec: &mkimage::Spec,
    path: &Path,
    mtime: u64,
    cache: Option<&mkimage::MemberCache>,
) -> Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let (file, _) = spec.write_with(BufWriter::new(file), mtime, cache)?;
    file.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|file| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

fn run_list(image: &Path) -> Result<()> {
    let file = File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let entries = mkimage::list(file).with_context(|| format!("listing {}", image.display()))?;
    let mut out = io::stdout().lock();
    for entry in entries {
        match writeln!(out, "{entry}") {
            // `mkimage list | head` is not an error.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            other => other.context("writing to stdout")?,
        }
    }
    Ok(())
}
