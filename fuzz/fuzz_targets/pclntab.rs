#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| timerwatch_fuzz::pclntab(data));
