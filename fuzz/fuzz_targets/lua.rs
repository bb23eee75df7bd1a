#![no_main]
// The target's input format and what it asserts: vipd::fuzz::lua.
libfuzzer_sys::fuzz_target!(|data: &[u8]| vipd::fuzz::lua(data));
