//! Where a tracker finds the metainfo of blobs no seeder has published to it.

use async_trait::async_trait;
use kraken_core::{Digest, MetaInfo, PeerInfo};

use crate::error::Result;

/// What a [`MetaInfoSource`] knows about a blob's metainfo.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub enum MetaInfoLookup {
    /// The metainfo.
    Found(MetaInfo),
    /// The blob exists but its metainfo is still being made (an origin is fetching the blob
    /// from its backend); the tracker answers `202 Accepted` and the fetcher asks again.
    Pending,
    /// No such blob.
    NotFound,
}

/// A place a [`TrackerService`](super::TrackerService) asks for metainfo it does not have,
/// such as the origin cluster (Go Kraken's tracker asks the origins the same way).
///
/// kraken-p2p knows nothing of origins: the cluster services implement this trait and hand
/// it to the tracker with
/// [`TrackerService::with_metainfo_source`](super::TrackerService::with_metainfo_source).
#[async_trait]
pub trait MetaInfoSource: Send + Sync + std::fmt::Debug + 'static {
    /// Looks up a blob's metainfo. An error means the source could not be asked (every
    /// origin unreachable, say), not that the blob is missing.
    async fn metainfo(&self, namespace: &str, digest: &Digest) -> Result<MetaInfoLookup>;

    /// The peers that own `digest` and seed it (the origins the ring places it on), which the
    /// tracker adds to every handout of its torrent. Default: none.
    async fn owners(&self, digest: &Digest) -> Result<Vec<PeerInfo>> {
        let _ = digest;
        Ok(Vec::new())
    }

    /// Whether the source can be asked now (for the tracker's `/readiness`). Default: yes.
    async fn ready(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::tracker::{Tracker, TrackerClient, TrackerConfig, TrackerServer, TrackerService};

    /// Answers "pending" twice, then the metainfo; counts the questions.
    #[derive(Debug)]
    struct SlowOrigin {
        meta: MetaInfo,
        asked: AtomicUsize,
    }

    #[async_trait]
    impl MetaInfoSource for SlowOrigin {
        async fn metainfo(&self, namespace: &str, digest: &Digest) -> Result<MetaInfoLookup> {
            assert_eq!(namespace, "library/ubuntu");
            if digest != self.meta.digest() {
                return Ok(MetaInfoLookup::NotFound);
            }
            Ok(match self.asked.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => MetaInfoLookup::Pending,
                _ => MetaInfoLookup::Found(self.meta.clone()),
            })
        }
    }

    #[tokio::test]
    async fn unpublished_metainfo_comes_from_the_source_and_is_kept() {
        let meta = MetaInfo::from_bytes(b"only in the backend", 4096).unwrap();
        let source = Arc::new(SlowOrigin {
            meta: meta.clone(),
            asked: AtomicUsize::new(0),
        });
        let service =
            TrackerService::new(TrackerConfig::default()).with_metainfo_source(source.clone());
        let server = TrackerServer::bind("127.0.0.1:0".parse().unwrap(), Arc::new(service))
            .await
            .unwrap();
        let client = TrackerClient::new(&format!("http://{}", server.local_addr())).unwrap();
        let namespace = "library/ubuntu";
        for _ in 0..2 {
            let pending = client.metainfo(namespace, meta.digest()).await.unwrap_err();
            assert!(
                matches!(pending, crate::Error::Tracker { status: 202, .. }),
                "{pending:?}"
            );
        }
        let found = client.metainfo(namespace, meta.digest()).await.unwrap();
        assert_eq!(found.unwrap().info_hash(), meta.info_hash());
        // Kept: the source is not asked again.
        client.metainfo(namespace, meta.digest()).await.unwrap();
        assert_eq!(source.asked.load(Ordering::SeqCst), 3);
        let other = Digest::sha256_of(b"nowhere");
        assert!(client.metainfo(namespace, &other).await.unwrap().is_none());
        server.shutdown().await;
    }
}
