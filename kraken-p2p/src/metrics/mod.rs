//! Prometheus metrics: the one registry home of every role (feature `metrics`).
//!
//! A service instance (a tracker, an origin, an agent, …) owns one [`Metrics`]; its HTTP
//! listeners answer `GET /metrics` with it in the Prometheus text exposition format (0.0.4),
//! and it can be served on a listener of its own ([`MetricsConfig::listen`]). The listener
//! layer ([`crate::http_server`]) counts every request in it, the node
//! ([`crate::node::NodeBuilder::metrics`]) its transfers, and the services of
//! `kraken-registry` register their own metrics through [`Metrics::register`] and
//! [`Metrics::register_collector`]. Every name starts with `kraken_`; `docs/metrics.md`
//! lists them all.
//!
//! Nothing global: two services in one process (the devcluster, tests) keep apart. The
//! sans-IO swarm never counts into a registry; the node reads its counters.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper::http::Method;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};
use serde::{Deserialize, Serialize};

mod node;
mod tracker;

pub use self::node::NodeMetrics;
pub(crate) use self::tracker::{TrackerMetrics, TrackerSizes};
/// The client library, re-exported so that every crate registers the same version's types.
pub use prometheus_client;

/// The `Content-Type` of a `/metrics` answer: the Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The path every listener answers with its service's metrics.
pub const PATH: &str = "/metrics";

/// `[metrics]` in every role's configuration.
///
/// ```toml
/// [metrics]
/// listen = "0.0.0.0:9090"
/// ```
///
/// Every HTTP listener of the role answers `GET /metrics` whatever this says; `listen` adds
/// a plain-HTTP listener that serves only `/metrics` (and `/health`), for a scraper kept off
/// the service's own port (which may want client certificates or allow-listed clients).
#[non_exhaustive]
#[derive(Clone, Debug, Default, Deserialize, Eq, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of a separate metrics listener. Default: none.
    pub listen: Option<SocketAddr>,
}

/// One service's metrics, cheap to clone (clones share the registry).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: RwLock<Registry>,
    http: HttpMetrics,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// An empty registry with the HTTP request metrics every listener records.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let http = HttpMetrics::register(&mut registry);
        Self {
            inner: Arc::new(Inner {
                registry: RwLock::new(registry),
                http,
            }),
        }
    }

    /// Adds `metric` as `name` (a counter's name without `_total`: the encoder adds it).
    /// Register each name once.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry_mut().register(name, help, metric);
    }

    /// Adds a collector, asked for its metrics at every scrape (for values that live
    /// elsewhere: a store's size, a queue's depth, another crate's counters).
    pub fn register_collector(&self, collector: impl Collector) {
        self.registry_mut().register_collector(Box::new(collector));
    }

    /// Adds values read at every scrape by `read` (a store's size, a queue's depth, another
    /// crate's counters), written through a [`Scrape`].
    pub fn register_scrape(&self, read: impl Fn(&mut Scrape<'_>) + Send + Sync + 'static) {
        self.register_collector(ScrapeCollector(Box::new(read)));
    }

    /// Everything, in the Prometheus text exposition format (0.0.4).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let registry = self
            .inner
            .registry
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Writing to a String cannot fail; a collector's own error leaves what it wrote.
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        text
    }

    fn registry_mut(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.inner
            .registry
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Creates the series of a listener's scrapes (`GET /metrics` answered `200`) at zero,
    /// so that `kraken_http_requests_total` is there from the first scrape on (a request is
    /// counted when its response is done, after it was encoded).
    pub(crate) fn listener_started(&self, role: &'static str) {
        let labels = RequestLabels {
            role,
            route: "metrics",
            method: "GET",
            status: 200,
        };
        self.inner.http.requests.get_or_create(&labels).inc_by(0);
    }

    /// Counts one answered request: `role` is the listener's name, `route` the name of the
    /// endpoint (never the raw path), `bytes` the response body bytes sent.
    pub(crate) fn http_request(&self, request: &HttpRequest) {
        let http = &self.inner.http;
        let labels = RequestLabels {
            role: request.role,
            route: request.route,
            method: method_label(request.method),
            status: request.status,
        };
        http.requests.get_or_create(&labels).inc();
        let route = RouteLabels {
            role: request.role,
            route: request.route,
            method: labels.method,
        };
        http.duration
            .get_or_create(&route)
            .observe(request.duration.as_secs_f64());
        http.response_bytes
            .get_or_create(&route)
            .inc_by(request.bytes);
    }
}

/// Labels of one sample: `(name, value)` pairs.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

/// Where a [`Metrics::register_scrape`] function writes the values it reads.
pub struct Scrape<'a> {
    encoder: DescriptorEncoder<'a>,
    result: fmt::Result,
}

impl fmt::Debug for Scrape<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrape").finish_non_exhaustive()
    }
}

impl Scrape<'_> {
    /// A gauge `name` with one value per label set.
    pub fn gauge(&mut self, name: &str, help: &str, samples: &[(Labels<'_>, f64)]) {
        if self.result.is_ok() {
            self.result = self.family(name, help, MetricType::Gauge, samples, |value, metric| {
                ConstGauge::new(value).encode(metric)
            });
        }
    }

    /// A counter `name` (without `_total`, which the encoder adds) with one value per
    /// label set.
    pub fn counter(&mut self, name: &str, help: &str, samples: &[(Labels<'_>, f64)]) {
        if self.result.is_ok() {
            self.result = self.family(name, help, MetricType::Counter, samples, |value, metric| {
                ConstCounter::new(value).encode(metric)
            });
        }
    }

    fn family(
        &mut self,
        name: &str,
        help: &str,
        metric_type: MetricType,
        samples: &[(Labels<'_>, f64)],
        encode: impl Fn(f64, MetricEncoder<'_>) -> fmt::Result,
    ) -> fmt::Result {
        if samples.is_empty() {
            return Ok(());
        }
        let mut family = self
            .encoder
            .encode_descriptor(name, help, None, metric_type)?;
        for (labels, value) in samples {
            encode(*value, family.encode_family(labels)?)?;
        }
        Ok(())
    }
}

struct ScrapeCollector(Box<dyn Fn(&mut Scrape<'_>) + Send + Sync>);

impl fmt::Debug for ScrapeCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScrapeCollector").finish_non_exhaustive()
    }
}

impl Collector for ScrapeCollector {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let mut scrape = Scrape {
            encoder,
            result: Ok(()),
        };
        (self.0)(&mut scrape);
        scrape.result
    }
}

/// What [`Metrics::http_request`] counts.
#[derive(Debug)]
pub(crate) struct HttpRequest<'a> {
    pub(crate) role: &'static str,
    pub(crate) route: &'static str,
    pub(crate) method: &'a Method,
    pub(crate) status: u16,
    pub(crate) bytes: u64,
    pub(crate) duration: Duration,
}

/// The buckets of every duration histogram, in seconds: 1 ms to 10 minutes, so one
/// histogram covers a probe, a manifest and a multi-gigabyte blob.
pub fn duration_buckets() -> impl Iterator<Item = f64> {
    [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        120.0, 300.0, 600.0,
    ]
    .into_iter()
}

/// A histogram over [`duration_buckets`].
pub fn duration_histogram() -> Histogram {
    Histogram::new(duration_buckets())
}

/// A method as a label: the standard ones by name, anything else as `other`, so that a
/// client cannot grow the label set.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[derive(Clone, Debug, Eq, Hash, PartialEq, EncodeLabelSet)]
struct RequestLabels {
    role: &'static str,
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Eq, Hash, PartialEq, EncodeLabelSet)]
struct RouteLabels {
    role: &'static str,
    route: &'static str,
    method: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily<RouteLabels>,
    response_bytes: Family<RouteLabels, Counter>,
}

impl HttpMetrics {
    fn register(registry: &mut Registry) -> Self {
        let this = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            response_bytes: Family::default(),
        };
        registry.register(
            "kraken_http_requests",
            "HTTP requests answered, by role, route name, method and status",
            this.requests.clone(),
        );
        registry.register(
            "kraken_http_request_duration_seconds",
            "Time from a request's head to the end of its response body",
            this.duration.clone(),
        );
        registry.register(
            "kraken_http_response_bytes",
            "Response body bytes sent",
            this.response_bytes.clone(),
        );
        this
    }
}

/// Serves `metrics` alone on [`MetricsConfig::listen`], if set: plain HTTP, answering
/// `/metrics` and `/health` and `404` to the rest. Its requests are counted as `role`'s.
pub async fn spawn_listener(
    config: &MetricsConfig,
    role: &'static str,
    metrics: &Metrics,
) -> std::io::Result<Option<crate::http_server::Server>> {
    let Some(addr) = config.listen else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("binding the metrics listener {addr}: {e}"),
        )
    })?;
    let serve = crate::http_server::ServeConfig::new(role).metrics(metrics.clone());
    let handler = |request: hyper::http::Request<crate::http_server::RequestBody>| async move {
        let (status, text) = if request.uri().path() == "/health" {
            (hyper::http::StatusCode::OK, "OK\n")
        } else {
            (hyper::http::StatusCode::NOT_FOUND, "not found\n")
        };
        let mut response = hyper::http::Response::new(http_body_util::Full::new(
            bytes::Bytes::from_static(text.as_bytes()),
        ));
        *response.status_mut() = status;
        response
    };
    crate::http_server::Server::spawn(listener, serve, handler).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_route_name_in_the_text_format() {
        let metrics = Metrics::new();
        let request = HttpRequest {
            role: "origin",
            route: "blob_get",
            method: &Method::GET,
            status: 200,
            bytes: 5,
            duration: Duration::from_millis(3),
        };
        metrics.http_request(&request);
        metrics.http_request(&request);
        let text = metrics.encode();
        assert!(
            text.contains("# TYPE kraken_http_requests_total counter"),
            "{text}"
        );
        assert!(
            text.contains(
                "kraken_http_requests_total{role=\"origin\",route=\"blob_get\",method=\"GET\",status=\"200\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("kraken_http_response_bytes_total{role=\"origin\",route=\"blob_get\",method=\"GET\"} 10"),
            "{text}"
        );
        assert!(text.contains("kraken_http_request_duration_seconds_bucket{"));
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }

    #[test]
    fn scraped_values_are_written_with_their_types_and_labels() {
        let metrics = Metrics::new();
        metrics.register_scrape(|scrape| {
            scrape.counter(
                "kraken_test_ops",
                "Operations",
                &[(&[("op", "get")], 3.0), (&[("op", "put")], 1.0)],
            );
            scrape.gauge("kraken_test_depth", "Depth", &[(&[], 7.0)]);
            scrape.gauge("kraken_test_nothing", "Nothing", &[]);
        });
        let text = metrics.encode();
        assert!(
            text.contains("# TYPE kraken_test_ops_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("kraken_test_ops_total{op=\"get\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("kraken_test_ops_total{op=\"put\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE kraken_test_depth gauge\nkraken_test_depth 7"),
            "{text}"
        );
        assert!(!text.contains("kraken_test_nothing"), "{text}");
    }

    #[test]
    fn the_documented_table_parses() {
        let parsed: MetricsConfig = toml::from_str("listen = \"0.0.0.0:9090\"").unwrap();
        assert_eq!(parsed.listen, Some("0.0.0.0:9090".parse().unwrap()));
        assert_eq!(
            toml::from_str::<MetricsConfig>("").unwrap(),
            MetricsConfig::default()
        );
        assert!(toml::from_str::<MetricsConfig>("address = \"x\"").is_err());
    }
}
