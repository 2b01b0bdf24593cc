//! [`BuildIndex`]: assembles the tag store, queues, origin ring, backend and HTTP listener,
//! and runs the write-back and replication loops.

use std::net::SocketAddr;
use std::sync::Arc;

use kraken_backends::{Backend, Router};
use regex_lite::Regex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::api;
use super::client::BuildIndexClient;
use super::config::BuildIndexConfig;
use super::replicate::{SPOOL_DIR, replication_loop};
use super::state::BuildIndexState;
use super::writeback::write_back_loop;
use crate::durable::Journal;
use crate::error::{Error, Result};
use crate::http::serve;
use crate::metrics::{register_backends, register_queue, spawn_listener};
use crate::origin::OriginClient;
use crate::origin::OriginCluster;
use kraken_p2p::http_server::ServeConfig;
use kraken_p2p::metrics::Metrics;

/// Builds a [`BuildIndex`].
#[derive(Debug)]
#[must_use = "a builder does nothing until spawned"]
pub struct BuildIndexBuilder {
    config: BuildIndexConfig,
    backend: Option<Arc<dyn Backend>>,
}

impl BuildIndexBuilder {
    /// Uses `backend` for every tag instead of building [`BuildIndexConfig::backends`] (for
    /// embedders with their own backend, and tests).
    pub fn backend(mut self, backend: Arc<dyn Backend>) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Opens the data directory, resumes queued write-backs and replications, binds the
    /// listener and starts serving.
    pub async fn spawn(self) -> Result<BuildIndex> {
        let config = self.config;
        config.validate()?;
        crate::startup::data_dir(&config.data_dir)?;
        let (tags, write_backs, replications) = {
            let data = config.data_dir.clone();
            tokio::task::spawn_blocking(move || -> Result<_> {
                // Blobs half-copied by a replication that a crash interrupted.
                let _ = std::fs::remove_dir_all(data.join(SPOOL_DIR));
                Ok((
                    Journal::open(&data, "tags.journal")?,
                    Journal::open(&data, "tag-writeback.journal")?,
                    Journal::open(&data, "replication.journal")?,
                ))
            })
            .await
            .map_err(|_| Error::Internal("startup task failed"))??
        };
        let metrics = Metrics::new();
        let backend: Arc<dyn Backend> = match self.backend {
            Some(backend) => backend,
            None => {
                let router = Arc::new(Router::from_config(&config.backends)?);
                register_backends(&metrics, Arc::clone(&router));
                router
            }
        };
        let remotes = config
            .remotes
            .iter()
            .map(|remote| {
                let patterns = remote
                    .repositories
                    .iter()
                    .map(|p| {
                        Regex::new(&format!("^(?:{p})$"))
                            .map_err(|e| Error::Config(format!("remote pattern {p:?}: {e}")))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok((remote.address.clone(), patterns))
            })
            .collect::<Result<Vec<_>>>()?;
        let listener = crate::startup::bind("build-index", config.listen).await?;
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
        let origin_client = OriginClient::with_tls(client_tls.as_ref())?;
        let origins =
            OriginCluster::start(&config.origins, origin_client, &tasks, shutdown.clone()).await?;
        let peers = BuildIndexClient::with_tls([name.clone()], client_tls.as_ref())?;
        let neighbours = config
            .neighbours
            .iter()
            .filter(|n| **n != name && **n != local_addr.to_string())
            .map(|n| peers.at(n))
            .collect();
        let state = Arc::new(BuildIndexState {
            config,
            name,
            tags,
            write_backs,
            replications,
            backend,
            origins,
            neighbours,
            remotes,
            peers,
            tasks: tasks.clone(),
            shutdown: shutdown.clone(),
            metrics,
        });
        let queue = Arc::downgrade(&state);
        register_queue(
            &state.metrics,
            "kraken_build_index_writeback",
            "tag write-back",
            move || queue.upgrade().map(|state| state.write_backs.entries()),
        );
        let queue = Arc::downgrade(&state);
        register_queue(
            &state.metrics,
            "kraken_build_index_replication",
            "remote replication",
            move || queue.upgrade().map(|state| state.replications.entries()),
        );
        spawn_listener(
            &state.config.metrics,
            "build-index",
            &state.metrics,
            &tasks,
            shutdown.clone(),
        )
        .await?;
        tasks.spawn(write_back_loop(Arc::clone(&state)));
        tasks.spawn(replication_loop(Arc::clone(&state)));
        tasks.spawn(serve(
            ServeConfig::new("build-index")
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
        tracing::info!(addr = %local_addr, name = %state.name, "build-index started");
        Ok(BuildIndex { state, local_addr })
    }
}

/// A running build-index: the tag API, the tag store, write-back to the backend and
/// replication to remote clusters. See the [module docs](super).
#[derive(Debug)]
pub struct BuildIndex {
    state: Arc<BuildIndexState>,
    local_addr: SocketAddr,
}

impl BuildIndex {
    /// A builder with `config`.
    pub fn builder(config: BuildIndexConfig) -> BuildIndexBuilder {
        BuildIndexBuilder {
            config,
            backend: None,
        }
    }

    /// Starts a build-index with `config` and the backends it describes.
    pub async fn spawn(config: BuildIndexConfig) -> Result<Self> {
        Self::builder(config).spawn().await
    }

    /// The address the tag API listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This build-index's name among its neighbours.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// The build-index's metrics, as `/metrics` serves them.
    pub fn metrics(&self) -> &Metrics {
        &self.state.metrics
    }

    /// Tags waiting to be written to the backend.
    pub fn pending_write_backs(&self) -> usize {
        self.state.write_backs.entries().len()
    }

    /// Tags waiting to be replicated to remote clusters.
    pub fn pending_replications(&self) -> usize {
        self.state.replications.entries().len()
    }

    /// Stops accepting requests, lets those in flight finish (up to 10 s), stops the loops
    /// and returns when every task has ended. Queued work stays queued for the next start.
    pub async fn shutdown(self) {
        self.state.shutdown.cancel();
        self.state.tasks.close();
        self.state.tasks.wait().await;
    }
}
