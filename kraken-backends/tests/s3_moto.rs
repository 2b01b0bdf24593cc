//! The S3 backend (object_store) against a real `moto_server`, started by the test.

mod support;

use std::net::SocketAddr;
use std::process::Command;

use futures::StreamExt;
use kraken_backends::testing::{self, SuiteOptions};
use kraken_backends::{Backend, CloudBackend, MultipartConfig, S3Config, UploadBody};
use kraken_core::ByteSize;
use object_store::ObjectStoreExt;
use support::ServerGuard;

const BUCKET: &str = "kraken-test";
const PART_SIZE: u64 = 5 * 1024 * 1024;

/// A moto S3 server with one empty bucket, killed on drop.
struct Moto {
    endpoint: String,
    _server: ServerGuard,
    _dir: tempfile::TempDir,
}

async fn start_moto() -> Option<Moto> {
    let program = support::require_program("moto_server", "pip install 'moto[server]'")?;
    let dir = tempfile::tempdir().expect("temp dir");
    let port = support::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut command = Command::new(program);
    command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
    let server = ServerGuard::start("moto_server", command, addr, &dir.path().join("moto.log"));
    let endpoint = format!("http://{addr}");
    // moto accepts unsigned requests: a plain PUT creates the bucket.
    kraken_backends::install_crypto_provider();
    let created = reqwest::Client::new()
        .put(format!("{endpoint}/{BUCKET}"))
        .send()
        .await
        .expect("create bucket");
    assert!(
        created.status().is_success(),
        "create bucket: {}",
        created.status()
    );
    Some(Moto {
        endpoint,
        _server: server,
        _dir: dir,
    })
}

fn config(moto: &Moto) -> S3Config {
    let mut config = S3Config::new(BUCKET);
    config.endpoint = Some(moto.endpoint.clone());
    config.force_path_style = true;
    config.allow_http = true;
    config.access_key_id = Some("test".into());
    config.secret_access_key = Some("test".into());
    config.root = "kraken/blobs".into();
    let mut upload = MultipartConfig::default();
    upload.part_size = ByteSize(PART_SIZE);
    upload.concurrency = 2;
    config.upload = upload;
    config
}

fn backend(moto: &Moto) -> CloudBackend {
    config(moto).build().expect("s3 backend")
}

#[tokio::test]
async fn conformance() {
    let Some(moto) = start_moto().await else {
        return;
    };
    testing::run_suite(&backend(&moto), SuiteOptions::default()).await;
}

#[tokio::test]
async fn large_blob_streams() {
    let Some(moto) = start_moto().await else {
        return;
    };
    testing::large_blob_streams(&backend(&moto), testing::LARGE_BLOB_SIZE).await;
}

#[tokio::test]
async fn blobs_larger_than_a_part_use_multipart_upload() {
    let Some(moto) = start_moto().await else {
        return;
    };
    let backend = backend(&moto);
    let (stream, _) = testing::generated_blob(3 * PART_SIZE - 1);
    backend
        .upload("ns", "multi", UploadBody::from_stream(stream, None))
        .await
        .unwrap();
    // S3 gives a multipart object the ETag "<md5 of the part md5s>-<part count>".
    let raw = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(BUCKET)
        .with_endpoint(&moto.endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .build()
        .unwrap();
    let meta = raw
        .head(&object_store::path::Path::from("kraken/blobs/multi"))
        .await
        .unwrap();
    let etag = meta.e_tag.unwrap_or_default();
    assert!(etag.trim_matches('"').ends_with("-3"), "ETag {etag}");
    assert_eq!(meta.size, 3 * PART_SIZE - 1);
}

#[tokio::test]
async fn a_failing_body_aborts_the_upload_and_stores_nothing() {
    let Some(moto) = start_moto().await else {
        return;
    };
    let backend = backend(&moto);
    let (good, _) = testing::generated_blob(2 * PART_SIZE);
    let failing = good.chain(futures::stream::once(async {
        Err(kraken_backends::Error::Io(std::io::Error::other(
            "source broke",
        )))
    }));
    let result = backend
        .upload(
            "ns",
            "broken",
            UploadBody::from_stream(failing.boxed(), None),
        )
        .await;
    assert!(
        matches!(result, Err(kraken_backends::Error::Io(_))),
        "{result:?}"
    );
    assert!(
        backend
            .stat("ns", "broken")
            .await
            .unwrap_err()
            .is_not_found()
    );
}
