//! `kraken devcluster`: the whole cluster in one process on loopback, or (`--processes`) each
//! role in a child process of its own.

mod processes;

use std::path::PathBuf;

use anyhow::Context as _;
use kraken_registry::devcluster::{ClusterShape, DevCluster, DevClusterConfig, PortPlan};

#[derive(Debug, clap::Args)]
pub(crate) struct DevClusterArgs {
    /// Directory of every component's data and of the local-directory backends.
    #[arg(long, default_value = "/tmp/kraken-devcluster")]
    data_dir: PathBuf,
    /// How many agents (pull endpoints).
    #[arg(long, default_value_t = 2)]
    agents: usize,
    /// Run every role as its own child process (`kraken ROLE --config FILE`, the configs
    /// written under `--data-dir`), on free ports of 127.0.0.1. Ctrl-C stops them all; they
    /// die with this process.
    #[arg(long)]
    processes: bool,
    /// How many origins (`--processes` only).
    #[arg(long, default_value_t = 1, requires = "processes")]
    origins: usize,
    /// How many trackers (`--processes` only).
    #[arg(long, default_value_t = 1, requires = "processes")]
    trackers: usize,
    /// The Redis server the trackers share their peers through, `redis://HOST:PORT`
    /// (`--processes` only). Default: each tracker's own memory.
    #[arg(long, value_name = "URL", requires = "processes")]
    redis: Option<String>,
    /// Listen on free ports instead of Go Kraken's devcluster ports (15000–15004, 16000, …).
    #[arg(long)]
    ephemeral_ports: bool,
    /// Print the addresses as one JSON object on stdout once everything listens (with
    /// `--processes`, once every role answers `/health`, with each role's pid).
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: DevClusterArgs) -> anyhow::Result<()> {
    if args.processes {
        let mut shape = ClusterShape::new(&args.data_dir);
        shape.origins = args.origins;
        shape.trackers = args.trackers;
        shape.agents = args.agents;
        shape.redis = args.redis;
        return processes::run(shape, args.json).await;
    }
    let mut config = DevClusterConfig::new(&args.data_dir);
    config.agents = args.agents;
    if args.ephemeral_ports {
        config.ports = PortPlan::Ephemeral;
    }
    let cluster = DevCluster::start(config)
        .await
        .context("starting the devcluster")?;
    crate::logging::say(&format!("{}Ctrl-C stops it.", cluster.describe()));
    if args.json {
        let a = cluster.addrs();
        let addrs = serde_json::json!({
            "proxy": a.proxy.to_string(),
            "origin": a.origin.to_string(),
            "tracker": a.tracker.to_string(),
            "build_index": a.build_index.to_string(),
            "agents": a.agents.iter().map(|(registry, _)| registry.to_string()).collect::<Vec<_>>(),
        });
        println!("{addrs}");
    }
    crate::process::wait_for_signal().await?;
    crate::logging::say("stopping");
    cluster.shutdown().await;
    Ok(())
}
