//! Backends and routes load from TOML as the docs show it.

use kraken_backends::{BackendConfig, BackendsConfig, NameLayout, Router};

const CONFIG: &str = r#"
[[routes]]
namespace = "library/.*"
backend = { type = "registry", address = "https://registry.example.com", username = "kraken", password = "secret" }

[[routes]]
namespace = "hdfs/.*"
backend = { type = "webhdfs", namenodes = ["http://nn1:9870", "http://nn2:9870"], user = "kraken" }

[[routes]]
namespace = "gcs/.*"
backend = { type = "gcs", bucket = "kraken" }

[[routes]]
namespace = "azure/.*"
backend = { type = "azure", account = "krakenblobs", container = "blobs", access_key = "a2V5" }

[[routes]]
namespace = "web/.*"
backend = { type = "http", url = "http://127.0.0.1:1/blobs/", client = { read_timeout = "5s" } }

[[routes]]
namespace = ".*"
retry = { max_attempts = 5, initial_backoff = "50ms" }
throttle = { ingress_per_second = "1GiB", egress_per_second = "100MiB" }

[routes.backend]
type = "s3"
bucket = "kraken"
endpoint = "http://127.0.0.1:9000"
force_path_style = true
allow_http = true
access_key_id = "minio"
secret_access_key = "minio123"
root = "blobs"
layout = "docker_blob"
upload = { part_size = "16MiB", concurrency = 2 }
"#;

#[test]
fn the_documented_config_loads_and_builds() {
    let config: BackendsConfig = toml::from_str(CONFIG).expect("parse");
    assert_eq!(config.routes.len(), 6);
    assert_eq!(config.routes[5].retry.max_attempts, 5);
    match &config.routes[5].backend {
        BackendConfig::S3(s3) => {
            assert_eq!(s3.layout, NameLayout::DockerBlob);
            assert_eq!(s3.region, "us-east-1", "documented default");
            assert_eq!(s3.upload.concurrency, 2);
        }
        other => panic!("{other:?}"),
    }
    let router = Router::from_config(&config).expect("build");
    assert_eq!(router.metrics().len(), 6);
    assert!(router.backend_for("library/ubuntu").is_ok());
}

#[test]
fn unknown_fields_and_types_are_rejected() {
    let typo =
        "[[routes]]\nnamespace = '.*'\nbackend = { type = 'fs', root = '/x', layuot = 'identity' }";
    assert!(toml::from_str::<BackendsConfig>(typo).is_err());
    let unknown = "[[routes]]\nnamespace = '.*'\nbackend = { type = 'ftp' }";
    assert!(toml::from_str::<BackendsConfig>(unknown).is_err());
    let missing = "[[routes]]\nnamespace = '.*'\nbackend = { type = 's3' }";
    assert!(
        toml::from_str::<BackendsConfig>(missing).is_err(),
        "bucket is required"
    );
}

#[test]
fn a_config_error_names_the_problem() {
    let bad = "[[routes]]\nnamespace = '.*'\nbackend = { type = 'http', url = 'not a url' }";
    let config: BackendsConfig = toml::from_str(bad).unwrap();
    let error = Router::from_config(&config).unwrap_err();
    assert!(error.to_string().contains("not a url"), "{error}");
    let no_key = "[[routes]]\nnamespace = '.*'\n\
        backend = { type = 'gcs', bucket = 'b', service_account_path = '/nonexistent/key.json' }";
    let config: BackendsConfig = toml::from_str(no_key).unwrap();
    let error = Router::from_config(&config).unwrap_err();
    assert!(
        error.to_string().contains("/nonexistent/key.json"),
        "{error}"
    );
}

#[test]
fn cloud_backends_take_the_tls_settings_of_the_others() {
    for backend in [
        "{ type = 's3', bucket = 'b'",
        "{ type = 'gcs', bucket = 'b'",
        "{ type = 'azure', account = 'a', container = 'c', access_key = 'a2V5'",
    ] {
        let route =
            |tls: &str| format!("[[routes]]\nnamespace = '.*'\nbackend = {backend}, {tls} }}");
        let half: BackendsConfig =
            toml::from_str(&route("cert = '/etc/kraken/client.pem'")).unwrap();
        let error = Router::from_config(&half).unwrap_err();
        assert!(
            error.to_string().contains("needs both `cert` and `key`"),
            "{backend}: {error}"
        );
        let missing: BackendsConfig = toml::from_str(&route(
            "ca = '/nonexistent/ca.pem', cert = '/nonexistent/c.pem', key = '/nonexistent/c.key'",
        ))
        .unwrap();
        let error = Router::from_config(&missing).unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent/ca.pem"),
            "{backend}: {error}"
        );
    }
}
