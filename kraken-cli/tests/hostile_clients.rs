//! Misbehaving clients against real `kraken` processes with their shipped defaults: each test
//! plays clients that stall or dribble, and checks that a well-behaved client on the same
//! listener is still answered promptly.

mod support;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use kraken_core::Digest;
use kraken_registry::origin::{CommitKind, OriginClient};
use kraken_testkit::{ProcessGuard, free_addr, pseudo_random_bytes, wait_for_port};
use support::{KRAKEN, start_role};

const NS: &str = "library/app";

/// `kraken origin` on loopback with a local-directory backend and default limits.
fn start_origin(dir: &std::path::Path) -> (ProcessGuard, String) {
    start_origin_with(dir, "")
}

/// `kraken origin` with `extra` appended to its TOML (tables of limits to override).
fn start_origin_with(dir: &std::path::Path, extra: &str) -> (ProcessGuard, String) {
    let listen = free_addr("127.0.0.1").to_string();
    let config = format!(
        "listen = \"{listen}\"\ndata_dir = \"{data}\"\n\n[cluster]\nmembers = {{ static = [\"{listen}\"] }}\nreplicas = 1\n\n[[backends.routes]]\nnamespace = \".*\"\nbackend = {{ type = \"fs\", root = \"{backend}\" }}\n\n{extra}\n",
        data = dir.join("origin").display(),
        backend = dir.join("backend").display(),
    );
    (start_role("origin", &config, dir, &listen), listen)
}

/// Starts an upload of `digest` on the origin at `addr`; its id.
async fn start_upload(http: &reqwest::Client, addr: &str, digest: &Digest) -> String {
    let response = http
        .post(format!(
            "http://{addr}/namespace/library%2Fapp/blobs/{digest}/uploads"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.headers()["location"].to_str().unwrap().to_owned()
}

/// Sends `head` and then `body` on a raw connection, and returns the status line of the
/// answer (empty if the connection closed without one) within `within`.
fn raw_exchange(addr: &str, head: &str, body: &[u8], within: Duration) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(within)).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    // The server may answer (and close) before taking the whole body.
    let _ = stream.write_all(body);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    answer.lines().next().unwrap_or_default().to_owned()
}

fn blob_url(origin: &str, digest: &Digest) -> String {
    format!("http://{origin}/namespace/library%2Fapp/blobs/{digest}")
}

/// 16 clients `GET` a 64 MiB blob and never read. Before the serving layer read blobs on the
/// blocking pool a chunk at a time, each of them held one of the runtime's 8 blocking threads
/// and a `GET` of another blob did not answer within 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_readers_do_not_starve_other_requests() {
    let dir = tempfile::tempdir().unwrap();
    let (_origin, addr) = start_origin(dir.path());
    let client = OriginClient::new().unwrap();
    let big = pseudo_random_bytes(64 << 20, 1);
    let big_digest = Digest::sha256_of(&big);
    let small = pseudo_random_bytes(4096, 2);
    let small_digest = Digest::sha256_of(&small);
    for (data, digest) in [(big, big_digest), (small.clone(), small_digest)] {
        client
            .upload_bytes(&addr, NS, &digest, data.into(), CommitKind::Primary)
            .await
            .unwrap();
    }

    let request =
        format!("GET /namespace/library%2Fapp/blobs/{big_digest} HTTP/1.1\r\nHost: x\r\n\r\n");
    let stalled: Vec<TcpStream> = (0..16)
        .map(|_| {
            let mut stream = TcpStream::connect(&addr).unwrap();
            stream.write_all(request.as_bytes()).unwrap();
            stream
        })
        .collect();
    // Let every stalled response fill its socket buffers.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let http = reqwest::Client::new();
    for round in 0..3 {
        let start = Instant::now();
        let response = tokio::time::timeout(
            Duration::from_secs(3),
            http.get(blob_url(&addr, &small_digest)).send(),
        )
        .await
        .unwrap_or_else(|_| panic!("round {round}: no answer within 3 s"))
        .unwrap();
        let body = response.bytes().await.unwrap();
        assert_eq!(body.as_ref(), small.as_slice());
        assert!(start.elapsed() < Duration::from_secs(3));
        // And an upload commits (a blocking hash, write and fsync) meanwhile.
        let data = pseudo_random_bytes(1 << 20, 10 + round);
        let digest = Digest::sha256_of(&data);
        tokio::time::timeout(
            Duration::from_secs(5),
            client.upload_bytes(&addr, NS, &digest, data.into(), CommitKind::Primary),
        )
        .await
        .unwrap_or_else(|_| panic!("round {round}: no commit within 5 s"))
        .unwrap();
    }
    drop(stalled);
}

/// 200 connections that send half a request head are closed by the default header timeout
/// (10 s), well within the 60 s the issue allows, while a whole request is served meanwhile.
#[test]
fn half_open_heads_are_closed_by_the_header_timeout() {
    let listen = free_addr("127.0.0.1").to_string();
    let _tracker = ProcessGuard::adopt(
        std::process::Command::new(KRAKEN)
            .args(["tracker", "--listen", &listen])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(&listen);
    let start = Instant::now();
    let mut open: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut stream = TcpStream::connect(&listen).unwrap();
            stream
                .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            stream
        })
        .collect();

    let mut whole = TcpStream::connect(&listen).unwrap();
    whole
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    whole.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");

    for (i, stream) in open.iter_mut().enumerate() {
        let mut buf = [0u8; 64];
        match stream.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("connection {i} not closed: {other:?}"),
        }
    }
    let elapsed = start.elapsed();
    assert!(
        elapsed < Duration::from_secs(20),
        "closed only after {elapsed:?}"
    );
}

/// Uploads that misbehave, against an origin whose `[http]` and `[limits]` tables set short
/// bounds: each is refused with the documented status, nothing they sent is stored, and the
/// upload still completes from a well-behaved client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_oversized_and_excess_uploads_are_refused_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_origin, addr) = start_origin_with(
        dir.path(),
        "[http]\nbody_stall_timeout = \"1s\"\n\n[limits]\nmax_chunk_size = \"1MiB\"\nmax_concurrent_chunks = 1\n",
    );
    // The origin client installs the TLS crypto provider that reqwest's clients need.
    let client = OriginClient::new().unwrap();
    let http = reqwest::Client::new();
    let data = pseudo_random_bytes(4096, 3);
    let digest = Digest::sha256_of(&data);
    let id = start_upload(&http, &addr, &digest).await;
    let patch = |range: &str, length: usize| {
        format!(
            "PATCH /namespace/library%2Fapp/blobs/{digest}/uploads/{id} HTTP/1.1\r\nHost: x\r\nContent-Range: {range}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
        )
    };

    // A slow upload: half the body, then nothing. The body stall timeout ends it.
    let started = Instant::now();
    let status = tokio::task::spawn_blocking({
        let (addr, head) = (addr.clone(), patch("0-4096", 4096));
        move || raw_exchange(&addr, &head, &[0u8; 2048], Duration::from_secs(10))
    })
    .await
    .unwrap();
    assert!(status.contains(" 400 "), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );

    // A body longer than its Content-Range, and a chunk over max_chunk_size.
    let status = raw_exchange(
        &addr,
        &patch("0-10", 20),
        &[1u8; 20],
        Duration::from_secs(5),
    );
    assert!(status.contains(" 400 "), "{status:?}");
    let status = raw_exchange(
        &addr,
        &patch(&format!("0-{}", 2 << 20), 2 << 20),
        &[],
        Duration::from_secs(5),
    );
    assert!(status.contains(" 413 "), "{status:?}");

    // One chunk being written holds the only writer: a second waits with 503.
    let mut holder = TcpStream::connect(&addr).unwrap();
    holder.write_all(patch("0-4096", 4096).as_bytes()).unwrap();
    holder.write_all(&[0u8; 100]).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let response = http
        .patch(format!(
            "http://{addr}/namespace/library%2Fapp/blobs/{digest}/uploads/{id}"
        ))
        .header("content-range", "0-4096")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    drop(holder);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // The well-behaved upload still works, and what is stored is what it sent.
    client
        .upload_bytes(&addr, NS, &digest, data.clone().into(), CommitKind::Primary)
        .await
        .unwrap();
    let body = http.get(blob_url(&addr, &digest)).send().await.unwrap();
    assert_eq!(body.bytes().await.unwrap().as_ref(), data.as_slice());
}

/// A `PATCH` racing a commit of the same upload (real process, 20 rounds): whichever claims
/// the upload first goes ahead and the other gets `423`, and every blob committed with `201` is
/// served as exactly the bytes that hash to its digest: a chunk written during the commit's
/// hash can never become part of the cached blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_racing_a_commit_never_changes_what_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (_origin, addr) = start_origin(dir.path());
    let _client = OriginClient::new().unwrap();
    let http = reqwest::Client::new();
    let mut committed = 0;
    for round in 0..20u64 {
        let data = pseudo_random_bytes(4 << 20, 100 + round);
        let digest = Digest::sha256_of(&data);
        let id = start_upload(&http, &addr, &digest).await;
        let url = format!("http://{addr}/namespace/library%2Fapp/blobs/{digest}/uploads/{id}");
        let length = data.len();
        let response = http
            .patch(&url)
            .header("content-range", format!("0-{length}"))
            .body(data.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let garbage = vec![0xA5u8; length];
        let (commit, patch) = tokio::join!(
            http.put(&url).send(),
            http.patch(&url)
                .header("content-range", format!("0-{length}"))
                .body(garbage)
                .send()
        );
        // A refused PATCH may be answered before its body is sent: the client then sees the
        // connection close under its upload instead of the status.
        let patch = patch.map_or_else(
            |e| format!("refused early ({e})"),
            |r| r.status().to_string(),
        );
        let commit = commit.unwrap().status();
        // 423: the other request held the upload; 400: the garbage landed first and the
        // commit's hash refused it. Never a 201 of other bytes, nor a 409 (which clients
        // count as success).
        assert!(
            [201, 400, 423].contains(&commit.as_u16()),
            "round {round}: commit {commit}, patch {patch}"
        );
        if commit == 201 {
            committed += 1;
            let body = http.get(blob_url(&addr, &digest)).send().await.unwrap();
            assert_eq!(body.status(), 200);
            let bytes = body.bytes().await.unwrap();
            assert!(
                Digest::sha256_of(&bytes) == digest,
                "round {round}: a committed blob does not hash to its digest"
            );
        }
    }
    assert!(committed > 0, "no commit won a race in 20 rounds");
}
