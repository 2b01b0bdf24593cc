//! The tracker's way to the origins: a [`MetaInfoSource`] that asks a blob's owners on the
//! ring for its metainfo.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use kraken_core::{Digest, PeerInfo};
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
    /// Each origin's P2P identity (`GET /peer`) and when it was asked: a restarted origin
    /// has a new one.
    peers: Mutex<HashMap<String, (Instant, Option<PeerInfo>)>>,
    _stop: DropGuard,
}

/// How long an origin's `GET /peer` answer is reused.
const PEER_TTL: Duration = Duration::from_secs(5);

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
            peers: Mutex::default(),
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

    /// The healthy owners that seed, from each one's `GET /peer` (kept for 5 s);
    /// an owner that does not answer is left out.
    async fn owners(&self, digest: &Digest) -> kraken_p2p::Result<Vec<PeerInfo>> {
        let mut owners = Vec::new();
        for origin in self.membership.view().owners(digest) {
            let cached = {
                let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
                peers
                    .get(&origin)
                    .filter(|(asked, _)| asked.elapsed() < PEER_TTL)
                    .map(|(_, peer)| peer.clone())
            };
            let peer = match cached {
                Some(peer) => peer,
                None => match self.client.peer(&origin).await {
                    Ok(peer) => {
                        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
                        peers.insert(origin, (Instant::now(), peer.clone()));
                        peer
                    }
                    Err(e) => {
                        tracing::debug!(%origin, error = %error_chain(&e), "no peer info");
                        None
                    }
                },
            };
            owners.extend(peer);
        }
        Ok(owners)
    }

    /// Ready while at least one origin of the ring is healthy.
    async fn ready(&self) -> kraken_p2p::Result<()> {
        if self.membership.view().healthy().is_empty() {
            return Err(kraken_p2p::Error::MetaInfoSource(
                "no origin of the ring is healthy".into(),
            ));
        }
        Ok(())
    }
}
