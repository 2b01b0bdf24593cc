//! A moto S3 server (`moto_server`, PyPI `moto[server]`) with one empty bucket.

use std::net::SocketAddr;
use std::path::Path;

use kraken_backends::S3Config;

use crate::{ProcessGuard, free_port, require_program};

/// A running `moto_server` on 127.0.0.1 with one empty bucket; stopped on drop. Its data
/// lives in memory.
#[derive(Debug)]
pub struct MotoServer {
    endpoint: String,
    bucket: String,
    _server: ProcessGuard,
}

impl MotoServer {
    /// Starts `moto_server`, logging to `log`, and creates `bucket`. `None` when the program
    /// is missing outside CI (see [`require_program`]).
    pub async fn start(bucket: &str, log: &Path) -> Option<Self> {
        let program = require_program("moto_server", "pip install 'moto[server]'")?;
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut server = ProcessGuard::spawn(
            "moto_server",
            program,
            ["-H", "127.0.0.1", "-p", &port.to_string()],
            log,
        )
        .expect("start moto_server");
        server.wait_listening(addr).expect("moto_server listens");
        let endpoint = format!("http://{addr}");
        // moto accepts unsigned requests: a plain PUT creates the bucket.
        kraken_backends::install_crypto_provider();
        let created = reqwest::Client::new()
            .put(format!("{endpoint}/{bucket}"))
            .send()
            .await
            .expect("create bucket");
        assert!(
            created.status().is_success(),
            "create bucket: {}",
            created.status()
        );
        Some(Self {
            endpoint,
            bucket: bucket.to_owned(),
            _server: server,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// An S3 config for the bucket at `endpoint` (this server's, or a proxy's in front of
    /// it), with moto's dummy credentials and objects under `root`.
    pub fn s3_config(&self, endpoint: &str, root: &str) -> S3Config {
        let mut config = S3Config::new(&self.bucket);
        config.endpoint = Some(endpoint.to_owned());
        config.force_path_style = true;
        config.allow_http = true;
        config.access_key_id = Some("test".into());
        config.secret_access_key = Some("test".into());
        config.root = root.into();
        config
    }
}
