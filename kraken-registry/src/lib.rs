//! The Kraken cluster services over HTTP.
//!
//! - [`origin`]: the origin cluster — a blob API on Go Kraken's paths, a rendezvous ring of
//!   origins with replicas and health checks, fetch-on-miss from a backend with one backend
//!   read per blob however many ask, a durable write-back queue, re-replication when
//!   membership changes, P2P seeding of every blob held, and the [`MetaInfoSource`] through
//!   which a tracker asks the origins for metainfo.
//!
//! - [`oci`]: the OCI distribution API (`/v2/…`) as a handler over a storage trait, with
//!   [`LocalRegistry`](oci::LocalRegistry), a complete registry on a local directory.
//!
//! - [`build_index`]: tag → digest on Go Kraken's paths, with dependency checks against the
//!   origins, mutable tags read fresh on every build-index of the cluster, a durable
//!   write-back to a backend, and replication of tags and their blobs to other clusters.
//!
//! - [`proxy`]: the push side — the OCI distribution API over the origin cluster (blobs and
//!   manifests, namespaced by repository) and the build-index (tags, referrers indexes),
//!   with basic-auth and token checks on writes.
//!
//! - [`agent`]: the pull side on every host — `/v2/` over the build-index and P2P, streaming
//!   blobs as they arrive, and Go Kraken's agent endpoints.
//!
//! - [`devcluster`]: all of them in one process on loopback.
//!
//! See `docs/origin.md` and
//! `docs/architecture.md` at the root of the workspace.
//!
//! [`MetaInfoSource`]: kraken_p2p::tracker::MetaInfoSource
#![warn(missing_docs)]

mod address;
pub mod agent;
pub mod build_index;
mod cleanup;
pub mod devcluster;
mod durable;
mod error;
mod fault;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod gc;
mod http;
mod metrics;
pub mod oci;
pub mod origin;
pub mod proxy;
mod referrers;
pub mod small_blobs;
mod startup;

pub use crate::error::{Error, Result};
