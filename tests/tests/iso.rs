//! The hybrid ISO booted by real firmware under QEMU: as a CD and as a raw
//! (USB) disk, under SeaBIOS (isolinux) and OVMF (GRUB), each menu entry
//! reaching its mode when chosen at the menu; the drone appliance (qcow2);
//! and two builds giving the same bytes. One boot per medium and firmware,
//! one at a time: TCG on two cores is slow, and UEFI slower.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use chaos_tests::*;
use xtask::vm::{Config, Firmware, Vm};

struct Media {
    iso: PathBuf,
    qcow2: PathBuf,
}

fn media() -> &'static Media {
    static MEDIA: OnceLock<Media> = OnceLock::new();
    MEDIA.get_or_init(|| {
        let image = test_image("iso", &[]);
        let dir = xtask::build_dir().join("tests");
        let iso = dir.join("chaos.iso");
        xtask::iso::build(
            &fixture().kernel.vmlinuz,
            &image.path,
            &image.root_digest_arg(),
            &iso,
        )
        .step();
        let qcow2 = dir.join("chaos-drone.qcow2");
        xtask::appliance::build(&iso, &qcow2).step();
        Media { iso, qcow2 }
    })
}

/// Boots `firmware` from one drive and holds the boot lock while it runs.
fn boot_from(firmware: Firmware, drive: &str) -> (Vm, std::sync::MutexGuard<'static, ()>) {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let config = Config::firmware(firmware, &["-drive", drive]);
    (boot(&config), guard)
}

fn cd(path: &std::path::Path) -> String {
    format!("file={},media=cdrom,if=ide,readonly=on", path.display())
}

/// A USB stick as the PC sees it: a plain disk; snapshot keeps the file
/// untouched.
fn disk(path: &std::path::Path, format: &str) -> String {
    format!(
        "file={},format={format},if=virtio,snapshot=on",
        path.display()
    )
}

#[test]
fn cd_under_bios_boots_the_default_entry_after_the_timeout() {
    let (mut vm, _lock) = boot_from(Firmware::Bios, &cd(&media().iso));
    // isolinux's prompt reaches the serial line; nobody answers it.
    vm.expect("boot:", BOOT_TIMEOUT).step();
    vm.expect("init: mode Normal", BOOT_TIMEOUT).step();
    vm.expect("@chaos ready", STEP_TIMEOUT).step();
}

#[test]
fn usb_disk_under_bios_boots_expert_typed_at_the_prompt() {
    let (mut vm, _lock) = boot_from(Firmware::Bios, &disk(&media().iso, "raw"));
    vm.expect("boot:", BOOT_TIMEOUT).step();
    vm.type_keys("expert\n").step();
    vm.expect("init: mode Expert", BOOT_TIMEOUT).step();
}

#[test]
fn cd_under_uefi_boots_grubs_default_entry() {
    let (mut vm, _lock) = boot_from(Firmware::Uefi, &cd(&media().iso));
    vm.expect("chaos expert: debug shell on errors", BOOT_TIMEOUT)
        .step();
    vm.expect("init: mode Normal", BOOT_TIMEOUT).step();
    vm.expect("@chaos ready", STEP_TIMEOUT).step();
}

#[test]
fn usb_disk_under_uefi_boots_safe_chosen_in_grubs_menu() {
    let (mut vm, _lock) = boot_from(Firmware::Uefi, &disk(&media().iso, "raw"));
    vm.expect("chaos safe: no autoconfiguration", BOOT_TIMEOUT)
        .step();
    vm.press(&["down", "down", "ret"]).step();
    vm.expect("init: mode Safe", BOOT_TIMEOUT).step();
}

#[test]
fn the_drone_appliance_boots_as_a_vm_disk() {
    let (mut vm, _lock) = boot_from(Firmware::Bios, &disk(&media().qcow2, "qcow2"));
    vm.expect("init: mode Normal", BOOT_TIMEOUT).step();
    vm.expect("@chaos ready", STEP_TIMEOUT).step();
}

#[test]
fn the_options_screen_is_inits_own_help() {
    // F4 cannot be pressed over a serial line, so its page is checked as
    // written: isolinux shows it verbatim.
    let iso = std::fs::read(&media().iso).unwrap();
    let help = netboot::boot::options_msg(&chaos_contract::cmdline::help());
    assert!(help.contains("ip=<client-ip>:"), "{help}");
    assert!(help.contains("chaos.mode=normal|expert|safe"), "{help}");
    assert!(
        iso.windows(help.len()).any(|w| w == help.as_bytes()),
        "the ISO does not carry the options screen"
    );
}

#[test]
fn two_builds_give_the_same_bytes() {
    let image = test_image("iso-twice", &[]);
    let dir = xtask::build_dir().join("tests");
    let kernel = &fixture().kernel.vmlinuz;
    let build = |name: &str| {
        let iso = dir.join(format!("{name}.iso"));
        xtask::iso::build(kernel, &image.path, "", &iso).step();
        let efi = dir.join(format!("{name}.efi"));
        xtask::uki::build(kernel, &image.path, "", &efi).step();
        (std::fs::read(iso).unwrap(), std::fs::read(efi).unwrap())
    };
    let (iso_a, efi_a) = build("twice-a");
    // Builds in different seconds must not differ by a time stamp.
    std::thread::sleep(Duration::from_millis(1100));
    let (iso_b, efi_b) = build("twice-b");
    assert!(iso_a == iso_b, "two ISO builds differ");
    assert!(efi_a == efi_b, "two unified kernel image builds differ");
}
