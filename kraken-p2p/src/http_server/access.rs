//! What happens when a response is done: the access log line and the request metrics, and
//! the route names they use instead of raw paths.

use std::net::SocketAddr;
use std::time::Instant;

use hyper::http::Method;

use super::limits::AccessLog;

/// Names the endpoint a request is for, from its method and path: a low-cardinality label
/// (`blob_get`, `manifest_put`, …) for metrics and the access log, never the path itself.
/// Each role has one ([`ServeConfig::routes`](super::ServeConfig::routes)).
pub type RouteNames = fn(&Method, &str) -> &'static str;

/// The route names every listener shares: the probes and `/metrics`; `other` for the rest.
pub fn common_route(_: &Method, path: &str) -> &'static str {
    match path {
        "/health" => "health",
        "/readiness" => "readiness",
        "/metrics" => "metrics",
        _ => "other",
    }
}

/// The route of a request on a listener with `routes`: the shared names first.
pub(super) fn route_name(routes: RouteNames, method: &Method, path: &str) -> &'static str {
    match common_route(method, path) {
        "other" => routes(method, path),
        shared => shared,
    }
}

/// A request whose response is on its way: logged and counted when the body is done with.
#[derive(Debug)]
pub(super) struct Finished {
    pub(super) listener: &'static str,
    pub(super) route: &'static str,
    pub(super) method: Method,
    pub(super) status: u16,
    pub(super) remote: SocketAddr,
    pub(super) started: Instant,
    pub(super) access_log: AccessLog,
    #[cfg(feature = "metrics")]
    pub(super) metrics: Option<crate::metrics::Metrics>,
}

impl Finished {
    /// The response is done: `bytes` of body went out, all of it if `complete` (else the
    /// client went away or the body failed).
    pub(super) fn report(&self, bytes: u64, complete: bool) {
        let duration = self.started.elapsed();
        let duration_ms = duration.as_secs_f64() * 1000.0;
        macro_rules! access {
            ($level:expr) => {
                tracing::event!(
                    target: "kraken_p2p::access",
                    $level,
                    listener = self.listener,
                    method = %self.method,
                    route = self.route,
                    status = self.status,
                    bytes,
                    duration_ms,
                    client = %self.remote,
                    complete,
                    "request"
                )
            };
        }
        match self.access_log {
            AccessLog::Info => access!(tracing::Level::INFO),
            AccessLog::Debug => access!(tracing::Level::DEBUG),
            AccessLog::Off => {}
        }
        #[cfg(feature = "metrics")]
        if let Some(metrics) = &self.metrics {
            metrics.http_request(&crate::metrics::HttpRequest {
                role: self.listener,
                route: self.route,
                method: &self.method,
                status: self.status,
                bytes,
                duration,
            });
        }
    }
}
