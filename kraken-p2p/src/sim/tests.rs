//! Scenarios with known answers, determinism, and the star against the swarm.

use std::time::Duration;

use super::*;

const MB: f64 = 1e6;

fn small(hosts: usize, size: u64, rate: f64) -> Scenario {
    Scenario {
        hosts,
        origins: 1,
        blobs: vec![size],
        host_bandwidth: rate,
        origin_bandwidth: rate,
        piece_length: Some(256 << 10),
        ..Scenario::default()
    }
}

#[test]
fn fluid_bound_takes_the_tightest_of_its_three_limits() {
    // Download-bound: one host, fast origin.
    assert_eq!(fluid_bound(100.0, 1.0, 10.0, 10.0, 1000.0), 10.0);
    // Origin-bound: the origin is slower than the host's downlink.
    assert_eq!(fluid_bound(100.0, 1.0, 10.0, 10.0, 5.0), 20.0);
    // Upload-bound: 9 hosts need 900 bytes from 50 + 9·10 = 140 bytes/s of upload.
    let t = fluid_bound(100.0, 9.0, 1000.0, 10.0, 50.0);
    assert!((t - 900.0 / 140.0).abs() < 1e-9, "{t}");
    let scenario = small(30, 16 << 20, 10.0 * MB);
    let s = f64::from(16u32 << 20);
    // 30·S/(U + 30·u) = 30·S/(31·u) is below S/d here: the downlink bounds it.
    assert!((scenario.t_star() - s / (10.0 * MB)).abs() < 1e-9);
    let mut scenario = scenario;
    scenario.origin_bandwidth = 5.0 * MB;
    assert!((scenario.t_star() - s / (5.0 * MB)).abs() < 1e-9);
}

#[test]
fn one_seeder_to_one_fetcher_takes_size_over_the_slower_link() {
    for (up, down) in [(10.0 * MB, 4.0 * MB), (3.0 * MB, 8.0 * MB)] {
        let mut sim = Sim::new(1, Duration::from_millis(1), 0.0);
        let meta = synthetic_blob(1, 32 << 20, 1 << 20);
        let seeder = sim.add_host(HostSpec::symmetric(up));
        sim.seed(seeder, &meta);
        let mut spec = HostSpec::symmetric(down);
        spec.up = down;
        let fetcher = sim.add_host(spec);
        sim.fetch(fetcher, &meta);
        assert!(sim.run_until_complete(&[fetcher], meta.info_hash(), Duration::from_secs(60)));
        let took = sim
            .completed_at(fetcher, &meta.info_hash())
            .unwrap()
            .as_secs_f64();
        let ideal = meta.length() as f64 / up.min(down);
        assert!(
            (took - ideal).abs() / ideal < 0.01,
            "took {took:.3}s, ideal {ideal:.3}s (up {up}, down {down})"
        );
    }
}

#[test]
fn the_same_seed_gives_the_same_report() {
    let mut scenario = small(40, 8 << 20, 10.0 * MB);
    scenario.origins = 2;
    scenario.blobs = vec![4 << 20, 6 << 20];
    scenario.heterogeneity = 0.5;
    scenario.arrivals = Duration::from_millis(500);
    scenario.churn = 0.1;
    let a = scenario.run();
    let b = scenario.run();
    assert_eq!(a, b);
    assert_eq!(a.completed + a.left + a.unfinished, 40);
    assert_eq!(a.left, 4);
    scenario.seed = 2;
    let c = scenario.run();
    assert_ne!(a.completion_times, c.completion_times);
}

#[test]
fn a_star_is_measurably_slower_than_the_swarm() {
    let swarm = small(30, 16 << 20, 10.0 * MB).run();
    let mut star = small(30, 16 << 20, 10.0 * MB);
    star.handout = HandoutPolicy::OriginsOnly;
    let star = star.run();
    assert_eq!((swarm.completed, star.completed), (30, 30));
    assert_eq!(star.bytes_from_peers, 0, "a star has no peer traffic");
    let (swarm_p99, star_p99) = (swarm.completion.p99.unwrap(), star.completion.p99.unwrap());
    assert!(
        star_p99 > 3.0 * swarm_p99,
        "star p99 {star_p99:.2}s, swarm p99 {swarm_p99:.2}s"
    );
    // Through the swarm most bytes come from peers.
    assert!(swarm.bytes_from_peers > 3 * swarm.bytes_from_origins);
}

#[test]
fn the_report_counts_every_byte_and_the_overlay_at_its_peak() {
    let report = small(25, 8 << 20, 10.0 * MB).run();
    assert_eq!(report.completed, 25);
    // Every host received the whole image, from an origin or a peer. Endgame duplicates
    // add up to a few pieces per host: with 32 pieces a blob, at most a quarter more.
    let received = report.bytes_from_origins + report.bytes_from_peers;
    assert!(received >= 25 * (8 << 20), "{received}");
    assert!(received < 25 * (8 << 20) * 5 / 4, "{received}");
    let overlay = &report.overlay;
    assert_eq!(overlay.components, 1, "{overlay:?}");
    assert!(overlay.hosts >= 20, "{overlay:?}");
    let cap = crate::swarm::SwarmConfig::default().max_conns_per_torrent;
    assert!(overlay.degree.max <= cap, "connection cap: {overlay:?}");
    assert!(overlay.diameter >= 2, "{overlay:?}");
}

#[test]
fn one_failing_origin_of_two_is_survived() {
    let mut scenario = small(20, 8 << 20, 10.0 * MB);
    scenario.origins = 2;
    scenario.origin_failure_at = Some(Duration::from_millis(100));
    let report = scenario.run();
    assert_eq!(report.completed, 20, "{report:?}");
    let egress = &report.origin_egress;
    assert!(
        egress[0] < egress[1],
        "the failed origin stopped sending: {egress:?}"
    );
}

#[test]
fn percentiles_use_the_nearest_rank_and_count_unfinished_hosts() {
    let times: Vec<f64> = (1..=10).map(f64::from).collect();
    let p = Percentiles::of(&times, 10);
    assert_eq!((p.p50, p.p90, p.max), (Some(5.0), Some(9.0), Some(10.0)));
    // Two of twelve hosts never finished: the top percentiles are not reached.
    let p = Percentiles::of(&times, 12);
    assert_eq!(p.p50, Some(6.0));
    assert_eq!((p.p90, p.p99, p.max), (None, None, None));
}

#[test]
fn water_filling_finishes_and_is_not_slower_than_the_equal_split() {
    let mut scenario = small(30, 16 << 20, 10.0 * MB);
    scenario.heterogeneity = 0.6;
    let equal = scenario.run();
    scenario.sharing = Sharing::WaterFill;
    let filled = scenario.run();
    assert_eq!(filled.completed, 30);
    let (equal_p50, filled_p50) = (
        equal.completion.p50.unwrap(),
        filled.completion.p50.unwrap(),
    );
    // Never below the equal split per flow, so not slower beyond scheduling noise.
    assert!(
        filled_p50 <= equal_p50 * 1.05,
        "water-fill p50 {filled_p50:.2}s, equal split {equal_p50:.2}s"
    );
}

#[test]
fn with_heterogeneous_hosts_each_is_measured_against_its_own_bound() {
    // Hosts at 10% to 100% of 10 MB/s: a host's own bound (S over its own downlink, at
    // least) is above the nominal T*, so against it the slowest hosts' ratios shrink.
    let mut scenario = small(20, 4 << 20, 10.0 * MB);
    scenario.origin_bandwidth = 200.0 * MB;
    scenario.heterogeneity = 0.9;
    let report = scenario.run();
    assert_eq!(report.completed, 20);
    let nominal_max = report.completion_times[19] / report.t_star;
    let own = &report.completion_t_star;
    let (own_p50, own_max) = (own.p50.unwrap(), own.max.unwrap());
    assert!(
        nominal_max > 3.0,
        "the scenario needs slow hosts: {nominal_max:.2}"
    );
    assert!(
        own_max < 0.9 * nominal_max,
        "the worst ratio {own_max:.2} is the nominal one ({nominal_max:.2})"
    );
    assert!(
        own_p50 >= 1.0,
        "the median host beat its own bound: {own_p50:.3}"
    );
}
