//! Moving blobs between hosts.
//!
//! Hosts fetch a blob's pieces from each other instead of all from one server, so a blob
//! reaches many hosts at close to each host's own link speed. The crate has four layers:
//!
//! - [`wire`]: the peer protocol — length-prefixed protobuf frames with raw piece payloads,
//!   specified byte by byte in `docs/protocol.md`; pure codec, no I/O;
//! - [`swarm`]: the sans-IO scheduler — connection, piece-selection, pipelining, endgame,
//!   blacklisting and announce decisions for every torrent of a node, driven by
//!   `handle_*(now, …)` inputs and drained through `poll_*()` outputs, with no I/O, no clock
//!   and no thread RNG; the same code runs in the node and in deterministic tests;
//! - [`node`] (feature `runtime-tokio`, on by default): the tokio driver — one actor owning the
//!   swarm, connection tasks that only move bytes, piece I/O on the blocking pool through
//!   [`kraken_core`]'s blob store;
//! - [`tracker`]: the peer store and handout policy (pure), the tracker client (feature
//!   `runtime-tokio`) and the tracker service, over HTTP or in-process (feature `server`);
//! - [`tls`] (feature `tls`, part of `runtime-tokio`) and [`http_server`] (feature
//!   `server`): the HTTP listener every Kraken service uses, plain or TLS with client
//!   certificates and their roles, and the clients' TLS;
//! - `sim` (feature `sim`): thousands of swarm cores over virtual time and a network model —
//!   the real scheduler at scale, deterministic for a seed.
//!
//! # Quick start
//!
//! Distribute a file from one process and fetch it in another (both need the same tracker,
//! e.g. `kraken tracker --listen 127.0.0.1:15003 --publish-token-file token`; only the
//! seeder, which publishes the blob's metainfo, holds the token):
//!
//! ```no_run
//! # async fn example() -> kraken_p2p::Result<()> {
//! use std::sync::Arc;
//! use kraken_core::BlobStore;
//! use kraken_p2p::node::{Node, NodeConfig};
//! use kraken_p2p::tracker::{PublishToken, TrackerClient};
//!
//! let tracker = Arc::new(TrackerClient::new("http://127.0.0.1:15003")?);
//! let publisher = TrackerClient::new("http://127.0.0.1:15003")?
//!     .with_publish_token(PublishToken::from_file("token".as_ref())?);
//! let mut config = NodeConfig::default();
//! config.listen = "127.0.0.2:16001".parse().unwrap();
//! let seeder = Node::builder(config)
//!     .store(BlobStore::open("/tmp/seeder")?)
//!     .tracker(Arc::new(publisher))
//!     .spawn()
//!     .await?;
//! let meta = seeder.seed_file("model.safetensors".as_ref()).await?;
//!
//! // Elsewhere: any number of nodes download it, mostly from each other.
//! let fetcher = Node::builder(NodeConfig::default())
//!     .store(BlobStore::open("/tmp/fetcher")?)
//!     .tracker(tracker)
//!     .spawn()
//!     .await?;
//! let download = fetcher.download(meta.digest());
//! let mut progress = download.progress();
//! tokio::spawn(async move {
//!     while progress.changed().await.is_ok() {
//!         let p = *progress.borrow();
//!         println!("{}/{} pieces", p.have, p.total);
//!     }
//! });
//! let blob = download.await?; // verified piece by piece and as a whole
//! println!("{} bytes at {}", blob.len(), blob.path().display());
//! fetcher.shutdown().await;
//! seeder.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! See `docs/architecture.md` at the root of the workspace.
#![warn(missing_docs)]

mod error;
#[cfg(feature = "server")]
pub mod http_server;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "runtime-tokio")]
pub mod node;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod swarm;
#[cfg(feature = "tls")]
pub mod tls;
pub mod tracker;
pub mod wire;

pub use crate::error::{Error, Result};
