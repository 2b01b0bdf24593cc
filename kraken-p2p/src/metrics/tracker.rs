//! The tracker's metrics: announces, metainfo served and published, and what it holds.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;

use super::Metrics;
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
        metrics.register_collector(SizeCollector(Box::new(sizes)));
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

struct SizeCollector(Box<dyn Fn() -> TrackerSizes + Send + Sync>);

impl std::fmt::Debug for SizeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SizeCollector")
    }
}

impl Collector for SizeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sizes = (self.0)();
        let mut gauge = |name: &str, help: &str, value: usize| {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric)
        };
        if let Some((torrents, peers)) = sizes.peer_store {
            gauge(
                "kraken_tracker_torrents",
                "Torrents with at least one announced peer",
                torrents,
            )?;
            gauge(
                "kraken_tracker_peers",
                "Announced peers over all torrents (a peer of two torrents counts twice)",
                peers,
            )?;
        }
        gauge(
            "kraken_tracker_metainfos",
            "Metainfos kept in the registry",
            sizes.metainfos,
        )?;
        gauge(
            "kraken_tracker_metainfo_bytes",
            "Encoded bytes of the metainfos kept in the registry",
            sizes.metainfo_bytes,
        )
    }
}
