//! The WebHDFS backend against an in-test server that speaks the WebHDFS REST protocol
//! (namenode redirects to a datanode for OPEN and CREATE), storing files in a temp dir. No
//! HDFS can be installed here, so this is not a test against a real cluster.

mod support;

use std::collections::HashMap;
use std::io::SeekFrom;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures::TryStreamExt;
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper::{Request, Response};
use kraken_backends::{WebHdfsBackend, WebHdfsConfig};
use kraken_testkit::RequestBody;
use kraken_testkit::TestServer;
use kraken_testkit::backend::{self as conformance, SuiteOptions};
use support::{Body, response};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

const USER: &str = "kraken";

/// What the fake cluster saw, for assertions.
#[derive(Default)]
struct Seen {
    redirects: AtomicUsize,
    creates_with_body_at_namenode: AtomicUsize,
}

struct FakeHdfs {
    server: TestServer,
    seen: Arc<Seen>,
    _dir: tempfile::TempDir,
}

async fn start_fake_hdfs() -> FakeHdfs {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().to_owned();
    let seen = Arc::new(Seen::default());
    let state = (Arc::new(root), Arc::clone(&seen));
    let server = TestServer::start(move |request| {
        let (root, seen) = state.clone();
        async move { handle(&root, &seen, request).await }
    })
    .await;
    FakeHdfs {
        server,
        seen,
        _dir: dir,
    }
}

fn backend(namenodes: Vec<String>) -> WebHdfsBackend {
    let mut config = WebHdfsConfig::new(namenodes);
    config.user = Some(USER.into());
    config.root = "/kraken/blobs".into();
    WebHdfsBackend::new(config).expect("webhdfs backend")
}

#[tokio::test]
async fn conformance() {
    let hdfs = start_fake_hdfs().await;
    conformance::run_suite(&backend(vec![hdfs.server.url()]), SuiteOptions::default()).await;
    assert!(
        hdfs.seen.redirects.load(Ordering::SeqCst) > 0,
        "no datanode redirect was taken"
    );
    assert_eq!(
        hdfs.seen
            .creates_with_body_at_namenode
            .load(Ordering::SeqCst),
        0
    );
}

#[tokio::test]
async fn large_blob_streams() {
    let hdfs = start_fake_hdfs().await;
    let backend = backend(vec![hdfs.server.url()]);
    conformance::large_blob_streams(&backend, conformance::LARGE_BLOB_SIZE).await;
}

#[tokio::test]
async fn an_unreachable_namenode_fails_over_to_the_next() {
    let hdfs = start_fake_hdfs().await;
    let dead = format!("http://127.0.0.1:{}", kraken_testkit::free_port());
    let backend = backend(vec![dead, hdfs.server.url()]);
    conformance::round_trip(&backend).await;
}

/// Serves one WebHDFS request from files below `root`.
async fn handle(
    root: &std::path::Path,
    seen: &Seen,
    request: Request<RequestBody>,
) -> Response<Body> {
    let uri = request.uri().clone();
    let Some(hdfs_path) = uri.path().strip_prefix("/webhdfs/v1") else {
        return response(404, &[], "not a WebHDFS path");
    };
    let url = reqwest::Url::parse(&format!("http://fake{uri}")).expect("request URL");
    let query: HashMap<String, String> = url.query_pairs().into_owned().collect();
    if query.get("user.name").map(String::as_str) != Some(USER) {
        return response(401, &[], "user.name missing");
    }
    let local = root.join(hdfs_path.trim_start_matches('/'));
    let op = query.get("op").cloned().unwrap_or_default();
    let at_datanode = query.contains_key("datanode");
    let host = request
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let to_datanode = || {
        seen.redirects.fetch_add(1, Ordering::SeqCst);
        let location = format!("http://{host}{uri}&datanode=true");
        response(307, &[("location", location.as_str())], "")
    };
    match (op.as_str(), at_datanode) {
        ("GETFILESTATUS", _) => match tokio::fs::metadata(&local).await {
            Ok(meta) => json(&format!(
                r#"{{"FileStatus":{{"pathSuffix":"","type":"{}","length":{}}}}}"#,
                kind(&meta),
                meta.len()
            )),
            Err(_) => not_found(hdfs_path),
        },
        ("OPEN", false) | ("CREATE", false) => {
            if op == "CREATE" {
                // The namenode must be asked without a body; the datanode gets it.
                let body = request.into_body().collect().await.map(|b| b.to_bytes());
                if body.is_ok_and(|b| !b.is_empty()) {
                    seen.creates_with_body_at_namenode
                        .fetch_add(1, Ordering::SeqCst);
                }
            }
            to_datanode()
        }
        ("OPEN", true) => {
            let Ok(mut file) = tokio::fs::File::open(&local).await else {
                return not_found(hdfs_path);
            };
            let number = |key: &str| query.get(key).and_then(|v| v.parse::<u64>().ok());
            let offset = number("offset").unwrap_or(0);
            let length = number("length").unwrap_or(u64::MAX);
            file.seek(SeekFrom::Start(offset)).await.expect("seek");
            let stream = tokio_util::io::ReaderStream::new(file.take(length)).map_ok(Frame::data);
            Response::builder()
                .status(200)
                .body(http_body_util::StreamBody::new(stream).boxed())
                .expect("response")
        }
        ("CREATE", true) => {
            if let Some(parent) = local.parent() {
                tokio::fs::create_dir_all(parent).await.expect("mkdir");
            }
            let mut file = tokio::fs::File::create(&local).await.expect("create");
            let mut body = request.into_body();
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else {
                    return response(400, &[], "body broke");
                };
                if let Ok(data) = frame.into_data() {
                    file.write_all(&data).await.expect("write");
                }
            }
            file.flush().await.expect("flush");
            response(201, &[], "")
        }
        ("MKDIRS", _) => boolean(tokio::fs::create_dir_all(&local).await.is_ok()),
        ("RENAME", _) => {
            let destination = root.join(query["destination"].trim_start_matches('/'));
            if tokio::fs::metadata(&destination).await.is_ok() {
                return boolean(false);
            }
            boolean(tokio::fs::rename(&local, &destination).await.is_ok())
        }
        ("LISTSTATUS", _) => match list(&local).await {
            Some(entries) => json(&format!(
                r#"{{"FileStatuses":{{"FileStatus":[{}]}}}}"#,
                entries.join(",")
            )),
            None => not_found(hdfs_path),
        },
        ("DELETE", _) => match tokio::fs::metadata(&local).await {
            Ok(meta) if meta.is_dir() => boolean(tokio::fs::remove_dir_all(&local).await.is_ok()),
            Ok(_) => boolean(tokio::fs::remove_file(&local).await.is_ok()),
            Err(_) => boolean(false),
        },
        _ => response(400, &[], format!("unsupported op {op}")),
    }
}

async fn list(local: &PathBuf) -> Option<Vec<String>> {
    let mut entries = tokio::fs::read_dir(local).await.ok()?;
    let mut out = Vec::new();
    while let Ok(Some(entry)) = entries.next_entry().await {
        let meta = entry.metadata().await.ok()?;
        out.push(format!(
            r#"{{"pathSuffix":"{}","type":"{}","length":{}}}"#,
            entry.file_name().to_string_lossy(),
            kind(&meta),
            meta.len()
        ));
    }
    Some(out)
}

fn kind(meta: &std::fs::Metadata) -> &'static str {
    if meta.is_dir() { "DIRECTORY" } else { "FILE" }
}

fn json(body: &str) -> Response<Body> {
    response(
        200,
        &[("content-type", "application/json")],
        Bytes::from(body.to_owned()),
    )
}

fn boolean(value: bool) -> Response<Body> {
    json(&format!(r#"{{"boolean":{value}}}"#))
}

fn not_found(path: &str) -> Response<Body> {
    response(
        404,
        &[("content-type", "application/json")],
        format!(
            r#"{{"RemoteException":{{"exception":"FileNotFoundException","message":"File does not exist: {path}"}}}}"#
        ),
    )
}

#[tokio::test]
async fn malformed_answers_are_errors_not_panics() {
    use kraken_backends::{Backend, Error};
    // A "namenode" that answers every request with 200 and something that is not WebHDFS JSON.
    let server = TestServer::start(|request| async move {
        let body = if request
            .uri()
            .query()
            .unwrap_or_default()
            .contains("LISTSTATUS")
        {
            // Structurally valid, but an entry whose name would climb out of the directory.
            r#"{"FileStatuses":{"FileStatus":[{"pathSuffix":"..","type":"DIRECTORY","length":0}]}}"#
        } else {
            r#"{"FileStatus": 42}"#
        };
        response(200, &[], body)
    })
    .await;
    let backend = backend(vec![server.url()]);
    let stat = backend.stat("ns", "a").await;
    assert!(matches!(stat, Err(Error::InvalidResponse(_))), "{stat:?}");
    let list = backend.list("ns", "", &Default::default()).await;
    assert!(matches!(list, Err(Error::InvalidResponse(_))), "{list:?}");
}
