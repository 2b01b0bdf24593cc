//! `kraken proxy`: the registry front-end that images are pushed through.

use anyhow::Context as _;
use kraken_registry::proxy::{BuildIndexTarget, Proxy, ProxyConfig};

use crate::config::{Role, Sources};
use crate::logging::say;

#[derive(Debug, clap::Args)]
pub(crate) struct ProxyArgs {
    /// Listen address, data directory, origin cluster, build-index, auth, limits, TLS: see
    /// docs/proxy.md.
    #[command(flatten)]
    sources: Sources,
}

/// The defaults of `kraken config defaults proxy`, with examples of the required keys.
pub(crate) fn defaults() -> ProxyConfig {
    let mut config = ProxyConfig::new(
        std::net::SocketAddr::from(([0, 0, 0, 0], 15000)),
        "/var/lib/kraken/proxy",
    );
    config.build_index = BuildIndexTarget::new(["build-index:15004"]);
    config
}

/// The keys without a default.
pub(crate) const REQUIRED: &[&str] = &["listen", "data_dir", "build_index.addresses"];

/// Loads and checks the settings without starting anything.
pub(crate) fn check(sources: &Sources) -> anyhow::Result<ProxyConfig> {
    let config: ProxyConfig = crate::config::load(Role::Proxy, sources, &defaults())?;
    config.validate()?;
    Ok(config)
}

pub(crate) async fn run(args: ProxyArgs) -> anyhow::Result<()> {
    let config = check(&args.sources)?;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let proxy = Proxy::builder(config)
        .spawn()
        .await
        .context("starting the proxy")?;
    say(&format!(
        "proxy listening on {scheme}://{}",
        proxy.local_addr()
    ));
    crate::process::wait_for_signal().await?;
    proxy.shutdown().await;
    Ok(())
}
