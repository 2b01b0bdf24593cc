//! CNCF Distribution (`docker-registry`) for tests: filesystem storage under a directory the
//! test owns, a free loopback port, killed on drop.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use super::{ServerGuard, free_port, require_program};

/// A running `docker-registry`.
#[derive(Debug)]
pub struct DistributionServer {
    url: String,
    _server: ServerGuard,
}

impl DistributionServer {
    /// Starts one storing under `dir` (its config and log go there too), or returns `None`
    /// (the test skips) when `docker-registry` is not installed and `CI` is not `true` (then
    /// it panics with the install hint).
    pub fn start(dir: &Path) -> Option<Self> {
        let program = require_program("docker-registry", "apt-get install docker-registry")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = format!(
            "version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: {}
  delete:
    enabled: true
http:
  addr: {addr}
health:
  storagedriver:
    enabled: false
",
            dir.join("data").display()
        );
        let config_path = dir.join("config.yml");
        std::fs::write(&config_path, config).expect("write the registry config");
        let mut command = Command::new(program);
        command.arg("serve").arg(&config_path);
        let server = ServerGuard::start("docker-registry", command, addr, &dir.join("log"));
        Some(Self {
            url: format!("http://{addr}"),
            _server: server,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }
}
