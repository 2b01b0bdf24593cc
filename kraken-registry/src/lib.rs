//! The Kraken cluster services over HTTP.
//!
//! - [`origin`]: the origin cluster — a blob API on Go Kraken's paths, a rendezvous ring of
//!   origins with replicas and health checks, fetch-on-miss from a backend with one backend
//!   read per blob however many ask, a durable write-back queue, re-replication when
//!   membership changes, P2P seeding of every blob held, and the [`MetaInfoSource`] through
//!   which a tracker asks the origins for metainfo.
//!
//! The build-index, proxy and agent come next. See `docs/origin.md` and
//! `docs/architecture.md` at the root of the workspace.
//!
//! [`MetaInfoSource`]: kraken_p2p::tracker::MetaInfoSource
#![warn(missing_docs)]

mod durable;
mod error;
mod http;
pub mod origin;

pub use crate::error::{Error, Result};
