//! `kraken gc`: the origins' mark-and-sweep garbage collector (`docs/origin.md`, "Garbage
//! collection").

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use kraken_p2p::tls::ClientTlsConfig;
use kraken_registry::gc::{GcConfig, collect_garbage};

#[derive(Debug, clap::Args)]
pub(crate) struct GcArgs {
    /// A build-index of the cluster (`host:port`); repeat or separate with commas to give
    /// several, tried in order.
    #[arg(
        long = "build-index",
        value_name = "ADDR",
        required = true,
        value_delimiter = ','
    )]
    build_index: Vec<String>,
    /// Every origin of the cluster (`host:port`); repeat or separate with commas. Each
    /// sweeps its own disk.
    #[arg(
        long = "origin",
        value_name = "ADDR",
        required = true,
        value_delimiter = ','
    )]
    origins: Vec<String>,
    /// Blobs written less recently than this are never swept; longer than any push takes.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    grace: Duration,
    /// Only report what would be swept.
    #[arg(long)]
    dry_run: bool,
    /// The origins' `cluster.replicas` (manifests are read from their owners first).
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Also list the backend of this namespace for blobs no origin holds (the tagged
    /// repositories' backends are always listed); repeatable.
    #[arg(long = "backend-namespace", value_name = "NS")]
    backend_namespaces: Vec<String>,
    /// CA certificate the cluster's services chain to (TLS toward them).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// An operator's client certificate, for origins that require client certificates.
    #[arg(long, value_name = "FILE", requires_all = ["ca", "key"])]
    cert: Option<PathBuf>,
    /// The key of `--cert`.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
}

/// Runs a collection and prints its report (JSON) on stdout; fails when an origin could
/// not sweep (after printing what the others did).
pub(crate) async fn run(args: GcArgs) -> anyhow::Result<()> {
    let mut config = GcConfig::default();
    config.build_index = args.build_index;
    config.origins = args.origins;
    config.grace = args.grace;
    config.dry_run = args.dry_run;
    config.replicas = args.replicas;
    config.backend_namespaces = args.backend_namespaces;
    config.client_tls = args.ca.map(|ca| {
        let tls = ClientTlsConfig::new(ca);
        match (args.cert, args.key) {
            (Some(cert), Some(key)) => tls.with_identity(cert, key),
            _ => tls,
        }
    });
    let report = collect_garbage(&config)
        .await
        .context("garbage collection (nothing was swept)")?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if !report.complete() {
        anyhow::bail!("some origins could not sweep; see their `error` in the report");
    }
    Ok(())
}
