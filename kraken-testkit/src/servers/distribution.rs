//! CNCF Distribution (Debian's `docker-registry`) on 127.0.0.1, with filesystem storage in a
//! scratch directory: the upstream registry of the registry backend's and the agent's tests,
//! and the stand-in for the devcluster's push and pull endpoints in the client tests. It
//! records every request it served (its access log), so tests can check what a client sent.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::{ProcessGuard, free_port, require_package, scratch_dir};

/// A running registry, stopped on drop (a [`ProcessGuard`]: also when the test process is
/// killed).
///
/// The one launcher of CNCF Distribution: it merged the backends' (storage under a directory
/// the test gives, `None` when the program is missing) and the client tests' (its own scratch
/// directory, pull-through caches, the access log) into the second, plus
/// [`start_if_installed`](Self::start_if_installed) for the first's skipping.
#[derive(Debug)]
pub struct Distribution {
    host: String,
    log: PathBuf,
    _server: ProcessGuard,
    _dir: tempfile::TempDir,
}

/// One request from the access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `PUT`, …
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// The status answered.
    pub status: u16,
    /// The client's `User-Agent`.
    pub user_agent: String,
}

impl Distribution {
    /// A registry accepting pushes. Needs `docker-registry` (gate with
    /// `require_package("docker-registry", "docker-registry")`).
    pub fn start() -> Result<Self> {
        Self::start_with(String::new())
    }

    /// A registry accepting pushes that sends its notifications (the event envelope, one
    /// event per request, retried every second while the endpoint fails) to `url`.
    pub fn start_notifying(url: &str) -> Result<Self> {
        Self::start_with(format!(
            "notifications:
  endpoints:
    - name: kraken
      url: {url}
      timeout: 5s
      threshold: 1
      backoff: 1s
"
        ))
    }

    /// [`start`](Self::start), or `None` (the test skips) when `docker-registry` is not
    /// installed and `CI` is not `true` (then it panics with the install hint).
    pub fn start_if_installed() -> Option<Self> {
        require_package("docker-registry", "docker-registry")?;
        Some(Self::start().expect("start docker-registry"))
    }

    /// A read-only pull-through cache of the registry at `remote` (`HOST:PORT`, plain HTTP):
    /// like a kraken agent, it serves what was pushed elsewhere.
    pub fn start_pull_through(remote: &str) -> Result<Self> {
        Self::start_with(format!("proxy:\n  remoteurl: http://{remote}\n"))
    }

    /// A registry whose config ends with `extra` (top-level YAML sections).
    fn start_with(extra: String) -> Result<Self> {
        let dir = scratch_dir("distribution");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
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
{extra}",
            root = dir.path().join("data").display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config)?;
        let program =
            require_package("docker-registry", "docker-registry").context("docker-registry")?;
        let log = dir.path().join("log");
        let args = [PathBuf::from("serve"), config_path];
        let mut server = ProcessGuard::spawn("docker-registry", &program, &args, &log)?;
        server.wait_listening(addr)?;
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

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.host)
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
