//! A node's settings.

use std::net::SocketAddr;
use std::time::Duration;

use kraken_core::{ByteSize, PieceLengthPolicy};
use serde::{Deserialize, Serialize};

#[cfg(doc)]
use super::{Node, TcpTransport};
use crate::swarm::SwarmConfig;
#[cfg(feature = "tls")]
use crate::tls::PeerTlsConfig;

/// Settings of a [`Node`].
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Address the peer listener binds. Default: `127.0.0.1:0` (loopback, any port).
    pub listen: SocketAddr,
    /// Address announced to the tracker, where other peers reach this one; port 0 means the
    /// listener's port. Default: the listener's address (which must then not be a wildcard
    /// address).
    pub advertise: Option<SocketAddr>,
    /// Namespace of blobs downloaded and seeded without one. Default: empty.
    pub namespace: String,
    /// Most bytes per second sent to all peers together. Default: unlimited.
    pub egress_rate: Option<ByteSize>,
    /// Most bytes per second received from all peers together. Default: unlimited.
    pub ingress_rate: Option<ByteSize>,
    /// Piece lengths of blobs this node seeds from files. Default: the standard table.
    pub piece_lengths: PieceLengthPolicy,
    /// Time allowed to open a connection to a peer. Default: 5s.
    #[serde(with = "humantime_serde")]
    pub dial_timeout: Duration,
    /// How long a download waits for its metainfo to be published. Default: 60s.
    #[serde(with = "humantime_serde")]
    pub metainfo_timeout: Duration,
    /// Whether dropping the last [`Fetch`](super::Fetch) of a download (with no progress
    /// receiver or stream of it left) cancels the download, as [`Node::cancel`] does. Off, a
    /// download runs to the end once started. Default: true.
    pub cancel_on_drop: bool,
    /// How often the node runs an eviction pass over its store, by the store's own policy
    /// ([`kraken_core::StoreConfig`]: idle TTLs and watermarks); `None` leaves eviction to
    /// the embedder ([`kraken_core::BlobStore::evict`]). Default: 60s.
    #[serde(with = "humantime_serde")]
    pub evict_interval: Option<Duration>,
    /// A download with no piece verified for this long asks the tracker for the blob's
    /// metainfo afresh from the origins, and starts over with it if it differs: metainfo
    /// that matches no peer's bytes (forged, or stale) stalls a download, and nothing else
    /// would end the stall. Repeated stalls wait twice as long each time, up to 5 minutes.
    /// Default: 10s.
    #[serde(with = "humantime_serde")]
    pub metainfo_recheck_after: Duration,
    /// Largest blob this node downloads: a download's file is allocated at the length the
    /// metainfo claims before any byte is verified, so a longer claim is refused (after
    /// asking the origins for their metainfo once). Default: 64GiB, as the origin's
    /// `limits.max_blob_size`.
    pub max_blob_size: ByteSize,
    /// A write to a peer (a frame, or a chunk of up to 256 KiB of a piece) that makes no
    /// progress for this long closes the connection with its upload queue, and the peer is
    /// blacklisted for the torrent: a peer that asks for pieces and never reads them holds
    /// no slot and no memory for longer. Our own egress limit does not count. Default: 30s.
    #[serde(with = "humantime_serde")]
    pub write_stall_timeout: Duration,
    /// TLS on peer links (`[p2p.tls]`): certificates from the cluster's CA on both ends,
    /// the node's peer id bound to its certificate, and optionally plain connections
    /// refused. Ignored with a transport of one's own. Default: none (plain TCP). Feature
    /// `tls`.
    #[cfg(feature = "tls")]
    pub tls: Option<PeerTlsConfig>,
    /// Whether the default TCP transport sends pieces with `sendfile`, straight from the page
    /// cache (see [`TcpTransport::send_file`]). Ignored with a transport of one's own.
    /// Default: true.
    pub send_file: bool,
    /// Bytes of the chunks of complete blobs that streams ([`Node::read`](super::Node::read))
    /// read lately, kept in memory for other streams of the same blob: clients pulling one
    /// blob at about the same time then share one read of each chunk instead of each
    /// copying it out of the page cache. 0 turns it off. Default: 64MiB.
    pub read_cache_size: ByteSize,
    /// Whether a download's durable bytes are dropped from the page cache as it goes (every
    /// 64 MiB written and when it completes, all but the newest 16 MiB; a hint to the
    /// kernel). For a node whose
    /// readers keep their own copy, as an agent's container runtime does: the blob then
    /// takes a bounded share of the host's memory (and of the node's cgroup, which page
    /// cache is charged to), and its later pieces reuse the memory its first ones freed. A
    /// later read of the blob, or a neighbour's request for an older piece, reads the disk.
    /// Default: false (a library caller, or `kraken fetch`, usually reads the blob next).
    pub drop_behind: bool,
    /// The scheduler's settings.
    pub swarm: SwarmConfig,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            namespace: String::new(),
            egress_rate: None,
            ingress_rate: None,
            piece_lengths: PieceLengthPolicy::default(),
            dial_timeout: Duration::from_secs(5),
            metainfo_timeout: Duration::from_secs(60),
            cancel_on_drop: true,
            evict_interval: Some(Duration::from_secs(60)),
            metainfo_recheck_after: Duration::from_secs(10),
            max_blob_size: ByteSize(64 << 30),
            write_stall_timeout: Duration::from_secs(30),
            #[cfg(feature = "tls")]
            tls: None,
            send_file: true,
            read_cache_size: ByteSize(64 << 20),
            drop_behind: false,
            swarm: SwarmConfig::default(),
        }
    }
}
