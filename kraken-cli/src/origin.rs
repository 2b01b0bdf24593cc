//! `kraken origin`: one member of the origin cluster.

use anyhow::Context as _;
use kraken_registry::origin::{Origin, OriginConfig};

use crate::config::{Role, Sources};
use crate::logging::say;

#[derive(Debug, clap::Args)]
pub(crate) struct OriginArgs {
    /// Listen addresses, data directory, members, replicas, tracker, backends, write-back
    /// and cleanup: see docs/origin.md.
    #[command(flatten)]
    sources: Sources,
}

/// The defaults of `kraken config defaults origin`, with examples of the required keys.
pub(crate) fn defaults() -> OriginConfig {
    OriginConfig::new(
        std::net::SocketAddr::from(([0, 0, 0, 0], 15002)),
        "/var/lib/kraken/origin",
    )
}

/// The keys without a default.
pub(crate) const REQUIRED: &[&str] = &["listen", "data_dir"];

/// Loads and checks the settings without starting anything.
pub(crate) fn check(sources: &Sources) -> anyhow::Result<OriginConfig> {
    let config: OriginConfig = crate::config::load(Role::Origin, sources, &defaults())?;
    config.validate()?;
    Ok(config)
}

pub(crate) async fn run(args: OriginArgs) -> anyhow::Result<()> {
    let config = check(&args.sources)?;
    let origin = Origin::spawn(config).await.context("starting the origin")?;
    say(&format!(
        "origin {} listening on http://{}",
        origin.name(),
        origin.local_addr()
    ));
    if let Some(peer) = origin.peer_addr() {
        say(&format!("origin seeding from {peer}"));
    }
    crate::process::wait_for_signal().await?;
    origin.shutdown().await;
    Ok(())
}
