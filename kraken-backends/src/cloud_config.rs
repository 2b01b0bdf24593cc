//! Configurations that build a [`CloudBackend`] for S3 (and S3-compatible servers such as
//! MinIO, Garage and Ceph RGW), Google Cloud Storage and Azure Blob Storage.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::{ClientOptions, RetryConfig as StoreRetryConfig};
use serde::{Deserialize, Serialize};

use crate::client::{ClientTls, install_crypto_provider};
use crate::cloud::{CloudBackend, MultipartConfig};
use crate::cloud_client::CloudConnector;
use crate::error::{Error, Result};
use crate::layout::NameLayout;

/// Retries `object_store` makes by itself for each HTTP request (one part of a multipart
/// upload, one page of a listing), before [`RetryBackend`](crate::RetryBackend) sees a
/// failure. Kept small: the decorator is where retries are configured.
const REQUEST_RETRIES: usize = 3;
/// How long `object_store` keeps retrying one request.
const REQUEST_RETRY_TIMEOUT: Duration = Duration::from_secs(30);

/// Configuration of an S3 or S3-compatible bucket.
///
/// ```toml
/// type = "s3"
/// bucket = "kraken-blobs"
/// region = "us-east-1"                 # default
/// endpoint = "http://minio.internal:9000"  # default: AWS
/// force_path_style = true              # default false; true for MinIO, Garage, Ceph
/// allow_http = true                    # default false
/// access_key_id = "..."                # default: AWS_* environment, instance metadata
/// secret_access_key = "..."
/// root = "kraken"                      # default: the bucket's top
/// layout = "docker_blob"               # default identity
/// ca = "/etc/kraken/tls/s3-ca.pem"      # optional: trust only this CA
/// cert = "/etc/kraken/tls/client.pem"   # optional: client certificate...
/// key = "/etc/kraken/tls/client.key"    # ...and its key
/// [upload]
/// part_size = "64MiB"
/// concurrency = 4
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Bucket name. Required.
    pub bucket: String,
    /// Region. Default: `us-east-1`.
    #[serde(default = "default_region")]
    pub region: String,
    /// Endpoint URL of an S3-compatible server. Default: AWS's endpoint for the region.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Address buckets as `endpoint/bucket` rather than `bucket.endpoint`. Default: false.
    #[serde(default)]
    pub force_path_style: bool,
    /// Allow `http://` endpoints. Default: false.
    #[serde(default)]
    pub allow_http: bool,
    /// Access key. Default: from the `AWS_*` environment or instance metadata.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// Secret key. Default: as `access_key_id`.
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// Session token for temporary credentials. Default: none.
    #[serde(default)]
    pub session_token: Option<String>,
    /// Key prefix of every blob. Default: empty.
    #[serde(default)]
    pub root: String,
    /// How names map to keys below the root. Default: `identity`.
    #[serde(default)]
    pub layout: NameLayout,
    /// CA certificates (PEM) that `https` endpoints must chain to; the system's roots are then
    /// not trusted (the CA is pinned), for every request of the backend, credential requests
    /// over HTTPS (STS) included. Default: none (the system's roots).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Client certificate chain (PEM) presented to endpoints that ask. Default: none.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// The key of `cert` (PEM). Required with `cert`.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Multipart uploads. Default: see [`MultipartConfig`].
    #[serde(default)]
    pub upload: MultipartConfig,
}

fn default_region() -> String {
    "us-east-1".to_owned()
}

impl S3Config {
    /// A bucket in `us-east-1` on AWS, with credentials from the environment.
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            region: default_region(),
            endpoint: None,
            force_path_style: false,
            allow_http: false,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            root: String::new(),
            layout: NameLayout::default(),
            upload: MultipartConfig::default(),
            ca: None,
            cert: None,
            key: None,
        }
    }

    /// Builds the backend; sends no request yet.
    pub fn build(&self) -> Result<CloudBackend> {
        install_crypto_provider();
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&self.bucket)
            .with_region(&self.region)
            .with_virtual_hosted_style_request(!self.force_path_style)
            .with_client_options(client_options(self.allow_http))
            .with_http_connector(connector(
                self.ca.as_deref(),
                self.cert.as_deref(),
                self.key.as_deref(),
            )?)
            .with_retry(store_retries());
        if let Some(endpoint) = &self.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(key) = &self.access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &self.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        if let Some(token) = &self.session_token {
            builder = builder.with_token(token);
        }
        let store = builder.build().map_err(|e| config_error("s3", e))?;
        CloudBackend::new(
            Arc::new(store),
            &self.root,
            self.layout,
            self.upload.clone(),
        )
    }
}

/// Configuration of a Google Cloud Storage bucket. Compiled and built, not tested against
/// GCS (no emulator runs here).
///
/// ```toml
/// type = "gcs"
/// bucket = "kraken-blobs"
/// service_account_path = "/etc/kraken/gcs.json"  # default: GOOGLE_* environment
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GcsConfig {
    /// Bucket name. Required.
    pub bucket: String,
    /// Path of a service account JSON key. Default: from `GOOGLE_*` environment variables
    /// or the metadata server.
    #[serde(default)]
    pub service_account_path: Option<String>,
    /// Key prefix of every blob. Default: empty.
    #[serde(default)]
    pub root: String,
    /// How names map to keys below the root. Default: `identity`.
    #[serde(default)]
    pub layout: NameLayout,
    /// CA certificates (PEM) that `https` endpoints must chain to; the system's roots are then
    /// not trusted (the CA is pinned), for every request of the backend, credential requests
    /// over HTTPS (the OAuth token endpoint) included. Default: none (the system's roots).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Client certificate chain (PEM) presented to endpoints that ask. Default: none.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// The key of `cert` (PEM). Required with `cert`.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Multipart uploads. Default: see [`MultipartConfig`].
    #[serde(default)]
    pub upload: MultipartConfig,
}

impl GcsConfig {
    /// Builds the backend; sends no request yet.
    pub fn build(&self) -> Result<CloudBackend> {
        install_crypto_provider();
        let mut builder = GoogleCloudStorageBuilder::from_env()
            .with_bucket_name(&self.bucket)
            .with_client_options(client_options(false))
            .with_http_connector(connector(
                self.ca.as_deref(),
                self.cert.as_deref(),
                self.key.as_deref(),
            )?)
            .with_retry(store_retries());
        if let Some(path) = &self.service_account_path {
            builder = builder.with_service_account_path(path);
        }
        let store = builder.build().map_err(|e| config_error("gcs", e))?;
        CloudBackend::new(
            Arc::new(store),
            &self.root,
            self.layout,
            self.upload.clone(),
        )
    }
}

/// Configuration of an Azure Blob Storage container. Compiled and built, not tested
/// against Azure or Azurite.
///
/// ```toml
/// type = "azure"
/// account = "krakenblobs"
/// container = "blobs"
/// access_key = "..."   # default: AZURE_* environment
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AzureConfig {
    /// Storage account. Required.
    pub account: String,
    /// Container. Required.
    pub container: String,
    /// Account access key. Default: from `AZURE_*` environment variables.
    #[serde(default)]
    pub access_key: Option<String>,
    /// Endpoint URL (Azurite, sovereign clouds). Default: the public cloud's.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Allow `http://` endpoints. Default: false.
    #[serde(default)]
    pub allow_http: bool,
    /// Key prefix of every blob. Default: empty.
    #[serde(default)]
    pub root: String,
    /// How names map to keys below the root. Default: `identity`.
    #[serde(default)]
    pub layout: NameLayout,
    /// CA certificates (PEM) that `https` endpoints must chain to; the system's roots are then
    /// not trusted (the CA is pinned), for every request of the backend, credential requests
    /// over HTTPS (the Entra ID token endpoint) included. Default: none (the system's roots).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Client certificate chain (PEM) presented to endpoints that ask. Default: none.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// The key of `cert` (PEM). Required with `cert`.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Block uploads. Default: see [`MultipartConfig`].
    #[serde(default)]
    pub upload: MultipartConfig,
}

impl AzureConfig {
    /// Builds the backend; sends no request yet.
    pub fn build(&self) -> Result<CloudBackend> {
        install_crypto_provider();
        let mut builder = MicrosoftAzureBuilder::from_env()
            .with_account(&self.account)
            .with_container_name(&self.container)
            .with_client_options(client_options(self.allow_http))
            .with_http_connector(connector(
                self.ca.as_deref(),
                self.cert.as_deref(),
                self.key.as_deref(),
            )?)
            .with_retry(store_retries());
        if let Some(key) = &self.access_key {
            builder = builder.with_access_key(key);
        }
        if let Some(endpoint) = &self.endpoint {
            builder = builder.with_endpoint(endpoint.clone());
        }
        let store = builder.build().map_err(|e| config_error("azure", e))?;
        CloudBackend::new(
            Arc::new(store),
            &self.root,
            self.layout,
            self.upload.clone(),
        )
    }
}

fn client_options(allow_http: bool) -> ClientOptions {
    // No overall request timeout: a large part or download may take long while it flows.
    ClientOptions::new()
        .with_allow_http(allow_http)
        .with_connect_timeout(Duration::from_secs(10))
        .with_timeout_disabled()
}

/// The connector that builds the store's HTTP clients with `ca`, `cert` and `key`, read now
/// so that a bad file is a configuration error of the backend.
fn connector(ca: Option<&Path>, cert: Option<&Path>, key: Option<&Path>) -> Result<CloudConnector> {
    Ok(CloudConnector::new(ClientTls::load(ca, cert, key)?))
}

fn store_retries() -> StoreRetryConfig {
    StoreRetryConfig {
        max_retries: REQUEST_RETRIES,
        retry_timeout: REQUEST_RETRY_TIMEOUT,
        ..StoreRetryConfig::default()
    }
}

fn config_error(kind: &str, error: object_store::Error) -> Error {
    Error::Config(format!("{kind} backend: {error}"))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use kraken_testkit::TestPki;

    use super::*;

    /// Builds the `kind` backend with these TLS files (and dummy credentials).
    fn build(
        kind: &str,
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<CloudBackend> {
        let (ca, cert, key) = (
            ca.map(Path::to_owned),
            cert.map(Path::to_owned),
            key.map(Path::to_owned),
        );
        match kind {
            "s3" => {
                let mut config = S3Config::new("bucket");
                config.access_key_id = Some("test".into());
                config.secret_access_key = Some("test".into());
                (config.ca, config.cert, config.key) = (ca, cert, key);
                config.build()
            }
            "gcs" => {
                let mut config: GcsConfig = serde_json::from_str(r#"{"bucket": "b"}"#).unwrap();
                (config.ca, config.cert, config.key) = (ca, cert, key);
                config.build()
            }
            "azure" => {
                let mut config: AzureConfig = serde_json::from_str(
                    r#"{"account": "a", "container": "c", "access_key": "a2V5"}"#,
                )
                .unwrap();
                (config.ca, config.cert, config.key) = (ca, cert, key);
                config.build()
            }
            other => unreachable!("{other}"),
        }
    }

    const KINDS: [&str; 3] = ["s3", "gcs", "azure"];

    /// `ca`, `cert` and `key`.
    type TlsFiles<'a> = (Option<&'a Path>, Option<&'a Path>, Option<&'a Path>);

    #[test]
    fn a_pinned_ca_and_a_client_certificate_build_every_cloud_backend() {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::create(dir.path());
        let (ca, cert, key) = (
            pki.path("ca.pem"),
            pki.path("client.pem"),
            pki.path("client.key"),
        );
        for kind in KINDS {
            build(kind, Some(&ca), Some(&cert), Some(&key))
                .unwrap_or_else(|e| panic!("{kind}: {e}"));
            build(kind, None, Some(&cert), Some(&key)).unwrap_or_else(|e| panic!("{kind}: {e}"));
            build(kind, Some(&ca), None, None).unwrap_or_else(|e| panic!("{kind}: {e}"));
        }
    }

    #[test]
    fn tls_file_problems_are_config_errors_that_name_them() {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::create(dir.path().join("pki"));
        let (ca, cert, key) = (
            pki.path("ca.pem"),
            pki.path("client.pem"),
            pki.path("client.key"),
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
        let missing = dir.path().join("missing.pem");
        let both = "a client certificate needs both `cert` and `key`".to_owned();
        let cases: [(&str, TlsFiles<'_>, String); 6] = [
            ("cert without key", (None, Some(&cert), None), both.clone()),
            ("key without cert", (Some(&ca), None, Some(&key)), both),
            (
                "missing CA file",
                (Some(&missing), None, None),
                format!("TLS file {}", missing.display()),
            ),
            (
                "empty CA file",
                (Some(&empty), None, None),
                format!("CA file {}: no PEM certificate in it", empty.display()),
            ),
            (
                "missing key file",
                (None, Some(&cert), Some(&missing)),
                format!("TLS file {}", missing.display()),
            ),
            (
                "a key that is not one",
                (None, Some(&cert), Some(&garbage)),
                format!("client certificate {}", cert.display()),
            ),
        ];
        for kind in KINDS {
            for (case, (ca, cert, key), expected) in &cases {
                let error = build(kind, *ca, *cert, *key).unwrap_err();
                assert!(
                    matches!(error, Error::Config(_)),
                    "{kind}, {case}: {error:?}"
                );
                assert!(
                    error.to_string().contains(expected.as_str()),
                    "{kind}, {case}: {error}"
                );
            }
        }
    }
}
