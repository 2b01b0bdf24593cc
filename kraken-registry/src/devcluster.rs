//! A whole Kraken cluster in one process on loopback: tracker, origin, build-index, proxy and
//! agents, with local-directory backends — Go Kraken's devcluster without containers.
//!
//! ```no_run
//! # async fn example() -> kraken_registry::Result<()> {
//! use kraken_registry::devcluster::{DevCluster, DevClusterConfig};
//!
//! let cluster = DevCluster::start(DevClusterConfig::new("/tmp/kraken-devcluster")).await?;
//! println!("{}", cluster.describe());
//! // docker push 127.0.0.1:15000/app:v1; docker pull 127.0.0.1:16000/app:v1
//! cluster.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kraken_backends::{BackendConfig, BackendsConfig, FsConfig, RouteConfig};
use kraken_p2p::tracker::{PublishToken, TrackerConfig, TrackerServer, TrackerService};

use crate::agent::{Agent, AgentConfig};
use crate::build_index::{BuildIndex, BuildIndexConfig};
use crate::error::{Error, Result};
use crate::origin::{ClusterConfig, MembersConfig, Origin, OriginConfig, OriginMetaInfoSource};
use crate::proxy::{BuildIndexTarget, Proxy, ProxyConfig};

/// Which ports the cluster listens on.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum PortPlan {
    /// Go Kraken's devcluster ports: proxy 15000, origin 15002 (peers 15001), tracker 15003,
    /// build-index 15004, agent *i* registry 16000 + 1000·*i* (peers one above).
    GoKraken,
    /// Free ports chosen at start (for tests that run clusters side by side).
    Ephemeral,
}

/// Settings of a [`DevCluster`].
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct DevClusterConfig {
    /// Directory of every component's data and of the backends. Required.
    pub data_dir: PathBuf,
    /// How many agents. Default: 2.
    pub agents: usize,
    /// Ports. Default: [`PortPlan::GoKraken`].
    pub ports: PortPlan,
}

impl DevClusterConfig {
    /// Two agents on Go Kraken's ports, everything under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            agents: 2,
            ports: PortPlan::GoKraken,
        }
    }
}

/// The addresses a [`DevCluster`] serves on.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct DevClusterAddrs {
    /// The proxy's registry (push here).
    pub proxy: SocketAddr,
    /// The origin's blob API.
    pub origin: SocketAddr,
    /// The origin's P2P listener.
    pub origin_peer: SocketAddr,
    /// The tracker.
    pub tracker: SocketAddr,
    /// The build-index.
    pub build_index: SocketAddr,
    /// Each agent's registry (pull here) and P2P listener.
    pub agents: Vec<(SocketAddr, SocketAddr)>,
}

/// A running devcluster. See the [module docs](self).
#[derive(Debug)]
pub struct DevCluster {
    addrs: DevClusterAddrs,
    data_dir: PathBuf,
    tracker: TrackerServer,
    origin: Origin,
    build_index: BuildIndex,
    proxy: Proxy,
    agents: Vec<Agent>,
}

impl DevCluster {
    /// Starts every component; returns when all of them listen.
    pub async fn start(config: DevClusterConfig) -> Result<Self> {
        let ports = Ports::plan(config.ports, config.agents)?;
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir)?;
        let backends = |name: &str| {
            BackendsConfig::new(vec![RouteConfig::new(
                ".*",
                BackendConfig::Fs(FsConfig::new(dir.join(name))),
            )])
        };
        let tracker_url = format!("http://{}", ports.tracker);
        let origins = ClusterConfig {
            members: MembersConfig::Static(vec![ports.origin.to_string()]),
            replicas: 1,
            refresh_interval: Duration::from_secs(2),
            ..ClusterConfig::default()
        };

        // Only the origin may publish metainfo: it holds the tracker's publish token, a
        // fresh random one per run (nothing else in the cluster knows it).
        let token =
            PublishToken::new(kraken_core::Digest::sha256_of(&rand::random::<[u8; 32]>()).hex())
                .expect("a hex digest is a usable token");
        let mut origin_config = OriginConfig::new(ports.origin, dir.join("origin"));
        origin_config.peer_listen = Some(ports.origin_peer);
        origin_config.tracker = Some(tracker_url.clone());
        origin_config.tracker_publish_token = Some(token.clone());
        origin_config.cluster = origins.clone();
        origin_config.backends = backends("backend-blobs");
        let origin = Origin::spawn(origin_config).await?;

        let source = OriginMetaInfoSource::start(origins.clone()).await?;
        let mut tracker_config = TrackerConfig::default();
        tracker_config.announce_interval = Duration::from_secs(1);
        tracker_config.publish_token = Some(token);
        let service = TrackerService::new(tracker_config)
            .with_metainfo_source(Arc::new(source))
            .with_metrics(&kraken_p2p::metrics::Metrics::new());
        let tracker = TrackerServer::bind(ports.tracker, Arc::new(service)).await?;

        let mut bi_config = BuildIndexConfig::new(ports.build_index, dir.join("build-index"));
        bi_config.origins = origins.clone();
        bi_config.backends = backends("backend-tags");
        let build_index = BuildIndex::spawn(bi_config).await?;

        let mut proxy_config = ProxyConfig::new(ports.proxy, dir.join("proxy"));
        proxy_config.origins = origins;
        proxy_config.build_index = BuildIndexTarget::new([ports.build_index.to_string()]);
        let proxy = Proxy::spawn(proxy_config).await?;

        let mut agents = Vec::new();
        for (i, (registry, peer)) in ports.agents.iter().enumerate() {
            let mut agent_config = AgentConfig::new(
                *registry,
                dir.join(format!("agent{i}")),
                vec![tracker_url.clone()],
                vec![ports.build_index.to_string()],
            );
            agent_config.peer_listen = Some(*peer);
            agents.push(Agent::spawn(agent_config).await?);
        }
        let addrs = DevClusterAddrs {
            proxy: proxy.local_addr(),
            origin: origin.local_addr(),
            origin_peer: origin.peer_addr().unwrap_or(ports.origin_peer),
            tracker: tracker.local_addr(),
            build_index: build_index.local_addr(),
            agents: agents
                .iter()
                .map(|a| (a.local_addr(), a.peer_addr()))
                .collect(),
        };
        Ok(Self {
            addrs,
            data_dir: config.data_dir,
            tracker,
            origin,
            build_index,
            proxy,
            agents,
        })
    }

    /// Where each component listens.
    pub fn addrs(&self) -> &DevClusterAddrs {
        &self.addrs
    }

    /// A table of what runs where, and how to use it.
    pub fn describe(&self) -> String {
        let a = &self.addrs;
        let mut text = format!(
            "kraken devcluster (data in {})\n\
             \x20 proxy        {}   push here: docker push {}/REPO:TAG\n\
             \x20 origin       {}   P2P {}\n\
             \x20 tracker      {}\n\
             \x20 build-index  {}\n",
            self.data_dir.display(),
            a.proxy,
            a.proxy,
            a.origin,
            a.origin_peer,
            a.tracker,
            a.build_index,
        );
        for (i, (registry, peer)) in a.agents.iter().enumerate() {
            let _ = writeln!(
                text,
                "  agent {i}      {registry}   P2P {peer}   pull here: docker pull {registry}/REPO:TAG"
            );
        }
        text
    }

    /// Stops every component, agents first, and returns when all have stopped.
    pub async fn shutdown(self) {
        for agent in self.agents {
            agent.shutdown().await;
        }
        self.proxy.shutdown().await;
        self.build_index.shutdown().await;
        self.tracker.shutdown().await;
        self.origin.shutdown().await;
    }
}

/// The addresses chosen before anything starts: the origin and the tracker each need the
/// other's.
struct Ports {
    proxy: SocketAddr,
    origin: SocketAddr,
    origin_peer: SocketAddr,
    tracker: SocketAddr,
    build_index: SocketAddr,
    agents: Vec<(SocketAddr, SocketAddr)>,
}

impl Ports {
    fn plan(plan: PortPlan, agents: usize) -> Result<Self> {
        let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        match plan {
            PortPlan::GoKraken => {
                if agents > 49 {
                    return Err(Error::Config(
                        "Go Kraken's port plan has room for 49 agents".into(),
                    ));
                }
                Ok(Self {
                    proxy: at(15000),
                    origin_peer: at(15001),
                    origin: at(15002),
                    tracker: at(15003),
                    build_index: at(15004),
                    agents: (0..agents as u16)
                        .map(|i| (at(16000 + 1000 * i), at(16001 + 1000 * i)))
                        .collect(),
                })
            }
            PortPlan::Ephemeral => {
                let free = || -> Result<SocketAddr> {
                    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
                };
                Ok(Self {
                    proxy: at(0),
                    origin: free()?,
                    origin_peer: at(0),
                    tracker: free()?,
                    build_index: free()?,
                    agents: (0..agents).map(|_| (at(0), at(0))).collect(),
                })
            }
        }
    }
}
