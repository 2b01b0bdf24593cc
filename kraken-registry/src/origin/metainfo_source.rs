//! The tracker's way to the origins: a [`MetaInfoSource`] that asks a blob's owners on the
//! ring for its metainfo.

use async_trait::async_trait;
use kraken_core::Digest;
use kraken_p2p::tracker::{MetaInfoLookup, MetaInfoSource};
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use super::client::OriginClient;
use super::config::ClusterConfig;
use super::membership::Membership;
use crate::error::{Result, error_chain};

/// Asks the origin cluster for metainfo, owners first: the first owner that answers decides
/// (`200` found, `202` still fetching from the backend, `404` not in the backend); an owner
/// that cannot be reached is skipped for the next. The ring is health-checked like an
/// origin's own. Its background refresh stops when this is dropped.
///
/// ```no_run
/// # async fn example() -> kraken_registry::Result<()> {
/// use std::sync::Arc;
/// use kraken_p2p::tracker::{TrackerConfig, TrackerService};
/// use kraken_registry::origin::{ClusterConfig, MembersConfig, OriginMetaInfoSource};
///
/// let mut cluster = ClusterConfig::default();
/// cluster.members = MembersConfig::Dns("origins.example.internal:15002".into());
/// let origins = OriginMetaInfoSource::start(cluster).await?;
/// let tracker = TrackerService::new(TrackerConfig::default())
///     .with_metainfo_source(Arc::new(origins));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct OriginMetaInfoSource {
    membership: Membership,
    client: OriginClient,
    _stop: DropGuard,
}

impl OriginMetaInfoSource {
    /// Resolves the ring once and starts health-checking it, over plain HTTP.
    pub async fn start(cluster: ClusterConfig) -> Result<Self> {
        Self::start_with(cluster, OriginClient::new()?).await
    }

    /// As [`start`](Self::start), reaching the origins through `client` (for TLS).
    pub async fn start_with(cluster: ClusterConfig, client: OriginClient) -> Result<Self> {
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let membership =
            Membership::start(cluster, None, client.clone(), &tasks, stop.clone()).await?;
        tasks.close();
        Ok(Self {
            membership,
            client,
            _stop: stop.drop_guard(),
        })
    }
}

#[async_trait]
impl MetaInfoSource for OriginMetaInfoSource {
    async fn metainfo(
        &self,
        namespace: &str,
        digest: &Digest,
    ) -> kraken_p2p::Result<MetaInfoLookup> {
        let mut failures = Vec::new();
        for origin in self.membership.view().owners(digest) {
            match self.client.metainfo(&origin, namespace, digest).await {
                Ok(lookup) => return Ok(lookup),
                Err(e) => failures.push(error_chain(&e)),
            }
        }
        Err(kraken_p2p::Error::MetaInfoSource(if failures.is_empty() {
            "no origins configured".into()
        } else {
            failures.join("; ")
        }))
    }
}
