//! The tracker's metrics: announces, metainfo served and published, and what it holds.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::{Metrics, Scrape};
use crate::tracker::TrackerEvent;

#[derive(Clone, Debug, Eq, Hash, PartialEq, EncodeLabelSet)]
struct From {
    from: &'static str,
}

/// What the tracker holds at a scrape.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TrackerSizes {
    /// Torrents and peers, if the peer store can tell.
    pub(crate) peer_store: Option<(usize, usize)>,
    pub(crate) metainfos: usize,
    pub(crate) metainfo_bytes: usize,
}

/// The tracker's counters in a service's [`Metrics`].
#[derive(Clone, Debug)]
pub(crate) struct TrackerMetrics {
    announces: Counter,
    served: Family<From, Counter>,
    published: Counter,
}

impl TrackerMetrics {
    pub(crate) fn register(
        metrics: &Metrics,
        sizes: impl Fn() -> TrackerSizes + Send + Sync + 'static,
    ) -> Self {
        let this = Self {
            announces: Counter::default(),
            served: Family::default(),
            published: Counter::default(),
        };
        for from in ["registry", "source"] {
            this.served.get_or_create(&From { from }).inc_by(0);
        }
        metrics.register(
            "kraken_tracker_announces",
            "Announces answered with peers",
            this.announces.clone(),
        );
        metrics.register(
            "kraken_tracker_metainfo_served",
            "Metainfos served: from the registry of published ones, or found by the source (the origins)",
            this.served.clone(),
        );
        metrics.register(
            "kraken_tracker_metainfo_published",
            "Metainfos published by seeders",
            this.published.clone(),
        );
        metrics.register_scrape(move |out| scrape(sizes(), out));
        this
    }

    pub(crate) fn count(&self, event: TrackerEvent) {
        match event {
            TrackerEvent::Announce => self.announces.inc(),
            TrackerEvent::MetaInfoServed { from_source } => {
                let from = if from_source { "source" } else { "registry" };
                self.served.get_or_create(&From { from }).inc()
            }
            TrackerEvent::MetaInfoPublished => self.published.inc(),
        };
    }
}

/// Writes the tracker's sizes at a scrape.
fn scrape(sizes: TrackerSizes, scrape: &mut Scrape<'_>) {
    let value = |n: usize| n as f64;
    if let Some((torrents, peers)) = sizes.peer_store {
        scrape.gauge(
            "kraken_tracker_torrents",
            "Torrents with at least one announced peer",
            &[(&[], value(torrents))],
        );
        scrape.gauge(
            "kraken_tracker_peers",
            "Announced peers over all torrents (a peer of two torrents counts twice)",
            &[(&[], value(peers))],
        );
    }
    scrape.gauge(
        "kraken_tracker_metainfos",
        "Metainfos kept in the registry",
        &[(&[], value(sizes.metainfos))],
    );
    scrape.gauge(
        "kraken_tracker_metainfo_bytes",
        "Encoded bytes of the metainfos kept in the registry",
        &[(&[], value(sizes.metainfo_bytes))],
    );
}
