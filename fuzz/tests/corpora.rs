//! Every input of every fuzz target's corpus (fuzz/corpus/<target>/, the
//! inputs libFuzzer kept for new coverage) and of its regressions
//! (fuzz/regressions/<target>/, the inputs of bugs it found, kept whole),
//! fed to the target on stable Rust: none may panic, take longer than
//! [`PER_INPUT`], or hold more than [`MAX_HEAP`] at once. So CI keeps the
//! corpora green without libFuzzer.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use chaos_fuzz::TARGETS;

/// The heap an input may hold at its peak: far beyond what any parser
/// needs for a few KB, far below what a runaway allocation takes.
const MAX_HEAP: usize = 256 << 20;
const PER_INPUT: Duration = Duration::from_secs(10);

/// The system allocator, refusing (so failing loudly) beyond [`MAX_HEAP`].
struct Bounded;

static HELD: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged; the
// counters only watch.
unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let held = HELD.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        if held > MAX_HEAP {
            HELD.fetch_sub(layout.size(), Ordering::Relaxed);
            return std::ptr::null_mut();
        }
        PEAK.fetch_max(held, Ordering::Relaxed);
        // SAFETY: the caller's layout, as GlobalAlloc requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: allocated above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Bounded = Bounded;

fn corpus(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(name)
}

/// The inputs of `name`'s corpus and regressions, sorted.
fn inputs(name: &str) -> Vec<PathBuf> {
    let dir = corpus(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!files.is_empty(), "{} has no inputs", dir.display());
    let regressions = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("regressions")
        .join(name);
    if let Ok(found) = std::fs::read_dir(regressions) {
        files.extend(found.map(|e| e.unwrap().path()));
    }
    files.sort();
    files
}

#[test]
fn every_corpus_input_is_answered_in_time_and_bounded_memory() {
    let mut failures = Vec::new();
    let mut count = 0;
    for target in TARGETS {
        for file in inputs(target.name) {
            count += 1;
            let data = std::fs::read(&file).unwrap();
            let (done, finished) = mpsc::channel();
            let run = target.run;
            let thread = std::thread::spawn(move || {
                run(&data);
                let _ = done.send(());
            });
            match finished.recv_timeout(PER_INPUT) {
                Ok(()) => {
                    let _ = thread.join();
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    failures.push(format!("{}: panicked", file.display()))
                }
                Err(mpsc::RecvTimeoutError::Timeout) => failures.push(format!(
                    "{}: no answer within {} s",
                    file.display(),
                    PER_INPUT.as_secs()
                )),
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    eprintln!(
        "{count} inputs of {} targets; peak heap {} KiB",
        TARGETS.len(),
        PEAK.load(Ordering::Relaxed) / 1024
    );
}

#[test]
fn every_target_has_a_corpus_and_every_corpus_a_target() {
    let dirs: Vec<String> = std::fs::read_dir(corpus(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for target in TARGETS {
        assert!(
            dirs.contains(&target.name.to_string()),
            "no corpus for {target:?}"
        );
    }
    for dir in &dirs {
        assert!(
            chaos_fuzz::target(dir).is_some(),
            "fuzz/corpus/{dir} belongs to no target"
        );
    }
}
