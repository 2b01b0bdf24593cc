//! podman with private storage (root, runroot, tmpdir in a temp dir, the vfs driver, cgroupfs,
//! file events) and its own `registries.conf`: no daemon, every call a process.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};
use kraken_core::Digest;

use kraken_testkit::{Output, run, scratch_dir};

/// podman with its own storage; removed with the temp dir on drop. Gate with
/// `kraken_testkit::require_package("podman", "podman")`.
#[derive(Debug)]
pub struct Podman {
    registries_conf: PathBuf,
    dir: tempfile::TempDir,
}

impl Podman {
    /// Private storage; `mirrors` are `(prefix, HOST:PORT)` pairs written to
    /// `registries.conf` (`[[registry]] prefix = … location = … [[registry.mirror]] …`),
    /// all plain HTTP.
    pub fn new(mirrors: &[(&str, &str)]) -> Result<Self> {
        let dir = scratch_dir("podman");
        let mut conf = String::from("unqualified-search-registries = []\n");
        for (prefix, mirror) in mirrors {
            conf.push_str(&format!(
                "\n[[registry]]\nprefix = \"{prefix}\"\nlocation = \"{prefix}\"\n\
                 [[registry.mirror]]\nlocation = \"{mirror}\"\ninsecure = true\n"
            ));
        }
        let registries_conf = dir.path().join("registries.conf");
        std::fs::write(&registries_conf, conf)?;
        Ok(Self {
            registries_conf,
            dir,
        })
    }

    /// `podman` with the private storage options.
    pub fn podman(&self) -> Command {
        let path = |name: &str| self.dir.path().join(name);
        let mut command = Command::new("podman");
        command
            .env("CONTAINERS_REGISTRIES_CONF", &self.registries_conf)
            .arg("--root")
            .arg(path("root"))
            .arg("--runroot")
            .arg(path("run"))
            .arg("--tmpdir")
            .arg(path("tmp"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ]);
        command
    }

    fn run(&self, args: &[&str]) -> Result<Output> {
        run(self.podman().args(args))
    }

    /// `podman pull --tls-verify=false`; returns the image ID.
    pub fn pull(&self, reference: &str) -> Result<String> {
        let output = self.run(&["pull", "--quiet", "--tls-verify=false", reference])?;
        Ok(output.stdout.trim().to_owned())
    }

    /// `podman rmi`: the image and its layers leave the storage, so the next pull fetches them.
    pub fn rmi(&self, reference: &str) -> Result<()> {
        self.run(&["rmi", reference])?;
        Ok(())
    }

    /// The manifest digest podman recorded for a local image.
    pub fn image_digest(&self, reference: &str) -> Result<Digest> {
        let output = self.run(&["image", "inspect", "--format", "{{.Digest}}", reference])?;
        output
            .stdout
            .trim()
            .parse()
            .context("podman's image digest")
    }

    /// `podman run --rm --network none IMAGE ARGS…` (with the ulimits podman needs here),
    /// returning its stdout.
    pub fn run_image(&self, reference: &str, args: &[&str]) -> Result<String> {
        let mut all = vec![
            "run",
            "--rm",
            "--network",
            "none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            reference,
        ];
        all.extend_from_slice(args);
        Ok(self.run(&all)?.stdout)
    }
}
