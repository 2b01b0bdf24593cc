//! Test support: a backend with injected faults, the conformance suite every writable
//! backend passes, and helpers that start external servers (moto's S3, CNCF Distribution) for tests. Public so that crates building on backends can reuse them; not part of
//! the stable API.

mod conformance;
mod distribution;
mod faulty;
mod forward;
mod moto;
mod servers;

pub use conformance::{
    LARGE_BLOB_SIZE, SuiteOptions, delete_removes_blobs, generated_blob,
    invalid_names_are_rejected, large_blob_streams, list_paginates_with_prefix,
    missing_blobs_are_not_found, overwrite_replaces_blob, ranged_reads, round_trip, run_suite,
};
pub use distribution::DistributionServer;
pub use faulty::FaultyBackend;
pub use forward::forward_to_upstream;
pub use moto::MotoServer;
pub use servers::{ServerGuard, free_port, require_program};

/// `len` deterministic pseudo-random (incompressible) bytes; different seeds give different
/// bytes. For tests that need a blob in memory rather than [`generated_blob`]'s stream.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}
