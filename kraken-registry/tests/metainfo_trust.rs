//! Forged and wrong metainfo against a real cluster on loopback — an origin, a tracker that
//! asks it for metainfo, two agents — over real TCP: anonymous publishing is refused, the
//! origin's metainfo wins over a publisher's, and an agent that was handed metainfo nobody's
//! bytes match starts over with the origin's, without a restart.

mod support;

use std::time::Duration;

use kraken_core::{Digest, MetaInfo};
use kraken_p2p::tracker::api::encode_segment;
use kraken_registry::agent::{Agent, AgentConfig};
use kraken_registry::origin::Origin;
use kraken_testkit::free_addr;
use reqwest::StatusCode;
use support::PUBLISH_TOKEN;

const REPO: &str = "library/app";
/// Pieces of the default policy for small blobs: 256 KiB, so a 1 MiB blob has four.
const PIECE: u64 = 256 << 10;

struct Cluster {
    _dir: tempfile::TempDir,
    tracker: kraken_p2p::tracker::TrackerServer,
    tracker_url: String,
    origin: Origin,
    agents: Vec<Agent>,
}

impl Cluster {
    async fn start() -> Self {
        support::init_tracing();
        let dir = tempfile::tempdir().unwrap();
        let (tracker, tracker_url, origin) = support::origin_with_tracker(dir.path()).await;
        let mut agents = Vec::new();
        for i in 0..2u8 {
            let mut config = AgentConfig::new(
                format!("127.0.0.{}:0", i + 2).parse().unwrap(),
                dir.path().join(format!("agent-{i}")),
                vec![tracker_url.clone()],
                vec![free_addr("127.0.0.1").to_string()],
            );
            config.p2p.metainfo_timeout = Duration::from_secs(10);
            config.p2p.metainfo_recheck_after = Duration::from_secs(1);
            agents.push(Agent::spawn(config).await.unwrap());
        }
        Self {
            _dir: dir,
            tracker,
            tracker_url,
            origin,
            agents,
        }
    }

    /// Posts `body` as the metainfo of `digest`, with the publish token if `token`.
    async fn post_metainfo(&self, digest: &Digest, body: Vec<u8>, token: bool) -> StatusCode {
        let url = format!(
            "{}/namespace/{}/blobs/{digest}/metainfo",
            self.tracker_url,
            encode_segment(REPO)
        );
        let mut request = reqwest::Client::new().post(url).body(body);
        if token {
            request = request.bearer_auth(PUBLISH_TOKEN);
        }
        request.send().await.unwrap().status()
    }

    /// The metainfo the tracker hands fetchers.
    async fn tracker_metainfo(&self, digest: &Digest) -> MetaInfo {
        let url = format!(
            "{}/namespace/{}/blobs/{digest}/metainfo",
            self.tracker_url,
            encode_segment(REPO)
        );
        let bytes = reqwest::get(url).await.unwrap().bytes().await.unwrap();
        MetaInfo::decode(&bytes).unwrap()
    }

    /// The blob from agent `i`, asked at most three times (a download that starts over
    /// fails the reader that was reading it), each within 30 s.
    async fn pull(&self, i: usize, digest: &Digest) -> Vec<u8> {
        let url = format!(
            "http://{}/v2/{REPO}/blobs/{digest}",
            self.agents[i].local_addr()
        );
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let mut last = String::new();
        for _ in 0..3 {
            match client.get(&url).send().await {
                Ok(response) if response.status() == StatusCode::OK => {
                    match response.bytes().await {
                        Ok(bytes) => return bytes.to_vec(),
                        Err(e) => last = format!("body: {e}"),
                    }
                }
                Ok(response) => last = format!("status {}", response.status()),
                Err(e) => last = format!("request: {e}"),
            }
        }
        panic!("agent {i} did not serve {digest}: {last}");
    }

    /// The tracker hands out `genuine` and both agents serve `data`.
    async fn assert_serves(&self, genuine: &MetaInfo, data: &[u8]) {
        let digest = genuine.digest();
        assert_eq!(
            self.tracker_metainfo(digest).await.info_hash(),
            genuine.info_hash()
        );
        for i in 0..2 {
            assert_eq!(self.pull(i, digest).await, data, "agent {i}");
        }
    }

    async fn shutdown(self) {
        for agent in self.agents {
            agent.shutdown().await;
        }
        self.origin.shutdown().await;
        self.tracker.shutdown().await;
    }
}

fn blob(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed ^ (i >> 10) as u8)
        .collect()
}

/// `meta` with one byte of its first piece hash flipped: it still decodes (the chain still
/// ends at the digest) but matches no bytes.
fn flipped(meta: &MetaInfo) -> Vec<u8> {
    assert!(
        meta.piece_count() > 1,
        "the first piece hash is not the last"
    );
    let mut bytes = meta.encode();
    bytes[kraken_core::METAINFO_HEADER_LEN + 5] ^= 0x01;
    MetaInfo::decode(&bytes).expect("a flipped piece hash still decodes");
    bytes
}

/// Another blob's metainfo made to name `digest`: its length and pieces, its chain ending
/// at `digest` so that it decodes.
fn another_blobs(other: &MetaInfo, digest: &Digest) -> Vec<u8> {
    let mut hashes: Vec<[u8; 32]> = (0..other.piece_count())
        .map(|i| *other.piece_hash(other.piece_index(i).unwrap()))
        .collect();
    *hashes.last_mut().unwrap() = digest.as_bytes().try_into().unwrap();
    MetaInfo::from_parts(*digest, other.length(), other.piece_length(), hashes)
        .unwrap()
        .encode()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_metainfo_posted_anonymously_is_refused_and_agents_serve_the_right_bytes() {
    let cluster = Cluster::start().await;
    let data = blob(1 << 20, 1);
    let digest = support::upload(&cluster.origin, REPO, &data).await;
    let genuine = cluster.tracker_metainfo(&digest).await;
    let other = MetaInfo::from_bytes(&blob(700 << 10, 2), PIECE).unwrap();

    assert_eq!(
        cluster
            .post_metainfo(&digest, flipped(&genuine), false)
            .await,
        StatusCode::FORBIDDEN,
        "the flipped-byte metainfo was accepted"
    );
    assert_eq!(
        cluster
            .post_metainfo(&digest, another_blobs(&other, &digest), false)
            .await,
        StatusCode::FORBIDDEN,
        "another blob's metainfo was accepted"
    );
    cluster.assert_serves(&genuine, &data).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origins_metainfo_wins_over_a_publishers() {
    let cluster = Cluster::start().await;
    let data = blob(1 << 20, 3);
    let digest = support::upload(&cluster.origin, REPO, &data).await;
    let genuine = MetaInfo::from_bytes(&data, PIECE).unwrap();
    let other = MetaInfo::from_bytes(&blob(700 << 10, 4), PIECE).unwrap();

    // A holder of the credential publishes a wrong metainfo: it is accepted (the publisher
    // is authenticated) but the origin's is what fetchers get.
    assert_eq!(
        cluster
            .post_metainfo(&digest, another_blobs(&other, &digest), true)
            .await,
        StatusCode::CREATED
    );
    cluster.assert_serves(&genuine, &data).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_fed_wrong_metainfo_starts_over_with_the_origins() {
    let cluster = Cluster::start().await;
    let data = blob(1 << 20, 5);
    let digest = Digest::sha256_of(&data);
    let genuine = MetaInfo::from_bytes(&data, PIECE).unwrap();
    // Before the origin has the blob, a publisher with the credential publishes a wrong
    // metainfo for it: the tracker, whose origins do not know the blob, hands it out.
    assert_eq!(
        cluster
            .post_metainfo(&digest, flipped(&genuine), true)
            .await,
        StatusCode::CREATED
    );
    let pulling = {
        let url = format!(
            "http://{}/v2/{REPO}/blobs/{digest}",
            cluster.agents[0].local_addr()
        );
        tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            let response = client.get(url).send().await?;
            response.bytes().await
        })
    };
    // The agent's download starts on the wrong metainfo (no peer can serve it) …
    let node = cluster.agents[0].node().clone();
    let mut started = false;
    for _ in 0..200 {
        if node.torrent_stats(&digest).await.is_some() {
            started = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started, "the agent never started downloading");
    // … then the blob reaches the origin. Without a restart, the agent must notice that its
    // metainfo matches nobody's bytes, take the origin's and deliver the blob.
    support::upload(&cluster.origin, REPO, &data).await;
    // The reader of the stuck download either gets the blob or is told to read again.
    if let Ok(bytes) = pulling.await.unwrap() {
        assert_eq!(bytes.to_vec(), data);
    }
    assert_eq!(cluster.pull(0, &digest).await, data);
    assert_eq!(cluster.pull(1, &digest).await, data);
    cluster.shutdown().await;
}
