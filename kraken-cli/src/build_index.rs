//! `kraken build-index`: one member of a cluster's build-index.

use anyhow::Context as _;
use kraken_registry::build_index::{BuildIndex, BuildIndexConfig};

use crate::config::{Role, Sources};
use crate::logging::say;

#[derive(Debug, clap::Args)]
pub(crate) struct BuildIndexArgs {
    /// Listen address, data directory, origin cluster, neighbours, remotes, backends,
    /// limits: see docs/build-index.md.
    #[command(flatten)]
    sources: Sources,
}

/// The defaults of `kraken config defaults build-index`, with examples of the required keys.
pub(crate) fn defaults() -> BuildIndexConfig {
    BuildIndexConfig::new(
        std::net::SocketAddr::from(([0, 0, 0, 0], 15004)),
        "/var/lib/kraken/build-index",
    )
}

/// The keys without a default.
pub(crate) const REQUIRED: &[&str] = &["listen", "data_dir"];

/// Loads and checks the settings without starting anything.
pub(crate) fn check(sources: &Sources) -> anyhow::Result<BuildIndexConfig> {
    let config: BuildIndexConfig = crate::config::load(Role::BuildIndex, sources, &defaults())?;
    config.validate()?;
    Ok(config)
}

pub(crate) async fn run(args: BuildIndexArgs) -> anyhow::Result<()> {
    let config = check(&args.sources)?;
    let build_index = BuildIndex::spawn(config)
        .await
        .context("starting the build-index")?;
    say(&format!(
        "build-index {} listening on http://{}",
        build_index.name(),
        build_index.local_addr()
    ));
    crate::process::wait_for_signal().await?;
    build_index.shutdown().await;
    Ok(())
}
