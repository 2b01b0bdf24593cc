//! What the agent's request handlers share.

use std::sync::Arc;

use super::config::AgentConfig;
use super::storage::AgentStorage;
use crate::oci::OciHandler;

#[derive(Debug)]
pub(crate) struct AgentState {
    pub(crate) config: AgentConfig,
    pub(crate) storage: Arc<AgentStorage>,
    pub(crate) oci: OciHandler,
    /// The registry the agent's listener serves at `/metrics`.
    pub(crate) metrics: kraken_p2p::metrics::Metrics,
    /// The store's eviction counters in it.
    pub(crate) store_metrics: crate::metrics::StoreMetrics,
    /// The client of `/readiness` probes of build-indexes and trackers.
    pub(crate) probe: reqwest::Client,
    /// `http`, or `https` with `client_tls`: how build-indexes are reached.
    pub(crate) scheme: &'static str,
    /// `host:port` of this agent as the host's container runtimes reach it.
    pub(crate) runtime_registry: String,
}
