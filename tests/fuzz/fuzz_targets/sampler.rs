#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| llada_fuzz_targets::sampler(data));
