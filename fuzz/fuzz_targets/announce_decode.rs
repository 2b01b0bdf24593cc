#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kraken_fuzz::announce_decode(data));
