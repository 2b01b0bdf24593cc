//! [`Origin`]: assembles the store, queue, ring, backend, P2P node and HTTP listener, and
//! runs the background loops.

use std::net::SocketAddr;
use std::sync::Arc;

use kraken_backends::{Backend, Router};
use kraken_core::BlobStore;
use kraken_p2p::node::{Node, NodeConfig};
use kraken_p2p::tracker::{PublishToken, TrackerPool};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::api;
use super::cleanup::cleanup_loop;
use super::client::OriginClient;
use super::config::OriginConfig;
use super::fetch::Fetcher;
use super::integrity::scrub_loop;
use super::membership::{Membership, RingView};
use super::namespaces::NamespaceIndex;
use super::queue;
use super::recent::RecentSet;
use super::replicate::{repair_loop, repair_pass};
use super::state::OriginState;
use super::tombstones::Tombstones;
use super::uploads::Uploads;
use super::writeback::write_back_loop;
use crate::error::{Error, Result};
use crate::http::serve;
use crate::metrics::{
    OriginMetrics, StoreMetrics, register_backends, register_queue, spawn_listener,
};
use kraken_p2p::http_server::ServeConfig;
use kraken_p2p::metrics::{Metrics, NodeMetrics};

/// Builds an [`Origin`].
#[derive(Debug)]
#[must_use = "a builder does nothing until spawned"]
pub struct OriginBuilder {
    config: OriginConfig,
    backend: Option<Arc<dyn Backend>>,
}

impl OriginBuilder {
    /// Uses `backend` for every namespace instead of building
    /// [`OriginConfig::backends`] (for embedders with their own backend, and tests).
    pub fn backend(mut self, backend: Arc<dyn Backend>) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Opens the data directory, resumes pending write-backs, binds the listeners and starts
    /// serving.
    pub async fn spawn(self) -> Result<Origin> {
        let config = self.config;
        config.validate()?;
        crate::startup::data_dir(&config.data_dir)?;
        let data = &config.data_dir;
        let store_config = config.cleanup.store_config();
        let max_concurrent_chunks = config.limits.max_concurrent_chunks;
        let (store, queue, namespaces, uploads) = {
            let data = data.clone();
            tokio::task::spawn_blocking(move || -> Result<_> {
                let store = BlobStore::open_with_config(data.join("store"), store_config)?;
                let queue = queue::open(&data)?;
                let namespaces = NamespaceIndex::open(&data.join("namespaces"))?;
                let uploads = Uploads::open(&data.join("uploads"), max_concurrent_chunks)?;
                OriginState::reconcile_pins(&store, &queue, &namespaces)?;
                Ok((store, queue, namespaces, uploads))
            })
            .await
            .map_err(|_| Error::Internal("startup task failed"))??
        };
        let (backend, router): (Arc<dyn Backend>, _) = match self.backend {
            Some(backend) => (backend, None),
            None => {
                let router = Arc::new(Router::from_config(&config.backends)?);
                (router.clone(), Some(router))
            }
        };
        let listener = crate::startup::bind("origin", config.listen).await?;
        let local_addr = listener.local_addr()?;
        let name = config
            .advertise
            .clone()
            .unwrap_or_else(|| local_addr.to_string());
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let server_tls = config.tls.as_ref().map(|tls| tls.load()).transpose()?;
        let client_tls = config
            .client_tls
            .as_ref()
            .map(|tls| tls.load())
            .transpose()?;
        let client = OriginClient::with_tls(client_tls.as_ref())?;
        let membership = Membership::start(
            config.cluster.clone(),
            Some(name.clone()),
            client.clone(),
            &tasks,
            shutdown.clone(),
        )
        .await?;
        let metrics = Metrics::new();
        let counters = OriginMetrics::register(&metrics);
        let store_metrics = StoreMetrics::register(&metrics, store.clone());
        if let Some(router) = &router {
            register_backends(&metrics, Arc::clone(router));
        }
        let node = if config.trackers.is_empty() {
            None
        } else {
            let mut node_config = NodeConfig::default();
            // The cleanup loop evicts (and keeps its own bookkeeping of what it evicted).
            node_config.evict_interval = None;
            node_config.listen = config
                .peer_listen
                .unwrap_or_else(|| SocketAddr::new(local_addr.ip(), 0));
            node_config.swarm.origin = true;
            node_config.tls = config.peer_tls.clone();
            let peer_listen = node_config.listen;
            let token = match &config.tracker_publish_token_file {
                Some(path) => Some(PublishToken::from_file(path)?),
                None => config.tracker_publish_token.clone(),
            };
            let node = Node::builder(node_config)
                .metrics(NodeMetrics::register(&metrics))
                .store(store.clone())
                // Each torrent to the tracker its info hash picks, falling over to the
                // next, exactly as agents do: both sides meet at the same tracker.
                .tracker(Arc::new(TrackerPool::connect(
                    &config.trackers,
                    client_tls.as_ref(),
                    token.as_ref(),
                )?))
                .spawn()
                .await
                .map_err(crate::startup::node_error(peer_listen))?;
            Some(node)
        };
        let fetcher = Arc::new(Fetcher::new(
            store.clone(),
            Arc::clone(&backend),
            kraken_core::PieceLengthPolicy::default(),
            &config.limits,
            tasks.clone(),
            shutdown.clone(),
            counters.clone(),
        ));
        let config_max_announced = config.max_announced_blobs;
        let tombstones = Tombstones::new(config.cluster.tombstone_ttl);
        let small = crate::metrics::SmallBlobMetrics::cache(&metrics, config.cache);
        let state = Arc::new(OriginState {
            small,
            config,
            name,
            store,
            queue,
            namespaces,
            uploads,
            backend,
            router,
            fetcher,
            membership,
            client,
            node,
            tasks: tasks.clone(),
            shutdown: shutdown.clone(),
            checks: Default::default(),
            recent: RecentSet::new(config_max_announced),
            tombstones,
            metrics,
            counters,
            store_metrics,
        });
        let queue = Arc::downgrade(&state);
        register_queue(
            &state.metrics,
            "kraken_origin_writeback",
            "write-back",
            move || queue.upgrade().map(|state| state.queue.entries()),
        );
        spawn_listener(
            &state.config.metrics,
            "origin",
            &state.metrics,
            &tasks,
            shutdown.clone(),
        )
        .await?;
        // Nothing is seeded here: a blob enters the swarm when it is wanted (`OriginState::seed`),
        // so start-up opens no blob and sends the tracker nothing, however large the store.
        tasks.spawn(write_back_loop(Arc::clone(&state)));
        tasks.spawn(repair_loop(Arc::clone(&state)));
        tasks.spawn(cleanup_loop(Arc::clone(&state)));
        tasks.spawn(scrub_loop(Arc::clone(&state)));
        tasks.spawn(serve(
            ServeConfig::new("origin")
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
        tracing::info!(addr = %local_addr, name = %state.name, "origin started");
        Ok(Origin { state, local_addr })
    }
}

/// A running origin: the blob API, its place in the ring, write-back, replication, cleanup
/// and P2P seeding. See the [module docs](super).
#[derive(Debug)]
pub struct Origin {
    state: Arc<OriginState>,
    local_addr: SocketAddr,
}

impl Origin {
    /// A builder with `config`.
    pub fn builder(config: OriginConfig) -> OriginBuilder {
        OriginBuilder {
            config,
            backend: None,
        }
    }

    /// Starts an origin with `config` and the backends it describes.
    pub async fn spawn(config: OriginConfig) -> Result<Self> {
        Self::builder(config).spawn().await
    }

    /// The address the blob API listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This origin's name in the ring.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// The local blob store.
    pub fn store(&self) -> &BlobStore {
        &self.state.store
    }

    /// The current ring, as this origin sees it.
    pub fn ring(&self) -> RingView {
        self.state.membership.view()
    }

    /// The P2P address blobs are seeded from, if the origin has a tracker.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.state.node.as_ref().map(Node::advertise_addr)
    }

    /// The origin's metrics, as `/metrics` serves them.
    pub fn metrics(&self) -> &Metrics {
        &self.state.metrics
    }

    /// Blobs waiting to be written to the backend.
    pub fn pending_write_backs(&self) -> usize {
        self.state.queue.entries().len()
    }

    /// Runs one repair pass now (it also runs periodically and on membership changes);
    /// returns how many copies it made.
    pub async fn repair(&self) -> usize {
        repair_pass(&self.state).await
    }

    /// Stops accepting requests, lets those in flight finish (up to 10 s), stops the loops
    /// and the P2P node, and returns when every task has ended. Pending write-backs stay in
    /// the queue for the next start.
    pub async fn shutdown(self) {
        self.state.shutdown.cancel();
        if let Some(node) = &self.state.node {
            node.shutdown().await;
        }
        self.state.tasks.close();
        self.state.tasks.wait().await;
    }
}
