//! Logging for the node's own programs: one record per line to /dev/kmsg, so
//! every line lands on the console and in dmesg with the kernel's timestamp,
//! behind a short greppable prefix per component (`init:`, `certaintyd:`).
//!
//! Before /dev is mounted (or on a host, in tests) lines go to stderr. This
//! module never panics and never blocks on a full console: a failed write is
//! dropped, because losing a log line is better than wedging PID 1.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Mutex;

/// Severity, in the kernel's syslog numbering so it maps straight onto the
/// `<N>` prefix that /dev/kmsg understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 3,
    Warn = 4,
    Info = 6,
    Debug = 7,
}

impl From<chaos_contract::cmdline::LogLevel> for Level {
    fn from(level: chaos_contract::cmdline::LogLevel) -> Self {
        use chaos_contract::cmdline::LogLevel;
        match level {
            LogLevel::Error => Level::Error,
            LogLevel::Warn => Level::Warn,
            LogLevel::Info => Level::Info,
            LogLevel::Debug => Level::Debug,
        }
    }
}

struct Sink {
    component: &'static str,
    max: Level,
    kmsg: Option<File>,
}

static SINK: Mutex<Sink> = Mutex::new(Sink {
    component: "chaos",
    max: Level::Info,
    kmsg: None,
});

fn sink() -> std::sync::MutexGuard<'static, Sink> {
    // A panic while logging must not silence every later line.
    SINK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Names the component whose lines follow; called once at program start.
pub fn set_component(component: &'static str) {
    sink().component = component;
}

/// Drops lines less severe than `max` (`chaos.log=`).
pub fn set_max_level(max: Level) {
    sink().max = max;
}

/// Switches from stderr to /dev/kmsg once devtmpfs is mounted. Userspace
/// writes to /dev/kmsg are rate limited by default (10 lines per 5 s), which
/// would drop most of a boot's log, so the limit is lifted first.
pub fn attach_kmsg() -> std::io::Result<()> {
    // Failing to lift the limit only costs lines, so it is not fatal.
    let _ = std::fs::write("/proc/sys/kernel/printk_devkmsg", "on\n");
    let kmsg = OpenOptions::new().write(true).open("/dev/kmsg")?;
    sink().kmsg = Some(kmsg);
    Ok(())
}

/// Writes one record; multi-line messages become one record per line so each
/// keeps the prefix and the console never shows a bare continuation.
pub fn write(level: Level, args: fmt::Arguments) {
    write_as(None, level, args)
}

/// Like [`write`], with the component named explicitly: PID 1 uses it to log
/// its services' output as `<service>: line`.
pub fn write_as(component: Option<&str>, level: Level, args: fmt::Arguments) {
    let mut sink = sink();
    if level > sink.max {
        return;
    }
    let text = args.to_string();
    let component = component.unwrap_or(sink.component).to_string();
    for line in text.lines() {
        match sink.kmsg.as_mut() {
            Some(kmsg) => {
                let record = format!("<{}>{}: {}\n", level as u8, component, line);
                let _ = kmsg.write_all(record.as_bytes());
            }
            None => {
                let _ = writeln!(std::io::stderr(), "{component}: {line}");
            }
        }
    }
}

#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Error, format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Warn, format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Info, format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Debug, format_args!($($arg)*)) };
}
