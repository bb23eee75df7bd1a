#![no_main]
// The target's input format and what it asserts: vipd::fuzz::config.
libfuzzer_sys::fuzz_target!(|data: &[u8]| vipd::fuzz::config(data));
