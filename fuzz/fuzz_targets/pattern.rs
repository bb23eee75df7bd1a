#![no_main]
// The target's input format and what it asserts: vipd::fuzz::pattern.
libfuzzer_sys::fuzz_target!(|data: &[u8]| vipd::fuzz::pattern(data));
