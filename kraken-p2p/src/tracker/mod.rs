//! The tracker: who has which torrent, and whom each announcer should connect to.
//!
//! Every node announces each of its torrents; the tracker records it in a peer store and
//! answers with a random sample of the torrent's other peers — complete peers and origins
//! first — and the interval at which to announce again. Because every node keeps a bounded
//! number of connections per torrent and replaces idle ones, these random samples make the
//! overlay a random regular graph.
//!
//! The tracker believes what it can check: an announce's address is the connection's source
//! address, only an authenticated origin (certificate role, or the [`PublishToken`]) may
//! claim to be an origin or complete or publish metainfo, and the origins' metainfo wins
//! over anything published (`docs/protocol.md` has the rules).
//!
//! The pure part ([`MemoryPeerStore`]) has no I/O; the HTTP service
//! ([`TrackerService`], [`TrackerServer`]) and its client ([`TrackerClient`]) are behind the
//! `runtime-tokio` feature; a [`TrackerService`] is itself a [`Tracker`], for nodes in the
//! tracker's own process (no listener needed). The protocol is described in [`api`]. A tracker answers metainfo
//! requests from what seeders published to it and, for blobs nobody published, from a
//! [`MetaInfoSource`] such as the origin cluster.

pub mod api;
#[cfg(feature = "runtime-tokio")]
mod auth;
#[cfg(feature = "runtime-tokio")]
mod client;
#[cfg(feature = "server")]
mod in_process;
#[cfg(feature = "server")]
mod owners;
mod peer_store;
#[cfg(feature = "runtime-tokio")]
mod pool;
#[cfg(feature = "server")]
mod service;
#[cfg(feature = "runtime-tokio")]
mod source;

#[cfg(feature = "runtime-tokio")]
pub use self::auth::PublishToken;
#[cfg(feature = "runtime-tokio")]
pub use self::client::{Tracker, TrackerClient};
#[cfg(feature = "redis")]
pub use self::peer_store::RedisPeerStore;
pub use self::peer_store::{
    Announcer, CapReached, DEFAULT_HANDOUT_LIMIT, DEFAULT_PEER_TTL, MemoryPeerStore,
    PeerStoreConfig, PeerStoreLimits,
};
#[cfg(feature = "runtime-tokio")]
pub use self::pool::TrackerPool;
#[cfg(feature = "metrics")]
pub(crate) use self::service::TrackerEvent;
#[cfg(feature = "server")]
pub use self::service::route_name;
#[cfg(feature = "server")]
pub use self::service::{PeerStore, SharedPeerStore, TrackerConfig, TrackerServer, TrackerService};
#[cfg(feature = "runtime-tokio")]
pub use self::source::{MetaInfoLookup, MetaInfoSource};
