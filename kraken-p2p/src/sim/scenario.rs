//! Whole experiments: an image to many hosts, and what it cost.

use std::sync::Arc;
use std::time::Duration;

use kraken_core::{Digest, MetaInfo, PieceLengthPolicy};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use super::overlay::Overlay;
use super::{HandoutPolicy, HostId, HostSpec, Sharing, Sim, fluid_bound};
use crate::swarm::SwarmConfig;

/// One experiment: origins seed an image (one or more blobs, its layers) and hosts fetch all
/// of it. Defaults give a small run; every field is public to set.
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(default)]
pub struct Scenario {
    /// Hosts fetching the image. Default: 100.
    pub hosts: usize,
    /// Origins seeding it from the start. Default: 1.
    pub origins: usize,
    /// The image's blob sizes in bytes; hosts fetch them all at once. Default: one of 256 MiB.
    pub blobs: Vec<u64>,
    /// Each host's uplink and downlink, bytes/s. Default: 300 MB/s (Go Kraken's cap).
    pub host_bandwidth: f64,
    /// Each origin's uplink and downlink, bytes/s. Default: 1.25 GB/s (10 Gbit/s).
    pub origin_bandwidth: f64,
    /// Spread of host bandwidths: each host gets a bandwidth drawn uniformly from
    /// `[(1 − h) · host_bandwidth, host_bandwidth]`. Default: 0 (all equal).
    pub heterogeneity: f64,
    /// One-way latency of every message. Default: 1 ms.
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
    /// Piece length; `None` follows the default [`PieceLengthPolicy`]. Default: none.
    pub piece_length: Option<u64>,
    /// Hosts start at random times spread uniformly over this period; zero starts all at
    /// once. Default: zero.
    #[serde(with = "humantime_serde")]
    pub arrivals: Duration,
    /// Fraction of hosts that leave (chosen at random) at [`churn_at`](Self::churn_at).
    /// Default: 0.
    pub churn: f64,
    /// When churning hosts leave; `None` means at half of T*. Default: none.
    #[serde(with = "humantime_serde")]
    pub churn_at: Option<Duration>,
    /// When one origin fails (leaves for good); `None`: none fails. Default: none.
    #[serde(with = "humantime_serde")]
    pub origin_failure_at: Option<Duration>,
    /// How links are shared among flows. Default: equal split.
    pub sharing: Sharing,
    /// Whom the tracker hands out. Default: its real policy.
    pub handout: HandoutPolicy,
    /// Peers per handout. Default: 50.
    pub handout_limit: usize,
    /// The scheduler settings of every host (origins get `origin = true`). Default: the
    /// swarm's defaults.
    pub swarm: SwarmConfig,
    /// Seed of every random choice. Default: 1.
    pub seed: u64,
    /// Virtual time after which the run stops, finished or not. Default: 1 hour.
    #[serde(with = "humantime_serde")]
    pub time_limit: Duration,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            hosts: 100,
            origins: 1,
            blobs: vec![256 << 20],
            host_bandwidth: 300e6,
            origin_bandwidth: 1.25e9,
            heterogeneity: 0.0,
            latency: Duration::from_millis(1),
            piece_length: None,
            arrivals: Duration::ZERO,
            churn: 0.0,
            churn_at: None,
            origin_failure_at: None,
            sharing: Sharing::default(),
            handout: HandoutPolicy::Random,
            handout_limit: crate::tracker::DEFAULT_HANDOUT_LIMIT,
            swarm: SwarmConfig::default(),
            seed: 1,
            time_limit: Duration::from_secs(3600),
        }
    }
}

/// Completion-time percentiles in seconds; `None` where that share of hosts never finished.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Percentiles {
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// 99.9th percentile.
    pub p999: Option<f64>,
    /// The slowest host.
    pub max: Option<f64>,
}

impl Percentiles {
    /// Percentiles of `times` (seconds, any order) among `population` hosts, those missing
    /// from `times` counting as never finished.
    pub fn of(times: &[f64], population: usize) -> Self {
        let mut sorted = times.to_vec();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| -> Option<f64> {
            if population == 0 {
                return None;
            }
            // Nearest rank: the smallest time at or below which a share `q` of hosts lies.
            let rank = ((q * population as f64).ceil() as usize).clamp(1, population);
            sorted.get(rank - 1).copied()
        };
        Self {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            p999: at(0.999),
            max: at(1.0),
        }
    }

    /// The same percentiles divided by `unit`.
    pub fn scaled(&self, unit: f64) -> Self {
        let s = |v: Option<f64>| v.map(|v| v / unit);
        Self {
            p50: s(self.p50),
            p90: s(self.p90),
            p99: s(self.p99),
            p999: s(self.p999),
            max: s(self.max),
        }
    }
}

/// What a [`Scenario`] run measured.
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
pub struct Report {
    /// The scenario that ran.
    pub scenario: Scenario,
    /// Bytes of the whole image.
    pub image_bytes: u64,
    /// Piece length used, per blob.
    pub piece_lengths: Vec<u64>,
    /// The fluid bound for the image, seconds.
    pub t_star: f64,
    /// Hosts that fetched the whole image.
    pub completed: usize,
    /// Hosts that left before finishing (churn).
    pub left: usize,
    /// Hosts still fetching at the time limit.
    pub unfinished: usize,
    /// Completion times (from each host's arrival) of the hosts that stayed, seconds.
    pub completion: Percentiles,
    /// Each host's completion time as a multiple of its own fluid bound (with
    /// `heterogeneity`, `S / its downlink` where that is the tightest; otherwise T*).
    pub completion_t_star: Percentiles,
    /// Every completion time, ascending (for plots).
    pub completion_times: Vec<f64>,
    /// Bytes each origin uploaded.
    pub origin_egress: Vec<u64>,
    /// The largest origin egress as a multiple of the image size.
    pub max_origin_egress_ratio: f64,
    /// Bytes hosts received from origins.
    pub bytes_from_origins: u64,
    /// Bytes hosts received from other hosts.
    pub bytes_from_peers: u64,
    /// Median of each host's image size divided by its completion time, as a fraction of
    /// its downlink.
    pub median_throughput_ratio: Option<f64>,
    /// The overlay when it had the most links.
    pub overlay: Overlay,
    /// Virtual time simulated, seconds.
    pub virtual_seconds: f64,
    /// Events the simulator handled.
    pub events: u64,
}

impl Scenario {
    /// The piece length of a blob of `size` bytes in this scenario.
    pub fn piece_length_for(&self, size: u64) -> u64 {
        self.piece_length
            .unwrap_or_else(|| PieceLengthPolicy::default().piece_length_for(size))
    }

    /// The fluid bound of this scenario's image, with every host at the nominal bandwidth.
    pub fn t_star(&self) -> f64 {
        let size: u64 = self.blobs.iter().sum();
        let origin_up = self.origin_bandwidth * self.origins as f64;
        fluid_bound(
            size as f64,
            self.hosts as f64,
            self.host_bandwidth,
            self.host_bandwidth,
            origin_up,
        )
    }

    /// Runs the experiment. Deterministic: the same scenario gives the same report.
    pub fn run(&self) -> Report {
        let t_star = self.t_star();
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut sim = Sim::new(rng.random(), self.latency, 0.0);
        sim.set_record_events(false);
        sim.set_sharing(self.sharing);
        sim.set_tracker(
            self.handout_limit,
            self.handout,
            self.swarm.announce_interval,
        );
        let metas: Vec<Arc<MetaInfo>> = self
            .blobs
            .iter()
            .enumerate()
            .map(|(i, &size)| synthetic_blob(i as u64, size, self.piece_length_for(size)))
            .collect();

        let origins: Vec<HostId> = (0..self.origins)
            .map(|_| {
                let mut spec = HostSpec::symmetric(self.origin_bandwidth);
                spec.config = self.swarm.clone();
                spec.config.origin = true;
                sim.add_host(spec)
            })
            .collect();
        for &origin in &origins {
            for meta in &metas {
                sim.seed(origin, meta);
            }
        }
        let mut arrival = Vec::with_capacity(self.hosts);
        let mut downlink = Vec::with_capacity(self.hosts);
        let hosts: Vec<HostId> = (0..self.hosts)
            .map(|_| {
                let rate = self.host_bandwidth
                    * (1.0 - self.heterogeneity.clamp(0.0, 1.0) * rng.random::<f64>());
                let mut spec = HostSpec::symmetric(rate);
                spec.config = self.swarm.clone();
                spec.config.origin = false;
                let host = sim.add_host(spec);
                let at = if self.arrivals.is_zero() {
                    Duration::ZERO
                } else {
                    self.arrivals.mul_f64(rng.random::<f64>())
                };
                for meta in &metas {
                    sim.fetch_at(at, host, meta);
                }
                arrival.push(at);
                downlink.push(rate);
                host
            })
            .collect();

        let mut leaving: Vec<HostId> = hosts.clone();
        leaving.shuffle(&mut rng);
        leaving.truncate((self.churn.clamp(0.0, 1.0) * self.hosts as f64).round() as usize);
        let churn_at = self
            .churn_at
            .unwrap_or_else(|| Duration::from_secs_f64(t_star / 2.0));
        for &host in &leaving {
            sim.kill_at(churn_at, host);
        }
        if let (Some(at), Some(&origin)) = (self.origin_failure_at, origins.first()) {
            sim.kill_at(at, origin);
        }

        // Everyone who stays fetches every blob; churned hosts may finish before they leave.
        let target = (self.hosts - leaving.len()) * metas.len();
        let mut overlay_links: Vec<(HostId, HostId)> = Vec::new();
        let mut overlay_at = 0.0;
        let sample_every = Duration::from_secs_f64((t_star / 50.0).max(1e-3));
        let mut next_sample = Duration::ZERO;
        let mut stays = vec![true; sim.host_count()];
        for &host in &leaving {
            stays[host] = false;
        }
        let stayers_done = |sim: &Sim| {
            let done: usize = hosts
                .iter()
                .filter(|&&h| stays[h])
                .map(|&h| {
                    metas
                        .iter()
                        .filter(|m| sim.completed_at(h, &m.info_hash()).is_some())
                        .count()
                })
                .sum();
            done >= target
        };
        sim.run_until(self.time_limit, |sim| {
            if sim.elapsed() < next_sample {
                return false;
            }
            next_sample = sim.elapsed() + sample_every;
            let links: Vec<(HostId, HostId)> = sim.links().collect();
            if links.len() > overlay_links.len() {
                overlay_links = links;
                overlay_at = sim.elapsed().as_secs_f64();
            }
            // Counting completions is cheap; checking who completed is not, so it waits for
            // the next sample (the run ends a little late; completion times are exact).
            sim.completions() >= target && stayers_done(sim)
        });

        let image_bytes: u64 = self.blobs.iter().sum();
        // Each host's own bound: its downlink, and the upload the hosts actually have
        // between them (their uplinks equal their downlinks here). With heterogeneous hosts
        // the nominal T* would flatter slow hosts' ratios and wrong fast ones'; with
        // homogeneous ones it is T* itself, bit for bit.
        let mean_up = downlink.iter().sum::<f64>() / downlink.len().max(1) as f64;
        let origin_up = self.origin_bandwidth * self.origins as f64;
        let own_bound = |down: f64| {
            if self.heterogeneity == 0.0 {
                t_star
            } else {
                fluid_bound(
                    image_bytes as f64,
                    self.hosts as f64,
                    down,
                    mean_up,
                    origin_up,
                )
            }
        };
        let mut times = Vec::new();
        let mut ratios = Vec::new();
        let mut throughput = Vec::new();
        let (mut left, mut unfinished) = (0, 0);
        for (i, &host) in hosts.iter().enumerate() {
            let finished = metas
                .iter()
                .map(|m| sim.completed_at(host, &m.info_hash()))
                .collect::<Option<Vec<Duration>>>()
                .and_then(|t| t.into_iter().max());
            match finished {
                Some(at) => {
                    let took = (at - arrival[i]).as_secs_f64();
                    times.push(took);
                    ratios.push(took / own_bound(downlink[i]));
                    throughput.push(image_bytes as f64 / took / downlink[i]);
                }
                None if !sim.is_online(host) => left += 1,
                None => unfinished += 1,
            }
        }
        let origin_egress: Vec<u64> = origins.iter().map(|&o| sim.bytes_sent(o)).collect();
        let bytes_from_origins: u64 = origin_egress.iter().sum();
        let bytes_from_peers: u64 = hosts.iter().map(|&h| sim.bytes_sent(h)).sum();
        let population = self.hosts - left;
        let completion = Percentiles::of(&times, population);
        let completion_t_star = Percentiles::of(&ratios, population);
        times.sort_by(f64::total_cmp);
        throughput.sort_by(f64::total_cmp);
        Report {
            scenario: self.clone(),
            image_bytes,
            piece_lengths: metas.iter().map(|m| m.piece_length()).collect(),
            t_star,
            completed: times.len(),
            left,
            unfinished,
            completion_t_star,
            completion,
            completion_times: times,
            max_origin_egress_ratio: origin_egress.iter().copied().max().unwrap_or(0) as f64
                / image_bytes.max(1) as f64,
            origin_egress,
            bytes_from_origins,
            bytes_from_peers,
            median_throughput_ratio: throughput.get(throughput.len() / 2).copied(),
            overlay: Overlay::analyse(sim.host_count(), &overlay_links, overlay_at),
            virtual_seconds: sim.elapsed().as_secs_f64(),
            events: sim.events_handled(),
        }
    }
}

/// Metainfo of a blob that exists only in the simulation: its piece hashes are made up,
/// since pieces are never hashed here.
pub(crate) fn synthetic_blob(seed: u64, length: u64, piece_length: u64) -> Arc<MetaInfo> {
    let count = length.div_ceil(piece_length) as usize;
    let digest = Digest::sha256_of(&seed.to_be_bytes());
    let mut hashes = vec![[seed as u8; 32]; count];
    if let Some(last) = hashes.last_mut() {
        // A metainfo's piece hashes end at its digest.
        last.copy_from_slice(digest.as_bytes());
    }
    Arc::new(
        MetaInfo::from_parts(digest, length, piece_length, hashes)
            .expect("a piece length in whole SHA-256 blocks and a consistent piece count"),
    )
}
