//! `?runtime=docker|containerd` of `GET /preload/tags/{repo:tag}`: once the image is in the
//! agent's cache, the host's container runtime is asked to pull it **through this agent**
//! (`<registry>/<repo>:<tag>`, plain HTTP), as Go Kraken's agent does, so the image is ready
//! to run when the preload answers.
//!
//! - **docker**: the Engine API's `POST /images/create?fromImage=…&tag=…` on the daemon's
//!   unix socket (what `docker pull` sends); its progress stream is read to the end and an
//!   `error` in it fails the preload. Docker pulls from 127.0.0.0/8 over plain HTTP without
//!   any `insecure-registries` setting.
//! - **containerd**: `ctr --address SOCKET --namespace NS images pull --plain-http REF`, which
//!   fetches and unpacks for the host's platform into the namespace (`?namespace=`, default
//!   `container_runtime.containerd.namespace`). `ctr` ships with containerd; the gRPC API
//!   would need generated protobuf code (and `protoc`) for one call.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::http::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use kraken_p2p::tracker::api::encode_segment;
use serde::{Deserialize, Serialize};

use crate::build_index::TagName;

/// Largest Engine API answer read (a pull's progress stream is a few kB per layer).
const MAX_DOCKER_ANSWER: usize = 16 << 20;
/// Largest part of `ctr`'s output kept for an error message.
const MAX_CTR_OUTPUT: usize = 4 << 10;

/// How the agent reaches the host's container runtimes (`[container_runtime]`), for
/// `GET /preload/tags/{repo:tag}?runtime=docker|containerd`.
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContainerRuntimeConfig {
    /// The registry the runtime pulls from, `host:port`: this agent as the runtime reaches
    /// it. Default: none: `127.0.0.1` and the port the agent listens on.
    pub registry: Option<String>,
    /// How long the runtime's pull may take. Default: 10m.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// The Docker engine.
    pub docker: DockerRuntimeConfig,
    /// containerd.
    pub containerd: ContainerdRuntimeConfig,
}

impl Default for ContainerRuntimeConfig {
    fn default() -> Self {
        Self {
            registry: None,
            timeout: Duration::from_secs(600),
            docker: DockerRuntimeConfig::default(),
            containerd: ContainerdRuntimeConfig::default(),
        }
    }
}

/// The Docker engine's API socket.
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DockerRuntimeConfig {
    /// The daemon's socket, `unix:///path` (Go Kraken's `docker_host`). Default:
    /// `unix:///var/run/docker.sock`.
    pub host: String,
}

impl Default for DockerRuntimeConfig {
    fn default() -> Self {
        Self {
            host: "unix:///var/run/docker.sock".into(),
        }
    }
}

/// containerd's API socket, and the `ctr` that talks to it.
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContainerdRuntimeConfig {
    /// containerd's socket. Default: `/run/containerd/containerd.sock`.
    pub address: PathBuf,
    /// The namespace images are pulled into when the request names none. Default: `k8s.io`
    /// (the kubelet's).
    pub namespace: String,
    /// The `ctr` program. Default: `ctr` (found on `PATH`).
    pub ctr: PathBuf,
}

impl Default for ContainerdRuntimeConfig {
    fn default() -> Self {
        Self {
            address: PathBuf::from("/run/containerd/containerd.sock"),
            namespace: "k8s.io".into(),
            ctr: PathBuf::from("ctr"),
        }
    }
}

/// Which runtime `?runtime=` names.
#[derive(Clone, Debug, Eq, PartialEq)]
pub(crate) enum Runtime {
    /// The Docker engine.
    Docker,
    /// containerd, into this namespace (or the configured one).
    Containerd(Option<String>),
}

impl Runtime {
    /// The runtime a preload's query asks for: `None` without `runtime=`, an error for one
    /// this agent does not know.
    pub(crate) fn from_query(query: &str) -> Result<Option<Self>, String> {
        let param = |key: &str| {
            query
                .split('&')
                .filter_map(|pair| pair.split_once('='))
                .find_map(|(k, v)| (k == key).then(|| v.to_owned()))
        };
        let namespace = param("namespace").filter(|ns| !ns.is_empty());
        if let Some(ns) = &namespace
            && !ns
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(format!("invalid containerd namespace {ns:?}"));
        }
        match param("runtime").as_deref() {
            None | Some("") => Ok(None),
            Some("docker") => Ok(Some(Self::Docker)),
            Some("containerd") => Ok(Some(Self::Containerd(namespace))),
            Some(other) => Err(format!(
                "unknown runtime {other:?}: runtime=docker or runtime=containerd"
            )),
        }
    }

    /// Its name in the preload's report.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Docker => "docker",
            Self::Containerd(_) => "containerd",
        }
    }
}

/// Makes `runtime` pull `tag` from `registry` (this agent); the error says what the runtime
/// answered.
pub(crate) async fn pull(
    config: &ContainerRuntimeConfig,
    runtime: &Runtime,
    registry: &str,
    tag: &TagName,
) -> Result<(), String> {
    let pulled = match runtime {
        Runtime::Docker => {
            tokio::time::timeout(config.timeout, docker_pull(&config.docker, registry, tag)).await
        }
        Runtime::Containerd(namespace) => {
            let namespace = namespace.as_deref().unwrap_or(&config.containerd.namespace);
            tokio::time::timeout(
                config.timeout,
                containerd_pull(&config.containerd, namespace, registry, tag),
            )
            .await
        }
    };
    pulled.unwrap_or_else(|_| {
        Err(format!(
            "{} did not finish pulling within {:?}",
            runtime.name(),
            config.timeout
        ))
    })
}

async fn docker_pull(
    config: &DockerRuntimeConfig,
    registry: &str,
    tag: &TagName,
) -> Result<(), String> {
    let socket = config
        .host
        .strip_prefix("unix://")
        .ok_or_else(|| format!("docker host {:?} is not unix:///path", config.host))?;
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| format!("connecting to the Docker engine at {socket}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("Docker engine at {socket}: {e}"))?;
    tokio::spawn(connection);
    let image = format!("{registry}/{}", tag.repository());
    let uri = format!(
        "/images/create?fromImage={}&tag={}",
        encode_segment(&image),
        encode_segment(tag.tag())
    );
    let request = Request::post(uri)
        .header(header::HOST, "docker")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("Docker engine at {socket}: {e}"))?;
    let status = response.status();
    let body = http_body_util::Limited::new(response.into_body(), MAX_DOCKER_ANSWER)
        .collect()
        .await
        .map_err(|e| format!("reading the Docker engine's answer: {e}"))?
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    if status != StatusCode::OK {
        return Err(format!("Docker engine answered {status}: {}", text.trim()));
    }
    // A progress stream of JSON objects; a failed pull ends with {"error": …}.
    for line in text.lines() {
        if let Ok(serde_json::Value::Object(event)) = serde_json::from_str(line)
            && let Some(error) = event.get("error")
        {
            return Err(format!(
                "Docker engine: {}",
                error.as_str().unwrap_or_default()
            ));
        }
    }
    Ok(())
}

async fn containerd_pull(
    config: &ContainerdRuntimeConfig,
    namespace: &str,
    registry: &str,
    tag: &TagName,
) -> Result<(), String> {
    let reference = format!("{registry}/{tag}");
    let output = tokio::process::Command::new(&config.ctr)
        .arg("--address")
        .arg(&config.address)
        .args(["--namespace", namespace, "images", "pull", "--plain-http"])
        .arg(&reference)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("running {}: {e}", config.ctr.display()))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let start = stderr.len().saturating_sub(MAX_CTR_OUTPUT);
    let tail = stderr.get(start..).unwrap_or(&stderr);
    Err(format!(
        "ctr images pull {reference} ({}): {}",
        output.status,
        tail.trim()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_names_the_runtime_and_its_namespace() {
        assert_eq!(Runtime::from_query(""), Ok(None));
        assert_eq!(Runtime::from_query("runtime="), Ok(None));
        assert_eq!(
            Runtime::from_query("runtime=docker&namespace=x"),
            Ok(Some(Runtime::Docker))
        );
        assert_eq!(
            Runtime::from_query("namespace=k8s.io&runtime=containerd"),
            Ok(Some(Runtime::Containerd(Some("k8s.io".into()))))
        );
        assert_eq!(
            Runtime::from_query("runtime=containerd"),
            Ok(Some(Runtime::Containerd(None)))
        );
        assert!(Runtime::from_query("runtime=podman").is_err());
        assert!(Runtime::from_query("runtime=containerd&namespace=a%20b").is_err());
    }
}
