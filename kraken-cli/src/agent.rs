//! `kraken agent`: the pull side on every host.

use std::path::PathBuf;

use anyhow::Context as _;
use kraken_registry::agent::{Agent, AgentConfig};

#[derive(Debug, clap::Args)]
pub(crate) struct AgentArgs {
    /// The TOML config file (registry and peer ports, data directory, trackers,
    /// build-indexes, allowed CIDRs, P2P limits, cleanup, TLS; see docs/agent.md).
    #[arg(long)]
    config: PathBuf,
}

pub(crate) async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let config: AgentConfig = crate::config::load(&args.config)?;
    let agent = Agent::spawn(config).await.context("starting the agent")?;
    eprintln!(
        "agent listening on {} (registry port), peers on {}",
        agent.local_addr(),
        agent.peer_addr()
    );
    crate::process::wait_for_signal().await?;
    agent.shutdown().await;
    Ok(())
}
