//! For testing [`Backend`](kraken_backends::Backend)s: the conformance suite every writable
//! backend passes, and an in-memory backend with injected faults for the decorators' tests.

mod conformance;
mod faulty;

pub use conformance::{
    LARGE_BLOB_SIZE, SuiteOptions, a_failing_body_stores_nothing, delete_removes_blobs,
    generated_blob, invalid_names_are_rejected, large_blob_streams, list_paginates_with_prefix,
    missing_blobs_are_not_found, overwrite_replaces_blob, ranged_reads, round_trip, run_suite,
};
pub use faulty::FaultyBackend;
