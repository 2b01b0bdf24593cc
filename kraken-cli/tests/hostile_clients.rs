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
    let listen = free_addr("127.0.0.1").to_string();
    let config = format!(
        "listen = \"{listen}\"\ndata_dir = \"{data}\"\n\n[cluster]\nmembers = {{ static = [\"{listen}\"] }}\nreplicas = 1\n\n[[backends.routes]]\nnamespace = \".*\"\nbackend = {{ type = \"fs\", root = \"{backend}\" }}\n",
        data = dir.join("origin").display(),
        backend = dir.join("backend").display(),
    );
    (start_role("origin", &config, dir, &listen), listen)
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
