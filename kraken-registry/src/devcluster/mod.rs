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

mod plan;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use kraken_p2p::tracker::{PublishToken, TrackerConfig, TrackerServer, TrackerService};

pub use self::plan::{ClusterShape, RoleConfigs, TrackerRoleConfig};
use crate::agent::Agent;
use crate::build_index::BuildIndex;
use crate::error::{Error, Result};
use crate::origin::{Origin, OriginConfig, OriginMetaInfoSource};
use crate::proxy::Proxy;

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
        let mut shape = ClusterShape::new(&config.data_dir);
        shape.agents = config.agents;
        std::fs::create_dir_all(&config.data_dir)?;
        let roles = RoleConfigs::plan(&shape, config.ports)?;
        let [origin_config] = <[OriginConfig; 1]>::try_from(roles.origins)
            .map_err(|_| Error::Config("the one-process devcluster has one origin".into()))?;
        let [tracker_role] = <[TrackerRoleConfig; 1]>::try_from(roles.trackers)
            .map_err(|_| Error::Config("the one-process devcluster has one tracker".into()))?;
        let origin_peer = origin_config.peer_listen;
        let origin = Origin::spawn(origin_config).await?;

        let source = OriginMetaInfoSource::start(tracker_role.origins).await?;
        let mut tracker_config = TrackerConfig::default();
        tracker_config.announce_interval = tracker_role.announce_interval;
        tracker_config.publish_token =
            Some(PublishToken::from_file(&tracker_role.publish_token_file)?);
        let service = TrackerService::new(tracker_config)
            .with_metainfo_source(Arc::new(source))
            .with_metrics(&kraken_p2p::metrics::Metrics::new());
        let tracker = TrackerServer::bind(tracker_role.listen, Arc::new(service)).await?;

        let build_index = BuildIndex::spawn(roles.build_index).await?;
        let proxy = Proxy::spawn(roles.proxy).await?;
        let mut agents = Vec::new();
        for agent_config in roles.agents {
            agents.push(Agent::spawn(agent_config).await?);
        }
        let addrs = DevClusterAddrs {
            proxy: proxy.local_addr(),
            origin: origin.local_addr(),
            origin_peer: origin
                .peer_addr()
                .or(origin_peer)
                .expect("the origin has a tracker"),
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
