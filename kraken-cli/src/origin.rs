//! `kraken origin`: one member of the origin cluster.

use std::path::PathBuf;

use anyhow::Context as _;
use kraken_registry::origin::{Origin, OriginConfig};

#[derive(Debug, clap::Args)]
pub(crate) struct OriginArgs {
    /// The TOML config file (listen addresses, data directory, members, replicas, tracker,
    /// backends, write-back and cleanup; see docs/origin.md).
    #[arg(long)]
    config: PathBuf,
}

pub(crate) async fn run(args: OriginArgs) -> anyhow::Result<()> {
    let config: OriginConfig = crate::config::load(&args.config)?;
    let origin = Origin::spawn(config).await.context("starting the origin")?;
    eprintln!(
        "origin {} listening on http://{}",
        origin.name(),
        origin.local_addr()
    );
    if let Some(peer) = origin.peer_addr() {
        eprintln!("origin seeding from {peer}");
    }
    crate::process::wait_for_signal().await?;
    origin.shutdown().await;
    Ok(())
}
