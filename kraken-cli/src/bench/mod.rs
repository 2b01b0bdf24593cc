//! `kraken bench`: swarms of real processes on loopback, measured against references run in
//! the same invocation (the fluid lower bound, an aria2c swarm, `openssl dgst -sha256`).

mod layers;
mod origin;
mod origin_scale;
mod process;
mod registry;
mod swarm;
mod transfer;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum BenchCommand {
    /// One seeder and N fetchers as separate processes, every node capped: completion
    /// times against the fluid bound T*, and optionally against an aria2c swarm.
    Swarm(swarm::SwarmArgs),
    /// One seeder to one fetcher, uncapped: throughput against `openssl dgst -sha256` on the
    /// same file, and the fetcher's peak memory.
    Transfer(transfer::TransferArgs),
    /// `GET` of a blob cached by a `kraken origin` against CNCF Distribution
    /// (`docker-registry`) serving the same blob from its filesystem.
    Origin(origin::OriginBenchArgs),
    /// An image of many layers (a directory seeded as a collection) pulled by N capped
    /// fetchers: wall times against T* for the whole image, and the most sockets a process
    /// held.
    Layers(layers::LayersArgs),
    /// A `kraken origin` whose store holds many small blobs (100,000 by default): time to
    /// the first blob served, files held open, and the announces and metainfo publishes its
    /// tracker sees at start-up and while a few blobs are wanted.
    OriginScale(origin_scale::OriginScaleArgs),
    /// The registry end to end through `kraken devcluster` — push to the proxy, pull through
    /// two agents, cached and 50 concurrent pulls from an agent — against CNCF Distribution.
    Registry(registry::RegistryBenchArgs),
}

pub(crate) fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Swarm(args) => swarm::run(args),
        BenchCommand::Transfer(args) => transfer::run(args),
        BenchCommand::Origin(args) => origin::run(args),
        BenchCommand::OriginScale(args) => origin_scale::run(args),
        BenchCommand::Layers(args) => layers::run(args),
        BenchCommand::Registry(args) => registry::run(args),
    }
}
