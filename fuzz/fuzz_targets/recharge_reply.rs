#![no_main]
// The target's input format and what it asserts: vipd::fuzz::recharge_reply.
libfuzzer_sys::fuzz_target!(|data: &[u8]| vipd::fuzz::recharge_reply(data));
