//! The RAM root's integrity under QEMU: certaintyd catches every kind of
//! change to the baseline after its grace period and has PID 1 reboot the
//! node; writes to /tmp and /run are not changes; `chaos.watchdog=log` logs
//! and runs on; PID 1 restarts a certaintyd that stops reporting and gives
//! up on one that keeps stopping; the board's watchdog resets a hung kernel.

use chaos_contract::service::{Restart, Service};
use chaos_tests::*;

/// A short grace and interval keep the boots short; the defaults (30 s,
/// 2 s) differ only in length.
const FAST: &str = "chaos.watchdog.grace=3s chaos.watchdog.interval=1s";
/// Where the test image keeps the files its services change.
const DIR: &str = "/etc/chaos-test";

/// Waits (inside the guest) until certaintyd has finished `$1` more passes
/// than now, all clean; prints "clean" or what it found.
const WAIT_CLEAN_PASSES: &str = r#"
status=/run/chaos/certaintyd.status
passes() { sed -n 's/^passes //p' $status 2>/dev/null; }
until grep -q '^state ok' $status 2>/dev/null; do sleep 0.2; done
goal=$(( $(passes) + $1 ))
until [ "$(passes)" -ge $goal ]; do sleep 0.2; done
grep '^state' $status
"#;

/// A test image with the baseline files under [`DIR`] and a service
/// "tamper" running `script_text` (a file in the image, after the
/// clean-pass helper).
fn image(name: &str, script_text: &str) -> Written {
    let path = format!("{DIR}/tamper.sh");
    let mut tamper = Service::new("tamper", "/bin/sh");
    tamper.args = vec![path.clone()];
    tamper.restart = Restart::Never;
    test_image_with(name, &[tamper], |spec| {
        spec.dir(DIR, 0o755).unwrap();
        let text = format!("clean_passes() {{ {WAIT_CLEAN_PASSES} }}\n{script_text}\n");
        spec.file(&path, 0o644, text).unwrap();
        for file in ["motd", "mode", "gone"] {
            spec.file(&format!("{DIR}/{file}"), 0o644, format!("{file}\n"))
                .unwrap();
        }
        spec.symlink(&format!("{DIR}/link"), "motd").unwrap();
    })
}

#[test]
fn every_kind_of_change_is_named_and_the_node_reboots() {
    let image = image(
        "certainty-reboot",
        &format!(
            "echo scratch > /tmp/scratch; echo scratch > /run/scratch; mkdir /tmp/d\n\
             clean_passes 2 | sed 's/^/after tmp and run: /'\n\
             echo changed >> {DIR}/motd; chmod 0600 {DIR}/mode; rm {DIR}/gone\n\
             echo new > {DIR}/added; ln -sfn mode {DIR}/link\n\
             echo tampered"
        ),
    );
    let mut vm = boot(&config(&image, FAST).user_net());
    vm.expect(
        "certaintyd: watching / against /etc/chaos/manifest",
        BOOT_TIMEOUT,
    )
    .step();
    vm.expect("tamper: after tmp and run: state ok", STEP_TIMEOUT)
        .step();
    vm.expect("tamper: tampered", STEP_TIMEOUT).step();
    vm.expect(
        "the root differs from its manifest: 5 differences",
        STEP_TIMEOUT,
    )
    .step();
    vm.expect_all(
        &[
            &format!("violation: {DIR}/added: added (file)"),
            &format!("violation: {DIR}/gone: removed (file)"),
            &format!("violation: {DIR}/link: symlink retargeted: motd -> mode"),
            &format!("violation: {DIR}/mode: mode changed: 0644 -> 0600"),
            &format!("violation: {DIR}/motd: content changed"),
        ],
        STEP_TIMEOUT,
    )
    .step();
    for line in [
        "certaintyd: asking init to reboot (chaos.watchdog=reboot)",
        "init: shutdown: reboot requested by SIGUSR1",
        "init: stopped service certaintyd",
        "reboot: Restarting system",
    ] {
        vm.expect(line, STEP_TIMEOUT).step();
    }
    vm.wait_exit(STEP_TIMEOUT).step();
    let console = vm.console();
    for ignored in ["/tmp", "/run"] {
        assert!(
            !console.contains(&format!("violation: {ignored}")),
            "a write under {ignored} counted as a change:\n{console}"
        );
    }
}

#[test]
fn with_the_log_policy_a_change_is_logged_and_the_node_runs_on() {
    let image = image(
        "certainty-log",
        &format!(
            "clean_passes 1 >/dev/null; echo changed >> {DIR}/motd; echo tampered\n\
             until grep -q '^state violation' /run/chaos/certaintyd.status; do sleep 0.2; done\n\
             p=$(sed -n 's/^passes //p' /run/chaos/certaintyd.status)\n\
             until [ $(sed -n 's/^passes //p' /run/chaos/certaintyd.status) -gt $((p + 1)) ]; do sleep 0.2; done\n\
             echo still running"
        ),
    );
    let mut vm = boot(&config(&image, &format!("{FAST} chaos.watchdog=log")).user_net());
    vm.expect("tamper: tampered", BOOT_TIMEOUT).step();
    for line in [
        &format!("violation: {DIR}/motd: content changed"),
        "certaintyd: chaos.watchdog=log: running on",
        "tamper: still running",
    ] {
        vm.expect(line, STEP_TIMEOUT).step();
    }
    vm.qmp("system_powerdown").step();
    vm.expect("reboot: Power down", STEP_TIMEOUT).step();
    let console = vm.console();
    assert!(
        !console.contains("asking init to"),
        "the log policy asked for a reboot:\n{console}"
    );
}

#[test]
fn a_silent_certaintyd_is_restarted_and_one_that_keeps_stopping_is_a_failure() {
    // Freezes every certaintyd it finds: the first silence is restarted
    // away, the third is the watchdog failing, answered by a reboot.
    let image = image(
        "certainty-silent",
        "clean_passes 1 >/dev/null\n\
         while true; do\n\
           pid=$(pidof certaintyd) && kill -STOP $pid && echo stopped $pid\n\
           sleep 0.5\n\
         done",
    );
    let mut vm = boot(&config(&image, FAST).user_net());
    vm.expect("tamper: stopped", BOOT_TIMEOUT).step();
    for strike in 1..=2 {
        vm.expect("init: certaintyd has not reported for", STEP_TIMEOUT)
            .step();
        vm.expect(&format!("(silence {strike} of 3)"), STEP_TIMEOUT)
            .step();
        vm.expect("init: started service certaintyd", STEP_TIMEOUT)
            .step();
    }
    for line in [
        "init: the integrity watchdog failed: certaintyd went silent 3 times",
        "init: shutdown: reboot requested by certaintyd went silent 3 times",
        "reboot: Restarting system",
    ] {
        vm.expect(line, STEP_TIMEOUT).step();
    }
    vm.wait_exit(STEP_TIMEOUT).step();
}

#[test]
fn the_board_watchdog_resets_a_hung_kernel() {
    // With panic=0 a crashed kernel hangs for ever; only the i6300esb,
    // armed by PID 1 and no longer petted, can end this VM.
    let mut crash = script(
        "crash",
        "until dmesg | grep -q 'i6300ESB timer) armed'; do sleep 0.2; done; \
         echo c > /proc/sysrq-trigger",
    );
    crash.restart = Restart::Never;
    let image = test_image("watchdog-hang", &[crash]);
    let mut config = config(&image, "panic=0").user_net();
    config
        .qemu_args
        .extend(["-device", "i6300esb"].map(String::from));
    let mut vm = boot(&config);
    vm.expect("init: watchdog", BOOT_TIMEOUT).step();
    vm.expect("(i6300ESB timer) armed", STEP_TIMEOUT).step();
    // The kernel's own line: what the service printed just before may
    // never reach the console, since PID 1 forwards it after the crash.
    vm.expect("sysrq: Trigger a crash", STEP_TIMEOUT).step();
    vm.expect("Kernel panic - not syncing", STEP_TIMEOUT).step();
    // The reset ends QEMU (it runs with -no-reboot) after one or two
    // watchdog timeouts; a hung kernel alone never would.
    vm.wait_exit(Duration::from_secs(120)).step();
    assert!(
        !vm.console().contains("reboot: Restarting system"),
        "the kernel rebooted by itself; the watchdog was not what ended it"
    );
}
