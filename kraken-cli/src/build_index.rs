//! `kraken build-index`: one member of a cluster's build-index.

use std::path::PathBuf;

use anyhow::Context as _;
use kraken_registry::build_index::{BuildIndex, BuildIndexConfig};

#[derive(Debug, clap::Args)]
pub(crate) struct BuildIndexArgs {
    /// The TOML config file (listen address, data directory, origin cluster, neighbours,
    /// remotes, backends, limits; see docs/build-index.md).
    #[arg(long)]
    config: PathBuf,
}

pub(crate) async fn run(args: BuildIndexArgs) -> anyhow::Result<()> {
    let config: BuildIndexConfig = crate::config::load(&args.config)?;
    let build_index = BuildIndex::spawn(config)
        .await
        .context("starting the build-index")?;
    eprintln!(
        "build-index {} listening on http://{}",
        build_index.name(),
        build_index.local_addr()
    );
    crate::process::wait_for_signal().await?;
    build_index.shutdown().await;
    Ok(())
}
