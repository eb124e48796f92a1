//! The hardware watchdog, armed and petted by PID 1: if the kernel hangs or
//! PID 1 stops turning its loop, nobody pets it and the board resets the
//! node. PID 1 never closes the device and never writes the magic 'V', so
//! the watchdog cannot be disarmed, even where the kernel was built without
//! WATCHDOG_NOWAYOUT.
//!
//! A real timer on the board (i6300esb under QEMU, iTCO or sp5100_tco on
//! PCs) is preferred to softdog, which lives in the kernel it is meant to
//! watch and so cannot catch every hang.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{error, info, warn};

/// The timeout asked of the device: long enough for a busy machine's PID 1
/// to come round, short enough that a hung node is back within a minute.
pub const TIMEOUT: Duration = Duration::from_secs(20);
/// Petting at a third of the timeout leaves two missed turns of margin.
pub const PET_EVERY: Duration = Duration::from_secs(20 / 3);

nix::ioctl_readwrite!(set_timeout, b'W', 6, libc::c_int);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// N in /dev/watchdogN.
    pub index: u32,
    /// Known to be a timer on the board rather than softdog.
    pub board: bool,
    /// For the log: the sysfs identity, else the parent's driver.
    pub name: String,
}

/// What softdog calls itself in sysfs.
const SOFTDOG: &str = "Software Watchdog";

/// The device to arm among those the kernel registered: the first board
/// timer, or softdog when there is nothing else; the first of all when
/// none says what it is.
pub fn choose(devices: &[Device]) -> Option<&Device> {
    devices.iter().min_by_key(|d| (!d.board, d.index))
}

/// The watchdogs in a sysfs class directory (/sys/class/watchdog), told
/// apart by their `identity` (WATCHDOG_SYSFS) or, where a driver gave one,
/// their parent device; asking the device itself would mean opening it,
/// which starts it.
pub fn devices(class: &Path) -> Vec<Device> {
    let Ok(entries) = std::fs::read_dir(class) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let index = name.to_str()?.strip_prefix("watchdog")?.parse().ok()?;
            let dir = entry.path();
            let driver = std::fs::read_link(dir.join("device/driver"))
                .ok()
                .and_then(|link| Some(link.file_name()?.to_string_lossy().into_owned()));
            let identity = std::fs::read_to_string(dir.join("identity"))
                .ok()
                .map(|text| text.trim().to_string());
            let board = dir.join("device").exists()
                || identity.as_deref().is_some_and(|name| name != SOFTDOG);
            Some(Device {
                index,
                board,
                name: identity.or(driver).unwrap_or_else(|| "unnamed".to_string()),
            })
        })
        .collect()
}

#[derive(Debug)]
pub struct Watchdog {
    file: File,
    pub device: Device,
    /// The timeout the driver granted (it may round what was asked).
    pub timeout: Duration,
    last_pet: Instant,
}

impl Watchdog {
    /// Opens and arms the chosen watchdog in `dev` (/dev); opening starts
    /// the countdown.
    pub fn arm(device: &Device, dev: &Path) -> io::Result<Watchdog> {
        let path: PathBuf = dev.join(format!("watchdog{}", device.index));
        // Close-on-exec: no service inherits the device (std sets it).
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", path.display())))?;
        let mut seconds = TIMEOUT.as_secs() as libc::c_int;
        // SAFETY: WDIOC_SETTIMEOUT reads and writes one int at the pointer.
        let granted = match unsafe { set_timeout(file.as_raw_fd(), &mut seconds) } {
            Ok(_) => Duration::from_secs(seconds.max(1) as u64),
            // Some drivers have a fixed timeout; it runs, which is what counts.
            Err(e) => {
                crate::warn!(
                    "watchdog{}: cannot set a {} s timeout ({e}); keeping the driver's",
                    device.index,
                    TIMEOUT.as_secs()
                );
                TIMEOUT
            }
        };
        let mut watchdog = Watchdog {
            file,
            device: device.clone(),
            timeout: granted,
            last_pet: Instant::now(),
        };
        watchdog.pet()?;
        Ok(watchdog)
    }

    /// Pets the device if a pet is due; cheap to call on every loop turn.
    pub fn pet_if_due(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_pet) >= self.pet_every() {
            if let Err(e) = self.pet() {
                crate::error!("watchdog{}: {e}", self.device.index);
            }
        }
    }

    /// When the next pet is due, for the loop's poll timeout.
    pub fn next_pet(&self) -> Instant {
        self.last_pet + self.pet_every()
    }

    fn pet_every(&self) -> Duration {
        PET_EVERY.min(self.timeout / 3)
    }

    fn pet(&mut self) -> io::Result<()> {
        // Any byte but 'V' is a keepalive.
        self.file.write_all(b"k")?;
        self.last_pet = Instant::now();
        Ok(())
    }
}

/// Arms the board's watchdog, or softdog; a node without either runs on
/// and says so.
pub fn arm() -> Option<Watchdog> {
    let devices = devices(Path::new("/sys/class/watchdog"));
    let Some(device) = choose(&devices) else {
        warn!("no watchdog device (not even softdog): a hung node will not reset itself");
        return None;
    };
    match Watchdog::arm(device, Path::new("/dev")) {
        Ok(armed) => {
            info!(
                "watchdog{} ({}) armed: {} s timeout",
                device.index,
                device.name,
                armed.timeout.as_secs()
            );
            Some(armed)
        }
        Err(e) => {
            error!("watchdog{} ({}): {e}", device.index, device.name);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(index: u32, board: bool, name: &str) -> Device {
        Device {
            index,
            board,
            name: name.to_string(),
        }
    }

    #[test]
    fn a_board_timer_wins_over_softdog_and_the_lowest_index_over_others() {
        let all = [
            device(0, false, SOFTDOG),
            device(2, true, "iTCO_wdt"),
            device(1, true, "i6300ESB timer"),
        ];
        assert_eq!(choose(&all), Some(&all[2]));
        assert_eq!(choose(&all[..1]), Some(&all[0]));
        assert_eq!(choose(&[]), None);
    }

    #[test]
    fn devices_are_read_from_sysfs_with_or_without_identity() {
        let dir = std::env::temp_dir().join(format!("chaos-wdt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // A board timer known by its parent device only, softdog by its
        // identity, one that says nothing (no WATCHDOG_SYSFS, no parent).
        let driver = dir.join("bus/pci/drivers/i6300ESB timer");
        std::fs::create_dir_all(&driver).unwrap();
        std::fs::create_dir_all(dir.join("pci0")).unwrap();
        std::os::unix::fs::symlink(&driver, dir.join("pci0/driver")).unwrap();
        let class = dir.join("class");
        for name in ["watchdog0", "watchdog1", "watchdog2", "not-a-watchdog"] {
            std::fs::create_dir_all(class.join(name)).unwrap();
        }
        std::os::unix::fs::symlink(dir.join("pci0"), class.join("watchdog0/device")).unwrap();
        std::fs::write(class.join("watchdog1/identity"), format!("{SOFTDOG}\n")).unwrap();
        let mut found = devices(&class);
        found.sort_by_key(|d| d.index);
        assert_eq!(
            found,
            [
                device(0, true, "i6300ESB timer"),
                device(1, false, SOFTDOG),
                device(2, false, "unnamed"),
            ]
        );
        assert_eq!(devices(&dir.join("missing")), []);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
