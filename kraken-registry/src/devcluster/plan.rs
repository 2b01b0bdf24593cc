//! The one home of a devcluster's role configs: which addresses every role gets and what each
//! role's config says, for the one-process [`DevCluster`](super::DevCluster) and for
//! `kraken devcluster --processes` (which writes them as TOML files and starts `kraken ROLE
//! --config FILE` for each).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use kraken_backends::{BackendConfig, BackendsConfig, FsConfig, RouteConfig};
use kraken_p2p::tracker::PeerStoreConfig;
use serde::Serialize;

use crate::agent::AgentConfig;
use crate::build_index::BuildIndexConfig;
use crate::error::{Error, Result};
use crate::origin::{ClusterConfig, MembersConfig, OriginConfig};
use crate::proxy::{BuildIndexTarget, ProxyConfig};

use super::PortPlan;

/// Origins that hold each blob in a devcluster: two where there are two or more, so that
/// losing one origin loses no blob.
const MAX_REPLICAS: usize = 2;

/// How many of each role, and where the data goes.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct ClusterShape {
    /// Directory of every role's data and of the local-directory backends. Required.
    pub data_dir: PathBuf,
    /// How many origins. Default: 1.
    pub origins: usize,
    /// How many trackers. Default: 1.
    pub trackers: usize,
    /// How many agents. Default: 2.
    pub agents: usize,
    /// The Redis server the trackers share their peers through (`[peer_store] redis`).
    /// Default: none (each tracker's own memory).
    pub redis: Option<String>,
}

impl ClusterShape {
    /// One origin, one tracker, two agents, everything under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            origins: 1,
            trackers: 1,
            agents: 2,
            redis: None,
        }
    }
}

/// A tracker's settings as `kraken tracker --config` reads them (the subset a devcluster
/// sets; the file type itself lives in kraken-cli).
#[non_exhaustive]
#[derive(Clone, Debug, Serialize)]
pub struct TrackerRoleConfig {
    /// Where the tracker listens.
    pub listen: SocketAddr,
    /// Interval announcers are told to keep.
    #[serde(with = "humantime_serde")]
    pub announce_interval: Duration,
    /// The origin ring asked for metainfo.
    pub origins: ClusterConfig,
    /// The file holding the publish token the origins present (and nothing else holds).
    pub publish_token_file: PathBuf,
    /// Where the tracker keeps peers (a shared Redis); none: its own memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_store: Option<PeerStoreConfig>,
}

/// Every role's config of one devcluster: what the one-process [`DevCluster`](super::DevCluster)
/// starts, and what `kraken devcluster --processes` writes as TOML files.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct RoleConfigs {
    /// The origins, in ring order of their names.
    pub origins: Vec<OriginConfig>,
    /// The trackers.
    pub trackers: Vec<TrackerRoleConfig>,
    /// The build-index.
    pub build_index: BuildIndexConfig,
    /// The proxy.
    pub proxy: ProxyConfig,
    /// The agents.
    pub agents: Vec<AgentConfig>,
}

impl RoleConfigs {
    /// The configs of a cluster shaped `shape` on the ports of `ports`. With
    /// [`PortPlan::GoKraken`] there is room for one origin, one tracker and 49 agents; with
    /// [`PortPlan::Ephemeral`] every listener gets a free port of 127.0.0.1 now, so that the
    /// configs can be written before anything starts.
    pub fn plan(shape: &ClusterShape, ports: PortPlan) -> Result<Self> {
        let ports = Ports::plan(ports, shape)?;
        let dir = &shape.data_dir;
        let backends = |name: &str| {
            BackendsConfig::new(vec![RouteConfig::new(
                ".*",
                BackendConfig::Fs(FsConfig::new(dir.join(name))),
            )])
        };
        // Only the origins may publish metainfo: they and the trackers share a publish token,
        // a fresh random one per cluster, in a file only its owner may read.
        let publish_token_file = dir.join("publish-token");
        write_publish_token(&publish_token_file)?;
        let tracker_urls: Vec<String> = ports
            .trackers
            .iter()
            .map(|addr| format!("http://{addr}"))
            .collect();
        let ring = ClusterConfig {
            members: MembersConfig::Static(
                ports
                    .origins
                    .iter()
                    .map(|(http, _)| http.to_string())
                    .collect(),
            ),
            replicas: ports.origins.len().clamp(1, MAX_REPLICAS),
            refresh_interval: Duration::from_secs(2),
            ..ClusterConfig::default()
        };
        let origins = ports
            .origins
            .iter()
            .enumerate()
            .map(|(i, (http, peer))| {
                let mut config =
                    OriginConfig::new(*http, numbered(dir, "origin", i, shape.origins));
                config.peer_listen = Some(*peer);
                config.trackers = tracker_urls.clone();
                config.tracker_publish_token_file = Some(publish_token_file.clone());
                config.cluster = ring.clone();
                // One backend shared by every origin, as a bucket would be.
                config.backends = backends("backend-blobs");
                // A backend outage in a devcluster is a test or a demo: write back soon
                // after it ends.
                config.write_back.initial_backoff = Duration::from_millis(200);
                config.write_back.max_backoff = Duration::from_secs(2);
                config
            })
            .collect();
        let trackers = ports
            .trackers
            .iter()
            .map(|listen| TrackerRoleConfig {
                listen: *listen,
                announce_interval: Duration::from_secs(1),
                origins: ring.clone(),
                publish_token_file: publish_token_file.clone(),
                peer_store: shape.redis.as_ref().map(|url| {
                    let mut store = PeerStoreConfig::default();
                    store.redis = Some(url.clone());
                    store
                }),
            })
            .collect();
        let mut build_index = BuildIndexConfig::new(ports.build_index, dir.join("build-index"));
        build_index.origins = ring.clone();
        build_index.backends = backends("backend-tags");
        let mut proxy = ProxyConfig::new(ports.proxy, dir.join("proxy"));
        proxy.origins = ring;
        proxy.build_index = BuildIndexTarget::new([ports.build_index.to_string()]);
        let agents = ports
            .agents
            .iter()
            .enumerate()
            .map(|(i, (registry, peer))| {
                let mut config = AgentConfig::new(
                    *registry,
                    dir.join(format!("agent{i}")),
                    tracker_urls.clone(),
                    vec![ports.build_index.to_string()],
                );
                config.peer_listen = Some(*peer);
                config
            })
            .collect();
        Ok(Self {
            origins,
            trackers,
            build_index,
            proxy,
            agents,
        })
    }
}

/// `dir/origin` for a lone origin (the one-process devcluster's layout), `dir/origin-<i>`
/// for one of several.
fn numbered(dir: &Path, role: &str, i: usize, of: usize) -> PathBuf {
    if of == 1 {
        dir.join(role)
    } else {
        dir.join(format!("{role}-{i}"))
    }
}

/// Writes a fresh random publish token to `path`, readable by its owner only.
fn write_publish_token(path: &Path) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let token = kraken_core::Digest::sha256_of(&rand::random::<[u8; 32]>()).hex();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(token.as_bytes())?;
    Ok(())
}

/// The addresses chosen before anything starts: origins and trackers each need the others'.
struct Ports {
    proxy: SocketAddr,
    build_index: SocketAddr,
    origins: Vec<(SocketAddr, SocketAddr)>,
    trackers: Vec<SocketAddr>,
    agents: Vec<(SocketAddr, SocketAddr)>,
}

impl Ports {
    fn plan(plan: PortPlan, shape: &ClusterShape) -> Result<Self> {
        if shape.origins == 0 || shape.trackers == 0 {
            return Err(Error::Config(
                "a devcluster needs at least one origin and one tracker".into(),
            ));
        }
        let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        match plan {
            PortPlan::GoKraken => {
                if shape.origins > 1 || shape.trackers > 1 {
                    return Err(Error::Config(
                        "Go Kraken's port plan has room for one origin and one tracker".into(),
                    ));
                }
                if shape.agents > 49 {
                    return Err(Error::Config(
                        "Go Kraken's port plan has room for 49 agents".into(),
                    ));
                }
                Ok(Self {
                    proxy: at(15000),
                    origins: vec![(at(15002), at(15001))],
                    trackers: vec![at(15003)],
                    build_index: at(15004),
                    agents: (0..shape.agents as u16)
                        .map(|i| (at(16000 + 1000 * i), at(16001 + 1000 * i)))
                        .collect(),
                })
            }
            PortPlan::Ephemeral => {
                let mut free = FreePorts::default();
                Ok(Self {
                    proxy: free.next()?,
                    build_index: free.next()?,
                    origins: (0..shape.origins)
                        .map(|_| free.pair())
                        .collect::<Result<_>>()?,
                    trackers: (0..shape.trackers)
                        .map(|_| free.next())
                        .collect::<Result<_>>()?,
                    agents: (0..shape.agents)
                        .map(|_| free.pair())
                        .collect::<Result<_>>()?,
                })
            }
        }
    }
}

/// Free ports of 127.0.0.1, each held until all are chosen so that none is handed out twice.
#[derive(Default)]
struct FreePorts {
    held: Vec<TcpListener>,
}

impl FreePorts {
    fn next(&mut self) -> Result<SocketAddr> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        self.held.push(listener);
        Ok(addr)
    }

    fn pair(&mut self) -> Result<(SocketAddr, SocketAddr)> {
        Ok((self.next()?, self.next()?))
    }
}
