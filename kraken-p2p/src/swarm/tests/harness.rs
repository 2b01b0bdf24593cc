//! The swarm scenarios run on the simulator's event loop ([`crate::sim::Sim`]): many swarms,
//! a tracker, a virtual clock, per-node uplink and downlink rates, latency and loss.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kraken_core::{InfoHash, MetaInfo, PeerId};

use crate::sim::{HandoutPolicy, synthetic_blob};
pub(super) use crate::sim::{HostId as NodeId, HostSpec as NodeSpec, Sim as Net};
use crate::tracker::DEFAULT_HANDOUT_LIMIT;

/// A network whose tracker tells leechers to announce every second, so that scenarios of a
/// few seconds see several announces.
pub(super) fn new_net(seed: u64, latency: Duration, loss: f64) -> Net {
    let mut net = Net::new(seed, latency, loss);
    net.set_tracker(
        DEFAULT_HANDOUT_LIMIT,
        HandoutPolicy::Random,
        Duration::from_secs(1),
    );
    net
}

/// A test blob: metainfo only, with made-up piece hashes (nothing is hashed here).
pub(super) fn blob(seed: u8, length: u64, piece_length: u64) -> Arc<MetaInfo> {
    synthetic_blob(u64::from(seed), length, piece_length)
}

/// Sums received bytes by sender over some nodes.
pub(super) fn received_by_sender(
    net: &Net,
    nodes: &[NodeId],
    info_hash: &InfoHash,
) -> BTreeMap<PeerId, u64> {
    let mut total = BTreeMap::new();
    for &n in nodes {
        for (peer, bytes) in net.stats(n, info_hash).received_from {
            *total.entry(peer).or_default() += bytes;
        }
    }
    total
}
