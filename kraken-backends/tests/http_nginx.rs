//! The HTTP backend against a real nginx with WebDAV PUT/DELETE, started by the test.

mod support;

use kraken_backends::{Backend, ByteRange, Error, HttpBackend, HttpConfig};
use kraken_testkit::backend::{self as conformance, SuiteOptions};
use kraken_testkit::{Nginx, TestServer};

fn backend(nginx: &Nginx) -> HttpBackend {
    HttpBackend::new(HttpConfig::new(nginx.url())).expect("http backend")
}

#[tokio::test]
async fn conformance() {
    let Some(nginx) = Nginx::start() else { return };
    // Plain HTTP has no listing: the suite checks the backend says so and skips that part.
    conformance::run_suite(&backend(&nginx), SuiteOptions::without_list()).await;
}

#[tokio::test]
async fn large_blob_streams() {
    let Some(nginx) = Nginx::start() else { return };
    conformance::large_blob_streams(&backend(&nginx), conformance::LARGE_BLOB_SIZE).await;
}

#[tokio::test]
async fn a_server_that_ignores_range_is_an_error() {
    use support::response;
    // Answers every GET with the whole body and 200, as a server without range support does.
    let server = TestServer::start(|_| async { response(200, &[], "0123456789") }).await;
    let backend = HttpBackend::new(HttpConfig::new(server.url())).unwrap();
    let result = backend
        .download("ns", "blob", Some(ByteRange::new(2, 3).unwrap()))
        .await;
    assert!(
        matches!(result, Err(Error::InvalidResponse(_))),
        "{:?}",
        result.map(|_| ())
    );
}

#[tokio::test]
async fn a_body_longer_than_announced_is_an_error() {
    use support::response;
    // Claims 4 bytes of range, sends 10.
    let server = TestServer::start(|_| async {
        response(206, &[("content-range", "bytes 0-3/10")], "0123456789")
    })
    .await;
    let backend = HttpBackend::new(HttpConfig::new(server.url())).unwrap();
    let result = match backend
        .download("ns", "blob", Some(ByteRange::new(0, 4).unwrap()))
        .await
    {
        Ok(stream) => kraken_backends::collect_bytes(stream, 100)
            .await
            .map(|_| ()),
        Err(error) => Err(error),
    };
    assert!(result.is_err(), "an oversized body was accepted");
}
