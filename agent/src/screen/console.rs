// SPDX-License-Identifier: GPL-3.0-or-later
//! The screen on a real terminal: the device in raw mode and its size, the
//! kernel's log (shown on request, and the sign that the console was just
//! written over), the keys, and the loop that draws frames and, once the
//! operator confirms, asks PID 1 to power off or reboot.
//!
//! The kernel and init print on the console the screen draws on. Rather
//! than silence them (a console that hides why a node fails is worse than
//! a torn frame), the screen draws whole frames: after every burst of log
//! lines, whenever what it shows changes, and every few seconds anyway.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chaos_contract::addresses::Addresses;
use chaos_contract::cmdline::{self, Mode as BootMode};
use chaos_contract::power::{signal_for, Power};
use nix::sys::termios::{self, LocalFlags, SetArg, SpecialCharacterIndices, Termios};

use super::{kmsg_line, Action, Cluster, Keys, Own, Screen, View};
use crate::channel::{timeout_until, PollSet};
use crate::keys::{fingerprint, read_key, Keypair, NODE_KEY};
use crate::log::info;
use crate::proto::Request;

/// The node's console: where the kernel, init and an operator meet.
pub const CONSOLE: &str = "/dev/console";
/// The terminal of whoever runs `tyd screen` by hand.
const OWN_TERMINAL: &str = "/dev/tty";
/// An escape sequence arrives in one piece; an Esc alone waits this long.
const ESC_WAIT: Duration = Duration::from_millis(60);
/// Log lines come in bursts: the frame is drawn again once they settle.
const SETTLE: Duration = Duration::from_millis(150);
/// Drawn again at least this often, whatever else happened on the console.
const REDRAW: Duration = Duration::from_secs(10);
/// How long the screen waits for its tyd's answer (a drone asks the head).
const ASK_WAIT: Duration = Duration::from_secs(2);
/// Log lines kept for the log view.
const LOG_LINES: usize = 500;

/// Why the screen stopped.
#[derive(Debug, thiserror::Error)]
pub enum ScreenError {
    #[error("{path}: {what}: {source}")]
    Terminal {
        path: String,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{path} was hung up")]
    HungUp { path: String },
    #[error("asking PID 1 to shut the node down: {0}")]
    Shutdown(nix::Error),
    #[error("waiting for keys and the log: {0}")]
    Poll(std::io::Error),
}

#[derive(Debug)]
pub struct Options {
    /// The local tyd's control socket.
    pub socket: PathBuf,
    /// Where the local tyd keeps this boot's node key.
    pub state: PathBuf,
    /// Own the node's console: draw on /dev/console, stand aside in
    /// expert mode, and leave the cluster on Esc and `r`.
    pub console: bool,
    /// How often the cluster is asked for.
    pub interval: Duration,
}

/// Runs the screen until `stop` is readable, or the operator quits a view
/// off the console.
pub fn run(options: &Options, stop: BorrowedFd<'_>) -> Result<(), ScreenError> {
    if options.console && expert_mode() {
        info("expert mode: the console is the shell's, so no cluster screen");
        return Ok(());
    }
    let path = if options.console {
        CONSOLE
    } else {
        OWN_TERMINAL
    };
    let mut terminal = Terminal::open(Path::new(path))?;
    let mut kmsg = Kmsg::open();
    let mut log: Vec<String> = Vec::new();
    kmsg.read_into(&mut log);

    let mut screen = Screen::new(options.console);
    let mut keys = Keys::default();
    let mut view = ask(options);
    let mut asked_at = Instant::now();
    let mut drawn: Vec<String> = Vec::new();
    let mut drawn_at = Instant::now();
    let mut torn_at: Option<Instant> = None;
    let mut leave = None;
    loop {
        let now = Instant::now();
        let (columns, rows) = terminal.size();
        let frame = screen.frame(&view, &log, columns, rows);
        if frame != drawn || torn_at.is_some_and(|t| now >= t + SETTLE) || now >= drawn_at + REDRAW
        {
            terminal
                .draw(&frame)
                .map_err(|source| terminal.error("writing", source))?;
            drawn = frame;
            drawn_at = now;
            torn_at = None;
        }
        // Asked only once the frame that says so is on the screen.
        if let Some(power) = leave.take() {
            let then = match power {
                Power::Off => "powering off",
                Power::Reboot => "rebooting",
            };
            info(format!(
                "leaving the cluster and {then}, as asked at the console"
            ));
            nix::sys::signal::Signal::try_from(signal_for(power))
                .and_then(|signal| nix::sys::signal::kill(nix::unistd::Pid::from_raw(1), signal))
                .map_err(ScreenError::Shutdown)?;
        }
        let deadline = if keys.pending() {
            now + ESC_WAIT
        } else {
            torn_at.map_or(drawn_at + REDRAW, |t| t + SETTLE)
        }
        .min(asked_at + options.interval);
        let (stopping, typed, logged) = {
            let mut set = PollSet::default();
            let stop_index = set.input(stop);
            let typed = set.input(terminal.file.as_fd());
            let logged = kmsg.file.as_ref().map(|f| set.input(f.as_fd()));
            set.wait(timeout_until(deadline).unwrap_or(nix::poll::PollTimeout::ZERO))
                .map_err(ScreenError::Poll)?;
            (
                set.ready(Some(stop_index)),
                set.ready(Some(typed)),
                set.ready(logged),
            )
        };
        if stopping {
            return Ok(());
        }
        let mut pressed = if typed {
            let bytes = terminal
                .read()
                .map_err(|source| terminal.error("reading", source))?;
            if bytes.is_empty() {
                return Err(ScreenError::HungUp { path: path.into() });
            }
            keys.feed(&bytes)
        } else {
            Vec::new()
        };
        if !typed && keys.pending() && Instant::now() >= deadline {
            pressed.extend(keys.timeout());
        }
        for key in pressed {
            match screen.key(key) {
                Action::Leave(power) => leave = Some(power),
                Action::Quit => return Ok(()),
                Action::Nothing | Action::Redraw => {}
            }
        }
        if Instant::now() >= asked_at + options.interval {
            view = ask(options);
            asked_at = Instant::now();
        }
        if logged && kmsg.read_into(&mut log) {
            torn_at = Some(Instant::now());
        }
    }
}

/// Whether the kernel command line says `chaos.mode=expert`, read with
/// init's own parser.
fn expert_mode() -> bool {
    let text = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    cmdline::parse(&text).chaos.mode == BootMode::Expert
}

/// The view now: this node's facts, and what its tyd says of the cluster,
/// waited for at most [`ASK_WAIT`] (keys typed meanwhile are read after).
fn ask(options: &Options) -> View {
    View {
        own: own(options),
        cluster: Cluster::from_answer(crate::control::ask_within(
            &options.socket,
            &Request::Nodes,
            ASK_WAIT,
        )),
    }
}

/// This node's own facts, as the kernel and the local tyd's files say.
fn own(options: &Options) -> Own {
    let addresses = Addresses::read().unwrap_or_default();
    Own {
        hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default(),
        lan: addresses.lan(),
        overlay: addresses.on(crate::kernel::INTERFACE),
        fingerprint: read_key(&options.state.join(NODE_KEY))
            .ok()
            .map(|private| fingerprint(&Keypair::from_private(private).public)),
        jobs: crate::slurm::running_jobs(Path::new(crate::slurm::STEPD_SCOPES)),
    }
}

fn terminal_error(path: &str, what: &'static str, source: std::io::Error) -> ScreenError {
    ScreenError::Terminal {
        path: path.into(),
        what,
        source,
    }
}

/// The terminal, in raw mode (keys one at a time, no echo) until dropped.
struct Terminal {
    file: File,
    saved: Termios,
    path: String,
}

impl Terminal {
    fn open(path: &Path) -> Result<Terminal, ScreenError> {
        let name = path.display().to_string();
        let failed = |what, source| terminal_error(&name, what, source);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(path)
            .map_err(|e| failed("opening", e))?;
        let saved = termios::tcgetattr(&file).map_err(|e| failed("not a terminal", e.into()))?;
        let mut raw = saved.clone();
        raw.local_flags
            .remove(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ISIG);
        raw.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
        raw.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
        termios::tcsetattr(&file, SetArg::TCSANOW, &raw)
            .map_err(|e| failed("setting raw mode", e.into()))?;
        let mut terminal = Terminal {
            file,
            saved,
            path: name.clone(),
        };
        // The cursor hidden, the screen cleared.
        terminal
            .file
            .write_all(b"\x1b[?25l\x1b[H\x1b[2J")
            .map_err(|e| terminal.error("writing", e))?;
        Ok(terminal)
    }

    fn error(&self, what: &'static str, source: std::io::Error) -> ScreenError {
        terminal_error(&self.path, what, source)
    }

    /// Columns and rows; a serial line knows neither, and gets 80 x 24.
    fn size(&self) -> (usize, usize) {
        let mut size = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        use std::os::fd::AsRawFd;
        // SAFETY: TIOCGWINSZ writes one winsize into the struct we own.
        let known = unsafe { libc::ioctl(self.file.as_raw_fd(), libc::TIOCGWINSZ, &mut size) } == 0
            && size.ws_row > 0
            && size.ws_col > 0;
        if known {
            (usize::from(size.ws_col), usize::from(size.ws_row))
        } else {
            (80, 24)
        }
    }

    /// One whole frame from the top left, each line cleared to its end
    /// (the last one to the end of the screen) and ended, so a kernel line
    /// printed after the frame starts a line of its own.
    fn draw(&mut self, frame: &[String]) -> std::io::Result<()> {
        let mut text = String::from("\x1b[H");
        for (i, line) in frame.iter().enumerate() {
            text.push_str(line);
            text.push_str(if i + 1 == frame.len() {
                "\x1b[J\r\n"
            } else {
                "\x1b[K\r\n"
            });
        }
        self.file.write_all(text.as_bytes())
    }

    fn read(&mut self) -> std::io::Result<Vec<u8>> {
        let mut bytes = vec![0u8; 256];
        let n = self.file.read(&mut bytes)?;
        bytes.truncate(n);
        Ok(bytes)
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(&self.file, SetArg::TCSANOW, &self.saved);
        let _ = self.file.write_all(b"\x1b[?25h\r\n");
    }
}

/// /dev/kmsg, read without blocking; `None` where it cannot be read (not
/// root, say), and the log view then stays empty.
struct Kmsg {
    file: Option<File>,
}

impl Kmsg {
    fn open() -> Kmsg {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg");
        if let Err(e) = &file {
            info(format!("the log view stays empty: /dev/kmsg: {e}"));
        }
        Kmsg { file: file.ok() }
    }

    /// Appends every record that came since the last call; whether any did.
    fn read_into(&mut self, log: &mut Vec<String>) -> bool {
        let Some(file) = &mut self.file else {
            return false;
        };
        let mut any = false;
        // One record per read, at most about 8 KiB.
        let mut record = vec![0u8; 8192];
        loop {
            match file.read(&mut record) {
                Ok(0) => break,
                Ok(n) => {
                    any = true;
                    log.extend(kmsg_line(&String::from_utf8_lossy(&record[..n])));
                    if log.len() > LOG_LINES {
                        log.remove(0);
                    }
                }
                // Records overwritten before we read them: read on.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    info(format!("reading /dev/kmsg: {e}; the log view stops here"));
                    self.file = None;
                    break;
                }
            }
        }
        any
    }
}
