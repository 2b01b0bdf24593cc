//! CNCF Distribution (Debian's `docker-registry`) on 127.0.0.1, with filesystem storage in a
//! temp dir: the stand-in for the devcluster's push and pull endpoints. It records every
//! request it served (its access log), so tests can check what a client sent.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use kraken_backends::testing::free_port;

use super::process::Daemon;

/// A running registry, stopped on drop (a [`Daemon`]: also when the test process is killed).
#[derive(Debug)]
pub struct Distribution {
    host: String,
    log: PathBuf,
    _server: Daemon,
    _dir: tempfile::TempDir,
}

/// One request from the access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub status: u16,
    pub user_agent: String,
}

impl Distribution {
    /// A registry accepting pushes. Needs `docker-registry` (gate with
    /// `support::require("docker-registry", "docker-registry")`).
    pub fn start() -> Result<Self> {
        Self::start_with(None)
    }

    /// A read-only pull-through cache of the registry at `remote` (`HOST:PORT`, plain HTTP):
    /// like a kraken agent, it serves what was pushed elsewhere.
    pub fn start_pull_through(remote: &str) -> Result<Self> {
        Self::start_with(Some(remote))
    }

    fn start_with(remote: Option<&str>) -> Result<Self> {
        let dir = super::scratch_dir("distribution");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let proxy = remote
            .map(|remote| format!("proxy:\n  remoteurl: http://{remote}\n"))
            .unwrap_or_default();
        let config = format!(
            "version: 0.1
log:
  level: warn
  formatter: text
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: {addr}
health:
  storagedriver:
    enabled: false
{proxy}",
            root = dir.path().join("data").display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config)?;
        let program =
            super::require("docker-registry", "docker-registry").context("docker-registry")?;
        let log = dir.path().join("log");
        let config_arg = config_path.to_str().context("path")?;
        let mut server = Daemon::spawn("docker-registry", &program, &["serve", config_arg], &log)?;
        server
            .wait_ready(|| TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok())?;
        Ok(Self {
            host: addr.to_string(),
            log,
            _server: server,
            _dir: dir,
        })
    }

    /// `127.0.0.1:PORT`, the registry part of an image reference.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Every request served so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines().filter_map(parse_access_line).collect()
    }
}

/// A line of the combined log format: `IP - - [date] "METHOD TARGET HTTP/1.1" STATUS SIZE
/// "REFERER" "USER-AGENT"`.
fn parse_access_line(line: &str) -> Option<Request> {
    let mut quoted = line.split('"').skip(1).step_by(2);
    let request = quoted.next()?;
    let mut parts = request.split(' ');
    let (method, target) = (parts.next()?, parts.next()?);
    let after = line.split('"').nth(2)?;
    let status = after.split_whitespace().next()?.parse().ok()?;
    let user_agent = quoted.nth(1).unwrap_or_default();
    Some(Request {
        method: method.to_owned(),
        target: target.to_owned(),
        status,
        user_agent: user_agent.to_owned(),
    })
}

/// Requests as `METHOD TARGET STATUS [CLIENT]` lines (the client: the first word of the
/// user agent), for messages and docs.
pub fn summary(requests: &[Request]) -> String {
    requests
        .iter()
        .map(|request| {
            let client = request
                .user_agent
                .split(['/', ' '])
                .next()
                .unwrap_or_default();
            format!(
                "{} {} {} [{client}]",
                request.method, request.target, request.status
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
