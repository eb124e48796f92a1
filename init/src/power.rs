//! The ACPI power button. The kernel's button driver turns a press into a
//! KEY_POWER input event and leaves the rest to userspace, so PID 1 finds the
//! event devices that can send KEY_POWER and watches them. A press means a
//! clean power-off (that is also what QEMU's `system_powerdown` sends).
//!
//! It only reads input devices; it never grabs them or writes to them.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

const EV_KEY: u16 = 1;
const KEY_POWER: u16 = 116;
/// Bytes in the EV_KEY capability bitmap: KEY_MAX (0x2ff) bits.
const KEY_BITMAP: usize = 0x300 / 8;
/// `struct input_event` on 64-bit Linux: a timeval, then type, code, value.
const EVENT_SIZE: usize = 24;

nix::ioctl_read_buf!(eviocgbit_key, b'E', 0x20 + EV_KEY, u8);

#[derive(Debug)]
pub struct PowerButtons {
    devices: Vec<File>,
}

impl PowerButtons {
    /// Opens every /dev/input/event* that can report KEY_POWER. None found is
    /// not an error (a PC without ACPI, or the driver is not in the image);
    /// the caller logs how many there are.
    pub fn open(dir: &Path) -> Self {
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("event"))
            })
            .collect();
        paths.sort();
        let devices = paths
            .iter()
            .filter_map(|p| {
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                    .open(p)
                    .ok()
            })
            .filter(has_power_key)
            .collect();
        PowerButtons { devices }
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    pub fn fds(&self) -> Vec<RawFd> {
        self.devices.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// Reads the pending events of device `fd`; true if the button was pressed.
    pub fn pressed(&mut self, fd: RawFd) -> bool {
        let Some(device) = self.devices.iter_mut().find(|d| d.as_raw_fd() == fd) else {
            return false;
        };
        let mut pressed = false;
        let mut buf = [0u8; EVENT_SIZE * 16];
        loop {
            match device.read(&mut buf) {
                Ok(0) => return pressed,
                Ok(n) => pressed |= buf[..n].chunks_exact(EVENT_SIZE).any(is_power_press),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return pressed,
            }
        }
    }
}

fn has_power_key(device: &File) -> bool {
    let mut bits = [0u8; KEY_BITMAP];
    // SAFETY: the buffer is as long as the length the ioctl is given.
    let ok = unsafe { eviocgbit_key(device.as_raw_fd(), &mut bits) }.is_ok();
    ok && bits[usize::from(KEY_POWER) / 8] & (1 << (KEY_POWER % 8)) != 0
}

fn is_power_press(event: &[u8]) -> bool {
    let kind = u16::from_ne_bytes([event[16], event[17]]);
    let code = u16::from_ne_bytes([event[18], event[19]]);
    let value = i32::from_ne_bytes([event[20], event[21], event[22], event[23]]);
    kind == EV_KEY && code == KEY_POWER && value == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: u16, code: u16, value: i32) -> [u8; EVENT_SIZE] {
        let mut e = [0u8; EVENT_SIZE];
        e[16..18].copy_from_slice(&kind.to_ne_bytes());
        e[18..20].copy_from_slice(&code.to_ne_bytes());
        e[20..24].copy_from_slice(&value.to_ne_bytes());
        e
    }

    #[test]
    fn only_a_power_key_press_counts() {
        assert!(is_power_press(&event(EV_KEY, KEY_POWER, 1)));
        assert!(!is_power_press(&event(EV_KEY, KEY_POWER, 0)), "release");
        assert!(!is_power_press(&event(EV_KEY, 30, 1)), "another key");
        assert!(!is_power_press(&event(0, 0, 0)), "sync report");
    }
}
