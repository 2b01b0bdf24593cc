//! Scenarios for the swarm on the deterministic harness.

mod direct;
mod harness;
mod ops;

use std::time::Duration;

use kraken_core::Bitfield;

use self::harness::{Net, NodeSpec, blob, new_net, received_by_sender};
use super::{Event, FailReason, SwarmConfig};

const MB: f64 = 1e6;

fn net(seed: u64) -> Net {
    new_net(seed, Duration::from_millis(2), 0.0)
}

#[test]
fn one_seeder_to_thirty_leechers() {
    let mut net = net(1);
    let meta = blob(1, 16 << 20, 256 << 10);
    let seeder = net.add_host(NodeSpec::symmetric(10.0 * MB));
    net.seed(seeder, &meta);
    let leechers = net.add_fetchers(30, 10.0 * MB, &meta);
    assert!(net.run_until_complete(&leechers, meta.info_hash(), Duration::from_secs(600)));
    // Fluid bound: 31 nodes, S = 16.8 MB, u = d = 10 MB/s: max(S/d, N·S/(U + N·u)) ≈ 1.68 s.
    let t_star = 30.0 * meta.length() as f64 / (10.0 * MB + 30.0 * 10.0 * MB);
    let worst = leechers
        .iter()
        .map(|&l| net.completed_at(l, &meta.info_hash()).unwrap())
        .max()
        .unwrap();
    // A regression guard, not the goal: the simulator issue tunes the scheduler toward
    // 1.25 × T*. Measured with this seed: 3.5 × T*.
    let t_star = t_star.max(meta.length() as f64 / (10.0 * MB));
    assert!(
        worst.as_secs_f64() < 4.0 * t_star,
        "slowest leecher took {worst:?}, T* = {t_star:.2}s"
    );
    let received = received_by_sender(&net, &leechers, &meta.info_hash());
    let from_seeder = received.get(&net.peer_id(seeder)).copied().unwrap_or(0);
    let total: u64 = received.values().sum();
    assert_eq!(total, 30 * meta.length());
    assert!(
        from_seeder * 2 < total,
        "the seeder sent {from_seeder} of {total} bytes: a star, not a swarm"
    );
}

#[test]
fn peers_holding_different_pieces_complete_each_other() {
    let mut net = net(2);
    let meta = blob(2, 4 << 20, 256 << 10);
    let nodes: Vec<_> = (0..4)
        .map(|_| net.add_host(NodeSpec::symmetric(5.0 * MB)))
        .collect();
    for (i, &n) in nodes.iter().enumerate() {
        let mut have = Bitfield::new(meta.piece_count());
        for p in (i as u32..meta.piece_count()).step_by(4) {
            have.set(p).unwrap();
        }
        net.start(n, &meta, have);
    }
    assert!(net.run_until_complete(&nodes, meta.info_hash(), Duration::from_secs(60)));
}

#[test]
fn the_seeder_can_leave_once_the_leechers_hold_every_piece_between_them() {
    let mut net = net(3);
    let meta = blob(3, 8 << 20, 256 << 10);
    let seeder = net.add_host(NodeSpec::symmetric(4.0 * MB));
    net.seed(seeder, &meta);
    let leechers = net.add_fetchers(8, 4.0 * MB, &meta);
    let h = meta.info_hash();
    let covered = net.run_until(Duration::from_secs(60), |net| {
        let mut union = Bitfield::new(meta.piece_count());
        for &l in &leechers {
            for i in net.have(l, &h).iter_ones() {
                union.set(i).unwrap();
            }
        }
        union.is_full()
    });
    assert!(covered);
    let any_incomplete = leechers.iter().any(|&l| !net.have(l, &h).is_full());
    assert!(any_incomplete, "scenario needs the seeder to leave early");
    net.kill(seeder);
    assert!(net.run_until_complete(&leechers, h, Duration::from_secs(120)));
}

#[test]
fn a_peer_sending_corrupt_data_is_blacklisted_and_everyone_still_completes() {
    let mut net = net(4);
    let meta = blob(4, 8 << 20, 256 << 10);
    let seeder = net.add_host(NodeSpec::symmetric(4.0 * MB));
    net.seed(seeder, &meta);
    let liar = net.add_host(NodeSpec {
        corrupt: true,
        ..NodeSpec::symmetric(20.0 * MB)
    });
    // The liar claims to have everything.
    net.seed(liar, &meta);
    let leechers = net.add_fetchers(6, 4.0 * MB, &meta);
    let h = meta.info_hash();
    assert!(net.run_until_complete(&leechers, h, Duration::from_secs(300)));
    let detected: u32 = leechers
        .iter()
        .map(|&l| net.stats(l, &h).corrupt_pieces)
        .sum();
    assert!(detected > 0, "nobody was offered corrupt data");
    let from_liar = received_by_sender(&net, &leechers, &h)
        .get(&net.peer_id(liar))
        .copied()
        .unwrap_or(0);
    assert_eq!(from_liar, 0, "a corrupt piece was counted as received");
}

#[test]
fn corrupt_peers_are_blacklisted() {
    let mut net = net(5);
    let meta = blob(5, 2 << 20, 256 << 10);
    let liar = net.add_host(NodeSpec {
        corrupt: true,
        ..NodeSpec::symmetric(10.0 * MB)
    });
    net.seed(liar, &meta);
    let victim = net.add_host(NodeSpec::symmetric(10.0 * MB));
    net.fetch(victim, &meta);
    let h = meta.info_hash();
    let liar_id = net.peer_id(liar);
    let caught = net.run_until(Duration::from_secs(10), |net| {
        net.swarm(victim).is_blacklisted(net.now(), &liar_id, &h)
    });
    assert!(caught);
    assert!(net.swarm(victim).blacklistings() >= 1);
}

#[test]
fn late_joiners_complete() {
    let mut net = net(6);
    let meta = blob(6, 8 << 20, 256 << 10);
    let seeder = net.add_host(NodeSpec::symmetric(8.0 * MB));
    net.seed(seeder, &meta);
    let early = net.add_fetchers(10, 8.0 * MB, &meta);
    net.run_until(Duration::from_millis(1500), |_| false);
    let late = net.add_fetchers(10, 8.0 * MB, &meta);
    let all: Vec<_> = early.iter().chain(&late).copied().collect();
    assert!(net.run_until_complete(&all, meta.info_hash(), Duration::from_secs(120)));
}

#[test]
fn many_torrents_at_once() {
    let mut net = net(7);
    let metas: Vec<_> = (0..4).map(|i| blob(10 + i, 3 << 20, 256 << 10)).collect();
    let seeder = net.add_host(NodeSpec::symmetric(20.0 * MB));
    for meta in &metas {
        net.seed(seeder, meta);
    }
    let leechers: Vec<_> = (0..10)
        .map(|_| net.add_host(NodeSpec::symmetric(8.0 * MB)))
        .collect();
    for &l in &leechers {
        for meta in &metas {
            net.fetch(l, meta);
        }
    }
    let done = net.run_until(Duration::from_secs(120), |net| {
        metas.iter().all(|m| {
            leechers
                .iter()
                .all(|&l| net.completed_at(l, &m.info_hash()).is_some())
        })
    });
    assert!(done);
}

#[test]
fn lossy_links_slow_but_do_not_stop_the_swarm() {
    let mut net = new_net(8, Duration::from_millis(5), 0.05);
    let meta = blob(8, 4 << 20, 256 << 10);
    let seeder = net.add_host(NodeSpec::symmetric(8.0 * MB));
    net.seed(seeder, &meta);
    let leechers = net.add_fetchers(10, 8.0 * MB, &meta);
    assert!(net.run_until_complete(&leechers, meta.info_hash(), Duration::from_secs(120)));
}

#[test]
fn a_leecher_with_no_source_fails_after_its_idle_timeout() {
    let mut net = net(9);
    let meta = blob(9, 1 << 20, 256 << 10);
    let config = SwarmConfig {
        leecher_idle_timeout: Duration::from_secs(20),
        ..SwarmConfig::default()
    };
    let lonely = net.add_host(NodeSpec {
        config,
        ..NodeSpec::symmetric(MB)
    });
    net.fetch(lonely, &meta);
    net.run_until(Duration::from_secs(60), |net| {
        !net.events(lonely).is_empty()
            && net
                .events(lonely)
                .iter()
                .any(|e| matches!(e, Event::Failed { .. }))
    });
    assert!(net.events(lonely).contains(&Event::Failed {
        info_hash: meta.info_hash(),
        reason: FailReason::Idle
    }));
    assert!(net.elapsed() >= Duration::from_secs(20));
}

#[test]
fn same_seed_same_outcome() {
    let run = |seed| {
        let mut net = new_net(seed, Duration::from_millis(3), 0.01);
        let meta = blob(11, 4 << 20, 256 << 10);
        let seeder = net.add_host(NodeSpec::symmetric(6.0 * MB));
        net.seed(seeder, &meta);
        let leechers = net.add_fetchers(12, 6.0 * MB, &meta);
        assert!(net.run_until_complete(&leechers, meta.info_hash(), Duration::from_secs(60)));
        leechers
            .iter()
            .map(|&l| net.completed_at(l, &meta.info_hash()).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43));
}

/// Issue 17: `kraken bench swarm` fetchers exit as soon as they hold the blob, and the last
/// one waited for the 30 s idle timeout of its link to the seeder before it finished. The
/// seeder (an origin: it spreads its uploads by the pieces a requester lacks) judged the
/// straggler by the bitfield of its handshake, as leechers announced new pieces only to
/// neighbours lacking them, and refused every piece it still needed once the other fetchers
/// had left. Without the fix the last fetcher finishes at 5.6 × T*; then one 5 s refusal
/// backoff remained (a piece the origin refused while the straggler lacked others, whose other
/// sources then left).
#[test]
fn fetchers_leaving_as_they_finish_do_not_strand_the_last_behind_a_spreading_origin() {
    let mut net = net(12);
    let meta = blob(12, 128 << 20, 256 << 10);
    let origin = net.add_host(NodeSpec {
        config: SwarmConfig {
            origin: true,
            ..SwarmConfig::default()
        },
        ..NodeSpec::symmetric(20.0 * MB)
    });
    net.seed(origin, &meta);
    let fetchers = net.add_fetchers(16, 20.0 * MB, &meta);
    let h = meta.info_hash();
    let limit = Duration::from_secs(120);
    // Each pass runs until some fetcher still online has finished and takes it off the
    // network, as the bench's fetch processes exit; bounded by the fetchers' count.
    let finished = |net: &Net| -> Vec<_> {
        fetchers
            .iter()
            .copied()
            .filter(|&f| net.is_online(f) && net.completed_at(f, &h).is_some())
            .collect()
    };
    for _ in 0..fetchers.len() {
        if !net.run_until(limit, |net| !finished(net).is_empty()) {
            break;
        }
        for f in finished(&net) {
            net.kill(f);
        }
    }
    let times: Vec<Duration> = fetchers
        .iter()
        .map(|&f| net.completed_at(f, &h).unwrap_or(limit))
        .collect();
    let t_star = crate::sim::fluid_bound(
        meta.length() as f64,
        fetchers.len() as f64,
        20.0 * MB,
        20.0 * MB,
        20.0 * MB,
    );
    let worst = times.iter().max().unwrap().as_secs_f64();
    // Measured with this seed: 1.11 × T*; 5.63 × T* before leechers announced to origins,
    // 1.77 × T* before an origin's refusals were retried once nothing else was in flight
    // (the straggler's last sources left, and it waited out a backoff for its last piece).
    assert!(
        worst < 1.3 * t_star,
        "the slowest fetcher took {worst:.2}s, T* = {t_star:.2}s: {times:?}"
    );
}

#[test]
fn many_torrents_keep_each_node_under_its_connection_cap() {
    // 20 blobs between 9 hosts: without the node-wide cap each leecher would hold up to 8
    // connections per blob, 160 in all.
    const CAP: usize = 16;
    let mut net = net(12);
    let config = SwarmConfig {
        max_conns: CAP,
        ..SwarmConfig::default()
    };
    let spec = NodeSpec {
        config,
        ..NodeSpec::symmetric(8.0 * MB)
    };
    let metas: Vec<_> = (0..20)
        .map(|i| blob(40 + i, 512 << 10, 256 << 10))
        .collect();
    let seeder = net.add_host(spec.clone());
    for meta in &metas {
        net.seed(seeder, meta);
    }
    let leechers: Vec<_> = (0..8).map(|_| net.add_host(spec.clone())).collect();
    for &l in &leechers {
        for meta in &metas {
            net.fetch(l, meta);
        }
    }
    let hosts: Vec<_> = std::iter::once(seeder).chain(leechers.clone()).collect();
    let mut most = 0;
    let done = net.run_until(Duration::from_secs(300), |net| {
        for &h in &hosts {
            let connections = net.swarm(h).connections();
            assert!(
                connections <= CAP,
                "host {h:?} holds {connections} connections"
            );
            most = most.max(connections);
        }
        metas.iter().all(|m| {
            leechers
                .iter()
                .all(|&l| net.completed_at(l, &m.info_hash()).is_some())
        })
    });
    assert!(done, "not every leecher got every blob");
    assert_eq!(most, CAP, "the scenario never reached the cap");
    for &h in &hosts {
        net.swarm(h).check_invariants().unwrap();
    }
}

/// A leecher of a 256 MiB blob in 1 MiB pieces from a seeder at 100 MB/s and another at
/// 25 MB/s (an origin, and an agent reading its pieces back from disk), shipped settings:
/// the most pieces it ever held past its first missing one, and when it completed.
fn held_past_the_first_missing_piece(seed: u64) -> (u32, Duration) {
    let mut net = net(seed);
    let meta = blob(9, 256 << 20, 1 << 20);
    for up in [100.0 * MB, 25.0 * MB] {
        let seeder = net.add_host(NodeSpec::symmetric(up));
        net.seed(seeder, &meta);
    }
    let leecher = net.add_host(NodeSpec::symmetric(1000.0 * MB));
    net.fetch(leecher, &meta);
    let h = meta.info_hash();
    let mut most = 0;
    assert!(net.run_until(Duration::from_secs(60), |net| {
        let have = net.have(leecher, &h);
        let in_order = have.iter_zeros().next().unwrap_or(have.len());
        most = most.max(have.count_ones() - in_order);
        have.is_full()
    }));
    (most, net.completed_at(leecher, &h).unwrap())
}

/// A reader in order (an agent's client streaming the blob) waits at the first missing
/// piece. Picked at random among the first pieces, one of them used to wait until the
/// download had run 144–166 pieces past it (a window's worth of picks on average, but
/// the longest wait grows with the blob), and the reader with it; the piece now goes first
/// once the download is a window past it.
#[test]
fn a_download_leaves_no_piece_far_behind() {
    // The leecher has two connections: its window is `sequential_window` × 2 pieces.
    let window = SwarmConfig::default().sequential_window as u32 * 2;
    for seed in 1..=3 {
        let (most, took) = held_past_the_first_missing_piece(seed);
        assert!(
            most <= 2 * window,
            "seed {seed}: {most} pieces held past the first missing one (window {window})"
        );
        // The fluid bound: 256 MiB at the seeders' 125 MB/s together.
        let bound = (256 << 20) as f64 / (125.0 * MB);
        assert!(
            took.as_secs_f64() < 1.1 * bound,
            "seed {seed}: took {took:?}, bound {bound:.2} s"
        );
    }
}
