//! The P2P node's metrics: bytes by the other side's kind, pieces, torrents, connections,
//! blacklistings and downloads.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use super::{Metrics, duration_histogram};

/// The other side of a connection: `origin` when its handshake said so, else `peer`.
#[derive(Clone, Debug, Eq, Hash, PartialEq, EncodeLabelSet)]
struct Remote {
    remote: &'static str,
}

#[derive(Clone, Debug, Eq, Hash, PartialEq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Clone, Debug, Eq, Hash, PartialEq, EncodeLabelSet)]
struct State {
    state: &'static str,
}

#[derive(Clone, Debug, Eq, Hash, PartialEq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

/// The node's families in a service's [`Metrics`]; handed to
/// [`NodeBuilder::metrics`](crate::node::NodeBuilder::metrics). Register them once per
/// registry.
#[derive(Clone, Debug)]
pub struct NodeMetrics {
    received: Family<Remote, Counter>,
    sent: Family<Remote, Counter>,
    pieces_verified: Counter,
    pieces_failed: Family<Reason, Counter>,
    torrents: Family<State, Gauge>,
    connections: Gauge,
    blacklistings: Counter,
    downloads: Family<Outcome, Counter>,
    download_duration: Histogram,
}

impl NodeMetrics {
    /// Registers the node's metrics in `metrics`.
    pub fn register(metrics: &Metrics) -> Self {
        let this = Self {
            received: Family::default(),
            sent: Family::default(),
            pieces_verified: Counter::default(),
            pieces_failed: Family::default(),
            torrents: Family::default(),
            connections: Gauge::default(),
            blacklistings: Counter::default(),
            downloads: Family::default(),
            download_duration: duration_histogram(),
        };
        // Every series from the start, so that a rate over them (and an alert) exists before
        // the first event.
        for remote in ["origin", "peer"] {
            this.received.get_or_create(&Remote { remote }).inc_by(0);
            this.sent.get_or_create(&Remote { remote }).inc_by(0);
        }
        for reason in ["corrupt", "storage"] {
            this.pieces_failed
                .get_or_create(&Reason { reason })
                .inc_by(0);
        }
        for outcome in ["completed", "failed"] {
            this.downloads.get_or_create(&Outcome { outcome }).inc_by(0);
        }
        for state in ["downloading", "seeding"] {
            this.torrents.get_or_create(&State { state }).set(0);
        }
        metrics.register(
            "kraken_p2p_received_bytes",
            "Piece bytes received over P2P, by the kind of the sender (origin or peer)",
            this.received.clone(),
        );
        metrics.register(
            "kraken_p2p_sent_bytes",
            "Piece bytes sent over P2P, by the kind of the receiver (origin or peer)",
            this.sent.clone(),
        );
        metrics.register(
            "kraken_p2p_pieces_verified",
            "Pieces received whose hash matched, written to the store",
            this.pieces_verified.clone(),
        );
        metrics.register(
            "kraken_p2p_pieces_failed",
            "Pieces received and not kept: corrupt (hash mismatch; the sender is blacklisted) or storage (write failed)",
            this.pieces_failed.clone(),
        );
        metrics.register(
            "kraken_p2p_torrents",
            "Torrents in the node's swarm, downloading or seeding",
            this.torrents.clone(),
        );
        metrics.register(
            "kraken_p2p_connections",
            "Peer connections open or being dialled",
            this.connections.clone(),
        );
        metrics.register(
            "kraken_p2p_blacklistings",
            "Peers blacklisted for a torrent (a corrupt piece or a protocol violation)",
            this.blacklistings.clone(),
        );
        metrics.register(
            "kraken_p2p_downloads",
            "Downloads that ended, by outcome (completed or failed)",
            this.downloads.clone(),
        );
        metrics.register(
            "kraken_p2p_download_duration_seconds",
            "Time from asking for a blob that is not cached to holding it verified",
            this.download_duration.clone(),
        );
        this
    }

    pub(crate) fn received(&self, origin: bool, bytes: u64) {
        self.received.get_or_create(&remote(origin)).inc_by(bytes);
    }

    pub(crate) fn sent(&self, origin: bool, bytes: u64) {
        self.sent.get_or_create(&remote(origin)).inc_by(bytes);
    }

    pub(crate) fn piece(&self, failure: Option<&'static str>) {
        match failure {
            None => self.pieces_verified.inc(),
            Some(reason) => self.pieces_failed.get_or_create(&Reason { reason }).inc(),
        };
    }

    pub(crate) fn state(&self, downloading: usize, seeding: usize, connections: usize) {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let set = |state, n| {
            self.torrents.get_or_create(&State { state }).set(gauge(n));
        };
        set("downloading", downloading);
        set("seeding", seeding);
        self.connections.set(gauge(connections));
    }

    pub(crate) fn blacklisted(&self, count: u64) {
        self.blacklistings.inc_by(count);
    }

    pub(crate) fn download(&self, completed: bool, seconds: f64) {
        let outcome = if completed { "completed" } else { "failed" };
        self.downloads.get_or_create(&Outcome { outcome }).inc();
        if completed {
            self.download_duration.observe(seconds);
        }
    }
}

fn remote(origin: bool) -> Remote {
    Remote {
        remote: if origin { "origin" } else { "peer" },
    }
}
