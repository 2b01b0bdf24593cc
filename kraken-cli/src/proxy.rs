//! `kraken proxy`: the registry front-end that images are pushed through.

use std::path::PathBuf;

use anyhow::Context as _;
use kraken_registry::proxy::{Proxy, ProxyConfig};

#[derive(Debug, clap::Args)]
pub(crate) struct ProxyArgs {
    /// The TOML config file (listen address, data directory, origin cluster, build-index,
    /// auth, limits, TLS; see docs/proxy.md).
    #[arg(long)]
    config: PathBuf,
}

pub(crate) async fn run(args: ProxyArgs) -> anyhow::Result<()> {
    let config: ProxyConfig = crate::config::load(&args.config)?;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let proxy = Proxy::builder(config)
        .spawn()
        .await
        .context("starting the proxy")?;
    eprintln!("proxy listening on {scheme}://{}", proxy.local_addr());
    crate::process::wait_for_signal().await?;
    proxy.shutdown().await;
    Ok(())
}
