//! The `kraken` command: one subcommand per role or client verb.

mod agent;
mod bench;
mod build_index;
mod config;
mod devcluster;
#[cfg(test)]
mod example_configs;
mod metainfo;
mod model;
mod origin;
mod p2p;
mod process;
mod proxy;
mod rate;
mod sim;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc returns freed piece buffers to the OS promptly; glibc's per-thread arenas kept
/// them, and the fetcher's resident memory crept up with blob size (measured in
/// `docs/benchmarks.md`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Kraken: P2P distribution of blobs and container images.
#[derive(Debug, Parser)]
#[command(name = "kraken", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Compute a file's metainfo: digest, size, piece length, piece count and info hash.
    Metainfo(metainfo::MetainfoArgs),
    /// Run a tracker: peers announce to it and learn about each other.
    Tracker(p2p::TrackerArgs),
    /// Run an origin: the blob store of the cluster, backed by remote storage, seeding to the
    /// swarm.
    Origin(origin::OriginArgs),
    /// Run a build-index: tag → digest for the cluster, backed by remote storage,
    /// replicating tags to other clusters.
    BuildIndex(build_index::BuildIndexArgs),
    /// Run a proxy: the registry API that images are pushed through, into the origins
    /// (blobs, manifests) and the build-index (tags).
    Proxy(proxy::ProxyArgs),
    /// Run an agent: the OCI pull API on every host, downloading over P2P.
    Agent(agent::AgentArgs),
    /// Run a whole cluster in one process on loopback (tracker, origin, build-index, proxy,
    /// agents) with local-directory backends, on Go Kraken's devcluster ports.
    Devcluster(devcluster::DevClusterArgs),
    /// Seed a file or a directory to the swarm, in place, until interrupted.
    Seed(p2p::SeedArgs),
    /// Download a blob from the swarm into a file (or a collection into a directory), verified.
    Fetch(p2p::FetchArgs),
    /// Push a model directory as a ModelPack artifact, or pull one into a directory.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// Measure swarms of real processes against references run alongside.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Simulate the swarm scheduler distributing an image to many hosts, against the fluid
    /// bound T*.
    Sim(sim::SimArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Metainfo(args) => metainfo::run(args),
        Command::Tracker(args) => process::runtime().and_then(|rt| rt.block_on(p2p::tracker(args))),
        Command::Origin(args) => process::runtime().and_then(|rt| rt.block_on(origin::run(args))),
        Command::BuildIndex(args) => {
            process::runtime().and_then(|rt| rt.block_on(build_index::run(args)))
        }
        Command::Proxy(args) => process::runtime().and_then(|rt| rt.block_on(proxy::run(args))),
        Command::Agent(args) => process::runtime().and_then(|rt| rt.block_on(agent::run(args))),
        Command::Devcluster(args) => {
            process::runtime().and_then(|rt| rt.block_on(devcluster::run(args)))
        }
        Command::Seed(args) => process::runtime().and_then(|rt| rt.block_on(p2p::seed(args))),
        Command::Fetch(args) => process::runtime().and_then(|rt| rt.block_on(p2p::fetch(args))),
        Command::Model(command) => {
            process::runtime().and_then(|rt| rt.block_on(model::run(command)))
        }
        Command::Bench(command) => bench::run(command),
        Command::Sim(args) => sim::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The library errors include their causes in their own text: print each once.
            eprintln!("kraken: {}", kraken_core::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr; `RUST_LOG` sets the filter (default: warnings, and info from kraken).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "warn,kraken_p2p=info,kraken_registry=info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
