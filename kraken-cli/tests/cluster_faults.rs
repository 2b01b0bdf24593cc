//! Faults on clusters of real processes (`kraken devcluster --processes`, driven through
//! `kraken_testkit::ProcessCluster`): roles killed with SIGKILL and restarted while clients push
//! and pull. Each test counts failed pulls and lost blobs, and both must be zero. Waits are
//! bounded; nothing is timed.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use kraken_core::Digest;
use kraken_testkit::oci::{ImageSpec, push_blob};
use kraken_testkit::{ProcessCluster, Role, Skopeo, pseudo_random_bytes};
use support::KRAKEN;
use support::scenarios::push_image;

const REPO: &str = "library/app";
/// One pull may take this long before it counts as failed.
const PULL_TIMEOUT: Duration = Duration::from_secs(120);

fn client() -> reqwest::Client {
    kraken_backends::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(PULL_TIMEOUT)
        .build()
        .unwrap()
}

/// Pushes `count` blobs of `size` bytes through the proxy; returns them.
async fn push_blobs(
    cluster: &ProcessCluster,
    count: usize,
    size: usize,
    seed: u64,
) -> Vec<(Digest, Vec<u8>)> {
    let http = client();
    let registry = format!("http://{}", cluster.proxy.addr);
    let mut blobs = Vec::new();
    for i in 0..count {
        let data = pseudo_random_bytes(size, seed + i as u64);
        let digest = push_blob(&http, &registry, REPO, &data).await;
        blobs.push((digest, data));
    }
    blobs
}

/// Pulls the blob from the agent at `agent`; an error says why it failed.
async fn pull(http: &reqwest::Client, agent: &str, digest: &Digest) -> Result<(), String> {
    let url = format!("http://{agent}/v2/{REPO}/blobs/{digest}");
    let response = http.get(&url).send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
    }
    if Digest::sha256_of(&body) != *digest {
        return Err(format!(
            "{} bytes that do not hash to the digest",
            body.len()
        ));
    }
    Ok(())
}

/// Every agent pulls every blob at once; returns the failures (agent, digest, why).
async fn pull_everywhere(
    cluster: &ProcessCluster,
    blobs: &[(Digest, Vec<u8>)],
) -> Vec<(String, Digest, String)> {
    let http = client();
    let mut pulls = Vec::new();
    for agent in &cluster.agents {
        for (digest, _) in blobs {
            let (http, agent, digest) = (http.clone(), agent.addr.to_string(), *digest);
            pulls.push(tokio::spawn(async move {
                pull(&http, &agent, &digest)
                    .await
                    .err()
                    .map(|why| (agent, digest, why))
            }));
        }
    }
    let mut failed = Vec::new();
    for pull in pulls {
        failed.extend(pull.await.unwrap());
    }
    failed
}

/// Every agent pulls every blob, the agents at once, each its blobs in turn, in a task;
/// it returns the failures (agent, digest, why).
fn spawn_pulls(
    cluster: &ProcessCluster,
    blobs: &[(Digest, Vec<u8>)],
) -> tokio::task::JoinHandle<Vec<(String, Digest, String)>> {
    let http = client();
    let agents: Vec<String> = cluster.agents.iter().map(|a| a.addr.to_string()).collect();
    let blobs: Vec<Digest> = blobs.iter().map(|(d, _)| *d).collect();
    tokio::spawn(async move {
        let mut each = Vec::new();
        for agent in agents {
            let (http, blobs) = (http.clone(), blobs.clone());
            each.push(tokio::spawn(async move {
                let mut failed = Vec::new();
                for digest in blobs {
                    if let Err(why) = pull(&http, &agent, &digest).await {
                        failed.push((agent.clone(), digest, why));
                    }
                }
                failed
            }));
        }
        let mut failed = Vec::new();
        for pulls in each {
            failed.extend(pulls.await.unwrap());
        }
        failed
    })
}

/// Pushes `count` blobs of `size` bytes and waits until all are written back (so that no
/// blob is on one origin's disk alone when a role is killed).
async fn push_settled(
    cluster: &ProcessCluster,
    count: usize,
    size: usize,
    seed: u64,
) -> Vec<(Digest, Vec<u8>)> {
    let blobs = push_blobs(cluster, count, size, seed).await;
    let unsettled = lost_blobs(cluster, &blobs, Duration::from_secs(60)).await;
    assert!(unsettled.is_empty(), "not written back: {unsettled:?}");
    blobs
}

/// The blobs not in the shared file-system backend (with the bytes pushed) once the
/// write-back has had `within` to run.
async fn lost_blobs(
    cluster: &ProcessCluster,
    blobs: &[(Digest, Vec<u8>)],
    within: Duration,
) -> Vec<Digest> {
    let backend = cluster.data_dir().join("backend-blobs");
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let lost: Vec<Digest> = blobs
            .iter()
            .filter(|(digest, data)| !in_backend(&backend, digest, data))
            .map(|(digest, _)| *digest)
            .collect();
        if lost.is_empty() || tokio::time::Instant::now() >= deadline {
            return lost;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn in_backend(backend: &Path, digest: &Digest, data: &[u8]) -> bool {
    std::fs::read(backend.join(digest.to_string())).is_ok_and(|stored| stored == data)
}

fn start(dir: &Path, origins: usize, trackers: usize, agents: usize) -> ProcessCluster {
    ProcessCluster::start(Path::new(KRAKEN), dir, origins, trackers, agents)
        .unwrap_or_else(|e| panic!("starting the cluster: {e:#}"))
}

fn assert_no_failures(
    cluster: &ProcessCluster,
    failed: &[(String, Digest, String)],
    lost: &[Digest],
) {
    assert!(
        failed.is_empty() && lost.is_empty(),
        "{} failed pulls: {failed:?}\n{} lost blobs: {lost:?}\ndevcluster log:\n{}",
        failed.len(),
        lost.len(),
        cluster.log_text()
    );
}

/// The harness itself: the line parses, every pid is a live process, a role killed is gone
/// and a restarted one answers under a new pid; dropping the cluster stops every role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_cluster_serves_and_its_roles_can_be_killed_and_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(dir.path(), 1, 1, 2);
    let mut pids: Vec<u32> = [&cluster.proxy, &cluster.build_index]
        .into_iter()
        .chain(&cluster.origins)
        .chain(&cluster.trackers)
        .chain(&cluster.agents)
        .map(|role| role.pid)
        .collect();
    assert_eq!(pids.len(), 6);
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), 6, "one process per role");
    for pid in &pids {
        assert!(Path::new(&format!("/proc/{pid}")).exists(), "pid {pid}");
    }

    let blobs = push_blobs(&cluster, 2, 300_000, 1).await;
    let failed = pull_everywhere(&cluster, &blobs).await;
    let lost = lost_blobs(&cluster, &blobs, Duration::from_secs(30)).await;
    assert_no_failures(&cluster, &failed, &lost);

    let old = cluster.trackers[0].pid;
    cluster.kill(Role::Tracker(0)).unwrap();
    assert!(!Path::new(&format!("/proc/{old}")).exists());
    cluster.restart(Role::Tracker(0)).unwrap();
    assert_ne!(cluster.trackers[0].pid, old);
    drop(cluster);
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} outlived the cluster"
        );
    }
}

/// Three origins (each blob on two), one tracker, four agents: an owning origin SIGKILLed
/// while four agents pull cold blobs fails no pull and loses no blob. The blobs are written
/// back before the pulls start: a blob acknowledged but not yet replicated or written back
/// is on the killed origin's disk alone until it restarts (durable, not lost, but not
/// pullable either).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_killed_during_cold_pulls_fails_no_pull() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(dir.path(), 3, 1, 4);
    let blobs = push_settled(&cluster, 4, 2 << 20, 10).await;
    let pulls = spawn_pulls(&cluster, &blobs);
    cluster.kill(Role::Origin(0)).unwrap();
    let failed = pulls.await.unwrap();
    cluster.restart(Role::Origin(0)).unwrap();
    let lost = lost_blobs(&cluster, &blobs, Duration::from_secs(60)).await;
    assert_no_failures(&cluster, &failed, &lost);
}

/// Two trackers (torrents shared between them by rendezvous hashing), two origins, four
/// agents: one tracker SIGKILLed while the agents download fails no pull — the agents fall
/// over to the other tracker, which hands out the blob's owning origins although they
/// announced elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracker_killed_mid_download_fails_no_pull() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(dir.path(), 2, 2, 4);
    let blobs = push_settled(&cluster, 4, 8 << 20, 20).await;
    let pulls = spawn_pulls(&cluster, &blobs);
    cluster.kill(Role::Tracker(0)).unwrap();
    let failed = pulls.await.unwrap();
    let lost = lost_blobs(&cluster, &blobs, Duration::from_secs(60)).await;
    assert_no_failures(&cluster, &failed, &lost);
}

/// The only tracker restarted (its peers were in memory only) before cold pulls: every pull
/// succeeds, the origins offered by the ring rather than by their next announce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracker_restarted_before_a_cold_pull_fails_no_pull() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(dir.path(), 1, 1, 2);
    let blobs = push_settled(&cluster, 2, 4 << 20, 30).await;
    cluster.kill(Role::Tracker(0)).unwrap();
    cluster.restart(Role::Tracker(0)).unwrap();
    let failed = spawn_pulls(&cluster, &blobs).await.unwrap();
    assert_no_failures(&cluster, &failed, &[]);
}

/// Pulls that start while the only tracker is down succeed once it is back: agents ask a
/// tracker that is down again (with backoff) instead of failing the pull at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_wait_for_a_tracker_that_is_down_and_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(dir.path(), 1, 1, 2);
    let blobs = push_settled(&cluster, 2, 1 << 20, 40).await;
    cluster.kill(Role::Tracker(0)).unwrap();
    let pulls = spawn_pulls(&cluster, &blobs);
    cluster.restart(Role::Tracker(0)).unwrap();
    let failed = pulls.await.unwrap();
    assert_no_failures(&cluster, &failed, &[]);
}

/// The shared file-system backend made unavailable (its directory replaced by a file, which
/// fails every access even for root) while images are pushed: existence checks answer "not
/// here" and pushes succeed, skopeo's included (an image pushed and read back out of an
/// agent); an origin killed during the outage starts again and serves what
/// it holds; once the backend is back every acknowledged blob reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_outage_blocks_no_push_and_loses_no_blob() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(dir.path(), 2, 1, 1);
    let mut blobs = push_settled(&cluster, 2, 1 << 20, 50).await;

    let backend = cluster.data_dir().join("backend-blobs");
    let away = cluster.data_dir().join("backend-blobs.away");
    std::fs::rename(&backend, &away).unwrap();
    std::fs::write(&backend, b"the backend is down").unwrap();

    let http = client();
    let registry = format!("http://{}", cluster.proxy.addr);
    let fresh = pseudo_random_bytes(300_000, 60);
    let check = http
        .head(format!(
            "{registry}/v2/{REPO}/blobs/{}",
            Digest::sha256_of(&fresh)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(check.status(), 404, "an existence check during the outage");
    blobs.extend(push_blobs(&cluster, 3, 300_000, 60).await);
    // An image pushed by a real client (skopeo asks whether each blob exists first).
    let mut image = None;
    if kraken_testkit::require_package("skopeo", "skopeo").is_some() {
        let skopeo = Skopeo::new();
        let spec = ImageSpec::new(&[200_000], 61).without_busybox();
        let pushed = push_image(
            &skopeo,
            &cluster.proxy.addr.to_string(),
            REPO,
            "outage",
            &spec,
        )
        .unwrap_or_else(|e| panic!("skopeo push during the outage: {e:#}"));
        image = Some((skopeo, pushed));
    }

    cluster.kill(Role::Origin(0)).unwrap();
    cluster
        .restart(Role::Origin(0))
        .unwrap_or_else(|e| panic!("the origin must start during the outage: {e:#}"));
    let mut failed = pull_everywhere(&cluster, &blobs).await;
    let mut lost = Vec::new();
    if let Some((skopeo, pushed)) = &image {
        // The image's blobs reach the backend like the others, and every agent serves them.
        let mut image_blobs = Vec::new();
        for digest in pushed.blobs() {
            let url = format!("http://{}/v2/{REPO}/blobs/{digest}", cluster.agents[0].addr);
            match http.get(url).send().await {
                Ok(answer) if answer.status() == 200 => {
                    image_blobs.push((digest, answer.bytes().await.unwrap().to_vec()));
                }
                Ok(answer) => failed.push(("agent-0".into(), digest, answer.status().to_string())),
                Err(e) => failed.push(("agent-0".into(), digest, e.to_string())),
            }
        }
        failed.extend(pull_everywhere(&cluster, &image_blobs).await);
        blobs.extend(image_blobs);
        // And skopeo reads the image back out of an agent.
        let out = skopeo.scratch("out");
        let pulled = skopeo.copy(
            &format!("docker://{}/{REPO}:outage", cluster.agents[0].addr),
            &format!("oci:{}:outage", out.display()),
            false,
        );
        if let Err(e) = pulled {
            failed.push(("agent-0".into(), pushed.manifest, format!("skopeo: {e:#}")));
        }
    }

    std::fs::remove_file(&backend).unwrap();
    std::fs::rename(&away, &backend).unwrap();
    lost.extend(lost_blobs(&cluster, &blobs, Duration::from_secs(60)).await);
    assert_no_failures(&cluster, &failed, &lost);
}

/// The check as a new user would make it: `--origins 3 --trackers 2 --agents 4`,
/// blobs pushed, one tracker and one origin SIGKILLed: every agent serves every blob, and a
/// new push still succeeds and is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracker_and_an_origin_killed_fail_no_pull_and_no_push() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(dir.path(), 3, 2, 4);
    let mut blobs = push_settled(&cluster, 3, 2 << 20, 70).await;
    cluster.kill(Role::Tracker(1)).unwrap();
    cluster.kill(Role::Origin(2)).unwrap();
    let mut failed = pull_everywhere(&cluster, &blobs).await;
    let fresh = push_blobs(&cluster, 1, 1 << 20, 80).await;
    failed.extend(pull_everywhere(&cluster, &fresh).await);
    blobs.extend(fresh);
    let lost = lost_blobs(&cluster, &blobs, Duration::from_secs(60)).await;
    assert_no_failures(&cluster, &failed, &lost);
}

/// The origins that own `digest`, as `origin` sees its ring (`origin-locations`).
async fn owners(http: &reqwest::Client, origin: &str, digest: &Digest) -> Vec<String> {
    let answer = http
        .get(format!("http://{origin}/blobs/{digest}/locations"))
        .send()
        .await
        .unwrap();
    let header = answer.headers()["origin-locations"].to_str().unwrap();
    header.split(',').map(str::to_owned).collect()
}

/// Whether `origin` holds `digest` on its own disk.
async fn holds(http: &reqwest::Client, origin: &str, digest: &Digest) -> bool {
    let url = format!("http://{origin}/namespace/library%2Fapp/blobs/{digest}?local=true");
    http.head(url)
        .send()
        .await
        .is_ok_and(|answer| answer.status() == 200)
}

/// An origin's data directory wiped (SIGKILL, `rm -r`, restart): once the ring has seen it
/// leave and come back, repair restores every replica it owns; no blob is lost meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_origin_gets_its_replicas_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(dir.path(), 3, 1, 1);
    let blobs = push_settled(&cluster, 6, 300_000, 90).await;
    let http = client();
    let wiped = cluster.origins[0].addr.to_string();
    let witness = cluster.origins[1].addr.to_string();
    let mut owned = Vec::new();
    for (digest, _) in &blobs {
        if owners(&http, &witness, digest).await.contains(&wiped) {
            owned.push(*digest);
        }
    }
    assert!(
        !owned.is_empty(),
        "with 6 blobs on 2 of 3 origins, each origin owns some"
    );

    cluster.kill(Role::Origin(0)).unwrap();
    std::fs::remove_dir_all(cluster.data_dir().join("origin-0")).unwrap();
    // Every other origin's health checks must see it leave, or its return is no membership
    // change to them, and a quick restart waits for the periodic repair (`repair_interval`).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for survivor in &cluster.origins[1..] {
        let survivor = survivor.addr.to_string();
        while owners(&http, &survivor, &owned[0]).await.contains(&wiped) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the ring never dropped the origin"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    cluster.restart(Role::Origin(0)).unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut missing = owned.clone();
    while !missing.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut still = Vec::new();
        for digest in missing {
            if !holds(&http, &wiped, &digest).await {
                still.push(digest);
            }
        }
        missing = still;
    }
    assert!(
        missing.is_empty(),
        "replicas not restored on the wiped origin: {missing:?}\n{}\norigin-1:\n{}\norigin-2:\n{}",
        cluster.log_text(),
        cluster.role_log(Role::Origin(1)),
        cluster.role_log(Role::Origin(2)),
    );
    let failed = pull_everywhere(&cluster, &blobs).await;
    let lost = lost_blobs(&cluster, &blobs, Duration::from_secs(60)).await;
    assert_no_failures(&cluster, &failed, &lost);
}

/// The file of `origin`'s complete copy of `digest` (`store/cache/sha256/ab/abcd…/data`
/// under its data directory), if it holds one.
fn cached_file(cluster: &ProcessCluster, origin: usize, digest: &Digest) -> Option<PathBuf> {
    let hex = digest.hex();
    let path = cluster
        .data_dir()
        .join(format!("origin-{origin}"))
        .join("store/cache/sha256")
        .join(&hex[..2])
        .join(&hex)
        .join("data");
    path.is_file().then_some(path)
}

/// An origin's cached copy of each blob with one byte flipped (SIGKILL-free, the process keeps
/// running): agents pulling over P2P verify every piece and take it from the other origin;
/// reads through the proxy are the right bytes or cut, never wrong bytes with a `200`; and the
/// origin, told by the proxy, re-hashes its copy, drops it and repairs it from the replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_copy_on_an_origin_is_never_served_and_is_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(dir.path(), 2, 1, 2);
    let blobs = push_settled(&cluster, 3, 2 << 20, 100).await;
    let http = client();
    let origins: Vec<String> = cluster.origins.iter().map(|o| o.addr.to_string()).collect();
    // Corrupt each blob on the origin the proxy reads it from first.
    let mut corrupted = Vec::new();
    for (digest, _) in &blobs {
        let first = owners(&http, &origins[0], digest).await[0].clone();
        let origin = origins.iter().position(|o| *o == first).expect("an owner");
        let path = cached_file(&cluster, origin, digest).expect("the owner holds it");
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        std::fs::write(&path, bytes).unwrap();
        corrupted.push((origin, *digest));
    }

    let mut failed = pull_everywhere(&cluster, &blobs).await;
    let registry = format!("http://{}", cluster.proxy.addr);
    for (digest, data) in &blobs {
        for attempt in 0..3 {
            let answer = http
                .get(format!("{registry}/v2/{REPO}/blobs/{digest}"))
                .send()
                .await
                .unwrap();
            let status = answer.status();
            match answer.bytes().await {
                Ok(body) if status == 200 && body[..] != data[..] => failed.push((
                    "proxy".into(),
                    *digest,
                    format!("GET {attempt}: 200 with wrong bytes"),
                )),
                Ok(_) if status != 200 => {
                    failed.push(("proxy".into(), *digest, format!("GET {attempt}: {status}")));
                }
                // Right bytes, or a transfer cut short: the client knows it failed.
                _ => {}
            }
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut unrepaired = corrupted.clone();
    while !unrepaired.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        unrepaired.retain(|(origin, digest)| {
            cached_file(&cluster, *origin, digest)
                .and_then(|path| std::fs::read(path).ok())
                .is_none_or(|bytes| Digest::sha256_of(&bytes) != *digest)
        });
    }
    assert!(unrepaired.is_empty(), "not repaired: {unrepaired:?}");
    let lost = lost_blobs(&cluster, &blobs, Duration::from_secs(30)).await;
    assert_no_failures(&cluster, &failed, &lost);
}

/// Keys in the Redis server at `url` (`DBSIZE`, over a plain socket).
fn redis_keys(url: &str) -> u64 {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("redis://");
    let mut socket = std::net::TcpStream::connect(addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket.write_all(b"DBSIZE\r\n").unwrap();
    let mut answer = [0u8; 64];
    let n = socket.read(&mut answer).unwrap();
    let text = std::str::from_utf8(&answer[..n]).unwrap();
    text.trim().trim_start_matches(':').parse().unwrap()
}

/// Two trackers keeping their peers in one Redis (`--redis`): an agent pulls, both trackers
/// are SIGKILLed and restarted from their configs, and the other agents pull every blob; the
/// peers are in Redis (its keys outlive the trackers), and no pull fails, no blob is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trackers_sharing_a_redis_restart_without_failing_a_pull() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = kraken_testkit::RedisServer::start(&dir.path().join("redis.log")) else {
        return;
    };
    let url = redis.url();
    let mut cluster =
        ProcessCluster::start_with(Path::new(KRAKEN), dir.path(), 1, 2, 3, &["--redis", &url])
            .unwrap_or_else(|e| panic!("starting the cluster: {e:#}"));
    let blobs = push_settled(&cluster, 3, 1 << 20, 110).await;
    let http = client();
    let mut failed = Vec::new();
    let first = cluster.agents[0].addr.to_string();
    for (digest, _) in &blobs {
        if let Err(why) = pull(&http, &first, digest).await {
            failed.push((first.clone(), *digest, why));
        }
    }
    assert!(redis_keys(&url) > 0, "the trackers' peers are not in Redis");
    for i in 0..2 {
        cluster.kill(Role::Tracker(i)).unwrap();
    }
    assert!(
        redis_keys(&url) > 0,
        "the peers did not outlive the trackers"
    );
    for i in 0..2 {
        cluster.restart(Role::Tracker(i)).unwrap();
    }
    failed.extend(pull_everywhere(&cluster, &blobs).await);
    let lost = lost_blobs(&cluster, &blobs, Duration::from_secs(30)).await;
    assert_no_failures(&cluster, &failed, &lost);
}
