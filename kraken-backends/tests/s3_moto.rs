//! The S3 backend (object_store) against a real `moto_server`, started by the test.

use kraken_backends::{Backend, CloudBackend, MultipartConfig, S3Config, UploadBody};
use kraken_core::ByteSize;
use kraken_testkit::MotoServer;
use kraken_testkit::backend::{self as conformance, SuiteOptions};
use object_store::ObjectStoreExt;

const BUCKET: &str = "kraken-test";
const PART_SIZE: u64 = 5 * 1024 * 1024;

async fn start_moto(dir: &tempfile::TempDir) -> Option<MotoServer> {
    MotoServer::start(BUCKET, &dir.path().join("moto.log")).await
}

fn config(moto: &MotoServer) -> S3Config {
    let mut config = moto.s3_config(moto.endpoint(), "kraken/blobs");
    let mut upload = MultipartConfig::default();
    upload.part_size = ByteSize(PART_SIZE);
    upload.concurrency = 2;
    config.upload = upload;
    config
}

fn backend(moto: &MotoServer) -> CloudBackend {
    config(moto).build().expect("s3 backend")
}

#[tokio::test]
async fn conformance() {
    let dir = tempfile::tempdir().unwrap();
    let Some(moto) = start_moto(&dir).await else {
        return;
    };
    conformance::run_suite(&backend(&moto), SuiteOptions::default()).await;
}

#[tokio::test]
async fn large_blob_streams() {
    let dir = tempfile::tempdir().unwrap();
    let Some(moto) = start_moto(&dir).await else {
        return;
    };
    conformance::large_blob_streams(&backend(&moto), conformance::LARGE_BLOB_SIZE).await;
}

#[tokio::test]
async fn blobs_larger_than_a_part_use_multipart_upload() {
    let dir = tempfile::tempdir().unwrap();
    let Some(moto) = start_moto(&dir).await else {
        return;
    };
    let backend = backend(&moto);
    let (stream, _) = conformance::generated_blob(3 * PART_SIZE - 1);
    backend
        .upload("ns", "multi", UploadBody::from_stream(stream, None))
        .await
        .unwrap();
    // S3 gives a multipart object the ETag "<md5 of the part md5s>-<part count>".
    let raw = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(BUCKET)
        .with_endpoint(moto.endpoint())
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
    let dir = tempfile::tempdir().unwrap();
    let Some(moto) = start_moto(&dir).await else {
        return;
    };
    conformance::a_failing_body_stores_nothing(&backend(&moto), 2 * PART_SIZE).await;
}
