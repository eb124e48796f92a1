//! What every boot path offers and how it says so: the boot entries (normal,
//! expert, safe), the kernel arguments they share, the iPXE script of the
//! PXE path and the isolinux/GRUB menus of the ISO. One table, so PXE, CD
//! and USB boot the same node the same way.

/// File names inside a PXE tree and under the ISO's /boot.
pub const KERNEL: &str = "vmlinuz";
pub const INITRD: &str = "initrd.img";
/// The boot script iPXE fetches (over HTTP from `netboot serve`).
pub const SCRIPT: &str = "boot.ipxe";
/// The tree's own kernel arguments (such as the image's `chaos.root_digest=`),
/// which `netboot serve` puts in the script it renders.
pub const ARGS: &str = "kernel-args";
/// iPXE first stages, by firmware: TFTP carries only these.
pub const BIOS_FIRST_STAGE: &str = "undionly.kpxe";
pub const UEFI_FIRST_STAGE: &str = "ipxe.efi";

/// Arguments every chaos boot gets: the serial console first and the screen
/// last, so kernel and init messages reach both and /dev/console (the
/// emergency shell) is the PC's own keyboard and screen.
pub const CONSOLE_ARGS: &str = "console=ttyS0,115200 console=tty0";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The isolinux label, typed at its `boot:` prompt.
    pub label: &'static str,
    pub title: &'static str,
    /// Kernel arguments beside [`CONSOLE_ARGS`].
    pub args: &'static str,
}

/// The boot menu, default first (CHAOS's and clump/os's modes).
pub const ENTRIES: &[Entry] = &[
    Entry {
        label: "normal",
        title: "chaos: boot into RAM and join the cluster",
        args: "",
    },
    Entry {
        label: "expert",
        title: "chaos expert: debug shell on errors",
        args: "chaos.mode=expert",
    },
    Entry {
        label: "safe",
        title: "chaos safe: no autoconfiguration",
        args: "chaos.mode=safe",
    },
];

/// Seconds a menu waits before booting the default entry: long enough to
/// press a key at a PC, short enough that an unattended lab boots on its own.
pub const MENU_TIMEOUT_S: u32 = 5;

/// The kernel command line of `entry`, with `extra` (such as `chaos.head=`)
/// after it.
pub fn cmdline(entry: &Entry, extra: &str) -> String {
    [CONSOLE_ARGS, entry.args, extra]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The iPXE script. `base` is the URL prefix of kernel and initramfs: empty
/// means "relative to this script", which iPXE resolves against the URL it
/// fetched the script from; `netboot serve` renders an absolute one so the
/// script works however it was fetched.
///
/// Every step retries instead of falling through to iPXE's prompt: a lab
/// switch port still negotiating, or a head restarting its server, must not
/// strand a PC that nobody is watching.
pub fn ipxe_script(base: &str, extra: &str) -> String {
    let args = cmdline(&ENTRIES[0], extra);
    format!(
        "#!ipxe\n\
         # chaos network boot: kernel and initramfs over HTTP.\n\
         :fetch\n\
         echo chaos: fetching {base}{KERNEL} and {base}{INITRD}\n\
         kernel {base}{KERNEL} initrd={INITRD} {args} || goto retry\n\
         initrd {base}{INITRD} || goto retry\n\
         boot || goto retry\n\
         :retry\n\
         echo chaos: network boot failed; trying again in 5 s\n\
         sleep 5\n\
         goto fetch\n"
    )
}

/// isolinux's configuration: a plain `boot:` prompt that works on a serial
/// line as well as a screen (type a label, or wait for the default), F1 for
/// the entries and F4 for the options, as on CHAOS's CD.
pub fn isolinux_cfg(kernel: &str, initrd: &str, extra: &str) -> String {
    let mut out = format!(
        "serial 0 115200\n\
         default {}\n\
         prompt 1\n\
         timeout {}\n\
         F1 boot.msg\n\
         F4 options.msg\n",
        ENTRIES[0].label,
        MENU_TIMEOUT_S * 10
    );
    // The entries are printed on the screen as the configuration is read
    // (F1 shows them again); isolinux 6.04 sends only its `boot:` prompt,
    // not these lines, to the serial line.
    for line in isolinux_msg().lines() {
        out.push_str(&format!("say {line}\n"));
    }
    for entry in ENTRIES {
        out.push_str(&format!(
            "label {}\n  kernel {kernel}\n  append initrd={initrd} {}\n",
            entry.label,
            cmdline(entry, extra)
        ));
    }
    out
}

/// The text isolinux shows at its prompt.
pub fn isolinux_msg() -> String {
    let mut out = String::from("\nchaos cluster node\n\n");
    for entry in ENTRIES {
        out.push_str(&format!("  {:<8} {}\n", entry.label, entry.title));
    }
    out.push_str(&format!(
        "\nType a name and Enter, or wait {MENU_TIMEOUT_S} s for {}. F4: kernel options.\n\
         Anything after the name is added to the kernel command line,\n\
         e.g.  normal chaos.head=10.0.0.1  or  expert ip=dhcp\n",
        ENTRIES[0].label
    ));
    out
}

/// The help screen: `ip=` syntax and the `chaos.*` options, as init's own
/// table describes them (`help` is `chaos_contract::cmdline::help()`).
pub fn options_msg(help: &str) -> String {
    format!("\n{help}")
}

/// GRUB's configuration for the UEFI side of the ISO: the same entries, the
/// serial line and the screen both usable, and the options screen as a menu
/// entry (GRUB has no F-key help pages).
pub fn grub_cfg(kernel: &str, initrd: &str, options: &str, extra: &str) -> String {
    let mut out = format!(
        "serial --unit=0 --speed=115200\n\
         terminal_input serial console\n\
         terminal_output serial console\n\
         set timeout={MENU_TIMEOUT_S}\n\
         set default=0\n"
    );
    for entry in ENTRIES {
        out.push_str(&format!(
            "menuentry '{}' {{\n  linux {kernel} {}\n  initrd {initrd}\n}}\n",
            entry.title,
            cmdline(entry, extra)
        ));
    }
    out.push_str(&format!(
        "menuentry 'Help: ip= and chaos.* kernel options' {{\n  cat {options}\n  echo 'Press a key for the menu.'\n  read\n}}\n"
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_boots_its_mode_on_both_consoles() {
        let lines: Vec<String> = ENTRIES.iter().map(|e| cmdline(e, "")).collect();
        assert_eq!(
            lines,
            [
                "console=ttyS0,115200 console=tty0",
                "console=ttyS0,115200 console=tty0 chaos.mode=expert",
                "console=ttyS0,115200 console=tty0 chaos.mode=safe",
            ]
        );
        assert_eq!(
            cmdline(&ENTRIES[0], "chaos.head=10.0.0.1"),
            "console=ttyS0,115200 console=tty0 chaos.head=10.0.0.1"
        );
    }

    #[test]
    fn the_script_fetches_from_its_base_and_retries() {
        let script = ipxe_script("http://10.0.2.2:8080/", "");
        assert!(script.starts_with("#!ipxe\n"));
        for line in [
            "kernel http://10.0.2.2:8080/vmlinuz initrd=initrd.img console=ttyS0,115200 console=tty0 || goto retry",
            "initrd http://10.0.2.2:8080/initrd.img || goto retry",
            "boot || goto retry",
            "goto fetch",
        ] {
            assert!(script.lines().any(|l| l == line), "{line:?} in\n{script}");
        }
        let relative = ipxe_script("", "chaos.head=10.0.0.1");
        assert!(relative.contains(
            "\nkernel vmlinuz initrd=initrd.img console=ttyS0,115200 console=tty0 chaos.head=10.0.0.1 ||"
        ));
    }

    #[test]
    fn menus_list_every_entry_with_the_default_first() {
        let isolinux = isolinux_cfg("/boot/vmlinuz", "/boot/initrd.img", "chaos.log=debug");
        assert!(isolinux.starts_with("serial 0 115200\ndefault normal\n"));
        assert!(isolinux.contains(
            "label safe\n  kernel /boot/vmlinuz\n  append initrd=/boot/initrd.img console=ttyS0,115200 console=tty0 chaos.mode=safe chaos.log=debug\n"
        ));
        let grub = grub_cfg("/boot/vmlinuz", "/boot/initrd.img", "/boot/options.txt", "");
        assert!(grub.contains("terminal_input serial console\n"));
        assert!(grub.contains(
            "  linux /boot/vmlinuz console=ttyS0,115200 console=tty0 chaos.mode=expert\n"
        ));
        assert!(grub.contains("  cat /boot/options.txt\n"));
        for entry in ENTRIES {
            assert!(isolinux_msg().contains(entry.label));
            assert!(grub.contains(entry.title));
        }
    }
}
