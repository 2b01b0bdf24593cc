#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kraken_fuzz::swarm_ops(data));
