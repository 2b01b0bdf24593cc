//! What the CLI tests need beyond `kraken_testkit`: the `kraken` binary and its roles, the
//! container clients and their daemons, each started privately in a temp dir and stopped on
//! drop ([`containerd`], [`docker`], [`podman`]), and the end-to-end scenarios, parameterised
//! by the endpoints they push to and pull from ([`scenarios`]).
//!
//! A test file uses it with `mod support;`. Programs are gated with
//! `kraken_testkit::require_package`: a missing one fails the test under `CI=true` and skips
//! it elsewhere.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different part

pub use kraken_testkit::containerd;
pub use kraken_testkit::docker;
pub mod podman;
pub mod scenarios;

use std::path::Path;
use std::process::{Command, Stdio};

use kraken_testkit::{ProcessGuard, wait_for_port};

/// The binary under test.
pub const KRAKEN: &str = env!("CARGO_BIN_EXE_kraken");

/// Runs `kraken devcluster` on free ports with `agents` agents and its data in `dir`; returns
/// the process and the addresses it printed (`--json`: `proxy`, `origin`, `tracker`,
/// `build_index`, `agents`).
pub fn start_devcluster(agents: usize, dir: &Path) -> (ProcessGuard, serde_json::Value) {
    let mut child = Command::new(KRAKEN)
        .args(["devcluster", "--ephemeral-ports", "--json", "--agents"])
        .arg(agents.to_string())
        .arg("--data-dir")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run kraken devcluster");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let process = ProcessGuard::adopt(child);
    let addrs =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("devcluster printed {line:?}: {e}"));
    (process, addrs)
}

/// Runs `kraken ROLE --config FILE` with `config` written to `dir/ROLE.toml`, and waits until
/// it listens on `listen`.
pub fn start_role(role: &str, config: &str, dir: &Path, listen: &str) -> ProcessGuard {
    let path = dir.join(format!("{role}.toml"));
    std::fs::write(&path, config).unwrap();
    let child = Command::new(KRAKEN)
        .args([role, "--config", path.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(listen);
    ProcessGuard::adopt(child)
}

/// A `kraken devcluster` process on free ports with two agents.
pub struct DevCluster {
    _process: ProcessGuard,
    _dir: tempfile::TempDir,
    /// The proxy's address (`host:port`).
    pub proxy: String,
    /// The agents' addresses.
    pub agents: Vec<String>,
}

impl DevCluster {
    /// Starts one with two agents.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (process, addrs) = start_devcluster(2, dir.path());
        Self {
            _process: process,
            _dir: dir,
            proxy: addrs["proxy"].as_str().unwrap().to_owned(),
            agents: addrs["agents"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_owned())
                .collect(),
        }
    }
}
