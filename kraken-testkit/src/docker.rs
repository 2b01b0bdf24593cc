//! The Docker engine with a private daemon.json (data-root, exec-root, pidfile and socket in a
//! temp dir; no iptables, no bridge; plain HTTP to 127.0.0.0/8; registry mirrors settable),
//! and the docker CLI against it: build, tag, push, rmi, pull, run.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use kraken_core::Digest;
use serde_json::json;

use crate::{Output, ProcessGuard, require_package, run, scratch_dir};

/// Docker's CLI from Debian's `docker.io`, the engine's own version. A newer CLI found earlier
/// in `PATH` (e.g. /usr/local/bin) wants BuildKit's buildx plugin for `docker build`.
const DEBIAN_CLI: &str = "/usr/bin/docker";

/// How the daemon is configured beyond the fixed private settings.
#[derive(Clone, Debug, Default)]
pub struct DockerdOptions {
    /// `registry-mirrors`: URLs (`http://HOST:PORT`) tried for docker.io images.
    pub registry_mirrors: Vec<String>,
}

/// A running dockerd, stopped on drop (SIGTERM: it stops its own containerd too). Gate with
/// `kraken_testkit::require_packages(&[("dockerd", "docker.io"), ("docker", "docker.io")])`.
#[derive(Debug)]
pub struct Dockerd {
    socket: PathBuf,
    cli: PathBuf,
    daemon: ProcessGuard,
    dir: tempfile::TempDir,
}

impl Dockerd {
    /// Starts dockerd and waits until `docker version` reaches it.
    pub fn start(options: &DockerdOptions) -> Result<Self> {
        let dir = scratch_dir("dockerd");
        let socket = dir.path().join("docker.sock");
        let config = json!({
            "hosts": [format!("unix://{}", socket.display())],
            "data-root": dir.path().join("data"),
            "exec-root": dir.path().join("exec"),
            "pidfile": dir.path().join("docker.pid"),
            "iptables": false,
            "ip-masq": false,
            "bridge": "none",
            "storage-driver": "overlay2",
            "insecure-registries": ["127.0.0.0/8"],
            "registry-mirrors": options.registry_mirrors,
            "log-level": "warn",
        });
        let config_path = dir.path().join("daemon.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;
        std::fs::create_dir_all(dir.path().join("client"))?;
        let program = require_package("dockerd", "docker.io").context("dockerd")?;
        let cli = if Path::new(DEBIAN_CLI).is_file() {
            PathBuf::from(DEBIAN_CLI)
        } else {
            require_package("docker", "docker.io").context("docker")?
        };
        let mut daemon = ProcessGuard::spawn(
            "dockerd",
            &program,
            ["--config-file", config_path.to_str().context("path")?],
            &dir.path().join("dockerd.log"),
        )?;
        let mut probe = Command::new(&cli);
        probe
            .env("DOCKER_CONFIG", dir.path().join("client"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .args(["version", "--format", "{{.Server.Version}}"]);
        let probe_socket = socket.clone();
        daemon.wait_ready(|| {
            probe_socket.exists() && probe.output().is_ok_and(|output| output.status.success())
        })?;
        Ok(Self {
            socket,
            cli,
            daemon,
            dir,
        })
    }

    /// The daemon's API socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `docker -H unix://SOCKET` with a private client config and the legacy builder.
    pub fn docker(&self) -> Command {
        let mut command = Command::new(&self.cli);
        command
            .env("DOCKER_CONFIG", self.dir.path().join("client"))
            .env("DOCKER_BUILDKIT", "0")
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()));
        command
    }

    /// `program` (docker-compose, a script that runs docker) set to reach this daemon:
    /// `DOCKER_HOST` and `DOCKER_CONFIG` as [`docker`](Self::docker) has them, and `DOCKER`
    /// naming the CLI.
    pub fn client_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        command
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("DOCKER_CONFIG", self.dir.path().join("client"))
            .env("DOCKER_BUILDKIT", "0")
            .env("DOCKER", &self.cli);
        command
    }

    fn run(&self, args: &[&str]) -> Result<Output> {
        run(self.docker().args(args))
            .with_context(|| format!("dockerd log:\n{}", self.daemon.log_text()))
    }

    /// Builds `tag` `FROM scratch` with the static busybox as `/bin/busybox` and a file of
    /// `marker` (so different markers give different images); returns the image ID.
    pub fn build_busybox_image(&self, tag: &str, marker: &str) -> Result<String> {
        let context = tempfile::tempdir_in(self.dir.path())?;
        std::fs::copy(crate::oci::BUSYBOX, context.path().join("busybox"))
            .context("copy busybox into the build context")?;
        std::fs::write(context.path().join("marker"), marker)?;
        std::fs::write(
            context.path().join("Dockerfile"),
            "FROM scratch\nCOPY busybox /bin/busybox\nCOPY marker /marker\n\
             CMD [\"/bin/busybox\", \"cat\", \"/marker\"]\n",
        )?;
        let context_path = context.path().to_str().context("path")?;
        self.run(&["build", "--quiet", "--tag", tag, context_path])?;
        self.image_id(tag)
    }

    /// The image ID (config digest) of a local image.
    pub fn image_id(&self, reference: &str) -> Result<String> {
        let output = self.run(&["image", "inspect", "--format", "{{.Id}}", reference])?;
        Ok(output.stdout.trim().to_owned())
    }

    /// The `HOST/REPO@sha256:…` digests docker recorded for a local image.
    pub fn repo_digests(&self, reference: &str) -> Result<Vec<String>> {
        let output = self.run(&[
            "image",
            "inspect",
            "--format",
            "{{json .RepoDigests}}",
            reference,
        ])?;
        Ok(serde_json::from_str(output.stdout.trim())?)
    }

    /// `docker tag SOURCE TARGET`.
    pub fn tag(&self, source: &str, target: &str) -> Result<()> {
        self.run(&["tag", source, target])?;
        Ok(())
    }

    /// `docker push`; returns the manifest digest docker reports (`digest: sha256:… size: N`).
    pub fn push(&self, reference: &str) -> Result<Digest> {
        let output = self.run(&["push", reference])?;
        let Some(digest) = output
            .stdout
            .split_whitespace()
            .skip_while(|word| *word != "digest:")
            .nth(1)
        else {
            bail!("no digest in the output of docker push:\n{}", output.stdout);
        };
        Ok(digest.parse()?)
    }

    /// `docker pull`; returns the manifest digest docker reports (`Digest: sha256:…`).
    pub fn pull(&self, reference: &str) -> Result<Digest> {
        let output = self.run(&["pull", reference])?;
        let Some(digest) = output
            .stdout
            .split_whitespace()
            .skip_while(|word| *word != "Digest:")
            .nth(1)
        else {
            bail!("no digest in the output of docker pull:\n{}", output.stdout);
        };
        Ok(digest.parse()?)
    }

    /// `docker rmi` of every reference given (the image goes when its last name does).
    pub fn rmi(&self, references: &[&str]) -> Result<()> {
        let mut args = vec!["rmi"];
        args.extend_from_slice(references);
        self.run(&args)?;
        Ok(())
    }

    /// `docker run --rm --network none IMAGE ARGS…`, returning its stdout.
    pub fn run_image(&self, reference: &str, args: &[&str]) -> Result<String> {
        let mut all = vec!["run", "--rm", "--network", "none", reference];
        all.extend_from_slice(args);
        Ok(self.run(&all)?.stdout)
    }

    /// Everything dockerd logged so far.
    pub fn log_text(&self) -> String {
        self.daemon.log_text()
    }
}
