//! What the actor counts into its service's metrics: nothing without the `metrics` feature
//! or without [`NodeBuilder::metrics`](super::NodeBuilder::metrics), so call sites need no
//! `cfg` of their own.

use std::time::{Duration, Instant};

#[cfg(feature = "metrics")]
use crate::metrics::NodeMetrics;

/// Gauges (torrents, connections) are refreshed at most this often: counting the torrents
/// after every message would cost an origin holding thousands of them.
const GAUGE_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub(crate) struct Counters {
    #[cfg(feature = "metrics")]
    metrics: Option<NodeMetrics>,
    /// The swarm's blacklisting count already added to the counter.
    blacklistings: u64,
    next_gauges: Option<Instant>,
}

impl Counters {
    #[cfg(feature = "metrics")]
    pub(crate) fn new(metrics: Option<NodeMetrics>) -> Self {
        Self {
            metrics,
            ..Self::default()
        }
    }

    #[cfg(feature = "metrics")]
    fn with(&self, count: impl FnOnce(&NodeMetrics)) {
        if let Some(metrics) = &self.metrics {
            count(metrics);
        }
    }

    #[cfg(not(feature = "metrics"))]
    fn with(&self, _: impl FnOnce(&Nothing)) {}

    /// Piece bytes received from an origin or a peer.
    pub(crate) fn received(&self, origin: bool, bytes: u64) {
        self.with(|m| m.received(origin, bytes));
    }

    /// Piece bytes sent to an origin or a peer.
    pub(crate) fn sent(&self, origin: bool, bytes: u64) {
        self.with(|m| m.sent(origin, bytes));
    }

    /// A received piece was verified and written (`None`), or not kept (why).
    pub(crate) fn piece(&self, failure: Option<&'static str>) {
        self.with(|m| m.piece(failure));
    }

    /// A download ended; it had started at `started`.
    pub(crate) fn download(&self, completed: bool, started: Instant) {
        self.with(|m| m.download(completed, started.elapsed().as_secs_f64()));
    }

    /// Whether the gauges are due for a refresh at `now` (and, if so, not again for a
    /// while).
    pub(crate) fn gauges_due(&mut self, now: Instant) -> bool {
        if self.next_gauges.is_some_and(|next| now < next) {
            return false;
        }
        self.next_gauges = Some(now + GAUGE_INTERVAL);
        true
    }

    /// The torrents and connections now.
    pub(crate) fn state(&self, downloading: usize, seeding: usize, connections: usize) {
        self.with(|m| m.state(downloading, seeding, connections));
    }

    /// The swarm's blacklisting count now (cheap: called after every input).
    pub(crate) fn blacklistings(&mut self, total: u64) {
        if total > self.blacklistings {
            let new = total - self.blacklistings;
            self.blacklistings = total;
            self.with(|m| m.blacklisted(new));
        }
    }
}

/// What the counters count into without the `metrics` feature.
#[cfg(not(feature = "metrics"))]
struct Nothing;

#[cfg(not(feature = "metrics"))]
impl Nothing {
    fn received(&self, _: bool, _: u64) {}
    fn sent(&self, _: bool, _: u64) {}
    fn piece(&self, _: Option<&'static str>) {}
    fn download(&self, _: bool, _: f64) {}
    fn state(&self, _: usize, _: usize, _: usize) {}
    fn blacklisted(&self, _: u64) {}
}
