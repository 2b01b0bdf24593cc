//! The Kraken cluster services over HTTP.
//!
//! This crate is not filled yet. It will hold the origin (blob API, hash ring with replicas,
//! fetch-on-miss, durable write-back), the tracker service, the build-index (tags and
//! cross-cluster replication), the proxy (the OCI push API) and the agent (the OCI pull API
//! over P2P), each as a library service that `kraken-cli` wires to a listener.
//!
//! See `docs/architecture.md` at the root of the workspace.
#![warn(missing_docs)]
