//! One libFuzzer binary for every target of chaos-fuzz, chosen by
//! CHAOS_FUZZ_TARGET (`cargo xtask fuzz` sets it).

#![no_main]

use std::sync::OnceLock;

static TARGET: OnceLock<&'static chaos_fuzz::Target> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let target = TARGET.get_or_init(|| {
        let name = std::env::var("CHAOS_FUZZ_TARGET").unwrap_or_default();
        chaos_fuzz::target(&name)
            .unwrap_or_else(|| panic!("CHAOS_FUZZ_TARGET={name:?} names no fuzz target"))
    });
    (target.run)(data);
});
