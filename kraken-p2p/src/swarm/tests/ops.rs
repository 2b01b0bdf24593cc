//! The fuzz target's driver (`swarm::fuzzing`) under proptest: arbitrary inputs from several
//! fake peers, every invariant of `STATE.md` checked after each step.

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn arbitrary_inputs_from_several_peers_keep_every_invariant(
        data in proptest::collection::vec(any::<u8>(), 0..8192)
    ) {
        crate::swarm::fuzzing::run(&data);
    }
}
