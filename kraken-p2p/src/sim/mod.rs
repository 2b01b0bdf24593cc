//! A deterministic simulator: thousands of swarm cores over virtual time (feature `sim`).
//!
//! The simulator runs the real scheduler — the same [`Swarm`](crate::swarm::Swarm) the nodes
//! run — over a network model, so "what happens at 15,000 hosts" is answered by the code that
//! ships, not by a model of it. What is modelled instead of run: piece bytes (a transfer is a
//! fluid flow sharing its two hosts' links), hashing and disk (instant and always right, unless
//! a host is marked corrupt), and the tracker's HTTP (an announce is answered after one
//! latency by an in-memory [`MemoryPeerStore`](crate::tracker::MemoryPeerStore)). The model and
//! its simplifications are written down in `docs/simulation.md`.
//!
//! Two levels:
//! - [`Sim`]: the event loop — add hosts, give them blobs, take them away, run until a
//!   condition holds. The swarm's own tests run on it.
//! - [`Scenario`]: a whole experiment (hosts, origins, an image of several blobs, bandwidths,
//!   arrivals, churn, a failing origin) that [`Scenario::run`] turns into a [`Report`] with
//!   completion percentiles as multiples of the fluid bound [`fluid_bound`].
//!
//! ```
//! use kraken_p2p::sim::Scenario;
//!
//! let mut scenario = Scenario::default();
//! scenario.hosts = 20;
//! scenario.origins = 1;
//! scenario.blobs = vec![16 << 20];
//! scenario.host_bandwidth = 10e6;
//! scenario.origin_bandwidth = 10e6;
//! let report = scenario.run();
//! assert_eq!(report.completed, 20);
//! assert!(report.completion.p99.unwrap() < 3.0 * report.t_star);
//! ```

mod engine;
mod fast_hash;
mod flows;
mod links;
mod overlay;
mod queue;
mod scenario;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use crate::swarm::SwarmConfig;

pub use self::engine::Sim;
pub use self::flows::Sharing;
pub use self::overlay::{DegreeStats, Overlay};
#[cfg(test)]
pub(crate) use self::scenario::synthetic_blob;
pub use self::scenario::{Percentiles, Report, Scenario};

/// A host of a [`Sim`], numbered from 0 in the order they were added.
pub type HostId = usize;

/// How a host is connected and configured.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct HostSpec {
    /// Uplink capacity in bytes/s.
    pub up: f64,
    /// Downlink capacity in bytes/s.
    pub down: f64,
    /// Whether every piece this host sends fails verification at the receiver.
    pub corrupt: bool,
    /// Its scheduler's settings.
    pub config: SwarmConfig,
}

impl HostSpec {
    /// A well-behaved host with `rate` bytes/s each way and the default scheduler settings.
    pub fn symmetric(rate: f64) -> Self {
        Self {
            up: rate,
            down: rate,
            corrupt: false,
            config: SwarmConfig::default(),
        }
    }
}

/// Whom the simulated tracker hands out.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, Deserialize, Eq, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HandoutPolicy {
    /// The tracker's real policy: a random sample, complete peers and origins first.
    #[default]
    Random,
    /// Origins only: every host downloads from the origins (a star, for comparison).
    OriginsOnly,
}

/// The fluid lower bound on the time to give `hosts` hosts a blob of `size` bytes, each host
/// downloading at most `down` and uploading at most `up` bytes/s, the origins together
/// uploading at most `origin_up` (DESIGN.md §8):
/// `T* = max(S/d, S/U, N·S/(U + N·u))`.
pub fn fluid_bound(size: f64, hosts: f64, down: f64, up: f64, origin_up: f64) -> f64 {
    (size / down)
        .max(size / origin_up)
        .max(hosts * size / (origin_up + hosts * up))
}
