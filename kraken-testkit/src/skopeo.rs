//! skopeo: copies between OCI layouts and registries (plain HTTP), and raw manifests.
//! Runs with `--insecure-policy` (no signature policy file is needed) and its own temp dir.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};
use kraken_core::Digest;

use crate::process::{Output, run};
use crate::scratch_dir;

/// The skopeo client. Gate with `require_package("skopeo", "skopeo")`.
///
/// The one skopeo wrapper: the client tests' (typed copies and inspections) and the registry
/// tests' (raw arguments, see [`run`](Self::run)), each command with `--insecure-policy` and
/// a private `--tmpdir`.
#[derive(Debug)]
pub struct Skopeo {
    tmp: tempfile::TempDir,
}

impl Skopeo {
    /// A client with its own scratch directory.
    pub fn new() -> Self {
        Self {
            tmp: scratch_dir("skopeo"),
        }
    }

    /// `skopeo ARGS…`, for what the typed methods do not cover (credentials,
    /// `--preserve-digests`, …). The error carries what skopeo printed.
    pub fn run(&self, args: &[&str]) -> Result<Output> {
        run(self.command().args(args))
    }

    fn command(&self) -> Command {
        let mut command = Command::new("skopeo");
        command
            .arg("--insecure-policy")
            .arg("--tmpdir")
            .arg(self.tmp.path());
        command
    }

    /// `skopeo copy SRC DEST` (`--all`: every image of an index), plain HTTP for `docker://`
    /// references. References: `oci:DIR:TAG`, `docker://HOST:PORT/REPO:TAG`, `dir:DIR`.
    pub fn copy(&self, source: &str, destination: &str, all: bool) -> Result<()> {
        let mut command = self.command();
        command.args(["copy", "--quiet"]);
        if all {
            command.arg("--all");
        }
        if source.starts_with("docker://") {
            command.arg("--src-tls-verify=false");
        }
        if destination.starts_with("docker://") {
            command.arg("--dest-tls-verify=false");
        }
        run(command.args([source, destination]))?;
        Ok(())
    }

    /// `skopeo inspect --raw`: the manifest or index exactly as the registry serves it.
    pub fn raw_manifest(&self, reference: &str) -> Result<Vec<u8>> {
        let mut command = self.command();
        command.args(["inspect", "--raw", "--tls-verify=false", reference]);
        Ok(run(&mut command)?.stdout.into_bytes())
    }

    /// The digest of what `reference` (`docker://…:TAG`) resolves to now.
    pub fn manifest_digest(&self, reference: &str) -> Result<Digest> {
        let raw = self.raw_manifest(reference)?;
        Ok(Digest::sha256_of(&raw))
    }

    /// `skopeo inspect` (the image's metadata, for the current platform) as JSON.
    pub fn inspect(&self, reference: &str) -> Result<serde_json::Value> {
        let mut command = self.command();
        command.args(["inspect", "--tls-verify=false", reference]);
        let output = run(&mut command)?;
        serde_json::from_str(&output.stdout).context("parse skopeo inspect")
    }

    /// A fresh directory for a layout to copy into.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
}

impl Default for Skopeo {
    fn default() -> Self {
        Self::new()
    }
}
