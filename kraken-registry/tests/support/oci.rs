//! The OCI API tests' registry: a `LocalRegistry` served on loopback, and helpers to push to
//! it and read its answers. Manifests and images come from `kraken_testkit::oci`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kraken_core::Digest;
use kraken_registry::oci::{LocalRegistry, OciConfig, OciHandler, OciServer, RegistryStorage};
use kraken_testkit::oci::image_manifest;
use reqwest::{Method, Response, StatusCode};

/// A registry on loopback over a fresh directory.
pub struct Registry {
    pub server: Option<OciServer>,
    pub root: PathBuf,
    pub uploads: PathBuf,
    pub base: String,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut OciConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalRegistry::open(dir.path().join("registry")).unwrap();
        Self::start_storage(dir, Arc::new(storage), configure).await
    }

    pub async fn start_storage(
        dir: tempfile::TempDir,
        storage: Arc<dyn RegistryStorage>,
        configure: impl FnOnce(&mut OciConfig),
    ) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        kraken_backends::install_crypto_provider();
        let uploads = dir.path().join("uploads");
        let mut config = OciConfig::new(&uploads);
        configure(&mut config);
        let handler = OciHandler::new(storage, config).unwrap();
        let server = OciServer::bind("127.0.0.1:0".parse().unwrap(), handler)
            .await
            .unwrap();
        let base = format!("http://{}", server.local_addr());
        Self {
            server: Some(server),
            root: dir.path().join("registry"),
            uploads,
            base,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    /// A client of a registry served elsewhere (at `base`, `http://host:port`), for tests
    /// of other storages; `dir` is kept for as long as the client.
    pub fn remote(base: String, dir: tempfile::TempDir) -> Self {
        Self {
            server: None,
            root: dir.path().join("registry"),
            uploads: dir.path().join("uploads"),
            base,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        }
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path))
    }

    /// Pushes a blob with a single-request upload.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> Digest {
        let digest = Digest::sha256_of(data);
        let response = self
            .request(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
            )
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        digest
    }

    /// Pushes a manifest; returns the response.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Response {
        self.request(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .header("content-type", media_type)
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// Every file under the registry's root, for "nothing was stored" checks.
    pub fn snapshot(&self) -> Vec<String> {
        let mut files = Vec::new();
        walk(&self.root, &self.root, &mut files);
        files.retain(|f| !f.starts_with("tmp/"));
        files.sort();
        files
    }

    /// Files in the upload directory.
    pub fn upload_files(&self) -> usize {
        std::fs::read_dir(&self.uploads).unwrap().count()
    }

    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(root, &path, out);
        } else {
            out.push(path.strip_prefix(root).unwrap().display().to_string());
        }
    }
}

/// The status and the first error code of an error response.
pub async fn error_of(response: Response) -> (StatusCode, String) {
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let code = body["errors"][0]["code"].as_str().unwrap_or("").to_owned();
    (status, code)
}

pub fn header(response: &Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// GETs blob `digest` of `repo` from the registry at `base` and checks the answer: `200`,
/// the `docker-content-digest` header, and content that hashes to `digest` and is `data`.
pub async fn get_blob_and_check(
    client: &reqwest::Client,
    base: &str,
    repo: &str,
    digest: &str,
    data: &[u8],
) {
    let response = client
        .get(format!("{base}/v2/{repo}/blobs/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "GET {digest}");
    assert_eq!(header(&response, "docker-content-digest"), *digest);
    let bytes = response.bytes().await.unwrap();
    assert_eq!(Digest::sha256_of(&bytes).to_string(), *digest);
    assert_eq!(bytes, *data, "{digest}");
}

/// Pushes a config and two layers and returns an image manifest over them.
pub async fn push_image(registry: &Registry, repo: &str, seed: &str) -> Vec<u8> {
    let config = format!("{{\"seed\":\"{seed}\"}}");
    let (l1, l2) = (format!("layer one {seed}"), format!("layer two {seed}"));
    let c = registry.push_blob(repo, config.as_bytes()).await;
    let a = registry.push_blob(repo, l1.as_bytes()).await;
    let b = registry.push_blob(repo, l2.as_bytes()).await;
    image_manifest((c, config.len()), &[(a, l1.len()), (b, l2.len())])
}

/// `Response::json` without reqwest's `json` feature.
pub trait JsonBody {
    fn json(self) -> impl std::future::Future<Output = Result<serde_json::Value, String>>;
}

impl JsonBody for Response {
    async fn json(self) -> Result<serde_json::Value, String> {
        let bytes = self.bytes().await.map_err(|e| e.to_string())?;
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    }
}
