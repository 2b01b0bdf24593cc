//! The S3, GCS and Azure backends over TLS with a private CA, as `http_tls.rs` does for the
//! HTTP backend: `ca` pins the CA (the system's roots are not trusted) and `cert` + `key`
//! present a client certificate to a server that demands one.

use std::path::Path;
use std::process::Command;

use kraken_backends::{
    AzureConfig, Backend, CloudBackend, GcsConfig, HttpBackend, HttpConfig, S3Config,
};
use kraken_testkit::MotoServer;
use kraken_testkit::backend as conformance;
use kraken_testkit::{ClientAuth, ForwardingProxy, ServerTlsConfig, TestPki};

const BUCKET: &str = "kraken-test";
const NAME: &str = "sha256:999cf22668b590c7276105ed624a841306a57d7cb8f846522b88154fed0b5efe";

/// TLS settings of a backend under test: the CA it pins, and the PKI whose `NAME.pem` and
/// `NAME.key` it presents, if any.
#[derive(Clone, Copy)]
struct Tls<'a> {
    ca: Option<&'a Path>,
    identity: Option<(&'a TestPki, &'a str)>,
}

impl Tls<'_> {
    fn cert(&self) -> Option<std::path::PathBuf> {
        self.identity
            .map(|(pki, name)| pki.path(&format!("{name}.pem")))
    }

    fn key(&self) -> Option<std::path::PathBuf> {
        self.identity
            .map(|(pki, name)| pki.path(&format!("{name}.key")))
    }
}

fn s3(endpoint: &str, tls: Tls<'_>) -> S3Config {
    let mut config = S3Config::new(BUCKET);
    config.endpoint = Some(endpoint.to_owned());
    config.force_path_style = true;
    config.access_key_id = Some("test".into());
    config.secret_access_key = Some("test".into());
    config.root = "kraken/blobs".into();
    config.ca = tls.ca.map(Path::to_owned);
    config.cert = tls.cert();
    config.key = tls.key();
    config
}

/// GCS at `endpoint`, as fake GCS servers are reached: a service account file that names the
/// base URL and turns OAuth off (no token request, only requests to the endpoint).
fn gcs(endpoint: &str, dir: &Path, tls: Tls<'_>) -> GcsConfig {
    let account = dir.join("gcs-account.json");
    let key = serde_json::json!({
        "private_key": "",
        "private_key_id": "",
        "client_email": "",
        "gcs_base_url": endpoint,
        "disable_oauth": true,
    });
    std::fs::write(&account, key.to_string()).unwrap();
    let mut config: GcsConfig = toml::from_str(&format!(
        "bucket = {BUCKET:?}\nservice_account_path = {:?}",
        account.display().to_string()
    ))
    .unwrap();
    config.ca = tls.ca.map(Path::to_owned);
    config.cert = tls.cert();
    config.key = tls.key();
    config
}

fn azure(endpoint: &str, tls: Tls<'_>) -> AzureConfig {
    let mut config: AzureConfig = toml::from_str(&format!(
        "account = 'krakenblobs'\ncontainer = 'blobs'\naccess_key = 'a2V5'\nendpoint = {:?}",
        format!("{endpoint}/krakenblobs")
    ))
    .unwrap();
    config.ca = tls.ca.map(Path::to_owned);
    config.cert = tls.cert();
    config.key = tls.key();
    config
}

/// The three cloud backends, built against `endpoint` with `tls`.
fn cloud_backends(endpoint: &str, dir: &Path, tls: Tls<'_>) -> Vec<(&'static str, CloudBackend)> {
    vec![
        ("s3", s3(endpoint, tls).build().expect("s3")),
        ("gcs", gcs(endpoint, dir, tls).build().expect("gcs")),
        ("azure", azure(endpoint, tls).build().expect("azure")),
    ]
}

/// S3 through a TLS front that demands client certificates, with moto behind it: with the
/// pinned CA and the client certificate a blob goes up and comes back; without the
/// certificate, with one from another CA, or pinning another CA, nothing gets through.
#[tokio::test]
async fn s3_round_trip_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let Some(moto) = MotoServer::start(BUCKET, &dir.path().join("moto.log")).await else {
        return;
    };
    let pki = TestPki::create(dir.path().join("cluster"));
    let other = TestPki::create(dir.path().join("other"));
    let front = ForwardingProxy::start_with(
        moto.endpoint(),
        Some(pki.server(ClientAuth::All).load().unwrap()),
    )
    .await;
    let ca = pki.path("ca.pem");

    let certified = s3(
        &front.url(),
        Tls {
            ca: Some(&ca),
            identity: Some((&pki, "client")),
        },
    )
    .build()
    .unwrap();
    conformance::round_trip(&certified).await;
    conformance::missing_blobs_are_not_found(&certified).await;
    let through = front.requests();
    assert!(through > 0);

    let refused = [
        (
            "no client certificate",
            Tls {
                ca: Some(&ca),
                identity: None,
            },
        ),
        (
            "a certificate from another CA",
            Tls {
                ca: Some(&ca),
                identity: Some((&pki, "rogue")),
            },
        ),
        (
            "another CA pinned",
            Tls {
                ca: Some(&other.path("ca.pem")),
                identity: Some((&pki, "client")),
            },
        ),
    ];
    for (case, tls) in refused {
        let backend = s3(&front.url(), tls).build().unwrap();
        let stat = backend.stat("ns", "round-trip/hello").await;
        assert!(
            matches!(&stat, Err(e) if !e.is_not_found()),
            "{case}: {stat:?}"
        );
        let upload = backend
            .upload(
                "ns",
                "refused",
                kraken_backends::UploadBody::from_bytes("nope"),
            )
            .await;
        assert!(upload.is_err(), "{case}: {upload:?}");
    }
    assert_eq!(
        front.requests(),
        through,
        "no request got past the handshake"
    );
    assert!(
        certified
            .stat("ns", "refused")
            .await
            .unwrap_err()
            .is_not_found(),
        "nothing was stored"
    );
}

/// S3, GCS and Azure against a server that demands client certificates: with the pinned CA
/// and the certificate the request reaches the server (which answers "not found"); without
/// the certificate, or pinning another CA, the handshake fails.
#[tokio::test]
async fn every_cloud_backend_pins_its_ca_and_presents_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path().join("cluster"));
    let other = TestPki::create(dir.path().join("other"));
    let server = ForwardingProxy::not_found(pki.server(ClientAuth::All).load().unwrap()).await;
    let ca = pki.path("ca.pem");

    let certified = Tls {
        ca: Some(&ca),
        identity: Some((&pki, "client")),
    };
    for (kind, backend) in cloud_backends(&server.url(), dir.path(), certified) {
        let before = server.requests();
        let error = backend.stat("ns", NAME).await.unwrap_err();
        assert!(error.is_not_found(), "{kind}: {error:?}");
        assert!(server.requests() > before, "{kind} reached the server");
    }

    let anonymous = Tls {
        ca: Some(&ca),
        identity: None,
    };
    let other_ca = other.path("ca.pem");
    let pinned_elsewhere = Tls {
        ca: Some(&other_ca),
        identity: Some((&pki, "client")),
    };
    let before = server.requests();
    for tls in [anonymous, pinned_elsewhere] {
        for (kind, backend) in cloud_backends(&server.url(), dir.path(), tls) {
            let error = backend.stat("ns", NAME).await.unwrap_err();
            assert!(!error.is_not_found(), "{kind}: {error:?}");
        }
    }
    assert_eq!(
        server.requests(),
        before,
        "no request got past the handshake"
    );
}

/// Set in the child process of [`a_pinned_ca_replaces_the_system_roots`]: the directory of
/// its PKIs.
const CHILD_PKI_DIR: &str = "KRAKEN_TEST_SYSTEM_ROOTS_PKI";

/// `ca` pins: a server whose CA is among the system's roots is refused by a backend that
/// pins another CA. The system's roots are made of the test CA by running this test again in
/// a child process with `SSL_CERT_FILE` pointing at it (the environment of this process
/// cannot be changed safely), where the checks run: without `ca` every backend trusts the
/// server (so the test CA really is a system root there); pinning another CA, none does.
#[test]
fn a_pinned_ca_replaces_the_system_roots() {
    if let Some(dir) = std::env::var_os(CHILD_PKI_DIR) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(system_roots_checks(Path::new(&dir)));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let system = TestPki::create(dir.path().join("system"));
    TestPki::create(dir.path().join("other"));
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_pinned_ca_replaces_the_system_roots",
            "--nocapture",
        ])
        .env(CHILD_PKI_DIR, dir.path())
        .env("SSL_CERT_FILE", system.path("ca.pem"))
        .env_remove("SSL_CERT_DIR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("1 passed"),
        "the child ran the test:\n{stdout}\n{stderr}"
    );
}

async fn system_roots_checks(dir: &Path) {
    let system = dir.join("system");
    let tls = ServerTlsConfig::new(system.join("server.pem"), system.join("server.key"))
        .load()
        .unwrap();
    let server = ForwardingProxy::not_found(tls).await;
    let other_ca = dir.join("other").join("ca.pem");
    let http = |ca: Option<&Path>| {
        let mut config = HttpConfig::new(format!("{}/", server.url()));
        config.client.ca = ca.map(Path::to_owned);
        HttpBackend::new(config).unwrap()
    };

    let system_roots = Tls {
        ca: None,
        identity: None,
    };
    for (kind, backend) in cloud_backends(&server.url(), dir, system_roots) {
        let error = backend.stat("ns", NAME).await.unwrap_err();
        assert!(
            error.is_not_found(),
            "{kind} trusts the system's roots: {error:?}"
        );
    }
    let error = http(None).stat("ns", NAME).await.unwrap_err();
    assert!(
        error.is_not_found(),
        "http trusts the system's roots: {error:?}"
    );

    let pinned_elsewhere = Tls {
        ca: Some(&other_ca),
        identity: None,
    };
    let before = server.requests();
    for (kind, backend) in cloud_backends(&server.url(), dir, pinned_elsewhere) {
        let error = backend.stat("ns", NAME).await.unwrap_err();
        assert!(!error.is_not_found(), "{kind} pins its CA: {error:?}");
    }
    let error = http(Some(&other_ca)).stat("ns", NAME).await.unwrap_err();
    assert!(!error.is_not_found(), "http pins its CA: {error:?}");
    assert_eq!(
        server.requests(),
        before,
        "no request got past the handshake"
    );
}
