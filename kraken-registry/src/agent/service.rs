//! [`Agent`]: assembles the blob cache, P2P node, storage, `/v2/` handler and listener, and
//! runs cache cleanup.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use kraken_core::BlobStore;
use kraken_p2p::node::{Node, NodeConfig};
use kraken_p2p::tracker::{Tracker, TrackerPool};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::api;
use super::config::AgentConfig;
use super::state::AgentState;
use super::storage::AgentStorage;
use crate::build_index::BuildIndexClient;
use crate::cleanup::eviction_loop;
use crate::error::{Error, Result};
use crate::http::serve;
use crate::metrics::{AgentMetrics, SmallBlobMetrics, StoreMetrics, spawn_listener};
use crate::oci::{OciConfig, OciHandler};
use kraken_p2p::http_server::ServeConfig;
use kraken_p2p::metrics::{Metrics, NodeMetrics};

/// Builds an [`Agent`].
#[derive(Debug)]
#[must_use = "a builder does nothing until spawned"]
pub struct AgentBuilder {
    config: AgentConfig,
    tracker: Option<Arc<dyn Tracker>>,
}

impl AgentBuilder {
    /// Uses `tracker` instead of a pool of [`AgentConfig::trackers`] for downloads and blob
    /// sizes (for embedders and tests). `/readiness` still probes the configured trackers.
    pub fn tracker(mut self, tracker: Arc<dyn Tracker>) -> Self {
        self.tracker = Some(tracker);
        self
    }

    /// Opens the blob cache, starts the P2P node, binds the registry port and starts
    /// serving.
    pub async fn spawn(self) -> Result<Agent> {
        let config = self.config;
        config.validate()?;
        let client_tls = config
            .client_tls
            .as_ref()
            .map(|tls| tls.load())
            .transpose()?;
        let server_tls = config.tls.as_ref().map(|tls| tls.load()).transpose()?;
        let tracker: Arc<dyn Tracker> = match self.tracker {
            Some(tracker) => tracker,
            None => Arc::new(TrackerPool::with_tls(
                &config.trackers,
                client_tls.as_ref(),
            )?),
        };
        crate::startup::data_dir(&config.data_dir)?;
        let store = {
            let store_config = config.cleanup.store_config();
            let root = config.data_dir.join("blobs");
            tokio::task::spawn_blocking(move || BlobStore::open_with_config(root, store_config))
                .await
                .map_err(|_| Error::Internal("startup task failed"))??
        };
        let metrics = Metrics::new();
        let store_metrics = StoreMetrics::register(&metrics, store.clone());
        let listener = crate::startup::bind("agent registry", config.listen).await?;
        let local_addr = listener.local_addr()?;
        let mut node_config = NodeConfig::default();
        // The cleanup loop evicts (and keeps its own bookkeeping of what it evicted).
        node_config.evict_interval = None;
        node_config.listen = config
            .peer_listen
            .unwrap_or_else(|| SocketAddr::new(local_addr.ip(), 0));
        node_config.advertise = config.peer_advertise;
        node_config.egress_rate = config.p2p.egress_rate;
        node_config.ingress_rate = config.p2p.ingress_rate;
        node_config.dial_timeout = config.p2p.dial_timeout;
        node_config.metainfo_timeout = config.p2p.metainfo_timeout;
        node_config.metainfo_recheck_after = config.p2p.metainfo_recheck_after;
        node_config.max_blob_size = config.p2p.max_blob_size;
        node_config.swarm = config.p2p.swarm.clone();
        let peer_listen = node_config.listen;
        node_config.write_stall_timeout = config.p2p.write_stall_timeout;
        node_config.tls = config.p2p.tls.clone();
        node_config.read_cache_size = config.p2p.read_cache_size;
        node_config.send_file = config.p2p.send_file;
        node_config.drop_behind = config.p2p.drop_behind;
        let node = Node::builder(node_config)
            .metrics(NodeMetrics::register(&metrics))
            .store(store)
            .tracker(Arc::clone(&tracker))
            .spawn()
            .await
            .map_err(crate::startup::node_error(peer_listen))?;
        let build_index =
            BuildIndexClient::with_tls(config.build_index.clone(), client_tls.as_ref())?;
        let storage = Arc::new(
            AgentStorage::new(node.clone(), tracker, build_index)
                .with_max_manifest(config.limits.max_manifest_size.bytes())
                .with_metainfo_timeout(config.p2p.metainfo_timeout)
                .with_pull_metrics(AgentMetrics::register(&metrics))
                .with_small_blobs(SmallBlobMetrics::cache(&metrics, config.cache))
                .with_mapped_responses(server_tls.is_none()),
        );
        // Pushes are refused before an upload starts; the directory stays empty.
        let oci_config = OciConfig::new(config.data_dir.join("uploads"));
        let oci = OciHandler::new(storage.clone(), oci_config)?;
        // Where a container runtime on this host reaches the agent (preload's `runtime=`).
        let runtime_registry = config
            .container_runtime
            .registry
            .clone()
            .unwrap_or_else(|| {
                let ip = if local_addr.ip().is_unspecified() {
                    std::net::IpAddr::from([127, 0, 0, 1])
                } else {
                    local_addr.ip()
                };
                SocketAddr::new(ip, local_addr.port()).to_string()
            });
        let state = Arc::new(AgentState {
            runtime_registry,
            probe: crate::http::client(client_tls.as_ref())?,
            scheme: if client_tls.is_some() {
                "https"
            } else {
                "http"
            },
            config,
            storage,
            oci,
            metrics,
            store_metrics,
        });
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(cleanup_loop(Arc::clone(&state), shutdown.clone()));
        spawn_listener(
            &state.config.metrics,
            "agent",
            &state.metrics,
            &tasks,
            shutdown.clone(),
        )
        .await?;
        tasks.spawn(serve(
            ServeConfig::new("agent")
                .tls(server_tls)
                .limits(state.config.http.clone())
                .routes(api::route_name)
                .metrics(state.metrics.clone()),
            listener,
            Arc::clone(&state),
            api::handle,
            tasks.clone(),
            shutdown.clone(),
        ));
        tracing::info!(
            addr = %local_addr,
            peer_addr = %node.advertise_addr(),
            "agent started"
        );
        Ok(Agent {
            state,
            node,
            local_addr,
            shutdown,
            tasks,
        })
    }
}

/// A running agent: the OCI pull API and Go Kraken's agent endpoints on the registry port,
/// downloading over P2P and seeding what it holds. See the [module docs](super).
#[derive(Debug)]
pub struct Agent {
    state: Arc<AgentState>,
    node: Node,
    local_addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Agent {
    /// A builder with `config`.
    pub fn builder(config: AgentConfig) -> AgentBuilder {
        AgentBuilder {
            config,
            tracker: None,
        }
    }

    /// Starts an agent with `config`.
    pub async fn spawn(config: AgentConfig) -> Result<Self> {
        Self::builder(config).spawn().await
    }

    /// The address of the registry port.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address of the P2P peer listener, as announced to the tracker.
    pub fn peer_addr(&self) -> SocketAddr {
        self.node.advertise_addr()
    }

    /// The P2P node (its blob cache is [`Node::store`]).
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The agent's metrics, as `/metrics` serves them.
    pub fn metrics(&self) -> &Metrics {
        &self.state.metrics
    }

    /// The registry storage behind `/v2/`.
    pub fn storage(&self) -> &Arc<AgentStorage> {
        &self.state.storage
    }

    /// Stops accepting requests, lets those in flight finish (up to 10 s), stops cleanup and
    /// the P2P node, and returns when every task has ended.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        self.node.shutdown().await;
    }
}

/// Evicts idle blobs and, above the high watermark, the least recently used ones.
async fn cleanup_loop(state: Arc<AgentState>, shutdown: CancellationToken) {
    let node = state.storage.node();
    let store = node.store().clone();
    let evict = move || store.evict(SystemTime::now());
    // The seeding torrent holds the file open; closing it frees the space.
    let evicted = |digest: &kraken_core::Digest| node.unseed(digest);
    let metrics = state.store_metrics.clone();
    eviction_loop(
        state.config.cleanup.interval,
        shutdown,
        evict,
        evicted,
        metrics,
    )
    .await;
}
