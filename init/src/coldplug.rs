//! Coldplug: the devices present at boot, matched to the image's drivers.
//!
//! Every device in /sys that wants a driver names itself with a modalias
//! (`/sys/bus/*/devices/*/modalias`, `/sys/class/*/*/modalias`); the image's pruned modules.alias says
//! which module claims which pattern. This module reads the devices and
//! answers which modules they need, and which network controllers nothing in
//! the image can drive. It reads /sys only (the root is a parameter, so it
//! is tested on a fake tree) and never loads anything itself.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use mkimage::AliasTable;

/// PCI base class of network controllers (the top byte of `class`).
const PCI_NETWORK_CLASS: u32 = 0x02;

/// A device with a modalias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// `/sys/bus/<bus>/devices/<name>`.
    pub path: PathBuf,
    pub modalias: String,
}

/// Every device under `sys` (normally `/sys`) that has a modalias: those
/// on a bus (`bus/*/devices/*`) and those only in a class (`class/*/*`:
/// input devices, which evdev wants), in that order, each once. Unreadable
/// entries are skipped: a device that vanishes while we look needs no driver.
pub fn devices(sys: &Path) -> Vec<Device> {
    let on_buses = read_dir_sorted(&sys.join("bus"))
        .into_iter()
        .flat_map(|bus| read_dir_sorted(&bus.join("devices")));
    let in_classes = read_dir_sorted(&sys.join("class"))
        .into_iter()
        .flat_map(|class| read_dir_sorted(&class));
    let mut seen = std::collections::HashSet::new();
    let mut found = Vec::new();
    for device in on_buses.chain(in_classes) {
        let Ok(text) = std::fs::read_to_string(device.join("modalias")) else {
            continue;
        };
        let modalias = text.trim();
        // A device on a bus may also be listed in a class.
        let real = std::fs::canonicalize(&device).unwrap_or_else(|_| device.clone());
        if !modalias.is_empty() && seen.insert(real) {
            found.push(Device {
                modalias: modalias.to_string(),
                path: device,
            });
        }
    }
    found
}

fn read_dir_sorted(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    entries
}

/// The modules the devices need: module name -> the devices it was matched
/// for, in name order.
pub fn matches<'d>(
    aliases: &AliasTable,
    devices: &'d [Device],
) -> BTreeMap<String, Vec<&'d Device>> {
    let mut wanted: BTreeMap<String, Vec<&Device>> = BTreeMap::new();
    for device in devices {
        for module in aliases.lookup(&device.modalias) {
            wanted.entry(module.to_string()).or_default().push(device);
        }
    }
    wanted
}

/// A PCI network controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// The PCI address, `0000:00:03.0`.
    pub slot: String,
    pub vendor: u16,
    pub device: u16,
    pub class: u32,
    /// The bound driver, if any.
    pub driver: Option<String>,
}

impl fmt::Display for Nic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{:04x}:{:04x}] (class 0x{:06x})",
            self.slot, self.vendor, self.device, self.class
        )
    }
}

/// Every PCI network controller under `sys`, with its driver if one is bound.
pub fn pci_nics(sys: &Path) -> Vec<Nic> {
    let hex = |dir: &Path, file: &str| -> Option<u32> {
        let text = std::fs::read_to_string(dir.join(file)).ok()?;
        u32::from_str_radix(text.trim().trim_start_matches("0x"), 16).ok()
    };
    read_dir_sorted(&sys.join("bus/pci/devices"))
        .into_iter()
        .filter_map(|dir| {
            let class = hex(&dir, "class")?;
            if class >> 16 != PCI_NETWORK_CLASS {
                return None;
            }
            Some(Nic {
                slot: dir.file_name()?.to_string_lossy().into_owned(),
                vendor: u16::try_from(hex(&dir, "vendor")?).ok()?,
                device: u16::try_from(hex(&dir, "device")?).ok()?,
                class,
                driver: std::fs::read_link(dir.join("driver"))
                    .ok()
                    .and_then(|link| Some(link.file_name()?.to_string_lossy().into_owned())),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake /sys: (relative path, contents) files, plus driver links.
    struct FakeSys(PathBuf);

    impl FakeSys {
        fn new(files: &[(&str, &str)], drivers: &[(&str, &str)]) -> FakeSys {
            use std::sync::atomic::{AtomicU32, Ordering};
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let root = std::env::temp_dir().join(format!(
                "chaos-coldplug-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            for (path, contents) in files {
                let path = root.join(path);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, contents).unwrap();
            }
            for (device, driver) in drivers {
                let target = root.join("bus/pci/drivers").join(driver);
                std::fs::create_dir_all(&target).unwrap();
                std::os::unix::fs::symlink(target, root.join(device).join("driver")).unwrap();
            }
            FakeSys(root)
        }
    }

    impl Drop for FakeSys {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const E1000: &str = "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00";
    const VMXNET3: &str = "pci:v000015ADd000007B0sv000015ADsd000007B0bc02sc00i00";

    fn lab() -> FakeSys {
        FakeSys::new(
            &[
                (
                    "bus/pci/devices/0000:00:03.0/modalias",
                    &format!("{E1000}\n"),
                ),
                ("bus/pci/devices/0000:00:03.0/class", "0x020000\n"),
                ("bus/pci/devices/0000:00:03.0/vendor", "0x8086\n"),
                ("bus/pci/devices/0000:00:03.0/device", "0x100e\n"),
                ("bus/pci/devices/0000:00:04.0/modalias", VMXNET3),
                ("bus/pci/devices/0000:00:04.0/class", "0x020000"),
                ("bus/pci/devices/0000:00:04.0/vendor", "0x15ad"),
                ("bus/pci/devices/0000:00:04.0/device", "0x07b0"),
                (
                    "bus/pci/devices/0000:00:01.0/modalias",
                    "pci:v00008086d00007000sv00001AF4sd00001100bc06sc01i00",
                ),
                ("bus/pci/devices/0000:00:01.0/class", "0x060100"),
                ("bus/pci/devices/0000:00:01.0/vendor", "0x8086"),
                ("bus/pci/devices/0000:00:01.0/device", "0x7000"),
                ("bus/acpi/devices/LNXPWRBN:00/modalias", "acpi:LNXPWRBN:\n"),
                ("bus/acpi/devices/LNXSYSTM:00/modalias", ""),
                (
                    "class/input/input0/modalias",
                    "input:b0011v0001p0001eAB41-e0,1,4,11,14,k71,72,ramlsfw\n",
                ),
                ("class/net/eth0/address", "52:54:00:12:34:56"),
                ("bus/cpu/devices/cpu0/online", "1"),
            ],
            &[("bus/pci/devices/0000:00:03.0", "e1000")],
        )
    }

    #[test]
    fn devices_are_read_from_every_bus() {
        let sys = lab();
        let names: Vec<String> = devices(&sys.0)
            .iter()
            .map(|d| d.path.strip_prefix(&sys.0).unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "bus/acpi/devices/LNXPWRBN:00",
                "bus/pci/devices/0000:00:01.0",
                "bus/pci/devices/0000:00:03.0",
                "bus/pci/devices/0000:00:04.0",
                "class/input/input0",
            ]
        );
        assert_eq!(devices(&sys.0)[2].modalias, E1000);
    }

    #[test]
    fn devices_are_matched_to_the_image_aliases() {
        let sys = lab();
        let aliases = AliasTable::parse(
            "alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000\n\
             alias acpi*:LNXPWRBN:* button\n\
             alias input:b*v*p*e*-e*k*r*a*m*l*s*f*w* evdev\n\
             alias pci:v000010ECd00008139sv*sd*bc*sc*i* 8139cp\n",
        )
        .unwrap();
        let found = devices(&sys.0);
        let wanted = matches(&aliases, &found);
        let summary: Vec<(&str, usize)> =
            wanted.iter().map(|(m, d)| (m.as_str(), d.len())).collect();
        assert_eq!(summary, [("button", 1), ("e1000", 1), ("evdev", 1)]);
        assert!(wanted["e1000"][0].path.ends_with("0000:00:03.0"));
    }

    #[test]
    fn network_controllers_are_listed_with_their_drivers() {
        let sys = lab();
        let nics = pci_nics(&sys.0);
        let shown: Vec<(String, Option<&str>)> = nics
            .iter()
            .map(|n| (n.to_string(), n.driver.as_deref()))
            .collect();
        assert_eq!(
            shown,
            [
                (
                    "0000:00:03.0 [8086:100e] (class 0x020000)".to_string(),
                    Some("e1000")
                ),
                (
                    "0000:00:04.0 [15ad:07b0] (class 0x020000)".to_string(),
                    None
                ),
            ]
        );
    }
}
