#![no_main]
// The target's input format and what it asserts: vipd::fuzz::vip_info.
libfuzzer_sys::fuzz_target!(|data: &[u8]| vipd::fuzz::vip_info(data));
