//! The HTTP backend against a server that demands client certificates: a pinned CA and a
//! client certificate get through; without the certificate, or trusting another CA, it fails.

use bytes::Bytes;
use http_body_util::Full;
use hyper::http::{Method, Response, StatusCode};
use kraken_backends::{Backend, HttpBackend, HttpConfig};
use kraken_testkit::{ClientAuth, TestPki, TestServer};

const NAME: &str = "sha256:999cf22668b590c7276105ed624a841306a57d7cb8f846522b88154fed0b5efe";

/// A TLS server that answers `HEAD` of any path with a 5-byte blob.
async fn tls_server(pki: &TestPki) -> TestServer {
    let tls = pki.server(ClientAuth::All).load().unwrap();
    let handler = |request: hyper::Request<kraken_testkit::RequestBody>| async move {
        let mut response = Response::new(Full::new(Bytes::new()));
        if request.method() == Method::HEAD {
            response
                .headers_mut()
                .insert("content-length", hyper::http::HeaderValue::from_static("5"));
        } else {
            *response.status_mut() = StatusCode::NOT_FOUND;
        }
        response
    };
    TestServer::start_with(Some(tls), handler).await
}

fn backend(url: &str, ca: &std::path::Path, identity: Option<(&TestPki, &str)>) -> HttpBackend {
    let mut config = HttpConfig::new(url);
    config.client.ca = Some(ca.to_owned());
    if let Some((pki, name)) = identity {
        config.client.cert = Some(pki.path(&format!("{name}.pem")));
        config.client.key = Some(pki.path(&format!("{name}.key")));
    }
    HttpBackend::new(config).unwrap()
}

#[tokio::test]
async fn pinned_ca_and_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path().join("cluster"));
    let other = TestPki::create(dir.path().join("other"));
    let server = tls_server(&pki).await;
    let url = format!("{}/", server.url());

    let certified = backend(&url, &pki.path("ca.pem"), Some((&pki, "client")));
    assert_eq!(certified.stat("ns", NAME).await.unwrap().size, 5);
    certified.check_ready().await.unwrap();

    let anonymous = backend(&url, &pki.path("ca.pem"), None);
    let error = anonymous.stat("ns", NAME).await.unwrap_err();
    assert!(!error.is_not_found(), "{error:?}");

    let pinned_elsewhere = backend(&url, &other.path("ca.pem"), Some((&pki, "client")));
    assert!(pinned_elsewhere.stat("ns", NAME).await.is_err());

    let mut half = HttpConfig::new(&url);
    half.client.cert = Some(pki.path("client.pem"));
    assert!(
        HttpBackend::new(half).is_err(),
        "a certificate without its key"
    );
    drop(server);
}
