//! `kraken sim`: the real swarm scheduler over a simulated network of many hosts.

mod plot;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use kraken_core::ByteSize;
use kraken_p2p::sim::{HandoutPolicy, Percentiles, Report, Scenario, Sharing};
use serde::Serialize;

use crate::rate::Rate;

#[derive(Debug, clap::Args)]
pub(crate) struct SimArgs {
    /// Hosts fetching the image.
    #[arg(long, default_value_t = 100)]
    hosts: usize,
    /// Origins seeding it.
    #[arg(long, default_value_t = 1)]
    origins: usize,
    /// The image's blob sizes, comma-separated (its layers; all fetched at once).
    #[arg(long, value_delimiter = ',', default_value = "256MiB")]
    blobs: Vec<ByteSize>,
    /// Each host's bandwidth, each direction.
    #[arg(long, default_value = "300MB")]
    bandwidth: Rate,
    /// Each origin's bandwidth, each direction.
    #[arg(long, default_value = "1.25GB")]
    origin_bandwidth: Rate,
    /// Host bandwidths spread uniformly over [(1 − H)·bandwidth, bandwidth].
    #[arg(long, default_value_t = 0.0)]
    heterogeneity: f64,
    /// One-way latency of every message.
    #[arg(long, default_value = "1ms", value_parser = humantime::parse_duration)]
    latency: Duration,
    /// Piece length; default: the standard table's choice for each blob size.
    #[arg(long)]
    piece_length: Option<ByteSize>,
    /// Spread host arrivals uniformly over this period (0: all at once).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    arrivals: Duration,
    /// Fraction of hosts that leave mid-way.
    #[arg(long, default_value_t = 0.0)]
    churn: f64,
    /// When the churning hosts leave (default: at T*/2).
    #[arg(long, value_parser = humantime::parse_duration)]
    churn_at: Option<Duration>,
    /// One origin fails at this time.
    #[arg(long, value_parser = humantime::parse_duration)]
    origin_failure_at: Option<Duration>,
    /// How a link is shared among its flows: `equal-split` (simple, pessimistic) or
    /// `water-fill` (max-min-like, as TCP converges to; about four times slower).
    #[arg(long, default_value = "equal-split", value_parser = parse_sharing)]
    sharing: Sharing,
    /// The tracker hands out origins only: a star instead of a swarm (for comparison).
    #[arg(long)]
    star: bool,
    /// Most connections per torrent per host (the swarm's default: 10).
    #[arg(long)]
    max_conns: Option<usize>,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Stop after this much virtual time.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    time_limit: Duration,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Draw the completion-time CDF, with T*, into this SVG file.
    #[arg(long)]
    plot: Option<PathBuf>,
}

/// The report and what the simulation itself cost.
#[derive(Debug, Serialize)]
struct Output<'a> {
    #[serde(flatten)]
    report: &'a Report,
    wall_seconds: f64,
    peak_rss_bytes: Option<u64>,
}

pub(crate) fn run(args: SimArgs) -> anyhow::Result<()> {
    let scenario = scenario(&args)?;
    let started = Instant::now();
    let report = scenario.run();
    let output = Output {
        report: &report,
        wall_seconds: started.elapsed().as_secs_f64(),
        peak_rss_bytes: crate::process::peak_rss_bytes(),
    };
    if let Some(path) = &args.plot {
        std::fs::write(path, plot::completion_cdf(&report))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&output)?);
    } else {
        print!("{}", table(&output));
    }
    Ok(())
}

fn scenario(args: &SimArgs) -> anyhow::Result<Scenario> {
    if args.hosts == 0 || args.origins == 0 {
        bail!("a simulation needs at least one host and one origin");
    }
    if args.blobs.is_empty() || args.blobs.iter().any(|b| b.bytes() == 0) {
        bail!("every blob needs a positive size");
    }
    for (name, value) in [
        ("--heterogeneity", args.heterogeneity),
        ("--churn", args.churn),
    ] {
        if !(0.0..=1.0).contains(&value) {
            bail!("{name} is a fraction between 0 and 1, not {value}");
        }
    }
    let mut scenario = Scenario::default();
    scenario.hosts = args.hosts;
    scenario.origins = args.origins;
    scenario.blobs = args.blobs.iter().map(|b| b.bytes()).collect();
    scenario.host_bandwidth = args.bandwidth.0.bytes() as f64;
    scenario.origin_bandwidth = args.origin_bandwidth.0.bytes() as f64;
    scenario.heterogeneity = args.heterogeneity;
    scenario.latency = args.latency;
    if let Some(length) = args.piece_length {
        kraken_core::PieceLengthPolicy::fixed(length.bytes()).context("--piece-length")?;
    }
    scenario.piece_length = args.piece_length.map(|p| p.bytes());
    scenario.arrivals = args.arrivals;
    scenario.churn = args.churn;
    scenario.churn_at = args.churn_at;
    scenario.origin_failure_at = args.origin_failure_at;
    scenario.sharing = args.sharing;
    if args.star {
        scenario.handout = HandoutPolicy::OriginsOnly;
    }
    if let Some(max) = args.max_conns {
        scenario.swarm.max_conns_per_torrent = max;
    }
    scenario.seed = args.seed;
    scenario.time_limit = args.time_limit;
    Ok(scenario)
}

fn parse_sharing(s: &str) -> Result<Sharing, String> {
    match s {
        "water-fill" => Ok(Sharing::WaterFill),
        "equal-split" => Ok(Sharing::EqualSplit),
        _ => Err(format!("{s:?}: use water-fill or equal-split")),
    }
}

fn table(output: &Output<'_>) -> String {
    use std::fmt::Write as _;
    let r = output.report;
    let s = &r.scenario;
    let mut out = String::new();
    let pieces: Vec<String> = r
        .piece_lengths
        .iter()
        .map(|&p| ByteSize(p).to_string())
        .collect();
    let _ = writeln!(
        out,
        "{} hosts at {:.0} MB/s, {} origins at {:.0} MB/s; image {:.2} GB in {} blob(s), \
         pieces {}; seed {}",
        s.hosts,
        s.host_bandwidth / 1e6,
        s.origins,
        s.origin_bandwidth / 1e6,
        r.image_bytes as f64 / 1e9,
        s.blobs.len(),
        pieces.join(","),
        s.seed,
    );
    let _ = writeln!(out, "T* = {:.2} s", r.t_star);
    let _ = writeln!(out, "completion   seconds     × T*");
    let row = |p: &Percentiles| {
        [p.p50, p.p90, p.p99, p.p999, p.max]
            .map(|v| v.map_or_else(|| "    —".to_string(), |v| format!("{v:8.2}")))
    };
    let (secs, ratio) = (row(&r.completion), row(&r.completion_t_star));
    for (i, name) in ["p50", "p90", "p99", "p99.9", "max"].iter().enumerate() {
        let _ = writeln!(out, "  {name:<8} {}  {}", secs[i], ratio[i]);
    }
    let _ = writeln!(
        out,
        "hosts: {} completed, {} left (churn), {} unfinished",
        r.completed, r.left, r.unfinished
    );
    let egress: Vec<String> = r
        .origin_egress
        .iter()
        .map(|&b| format!("{:.2}", b as f64 / r.image_bytes as f64))
        .collect();
    let _ = writeln!(
        out,
        "origin egress: max {:.2} × image (each: {})",
        r.max_origin_egress_ratio,
        egress.join(", ")
    );
    let total = (r.bytes_from_peers + r.bytes_from_origins).max(1) as f64;
    let _ = writeln!(
        out,
        "received: {:.2} GB from peers ({:.1}%), {:.2} GB from origins",
        r.bytes_from_peers as f64 / 1e9,
        100.0 * r.bytes_from_peers as f64 / total,
        r.bytes_from_origins as f64 / 1e9,
    );
    if let Some(t) = r.median_throughput_ratio {
        let _ = writeln!(out, "median throughput: {t:.2} of the host's downlink");
    }
    let o = &r.overlay;
    let _ = writeln!(
        out,
        "overlay at {:.2} s: {} hosts, {} links, {} component(s) (largest {}), diameter {}{}, \
         degree min/median/max {}/{}/{} (mean {:.1})",
        o.at,
        o.hosts,
        o.links,
        o.components,
        o.largest_component,
        o.diameter,
        if o.diameter_exact {
            ""
        } else {
            " (≥, sampled)"
        },
        o.degree.min,
        o.degree.median,
        o.degree.max,
        o.degree.mean,
    );
    let _ = writeln!(
        out,
        "simulation: {} events over {:.2} s of virtual time; wall {:.1} s; peak memory {}",
        r.events,
        r.virtual_seconds,
        output.wall_seconds,
        output.peak_rss_bytes.map_or_else(
            || "unknown".into(),
            |b| format!("{:.0} MiB", b as f64 / 1048576.0)
        ),
    );
    out
}
