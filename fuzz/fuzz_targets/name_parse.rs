#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kraken_fuzz::name_parse(data));
