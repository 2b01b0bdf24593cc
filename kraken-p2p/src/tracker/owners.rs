//! A blob's owning origins in every handout of its torrent, whether or not they announced:
//! after a tracker restart (its peers are in memory only) or with several trackers (an
//! origin announces each torrent to one of them), agents still find a seeder at once. The
//! owners come from the tracker's [`MetaInfoSource`] (the origin ring), keyed by the digest
//! that the torrent's metainfo names when this tracker served or was published it, and else
//! by the digest the announce names (with several trackers, a torrent's announces and its
//! blob's metainfo go to different ones: one is picked by info hash, the other by digest). A
//! false digest in an announce costs nothing: owners seed only what they hold.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use kraken_core::{Digest, InfoHash, PeerInfo};

use super::source::MetaInfoSource;

/// Which digest each torrent is of, for the torrents whose metainfo this tracker has seen;
/// bounded like the metainfo registry (oldest forgotten first).
#[derive(Debug, Default)]
pub(crate) struct RingOrigins {
    digests: Mutex<Digests>,
}

#[derive(Debug, Default)]
struct Digests {
    by_info_hash: HashMap<InfoHash, Digest>,
    order: VecDeque<InfoHash>,
}

impl RingOrigins {
    /// Records that `info_hash` is the torrent of `digest`; keeps at most `max` torrents.
    pub(crate) fn learn(&self, info_hash: InfoHash, digest: Digest, max: usize) {
        let mut digests = self.digests.lock().unwrap_or_else(|e| e.into_inner());
        if digests.by_info_hash.insert(info_hash, digest).is_none() {
            digests.order.push_back(info_hash);
        }
        while digests.order.len() > max {
            let Some(oldest) = digests.order.pop_front() else {
                break;
            };
            digests.by_info_hash.remove(&oldest);
        }
    }

    /// Whether the tracker can answer: its peer store answers, and its source (if any) says
    /// it is ready. Each failure is named, for `/readiness`.
    pub(crate) async fn readiness(
        peers: &dyn super::PeerStore,
        source: Option<&dyn MetaInfoSource>,
    ) -> Result<(), String> {
        if let Err(e) = peers.ready().await {
            return Err(format!("peer store: {e}"));
        }
        if let Some(source) = source {
            source.ready().await.map_err(|e| format!("origins: {e}"))?;
        }
        Ok(())
    }

    /// `handout` with the owning origins of the torrent's blob added (those not in it
    /// already, and not the announcer); `claimed` is the digest the announce names. A
    /// complete announcer gets no peers, so none are added for it; nor without a source, or
    /// when it cannot be asked.
    pub(crate) async fn merge(
        &self,
        mut handout: Vec<PeerInfo>,
        source: Option<&dyn MetaInfoSource>,
        info_hash: &InfoHash,
        claimed: &Digest,
        announcer: &PeerInfo,
    ) -> Vec<PeerInfo> {
        let Some(source) = source else {
            return handout;
        };
        if announcer.complete {
            return handout;
        }
        let digest = {
            let digests = self.digests.lock().unwrap_or_else(|e| e.into_inner());
            digests.by_info_hash.get(info_hash).copied()
        };
        let digest = digest.unwrap_or(*claimed);
        let owners = match source.owners(&digest).await {
            Ok(owners) => owners,
            Err(e) => {
                tracing::debug!(digest = %digest.fmt_short(), error = %e, "owning origins unknown");
                return handout;
            }
        };
        for owner in owners {
            let same = |p: &PeerInfo| p.peer_id == owner.peer_id || p.addr() == owner.addr();
            if !same(announcer) && !handout.iter().any(same) {
                handout.push(owner);
            }
        }
        handout
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use async_trait::async_trait;
    use kraken_core::{MetaInfo, PeerId};

    use super::*;
    use crate::tracker::MetaInfoLookup;

    fn peer(n: u8, origin: bool, complete: bool) -> PeerInfo {
        let addr: SocketAddr = format!("127.0.0.{n}:7000").parse().unwrap();
        PeerInfo::new(PeerId::from_bytes([n; 20]), addr, origin, complete)
    }

    /// The ring: peers 1 and 2 own every blob.
    #[derive(Debug)]
    struct Ring;

    #[async_trait]
    impl MetaInfoSource for Ring {
        async fn metainfo(&self, _: &str, _: &Digest) -> crate::Result<MetaInfoLookup> {
            Ok(MetaInfoLookup::NotFound)
        }

        async fn owners(&self, _: &Digest) -> crate::Result<Vec<PeerInfo>> {
            Ok(vec![peer(1, true, true), peer(2, true, true)])
        }
    }

    #[tokio::test]
    async fn owners_join_handouts_of_known_torrents_once_and_never_the_announcers_own() {
        let meta = MetaInfo::from_bytes(b"a blob", 4096).unwrap();
        let ring = RingOrigins::default();
        let agent = peer(9, false, false);
        let claimed = ring
            .merge(
                vec![],
                Some(&Ring),
                &meta.info_hash(),
                meta.digest(),
                &agent,
            )
            .await;
        assert_eq!(claimed.len(), 2, "owners of the digest the announce names");

        ring.learn(meta.info_hash(), *meta.digest(), 10);
        let merged = ring
            .merge(
                vec![peer(2, true, true), peer(5, false, false)],
                Some(&Ring),
                &meta.info_hash(),
                meta.digest(),
                &agent,
            )
            .await;
        assert_eq!(merged.len(), 3, "{merged:?}");
        assert!(merged.contains(&peer(1, true, true)) && merged.contains(&peer(5, false, false)));

        let origin = ring
            .merge(
                vec![],
                Some(&Ring),
                &meta.info_hash(),
                meta.digest(),
                &peer(1, true, false),
            )
            .await;
        assert_eq!(
            origin,
            vec![peer(2, true, true)],
            "not the announcer itself"
        );
        let complete = ring
            .merge(
                vec![],
                Some(&Ring),
                &meta.info_hash(),
                meta.digest(),
                &peer(9, false, true),
            )
            .await;
        assert!(complete.is_empty(), "a complete announcer gets no peers");
        assert!(
            ring.merge(vec![], None, &meta.info_hash(), meta.digest(), &agent)
                .await
                .is_empty()
        );
    }

    #[test]
    fn the_index_is_bounded() {
        let ring = RingOrigins::default();
        for i in 0..5u8 {
            let meta = MetaInfo::from_bytes(&[i], 4096).unwrap();
            ring.learn(meta.info_hash(), *meta.digest(), 3);
        }
        assert_eq!(ring.digests.lock().unwrap().by_info_hash.len(), 3);
    }

    /// A source that cannot be asked.
    #[derive(Debug)]
    struct NoOrigins;

    #[async_trait]
    impl MetaInfoSource for NoOrigins {
        async fn metainfo(&self, _: &str, _: &Digest) -> crate::Result<MetaInfoLookup> {
            Ok(MetaInfoLookup::NotFound)
        }

        async fn ready(&self) -> crate::Result<()> {
            Err(crate::Error::MetaInfoSource("every origin is down".into()))
        }
    }

    #[tokio::test]
    async fn readiness_names_what_is_not_ready() {
        let store = crate::tracker::SharedPeerStore::new(
            std::time::Duration::from_secs(60),
            crate::tracker::PeerStoreLimits::default(),
        );
        assert_eq!(RingOrigins::readiness(&store, None).await, Ok(()));
        assert_eq!(RingOrigins::readiness(&store, Some(&Ring)).await, Ok(()));
        let error = RingOrigins::readiness(&store, Some(&NoOrigins))
            .await
            .unwrap_err();
        assert!(error.contains("every origin is down"), "{error}");
    }
}
