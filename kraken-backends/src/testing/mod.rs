//! Test support: a backend with injected faults, the conformance suite every writable
//! backend passes, and helpers that start external servers (moto's S3) for tests. Public so that crates building on backends can reuse them; not part of
//! the stable API.

mod conformance;
mod faulty;
mod moto;
mod servers;

pub use conformance::{
    LARGE_BLOB_SIZE, SuiteOptions, delete_removes_blobs, generated_blob,
    invalid_names_are_rejected, large_blob_streams, list_paginates_with_prefix,
    missing_blobs_are_not_found, overwrite_replaces_blob, ranged_reads, round_trip, run_suite,
};
pub use faulty::FaultyBackend;
pub use moto::MotoServer;
pub use servers::{ServerGuard, free_port, require_program};
