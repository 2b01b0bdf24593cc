//! containerd with a private config (root, state and sockets in a temp dir, the CRI plugin
//! off), and `ctr` against it: pulls (plain HTTP, or through a `hosts.toml` mirror) and runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result};
use kraken_core::Digest;

use crate::{ProcessGuard, require_package, run, run_with_timeout, scratch_dir};

/// The containerd namespace the tests use.
pub const NAMESPACE: &str = "kraken-e2e";

/// A running containerd, stopped on drop. Gate with `kraken_testkit::require_packages(&[("containerd",
/// "containerd"), ("ctr", "containerd")])`. Shared by the end-to-end client tests
/// (kraken-cli) and the agent's preload through containerd (kraken-registry).
#[derive(Debug)]
pub struct Containerd {
    socket: PathBuf,
    daemon: ProcessGuard,
    dir: tempfile::TempDir,
}

/// How `ctr images pull` reaches the registry.
#[derive(Clone, Copy, Debug)]
pub enum PullVia<'a> {
    /// `--plain-http` straight to the registry named in the reference.
    PlainHttp,
    /// `--hosts-dir DIR`: the registry named in the reference is mapped by
    /// `DIR/HOST/hosts.toml` (see [`Containerd::write_mirror`]).
    HostsDir(&'a Path),
}

impl Containerd {
    /// Starts containerd and waits until `ctr version` answers.
    pub fn start() -> Result<Self> {
        let dir = scratch_dir("containerd");
        let socket = dir.path().join("containerd.sock");
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"#,
            root = dir.path().join("root").display(),
            state = dir.path().join("state").display(),
            socket = socket.display(),
            opt = dir.path().join("opt").display(),
        );
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config)?;
        let program = require_package("containerd", "containerd").context("containerd")?;
        let mut daemon = ProcessGuard::spawn(
            "containerd",
            &program,
            ["--config", config_path.to_str().context("path")?],
            &dir.path().join("containerd.log"),
        )?;
        let probe_socket = socket.clone();
        daemon.wait_ready(|| {
            probe_socket.exists()
                && Command::new("ctr")
                    .arg("-a")
                    .arg(&probe_socket)
                    .arg("version")
                    .output()
                    .is_ok_and(|output| output.status.success())
        })?;
        Ok(Self {
            socket,
            daemon,
            dir,
        })
    }

    /// The socket of containerd's API (what `ctr --address` takes).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `ctr -a SOCKET -n NAMESPACE`.
    pub fn ctr(&self) -> Command {
        let mut command = Command::new("ctr");
        command.arg("-a").arg(&self.socket).args(["-n", NAMESPACE]);
        command
    }

    /// Writes `DIR/SERVER_HOST/hosts.toml` sending pulls of `server_host` images (e.g.
    /// `docker.io`) to `mirror` (`HOST:PORT`, plain HTTP) and returns `DIR`, for
    /// [`PullVia::HostsDir`]. Requests through the mirror carry `?ns=SERVER_HOST`.
    pub fn write_mirror(&self, server_host: &str, mirror: &str) -> Result<PathBuf> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = self
            .dir
            .path()
            .join(format!("certs.d-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir_all(dir.join(server_host))?;
        let hosts = format!(
            r#"server = "https://{server_host}"

[host."http://{mirror}"]
  capabilities = ["pull", "resolve"]
  skip_verify = true
"#
        );
        std::fs::write(dir.join(server_host).join("hosts.toml"), hosts)?;
        Ok(dir)
    }

    /// `ctr images pull` of `reference` (`HOST:PORT/REPO:TAG` or `docker.io/library/…`),
    /// unpacked for this machine's platform.
    pub fn pull(&self, reference: &str, via: PullVia<'_>) -> Result<()> {
        let mut command = self.ctr();
        command.args(["images", "pull"]);
        match via {
            PullVia::PlainHttp => command.arg("--plain-http"),
            PullVia::HostsDir(dir) => command.arg("--hosts-dir").arg(dir),
        };
        run(command.arg(reference))
            .with_context(|| format!("containerd log:\n{}", self.daemon.log_text()))?;
        Ok(())
    }

    /// The manifest (or index) digest containerd recorded for `reference`.
    pub fn image_digest(&self, reference: &str) -> Result<Digest> {
        let output = run(self.ctr().args(["images", "ls"]))?;
        let line = output
            .stdout
            .lines()
            .find(|line| line.split_whitespace().next() == Some(reference))
            .with_context(|| format!("{reference} not in `ctr images ls`:\n{}", output.stdout))?;
        let digest = line
            .split_whitespace()
            .find(|field| field.starts_with("sha256:"))
            .context("no digest in `ctr images ls`")?;
        Ok(digest.parse()?)
    }

    /// `ctr images rm`.
    pub fn remove(&self, reference: &str) -> Result<()> {
        run(self.ctr().args(["images", "rm", reference]))?;
        Ok(())
    }

    /// `ctr run --rm REFERENCE ID ARGS…` (host network: no CNI needed), returning its stdout.
    pub fn run_image(&self, reference: &str, id: &str, args: &[&str]) -> Result<String> {
        let mut command = self.ctr();
        command
            .args(["run", "--rm", "--net-host", reference, id])
            .args(args);
        let output = run_with_timeout(&mut command, std::time::Duration::from_secs(60))
            .with_context(|| format!("containerd log:\n{}", self.daemon.log_text()))?;
        Ok(output.stdout)
    }
}
