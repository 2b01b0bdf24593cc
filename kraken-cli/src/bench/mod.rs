//! `kraken bench`: swarms of real processes on loopback, measured against references run in
//! the same invocation (the fluid lower bound, an aria2c swarm, `openssl dgst -sha256`).

mod dir_swarm;
mod layers;
mod model;
mod origin;
mod origin_scale;
mod process;
mod registry;
mod swarm;
mod tracker_restart;
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
    /// A cold pull of a layer through an agent before and right after a tracker restart, on
    /// a `kraken devcluster --processes` cluster, with the tracker's peers in memory and in
    /// Redis.
    TrackerRestart(tracker_restart::TrackerRestartArgs),
    /// A model directory (shards, config, tokenizer) from one seeder to N capped fetchers,
    /// each `kraken fetch DIGEST --out DIR`: wall time against T*, peak memory, bytes written.
    Model(model::ModelBenchArgs),
}

pub(crate) fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Swarm(args) => swarm::run(args),
        BenchCommand::Transfer(args) => transfer::run(args),
        BenchCommand::Origin(args) => origin::run(args),
        BenchCommand::OriginScale(args) => origin_scale::run(args),
        BenchCommand::Layers(args) => layers::run(args),
        BenchCommand::Registry(args) => registry::run(args),
        BenchCommand::TrackerRestart(args) => tracker_restart::run(args),
        BenchCommand::Model(args) => model::run(args),
    }
}

/// Completion times of a swarm's fetchers: percentiles (nearest rank) and the slowest, in
/// seconds and as multiples of the fluid bound T*.
#[derive(Debug, serde::Serialize)]
struct Completion {
    p50: f64,
    p99: f64,
    max: f64,
    p50_t_star: f64,
    p99_t_star: f64,
}

impl Completion {
    fn new(mut seconds: Vec<f64>, t_star: f64) -> Self {
        seconds.sort_by(f64::total_cmp);
        let (p50, p99) = (nearest_rank(&seconds, 0.5), nearest_rank(&seconds, 0.99));
        Self {
            p50,
            p99,
            max: *seconds.last().expect("at least one fetcher"),
            p50_t_star: p50 / t_star,
            p99_t_star: p99 / t_star,
        }
    }
}

/// The `q` quantile of `sorted` (ascending, not empty) by nearest rank: for `q` = 0.5 the
/// middle value of an odd count, the lower of the two middle ones of an even count.
fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// The fluid lower bound T* of DESIGN.md §8 for one seeder of `size` bytes and `fetchers`
/// fetchers, every node capped at `rate` bytes per second each way (d = u = U = rate).
fn fluid_bound(size: f64, rate: f64, fetchers: u32) -> f64 {
    let n = f64::from(fetchers);
    (size / rate).max(n * size / (rate + n * rate))
}

/// Bytes of the regular files under `dir`, recursively.
fn tree_size(dir: &std::path::Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            tree_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}
