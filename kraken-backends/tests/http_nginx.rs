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

/// A server that answers `HEAD` with `head_length` (none when `None`) and `GET` with
/// `"0123456789"` sent chunked, without `Content-Length`.
async fn chunked_server(head_length: Option<&'static str>) -> TestServer {
    use support::{chunked, response};
    TestServer::start(move |request| async move {
        if request.method() == hyper::Method::HEAD {
            match head_length {
                Some(length) => response(200, &[("content-length", length)], ""),
                None => chunked(200, &[], &[]),
            }
        } else {
            chunked(200, &[], &["01234", "56789"])
        }
    })
    .await
}

async fn download_all(backend: &HttpBackend) -> Result<bytes::Bytes, Error> {
    let stream = backend.download("ns", "blob", None).await?;
    kraken_backends::collect_bytes(stream, 1 << 20).await
}

#[tokio::test]
async fn a_chunked_body_is_held_to_the_stat_size() {
    // The stat says 4 bytes; the chunked GET sends 10: an error, not 10 bytes read.
    let server = chunked_server(Some("4")).await;
    let backend = HttpBackend::new(HttpConfig::new(server.url())).unwrap();
    let result = download_all(&backend).await;
    assert!(
        matches!(result, Err(Error::InvalidResponse(_))),
        "{result:?}"
    );
    // The stat says 10: the same chunked body is read whole.
    let server = chunked_server(Some("10")).await;
    let backend = HttpBackend::new(HttpConfig::new(server.url())).unwrap();
    assert_eq!(download_all(&backend).await.unwrap(), "0123456789");
}

#[tokio::test]
async fn a_chunked_body_without_any_size_is_refused() {
    let server = chunked_server(None).await;
    let backend = HttpBackend::new(HttpConfig::new(server.url())).unwrap();
    let result = download_all(&backend).await;
    assert!(result.is_err(), "a body of unknown length was read");
}
