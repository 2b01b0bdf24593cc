//! Scheduler settings.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Settings of a [`Swarm`](super::Swarm). Defaults follow Go Kraken's where it has one.
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SwarmConfig {
    /// Most connections (dialing, handshaking and active) per torrent, in both directions
    /// together. Default: 10, as Go Kraken. In the simulator 20 is better at scale (300
    /// hosts pulling a 3 GB image in 4 MiB pieces: p50/p99 1.16/1.20 × T* against 1.30/1.37),
    /// but 17 real processes sharing this 2-core machine did worse with 20 (1 seeder → 16
    /// fetchers: p99 1.21–1.23 × T* against 1.15–1.18), a per-connection cost the simulator
    /// does not model; large clusters may raise it.
    pub max_conns_per_torrent: usize,
    /// Most connections of the node over all its torrents together (dialing, handshaking
    /// and active, both directions): a host pulling an image of many layers, or an origin
    /// serving many blobs, keeps its sockets (one file descriptor each) bounded however
    /// many torrents are active. At the cap no peer is dialed and an accepted connection is
    /// closed at once; a torrent waiting for a slot dials when one frees. Default: 512 —
    /// above 50 layers × `max_conns_per_torrent`, and, with an origin's
    /// `max_announced_blobs`, under the 1,024 open files many systems allow a process.
    pub max_conns: usize,
    /// An inbound handshake is refused when more than this many of the sender's neighbours
    /// are already our neighbours on the torrent, which keeps the overlay from clustering.
    /// Default: 5.
    pub max_mutual_conns: usize,
    /// Outstanding piece requests to one leeching peer. Default: 3.
    pub pipeline_limit: usize,
    /// Outstanding piece requests to one origin or complete peer, which can serve more.
    /// Default: 5.
    pub seeder_pipeline_limit: usize,
    /// Piece requests from one peer that may wait for upload at once; more are refused.
    /// Default: 8.
    pub max_queued_uploads_per_conn: usize,
    /// Received pieces of one torrent that may wait for verification and the disk at once;
    /// no new piece is requested beyond it, which bounds the memory a download needs.
    /// Default: 8.
    pub max_pending_writes: usize,
    /// Among the rarest pieces a peer can give, one of the first `sequential_window × n` (by
    /// index) is chosen at random, where `n` is the torrent's number of connections. It keeps
    /// downloads close to sequential — so streaming readers and the whole-blob hash advance
    /// while the download runs — while neighbours, who often download from the same sources,
    /// still pick different pieces. The first piece not yet asked for goes first (if it is
    /// among the rarest) once this many × `n` pieces after it are held: among random picks,
    /// one piece of a large blob would otherwise be left many windows behind, and an
    /// in-order reader with it. 1 with one connection is strictly in order; a huge value is
    /// uniformly random. Default: 16.
    pub sequential_window: usize,
    /// Endgame starts when this many pieces or fewer are missing: a missing piece may then be
    /// requested from several peers at once, and the losers get a cancel. Default: 3.
    pub endgame_threshold: usize,
    /// Shortest piece request timeout. Default: 4s.
    #[serde(with = "humantime_serde")]
    pub request_timeout_min: Duration,
    /// Request timeout per MiB of piece length; the timeout is the larger of this times the
    /// piece length in MiB and `request_timeout_min`. Default: 4s.
    #[serde(with = "humantime_serde")]
    pub request_timeout_per_mib: Duration,
    /// An origin refuses a request for a piece it has already uploaded more often than
    /// another piece the requester lacks, so its upload puts every piece into the swarm once
    /// before it sends any twice (which bounds origin egress). Other complete peers serve
    /// whatever is asked: refusals cost their requesters a backoff, and their egress is
    /// not scarce. Default: true.
    pub spread_uploads: bool,
    /// How long a peer is not asked again for a piece it refused or failed to deliver.
    /// Default: 5s.
    #[serde(with = "humantime_serde")]
    pub refused_piece_backoff: Duration,
    /// How long a peer that failed (dial error, bad data, protocol violation, a stalled
    /// writer) is not dialed or accepted again for the same torrent. A normal close is not a
    /// failure. The entry is keyed by the peer id *and* the address it came from, so a peer
    /// claiming another's id from elsewhere gets only itself blacklisted. Default: 30s.
    #[serde(with = "humantime_serde")]
    pub blacklist_duration: Duration,
    /// A connection with no piece sent or received for this long is closed, freeing its slot
    /// for another neighbour. Default: 30s.
    #[serde(with = "humantime_serde")]
    pub conn_idle_timeout: Duration,
    /// A connection whose handshakes are not both done this long after it was dialed or
    /// accepted is closed: a peer that connects and says nothing holds no slot for long.
    /// Default: 10s.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// When a torrent's connections are full, a new peer (an inbound handshake, or a
    /// complete or origin candidate) takes the place of a link over which no piece has
    /// moved either way for this long: a peer that requests and never reads, or sends
    /// nothing, cannot keep its slot against newcomers. Default: 10s.
    #[serde(with = "humantime_serde")]
    pub stale_link_after: Duration,
    /// Most inbound connections from one IP address at once, over all torrents and in any
    /// state; more are closed as soon as they are accepted. Default: 64.
    pub max_inbound_per_ip: usize,
    /// Most connections of one torrent with peers at one IP address; an inbound handshake
    /// beyond it is refused. Hosts sharing an address (NAT, a cluster on one loopback
    /// address) count together: raise it for them. Default: 5.
    pub max_conns_per_ip_per_torrent: usize,
    /// A downloading torrent with no piece written for this long fails. Default: 5m.
    #[serde(with = "humantime_serde")]
    pub leecher_idle_timeout: Duration,
    /// A complete torrent with no connection for this long is dropped from the swarm (the
    /// blob stays on disk and is picked up again by the next inbound handshake). Default: 5m.
    #[serde(with = "humantime_serde")]
    pub seeder_idle_timeout: Duration,
    /// Announce interval of downloading torrents, until a tracker says otherwise.
    /// Default: 3s.
    #[serde(with = "humantime_serde")]
    pub announce_interval: Duration,
    /// Shortest announce interval of a downloading torrent that has nothing to request from
    /// its neighbours, or fewer connections than `max_conns_per_torrent` and no peer left to
    /// dial: new neighbours are its way forward. Default: 1s.
    #[serde(with = "humantime_serde")]
    pub starving_announce_interval: Duration,
    /// An under-connected download announces again this soon after its first announce, then
    /// after twice as long each time, up to `starving_announce_interval`: hosts that start
    /// together find each other within a fraction of a second, at two or three extra
    /// announces each. Default: 250ms.
    #[serde(with = "humantime_serde")]
    pub quick_announce_interval: Duration,
    /// Announce interval of complete torrents, which only need to stay in the tracker's peer
    /// store. Default: 60s.
    #[serde(with = "humantime_serde")]
    pub seeder_announce_interval: Duration,
    /// Whether this node is an origin (a seeder of last resort). Default: false.
    pub origin: bool,
    /// Seed of the scheduler's random choices; `None` picks one at random. Default: none.
    pub rng_seed: Option<u64>,
}

impl Default for SwarmConfig {
    fn default() -> Self {
        Self {
            max_conns_per_torrent: 10,
            max_conns: 512,
            max_mutual_conns: 5,
            pipeline_limit: 3,
            seeder_pipeline_limit: 5,
            max_queued_uploads_per_conn: 8,
            max_pending_writes: 8,
            sequential_window: 16,
            endgame_threshold: 3,
            request_timeout_min: Duration::from_secs(4),
            request_timeout_per_mib: Duration::from_secs(4),
            spread_uploads: true,
            refused_piece_backoff: Duration::from_secs(5),
            blacklist_duration: Duration::from_secs(30),
            conn_idle_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            stale_link_after: Duration::from_secs(10),
            max_inbound_per_ip: 64,
            max_conns_per_ip_per_torrent: 5,
            leecher_idle_timeout: Duration::from_secs(300),
            seeder_idle_timeout: Duration::from_secs(300),
            announce_interval: Duration::from_secs(3),
            starving_announce_interval: Duration::from_secs(1),
            quick_announce_interval: Duration::from_millis(250),
            seeder_announce_interval: Duration::from_secs(60),
            origin: false,
            rng_seed: None,
        }
    }
}

impl SwarmConfig {
    /// The timeout of a request for a piece of `piece_length` bytes.
    pub fn request_timeout(&self, piece_length: u64) -> Duration {
        let mib = piece_length as f64 / f64::from(1u32 << 20);
        self.request_timeout_per_mib
            .mul_f64(mib)
            .max(self.request_timeout_min)
    }
}
