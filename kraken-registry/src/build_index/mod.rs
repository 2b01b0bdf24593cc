//! The build-index: tag → digest for a cluster, backed by remote storage, replicating tags
//! (and their blobs) to other clusters.
//!
//! A [`BuildIndex`] serves Go Kraken's tag API (paths and status codes in
//! `docs/build-index.md`): `PUT /tags/{tag}/digest/{d}`, `GET`/`HEAD`/`DELETE /tags/{tag}`,
//! paginated listings, and the internal calls between build-indexes. Around it:
//!
//! - **Dependency check.** A put is accepted only when the origin cluster has the manifest
//!   and everything it refers to, recursively: an image index's child manifests and their
//!   configs and layers ([`Error::MissingDependency`](crate::Error::MissingDependency)
//!   names the first blob missing; nothing is stored).
//! - **Mutable tags, fresh reads.** Tags may be re-pointed and deleted. Each version of a tag
//!   carries a stamp (time, raised past every version the writer can see, and the writer's
//!   name). A write is stored and `fsync`ed, queued for the backend (`fsync`ed), and copied
//!   to every neighbour before it is acknowledged; a read asks every neighbour for its
//!   version and answers with the newest. Nothing is cached in front of this: a read after
//!   an acknowledged write sees it on any build-index of the cluster that can reach one
//!   holding it.
//! - **Backend.** Tags are written to a [`kraken_backends::Backend`] (routed by the full tag
//!   name, as Go Kraken routes them) through a durable queue that retries with backoff and
//!   survives restarts; the backend is read for tags no build-index knows.
//! - **Replication.** A put with `?replicate=true` queues, for each remote cluster whose
//!   [`RemoteConfig::repositories`] match, a durable task that copies the image's blobs to
//!   the remote origins and then puts the tag on the remote build-index.
//!
//! ```no_run
//! # async fn example() -> kraken_registry::Result<()> {
//! use kraken_registry::build_index::{BuildIndex, BuildIndexConfig};
//! use kraken_registry::origin::MembersConfig;
//!
//! let mut config = BuildIndexConfig::new("10.0.0.1:15004".parse().unwrap(), "/var/lib/kraken/bi");
//! config.origins.members = MembersConfig::Dns("origins.internal:15002".into());
//! config.neighbours = vec!["10.0.0.2:15004".into()];
//! let build_index = BuildIndex::spawn(config).await?;
//! // ... serve until told to stop, then:
//! build_index.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod api;
pub(crate) mod client;
mod config;
mod replicate;
mod service;
mod state;
pub(crate) mod store;
mod tag;
mod writeback;

pub use self::client::{BuildIndexClient, PageOptions, TagPage};
pub use self::config::{BuildIndexConfig, LimitsConfig, RemoteConfig};
pub use self::service::{BuildIndex, BuildIndexBuilder};
pub use self::tag::TagName;
