#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kraken_fuzz::content_range_parse(data));
