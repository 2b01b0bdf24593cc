//! What the CLI tests need beyond `kraken_testkit`: the `kraken` binary and its roles, the
//! container clients and their daemons, each started privately in a temp dir and stopped on
//! drop ([`containerd`], [`docker`], [`podman`]), and the end-to-end scenarios, parameterised
//! by the endpoints they push to and pull from ([`scenarios`]).
//!
//! A test file uses it with `mod support;`. Programs are gated with
//! `kraken_testkit::require_package`: a missing one fails the test under `CI=true` and skips
//! it elsewhere.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different part

pub mod containerd;
pub mod docker;
pub mod podman;
pub mod scenarios;

use std::path::Path;
use std::process::{Command, Stdio};

use kraken_testkit::{ProcessGuard, wait_for_port};

/// The binary under test.
pub const KRAKEN: &str = env!("CARGO_BIN_EXE_kraken");

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
