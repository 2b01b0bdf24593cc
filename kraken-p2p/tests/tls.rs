//! The tracker over TLS: the listener, client certificates for writes, and CA pinning.

use std::sync::Arc;

use kraken_core::MetaInfo;
use kraken_p2p::Error;
use kraken_p2p::http_server::ServeConfig;
use kraken_p2p::tls::{ClientAuth, ClientTlsConfig};
use kraken_p2p::tracker::api::AnnounceRequest;
use kraken_p2p::tracker::{Tracker, TrackerClient, TrackerConfig, TrackerServer, TrackerService};
use kraken_testkit::TestPki;

async fn tls_tracker(pki: &TestPki, auth: ClientAuth) -> TrackerServer {
    let service = Arc::new(TrackerService::new(TrackerConfig::default()));
    let tls = pki.server(auth).load().unwrap();
    TrackerServer::bind_with(
        "127.0.0.1:0".parse().unwrap(),
        service,
        ServeConfig::new("tracker").tls(Some(tls)),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn writes_need_a_client_certificate_and_reads_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path());
    let server = tls_tracker(&pki, ClientAuth::Writes).await;
    let url = format!("https://127.0.0.1:{}", server.local_addr().port());
    let meta = MetaInfo::from_bytes(b"over TLS", 4096).unwrap();

    let anonymous = TrackerClient::with_tls(&url, &pki.anonymous_client().load().unwrap()).unwrap();
    let refused = anonymous.publish_metainfo("ns", &meta).await.unwrap_err();
    assert!(
        matches!(&refused, Error::Tracker { status: 403, message } if message.contains("client certificate")),
        "{refused:?}"
    );
    assert!(
        anonymous
            .metainfo("ns", meta.digest())
            .await
            .unwrap()
            .is_none()
    );

    let certified = TrackerClient::with_tls(&url, &pki.client().load().unwrap()).unwrap();
    certified.publish_metainfo("ns", &meta).await.unwrap();
    let read = anonymous.metainfo("ns", meta.digest()).await.unwrap();
    assert_eq!(read.unwrap().info_hash(), meta.info_hash());

    // A certificate from a CA the tracker does not trust fails the handshake.
    let rogue = TrackerClient::with_tls(&url, &pki.rogue_client().load().unwrap()).unwrap();
    let error = rogue.metainfo("ns", meta.digest()).await.unwrap_err();
    assert!(
        matches!(error, Error::TrackerUnreachable { .. }),
        "{error:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn all_refuses_anonymous_clients_at_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path());
    let server = tls_tracker(&pki, ClientAuth::All).await;
    let url = format!("https://127.0.0.1:{}", server.local_addr().port());
    let digest = kraken_core::Digest::sha256_of(b"x");
    let anonymous = TrackerClient::with_tls(&url, &pki.anonymous_client().load().unwrap()).unwrap();
    let error = anonymous.metainfo("ns", &digest).await.unwrap_err();
    assert!(
        matches!(error, Error::TrackerUnreachable { .. }),
        "{error:?}"
    );
    let certified = TrackerClient::with_tls(&url, &pki.client().load().unwrap()).unwrap();
    assert!(certified.metainfo("ns", &digest).await.unwrap().is_none());
    server.shutdown().await;
}

#[tokio::test]
async fn clients_trust_only_the_pinned_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path().join("cluster"));
    let other = TestPki::create(dir.path().join("other"));
    let server = tls_tracker(&pki, ClientAuth::None).await;
    let port = server.local_addr().port();
    let digest = kraken_core::Digest::sha256_of(b"x");

    let pinned_elsewhere = TrackerClient::with_tls(
        &format!("https://127.0.0.1:{port}"),
        &other.anonymous_client().load().unwrap(),
    )
    .unwrap();
    let error = pinned_elsewhere.metainfo("ns", &digest).await.unwrap_err();
    assert!(
        matches!(&error, Error::TrackerUnreachable { reason, .. } if reason.contains("certificate")),
        "{error:?}"
    );
    // Plain HTTP to a TLS listener gets no answer.
    let plain = TrackerClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
    assert!(plain.metainfo("ns", &digest).await.is_err());
    // An https URL without a TLS configuration is a configuration error, not a silent
    // downgrade.
    let error = TrackerClient::new(&format!("https://127.0.0.1:{port}")).unwrap_err();
    assert!(matches!(error, Error::Config(_)), "{error:?}");
    server.shutdown().await;
}

#[test]
fn unreadable_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path());
    std::fs::write(pki.path("server.key"), "not a key").unwrap();
    let error = pki.server(ClientAuth::None).load().unwrap_err();
    assert_eq!(error.path(), pki.path("server.key"));
    let missing = ClientTlsConfig::new(dir.path().join("missing.pem"))
        .load()
        .unwrap_err();
    assert!(missing.to_string().contains("missing.pem"), "{missing}");
    let empty_ca = dir.path().join("empty.pem");
    std::fs::write(&empty_ca, "").unwrap();
    let error = ClientTlsConfig::new(&empty_ca).load().unwrap_err();
    assert!(error.to_string().contains("no PEM certificate"), "{error}");
}

/// Roles named in client certificates: an agent announces but cannot publish metainfo (only
/// origins own it); a certificate without a role is an operator unless roles are required.
#[tokio::test]
async fn a_certificate_role_decides_which_writes_it_may_make() {
    use kraken_p2p::tls::Role;
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path());
    let server = tls_tracker(&pki, ClientAuth::Writes).await;
    let url = format!("https://127.0.0.1:{}", server.local_addr().port());
    let meta = MetaInfo::from_bytes(b"roles", 4096).unwrap();
    let client =
        |tls: ClientTlsConfig| TrackerClient::with_tls(&url, &tls.load().unwrap()).unwrap();

    let agent = client(pki.client_with_role(Role::Agent));
    let refused = agent.publish_metainfo("ns", &meta).await.unwrap_err();
    assert!(
        matches!(&refused, Error::Tracker { status: 403, message } if message.contains("role agent")),
        "{refused:?}"
    );
    let peer = kraken_core::PeerInfo::new(
        kraken_core::PeerId::from_bytes([7; 20]),
        "127.0.0.1:16001".parse().unwrap(),
        false,
        false,
    );
    let announce = AnnounceRequest::new(*meta.digest(), "ns".into(), peer);
    agent.announce(meta.info_hash(), announce).await.unwrap();
    client(pki.client_with_role(Role::Origin))
        .publish_metainfo("ns", &meta)
        .await
        .unwrap();
    // No role: an operator, as every certificate was before roles.
    client(pki.client())
        .publish_metainfo("ns", &meta)
        .await
        .unwrap();
    server.shutdown().await;

    let service = Arc::new(TrackerService::new(TrackerConfig::default()));
    let tls = pki
        .server(ClientAuth::Writes)
        .require_roles(true)
        .load()
        .unwrap();
    let strict = TrackerServer::bind_with(
        "127.0.0.1:0".parse().unwrap(),
        service,
        ServeConfig::new("tracker").tls(Some(tls)),
    )
    .await
    .unwrap();
    let url = format!("https://127.0.0.1:{}", strict.local_addr().port());
    let unnamed = TrackerClient::with_tls(&url, &pki.client().load().unwrap()).unwrap();
    let refused = unnamed.publish_metainfo("ns", &meta).await.unwrap_err();
    assert!(
        matches!(&refused, Error::Tracker { status: 403, message } if message.contains("without a usable role")),
        "{refused:?}"
    );
    let operator =
        TrackerClient::with_tls(&url, &pki.client_with_role(Role::Operator).load().unwrap())
            .unwrap();
    operator.publish_metainfo("ns", &meta).await.unwrap();
    strict.shutdown().await;
}
