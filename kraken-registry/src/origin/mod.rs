//! The origin: a cluster of a few hosts that hold every blob, backed by remote storage, and
//! seed them to the swarm.
//!
//! An [`Origin`] serves Go Kraken's origin blob API (paths and status codes in
//! `docs/origin.md`): chunked uploads committed with a SHA-256 check, `GET` with ranges,
//! `HEAD`, metainfo, and the ring's `locations`. Around it:
//!
//! - **Ring.** The members ([`MembersConfig`]: a static list, or a DNS name re-resolved every
//!   [`ClusterConfig::refresh_interval`]) are health-checked (`GET /health`); the healthy
//!   ones place blobs by weighted rendezvous hashing ([`kraken_core::Ring`]). A blob's
//!   owners are its first [`ClusterConfig::replicas`] healthy members ([`RingView::owners`]).
//! - **Commit.** A committed upload (claimed: no chunk can land while it is hashed) is
//!   verified, stored and `fsync`ed in the local [`BlobStore`](kraken_core::BlobStore),
//!   already pinned against cleanup, and recorded in the durable write-back queue (a journal
//!   `fsync`ed before the `201`), per namespace and digest. The write-back loop
//!   uploads it to the backend, retrying with backoff while the backend is down and resuming
//!   after a restart, then unpins it.
//! - **Replication.** Origins push copies to the blob's other owners after an upload or a
//!   fetch, and a repair pass (periodic, and on every membership change) pushes every held
//!   blob to owners that lack it, so blobs regain their replica count when an origin dies.
//! - **Fetch-on-miss.** A `GET` of a blob not on disk reads it from the backend
//!   ([`kraken_backends::Router`] by namespace) — once per namespace and digest, however
//!   many requests ask at the same time — and serves it when it is verified and cached. A metainfo request
//!   starts the same fetch and answers `202 Accepted` until it is done, as Go Kraken does.
//! - **P2P.** With a tracker configured, the origin runs a [`kraken_p2p::node::Node`] with
//!   `origin: true`. It serves every blob it holds to any peer that asks, and announces
//!   (and publishes the metainfo of) the [`OriginConfig::max_announced_blobs`] most
//!   recently wanted ones: start-up opens no blob and asks nothing of the tracker, however
//!   many blobs the store holds.
//! - **Cleanup.** Idle blobs, and the least recently used ones above the high watermark,
//!   are evicted periodically ([`CleanupConfig`]); blobs awaiting write-back never are.
//! - **Deletes and garbage collection.** `DELETE /internal/namespace/{ns}/blobs/{d}` purges
//!   a blob from the origin and its backend (the proxy's registry deletes); `POST
//!   /internal/gc` sweeps what the collector ([`crate::gc`]) did not mark.
//! - **Integrity.** A cached blob a reader reports as corrupt, or that the background scrub
//!   ([`ScrubConfig`]) finds corrupt, is re-hashed, deleted if bad (never served again) and
//!   fetched again from a replica or the backend.
//!
//! Trackers reach the origins through [`OriginMetaInfoSource`], so a fetcher can download a
//! blob that so far exists only in the backend: fetcher → tracker → origin → backend.
//!
//! ```no_run
//! # async fn example() -> kraken_registry::Result<()> {
//! use kraken_registry::origin::{MembersConfig, Origin, OriginConfig};
//!
//! let mut config = OriginConfig::new("10.0.0.1:15002".parse().unwrap(), "/var/lib/kraken");
//! config.cluster.members = MembersConfig::Static(vec![
//!     "10.0.0.1:15002".into(),
//!     "10.0.0.2:15002".into(),
//!     "10.0.0.3:15002".into(),
//! ]);
//! config.trackers = vec!["http://10.0.0.9:15003".into()];
//! let origin = Origin::spawn(config).await?;
//! // ... serve until told to stop, then:
//! origin.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod api;
mod cleanup;
mod client;
mod cluster;
mod config;
mod fetch;
mod gc;
mod health;
mod integrity;
mod membership;
mod metainfo_source;
mod namespaces;
pub(crate) mod queue;
mod recent;
mod replicate;
mod service;
mod state;
mod tombstones;
mod uploads;
mod writeback;

pub use self::client::{CommitKind, OriginClient, UPLOAD_CHUNK};
pub(crate) use self::cluster::{ImageParts, OriginCluster};
pub use self::config::{ClusterConfig, LimitsConfig, MembersConfig, OriginConfig};
pub use self::gc::{Location, SweepReport, SweepRequest, SweptBlob};
pub use self::integrity::ScrubConfig;
pub use self::membership::{Membership, RingView};
pub use self::metainfo_source::OriginMetaInfoSource;
pub use self::service::{Origin, OriginBuilder};
pub use crate::cleanup::CleanupConfig;
pub use crate::durable::WriteBackConfig;
