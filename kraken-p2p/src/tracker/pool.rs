//! Several trackers sharing the load, each key at one of them, with failover.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kraken_core::{Digest, InfoHash, MetaInfo, Ring};

use super::api::{AnnounceRequest, AnnounceResponse};
use super::{PublishToken, Tracker, TrackerClient};
use crate::error::{Error, Result};
#[cfg(feature = "tls")]
use crate::tls::ClientTls;

type Call<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// A [`Tracker`] made of several: each torrent belongs to one of them by rendezvous hashing
/// of its info hash (each blob's metainfo by its digest), so every node announcing a torrent
/// meets the others at the same tracker and the trackers share no state. When a key's
/// tracker cannot be reached, the next one in that key's order is asked; the order is the
/// same on every node, so they fail over to the same place. When none can be reached, the
/// whole order is asked again after a pause, [`ROUNDS`](TrackerPool::ROUNDS) times in all with the pause doubling
/// from [`FIRST_PAUSE`](TrackerPool::FIRST_PAUSE) (7.75 s of pauses), so that a tracker restarting does not fail a pull
/// at once.
#[derive(Clone)]
pub struct TrackerPool {
    ring: Ring,
    trackers: Vec<(String, Arc<dyn Tracker>)>,
    rounds: u32,
}

impl fmt::Debug for TrackerPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.trackers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("TrackerPool")
            .field("trackers", &names)
            .finish()
    }
}

impl TrackerPool {
    /// How many times the trackers of a key are asked in turn before the pool gives up.
    pub const ROUNDS: u32 = 6;
    /// The pause before the second round; it doubles before each round after it.
    pub const FIRST_PAUSE: Duration = Duration::from_millis(250);

    /// HTTP clients of the trackers at `urls` (`http://host:port` each).
    pub fn new<S: AsRef<str>>(urls: &[S]) -> Result<Self> {
        Self::from_clients(urls, None, TrackerClient::new)
    }

    /// HTTP clients of the trackers at `urls`, over TLS with `tls` where a URL is
    /// `https://`. Feature `tls`.
    #[cfg(feature = "tls")]
    pub fn with_tls<S: AsRef<str>>(urls: &[S], tls: Option<&ClientTls>) -> Result<Self> {
        Self::connect(urls, tls, None)
    }

    /// HTTP clients of the trackers at `urls`, over TLS with `tls` where a URL is
    /// `https://`, each presenting `token` (a publisher's: an origin's, say) if given.
    /// Feature `tls`.
    #[cfg(feature = "tls")]
    pub fn connect<S: AsRef<str>>(
        urls: &[S],
        tls: Option<&ClientTls>,
        token: Option<&PublishToken>,
    ) -> Result<Self> {
        Self::from_clients(urls, token, |url| TrackerClient::connect(url, tls))
    }

    /// HTTP clients of the trackers at `urls` over plain HTTP, each presenting `token` (a
    /// publisher's credential).
    pub fn with_publish_token<S: AsRef<str>>(urls: &[S], token: &PublishToken) -> Result<Self> {
        Self::from_clients(urls, Some(token), TrackerClient::new)
    }

    fn from_clients<S: AsRef<str>>(
        urls: &[S],
        token: Option<&PublishToken>,
        client: impl Fn(&str) -> Result<TrackerClient>,
    ) -> Result<Self> {
        let trackers = urls
            .iter()
            .map(|url| {
                let mut client = client(url.as_ref())?;
                if let Some(token) = token {
                    client = client.with_publish_token(token.clone());
                }
                Ok((
                    url.as_ref().to_owned(),
                    Arc::new(client) as Arc<dyn Tracker>,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Self::from_trackers(trackers)
    }

    /// A pool of any trackers, each under a name that places it on the ring (give every node
    /// the same names).
    pub fn from_trackers(trackers: Vec<(String, Arc<dyn Tracker>)>) -> Result<Self> {
        if trackers.is_empty() {
            return Err(Error::Config("a tracker pool needs at least one tracker"));
        }
        let ring = Ring::with_members(trackers.iter().map(|(name, _)| name.clone()))?;
        Ok(Self {
            ring,
            trackers,
            rounds: Self::ROUNDS,
        })
    }

    /// The same pool, asking every tracker `rounds` times (at least once) before giving up.
    /// Default: [`ROUNDS`](TrackerPool::ROUNDS).
    pub fn with_rounds(mut self, rounds: u32) -> Self {
        self.rounds = rounds.max(1);
        self
    }

    /// The trackers' names in the order they are asked about `key`.
    pub fn order(&self, key: &[u8]) -> Vec<&str> {
        self.ring
            .locations_for_key(key, self.trackers.len())
            .into_iter()
            .map(|member| member.name())
            .collect()
    }

    /// Asks the trackers in `key`'s order until one is reached; returns its answer, or the
    /// last tracker's error if none was.
    async fn ask<'a, T>(
        &'a self,
        key: &[u8],
        call: impl Fn(&'a dyn Tracker) -> Call<'a, T>,
    ) -> Result<T> {
        let mut last = None;
        let mut pause = Self::FIRST_PAUSE;
        for round in 0..self.rounds {
            if round > 0 {
                tracing::debug!(round, ?pause, "no tracker reachable; asking again");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            match self.ask_once(key, &call).await {
                Err(e @ Error::TrackerUnreachable { .. }) => last = Some(e),
                answer => return answer,
            }
        }
        Err(last.expect("a pool asks at least once"))
    }

    /// One round of [`ask`](Self::ask): the trackers in `key`'s order until one is reached.
    async fn ask_once<'a, T>(
        &'a self,
        key: &[u8],
        call: &impl Fn(&'a dyn Tracker) -> Call<'a, T>,
    ) -> Result<T> {
        let mut last = None;
        for name in self.order(key) {
            let (_, tracker) = self
                .trackers
                .iter()
                .find(|(n, _)| n == name)
                .expect("the ring holds the pool's names");
            match call(tracker.as_ref()).await {
                Err(e @ Error::TrackerUnreachable { .. }) => {
                    tracing::debug!(tracker = name, error = %e, "tracker unreachable; trying the next");
                    last = Some(e);
                }
                answer => return answer,
            }
        }
        Err(last.expect("a pool has at least one tracker"))
    }
}

#[async_trait]
impl Tracker for TrackerPool {
    async fn announce(
        &self,
        info_hash: InfoHash,
        request: AnnounceRequest,
    ) -> Result<AnnounceResponse> {
        self.ask(info_hash.as_bytes(), |t| {
            t.announce(info_hash, request.clone())
        })
        .await
    }

    async fn metainfo(&self, namespace: &str, digest: &Digest) -> Result<Option<MetaInfo>> {
        self.ask(digest.as_bytes(), |t| t.metainfo(namespace, digest))
            .await
    }

    async fn publish_metainfo(&self, namespace: &str, meta: &MetaInfo) -> Result<()> {
        self.ask(meta.digest().as_bytes(), |t| {
            t.publish_metainfo(namespace, meta)
        })
        .await
    }

    async fn refresh_metainfo(&self, namespace: &str, digest: &Digest) -> Result<Option<MetaInfo>> {
        self.ask(digest.as_bytes(), |t| t.refresh_metainfo(namespace, digest))
            .await
    }

    fn bound_to(&self, ip: std::net::IpAddr) -> Result<Option<Arc<dyn Tracker>>> {
        let trackers = self
            .trackers
            .iter()
            .map(|(name, tracker)| {
                let bound = tracker.bound_to(ip)?.unwrap_or_else(|| Arc::clone(tracker));
                Ok((name.clone(), bound))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(Arc::new(
            Self::from_trackers(trackers)?.with_rounds(self.rounds),
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use kraken_core::{PeerId, PeerInfo};

    use super::*;
    use crate::tracker::{PublishToken, TrackerConfig, TrackerServer, TrackerService};

    async fn tracker() -> TrackerServer {
        let config = TrackerConfig {
            publish_token: PublishToken::new("pool-test"),
            ..TrackerConfig::default()
        };
        let service = TrackerService::new(config);
        TrackerServer::bind("127.0.0.1:0".parse().unwrap(), Arc::new(service))
            .await
            .unwrap()
    }

    /// Peer `n`, listening on its own port: the clients all send from 127.0.0.1, which the
    /// tracker records, so peers differ by port.
    fn peer(n: u8, port: u16) -> PeerInfo {
        let addr: SocketAddr = format!("127.0.0.{n}:{}", port + u16::from(n))
            .parse()
            .unwrap();
        PeerInfo::new(PeerId::from_bytes([n; 20]), addr, false, false)
    }

    #[tokio::test]
    async fn each_torrent_meets_at_one_tracker_and_fails_over_to_the_same_next_one() {
        let (first, second) = (tracker().await, tracker().await);
        // A closed port: a tracker that is down from the start.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_url = format!("http://{}", dead.local_addr().unwrap());
        drop(dead);
        let urls = [
            format!("http://{}", first.local_addr()),
            format!("http://{}", second.local_addr()),
            dead_url.clone(),
        ];
        let node_a = TrackerPool::new(&urls).unwrap();
        let mut reversed = urls.clone();
        reversed.reverse();
        let node_b = TrackerPool::new(&reversed).unwrap();
        let mut served_by = std::collections::HashMap::new();
        for n in 0..24u8 {
            let digest = Digest::sha256_of(&[n]);
            let info_hash = InfoHash::from_bytes([n; 32]);
            // Node A announces first; node B, configured in another order, must find it.
            let request = AnnounceRequest::new(digest, String::new(), peer(2, 7000));
            node_a.announce(info_hash, request).await.unwrap();
            let request = AnnounceRequest::new(digest, String::new(), peer(3, 7000));
            let answer = node_b.announce(info_hash, request).await.unwrap();
            assert_eq!(
                answer.peers.len(),
                1,
                "torrent {n}: the announcers did not meet"
            );
            assert_eq!(answer.peers[0].peer_id, PeerId::from_bytes([2; 20]));
            let owner = node_a.order(info_hash.as_bytes())[0].to_owned();
            *served_by.entry(owner).or_insert(0) += 1;
        }
        // The load is spread: every tracker is some torrent's first choice.
        assert_eq!(served_by.len(), 3, "{served_by:?}");
        assert!(served_by[&dead_url] > 0);
        second.shutdown().await;
        // With one tracker left, every torrent still meets there.
        let info_hash = InfoHash::from_bytes([200; 32]);
        let digest = Digest::sha256_of(b"after");
        for n in [4, 5] {
            let request = AnnounceRequest::new(digest, String::new(), peer(n, 7000));
            node_a.announce(info_hash, request).await.unwrap();
        }
        let request = AnnounceRequest::new(digest, String::new(), peer(6, 7000));
        assert_eq!(
            node_b
                .announce(info_hash, request)
                .await
                .unwrap()
                .peers
                .len(),
            2
        );
        first.shutdown().await;
        let request = AnnounceRequest::new(digest, String::new(), peer(7, 7000));
        let err = node_a.announce(info_hash, request).await.unwrap_err();
        assert!(matches!(err, Error::TrackerUnreachable { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn metainfo_is_published_and_found_through_the_pool() {
        let (first, second) = (tracker().await, tracker().await);
        let urls = [
            format!("http://{}", first.local_addr()),
            format!("http://{}", second.local_addr()),
        ];
        let publisher = |url: &String| {
            let client = TrackerClient::new(url)
                .unwrap()
                .with_publish_token(PublishToken::new("pool-test").unwrap());
            (url.clone(), Arc::new(client) as Arc<dyn Tracker>)
        };
        let pool = TrackerPool::from_trackers(urls.iter().map(publisher).collect()).unwrap();
        let meta = MetaInfo::from_bytes(b"published once", 4096).unwrap();
        pool.publish_metainfo("ns", &meta).await.unwrap();
        let found = pool.metainfo("ns", meta.digest()).await.unwrap().unwrap();
        assert_eq!(found.info_hash(), meta.info_hash());
        assert!(TrackerPool::new::<&str>(&[]).is_err());
        first.shutdown().await;
        second.shutdown().await;
    }

    /// A tracker down when a pull starts and up a moment later (a restart) answers the pull:
    /// the pool asks again instead of failing at once; with one round it fails.
    #[tokio::test]
    async fn a_tracker_that_comes_back_is_asked_again() {
        let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = reserved.local_addr().unwrap();
        drop(reserved);
        let url = format!("http://{addr}");
        let meta = MetaInfo::from_bytes(b"asked again", 4096).unwrap();
        let once = TrackerPool::new(&[&url]).unwrap().with_rounds(1);
        let error = once.metainfo("ns", meta.digest()).await.unwrap_err();
        assert!(matches!(error, Error::TrackerUnreachable { .. }), "{error}");

        let restarted = tokio::spawn(async move {
            tokio::time::sleep(TrackerPool::FIRST_PAUSE / 2).await;
            let service = TrackerService::new(TrackerConfig::default());
            TrackerServer::bind(addr, Arc::new(service)).await.unwrap()
        });
        let pool = TrackerPool::new(&[&url]).unwrap();
        let answer = pool.metainfo("ns", meta.digest()).await;
        assert!(matches!(answer, Ok(None)), "{answer:?}");
        restarted.await.unwrap().shutdown().await;
    }
}
