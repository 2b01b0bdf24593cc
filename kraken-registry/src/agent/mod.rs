//! The agent: the pull side on every host.
//!
//! An [`Agent`] serves, on one port (the *registry port*):
//!
//! - the OCI distribution API's pull side (`/v2/…`) over [`AgentStorage`]: a tag is resolved
//!   through the build-index on every request, manifests and blobs come over P2P (the
//!   repository name is the P2P namespace). A `HEAD` of a blob answers its size from the
//!   tracker's metainfo without downloading it (Go Kraken downloads the whole blob), and a
//!   blob `GET` streams bytes as pieces arrive (Go Kraken answers once the download ends),
//!   ranges included. Pushes, deletes and the catalog are `405 UNSUPPORTED`;
//!   `tags/list` works, through the build-index;
//! - Go Kraken's agent endpoints: `GET /health`, `GET /readiness`, `GET /tags/{repo:tag}`,
//!   `GET /namespace/{ns}/blobs/{digest}`, `DELETE /blobs/{digest}` and
//!   `GET /preload/tags/{repo:tag}` (which pulls an image into the cache without any
//!   container runtime, and answers when done).
//!
//! Only clients in [`AgentConfig::allowed_cidrs`] (default: loopback) get past `403 DENIED`,
//! except for `/health` and `/readiness`. A second listener, the P2P peer port, seeds what
//! the agent holds. See `docs/agent.md` at the root of the workspace, which also shows the
//! containerd `hosts.toml` that makes the agent a registry mirror.
//!
//! ```no_run
//! # async fn example() -> kraken_registry::Result<()> {
//! use kraken_registry::agent::{Agent, AgentConfig};
//!
//! let config = AgentConfig::new(
//!     "127.0.0.1:16000".parse().unwrap(),
//!     "/var/cache/kraken/agent",
//!     vec!["http://tracker:15003".into()],
//!     vec!["build-index:15004".into()],
//! );
//! let agent = Agent::spawn(config).await?;
//! // `ctr images pull --plain-http 127.0.0.1:16000/library/app:v1` now pulls over P2P.
//! agent.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod api;
mod cidr;
mod config;
mod preload;
mod runtime;
mod service;
mod state;
mod storage;

pub use self::cidr::{Cidr, CidrError};
pub use self::config::{AgentConfig, CleanupConfig, LimitsConfig, P2pConfig};
pub use self::runtime::{ContainerRuntimeConfig, ContainerdRuntimeConfig, DockerRuntimeConfig};
pub use self::service::{Agent, AgentBuilder};
pub use self::storage::AgentStorage;
