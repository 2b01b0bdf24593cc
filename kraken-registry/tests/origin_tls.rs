//! Origins serving TLS with client certificates required for writes: certified clients and
//! origins upload and replicate, anonymous clients read but cannot write, and nobody gets in
//! with a certificate from another CA.

mod support;

use std::time::Duration;

use kraken_backends::{BackendConfig, BackendsConfig, FsConfig, RouteConfig};
use kraken_core::{BlobStatus, Digest};
use kraken_registry::origin::{CommitKind, Origin, OriginClient};
use kraken_testkit::{ClientAuth, TestPki};
use kraken_testkit::{free_addr, pseudo_random_bytes};
use reqwest::StatusCode;
use support::{eventually, https_client, origin_config};

const NS: &str = "library/ubuntu";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_need_a_client_certificate_and_origins_replicate_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path().join("pki"));
    let addrs = [free_addr("127.0.0.1"), free_addr("127.0.0.2")];
    let mut origins = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let mut config = origin_config(*addr, &addrs, &dir.path().join(format!("origin{i}")));
        config.cluster.replicas = 2;
        // An origin refuses uploads it could never write back.
        config.backends = BackendsConfig::new(vec![RouteConfig::new(
            ".*",
            BackendConfig::Fs(FsConfig::new(dir.path().join("backend"))),
        )]);
        config.tls = Some(pki.server(ClientAuth::Writes));
        config.client_tls = Some(pki.client());
        origins.push(Origin::spawn(config).await.unwrap());
    }
    // Health checks go over TLS too: each origin must see both members.
    eventually(
        Duration::from_secs(10),
        "both origins healthy in each ring",
        || async { origins.iter().all(|o| o.ring().healthy().len() == 2) },
    )
    .await;

    let data = pseudo_random_bytes(1 << 20, 3);
    let digest = Digest::sha256_of(&data);
    let entry = origins[0].local_addr().to_string();

    let anonymous_tls = pki.anonymous_client().load().unwrap();
    let anonymous = OriginClient::with_tls(Some(&anonymous_tls)).unwrap();
    let refused = anonymous
        .upload_bytes(
            &entry,
            NS,
            &digest,
            data.clone().into(),
            CommitKind::Primary,
        )
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("403"), "{refused}");
    assert!(matches!(
        origins[0].store().status(&digest),
        BlobStatus::Absent
    ));

    let certified = OriginClient::with_tls(Some(&pki.client().load().unwrap())).unwrap();
    certified
        .upload_bytes(
            &entry,
            NS,
            &digest,
            data.clone().into(),
            CommitKind::Primary,
        )
        .await
        .unwrap();
    // The entry origin pushes the replica to the other one with its own client certificate.
    eventually(
        Duration::from_secs(10),
        "the replica reaches the second origin",
        || async {
            matches!(
                origins[1].store().status(&digest),
                BlobStatus::Cached { .. }
            )
        },
    )
    .await;

    // Reads are open to anyone who trusts the CA.
    let url = format!(
        "https://{}/namespace/library%2Fubuntu/blobs/{digest}",
        origins[1].local_addr()
    );
    let read = https_client(&anonymous_tls).get(&url).send().await.unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(read.bytes().await.unwrap(), data);
    // Plain HTTP gets nothing from a TLS listener.
    assert!(
        reqwest::get(url.replacen("https", "http", 1))
            .await
            .is_err()
    );
    // A certificate from a CA the origins do not trust fails the handshake, even for reads.
    let rogue = https_client(&pki.rogue_client().load().unwrap())
        .get(&url)
        .send()
        .await;
    assert!(rogue.is_err(), "{rogue:?}");

    for origin in origins {
        origin.shutdown().await;
    }
}

/// The origin's S3 backend reached over TLS with a private CA (`ca` in the S3 config): the
/// write-back lands in S3; without the CA the same endpoint is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_backend_over_tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let Some(moto) =
        kraken_testkit::MotoServer::start(support::BUCKET, &dir.path().join("moto.log")).await
    else {
        return;
    };
    let pki = TestPki::create(dir.path().join("pki"));
    let tls = pki.server(ClientAuth::None).load().unwrap();
    let front = kraken_testkit::ForwardingProxy::start_with(moto.endpoint(), Some(tls)).await;
    assert!(front.url().starts_with("https://"));

    let mut s3 = moto.s3_config(&front.url(), support::ROOT);
    let untrusting = kraken_backends::BackendConfig::S3(s3.clone())
        .build()
        .unwrap();
    let name = Digest::sha256_of(b"anything").to_string();
    let error = untrusting.stat("ns", &name).await.unwrap_err();
    let chain = kraken_core::error_chain(&error);
    assert!(
        chain.contains("certificate") || chain.contains("Certificate"),
        "{chain}"
    );

    s3.ca = Some(pki.path("ca.pem"));
    let addr = free_addr("127.0.0.1");
    let mut config = origin_config(addr, &[addr], &dir.path().join("origin"));
    config.backends =
        kraken_backends::BackendsConfig::new(vec![kraken_backends::RouteConfig::new(
            ".*",
            kraken_backends::BackendConfig::S3(s3),
        )]);
    let origin = Origin::spawn(config).await.unwrap();
    let data = pseudo_random_bytes(300_000, 9);
    let digest = Digest::sha256_of(&data);
    OriginClient::new()
        .unwrap()
        .upload_bytes(
            &addr.to_string(),
            NS,
            &digest,
            data.into(),
            CommitKind::Primary,
        )
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "the write-back reaches S3 over TLS",
        || async { origin.pending_write_backs() == 0 },
    )
    .await;
    assert!(
        front.count("PUT", &digest.hex()) >= 1,
        "the upload went through the TLS front"
    );
    origin.shutdown().await;
}

/// Roles in client certificates: an agent's certificate cannot upload, commit, push a
/// replica or force a cleanup (403); an origin's and an operator's can (a cleanup only the
/// operator's), and reads stay open to the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_certificate_cannot_write_to_an_origin() {
    use kraken_p2p::tls::Role;
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path().join("pki"));
    let addr = free_addr("127.0.0.1");
    let mut config = origin_config(addr, &[addr], &dir.path().join("origin"));
    config.tls = Some(pki.server(ClientAuth::Writes));
    config.client_tls = Some(pki.client_with_role(Role::Origin));
    // An origin refuses uploads it could never write back.
    config.backends = BackendsConfig::new(vec![RouteConfig::new(
        ".*",
        BackendConfig::Fs(FsConfig::new(dir.path().join("backend"))),
    )]);
    let origin = Origin::spawn(config).await.unwrap();
    let entry = origin.local_addr().to_string();
    let data = pseudo_random_bytes(64 << 10, 9);
    let digest = Digest::sha256_of(&data);
    let tls = |role: Role| pki.client_with_role(role).load().unwrap();

    let agent = OriginClient::with_tls(Some(&tls(Role::Agent))).unwrap();
    for kind in [CommitKind::Primary, CommitKind::Replica] {
        let refused = agent
            .upload_bytes(&entry, NS, &digest, data.clone().into(), kind)
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("403"), "{refused}");
    }
    let agent_http = https_client(&tls(Role::Agent));
    let commit = agent_http
        .put(format!(
            "https://{entry}/namespace/library%2Fubuntu/blobs/{digest}/uploads/some-id"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(commit.status(), StatusCode::FORBIDDEN);
    let cleanup = |client: reqwest::Client| {
        let url = format!("https://{entry}/forcecleanup?ttl_hr=1000");
        async move { client.post(url).send().await.unwrap().status() }
    };
    assert_eq!(cleanup(agent_http.clone()).await, StatusCode::FORBIDDEN);
    assert_eq!(
        cleanup(https_client(&tls(Role::Origin))).await,
        StatusCode::FORBIDDEN
    );
    assert!(matches!(origin.store().status(&digest), BlobStatus::Absent));

    OriginClient::with_tls(Some(&tls(Role::Origin)))
        .unwrap()
        .upload_bytes(
            &entry,
            NS,
            &digest,
            data.clone().into(),
            CommitKind::Replica,
        )
        .await
        .unwrap();
    OriginClient::with_tls(Some(&tls(Role::Operator)))
        .unwrap()
        .upload_bytes(
            &entry,
            NS,
            &digest,
            data.clone().into(),
            CommitKind::Primary,
        )
        .await
        .unwrap();
    assert_eq!(
        cleanup(https_client(&tls(Role::Operator))).await,
        StatusCode::OK
    );
    let read = agent_http
        .get(format!(
            "https://{entry}/namespace/library%2Fubuntu/blobs/{digest}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(read.bytes().await.unwrap(), data);
    origin.shutdown().await;
}
