//! Durable remote storage for blobs.
//!
//! This crate is not filled yet. It will hold the `Backend` async trait (stat, ranged and
//! streaming download, streaming upload, paginated list, delete) with errors that tell
//! not-found from failure; namespace routing by an ordered list of regular expressions;
//! decorators for retry, bandwidth throttling and timing; implementations for the local
//! filesystem, HTTP, S3-compatible stores and GCS/Azure (through `object_store`), HDFS over
//! WebHDFS and a read-only OCI registry; and one conformance suite that every writable backend
//! passes.
//!
//! See `docs/architecture.md` at the root of the workspace.
#![warn(missing_docs)]
