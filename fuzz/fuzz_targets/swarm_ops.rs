//! The swarm core driven by arbitrary inputs from several fake peers (handshakes, claimed
//! ids, requests, payloads, write reports, closes, announces, time), with every invariant of
//! `kraken-p2p/src/swarm/STATE.md` checked after each step: no panic, no piece served
//! unverified, caps held. The driver is `kraken_p2p::swarm::fuzzing`, which the crate's
//! property test runs too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kraken_p2p::swarm::fuzzing::run(data);
});
