//! Single-swarm tests that drive the state machine message by message.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kraken_core::{Bitfield, MetaInfo, PeerId, PeerInfo};

use super::harness::blob;
use crate::swarm::{Action, ConnClosed, ConnId, Event, Swarm, SwarmConfig};
use crate::wire::{ErrorCode, Handshake, Message, PROTOCOL_VERSION};

fn peer(n: u8) -> PeerId {
    PeerId::from_bytes([n; 20])
}

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, n], 7000))
}

fn swarm(config: SwarmConfig) -> Swarm {
    Swarm::new(
        SwarmConfig {
            rng_seed: Some(1),
            ..config
        },
        peer(1),
    )
}

fn handshake(meta: &MetaInfo, from: u8, have: &Bitfield, neighbours: Vec<PeerId>) -> Message {
    Message::Handshake(Handshake {
        protocol_version: PROTOCOL_VERSION,
        peer_id: peer(from),
        info_hash: meta.info_hash(),
        digest: *meta.digest(),
        namespace: String::new(),
        bitfield: Bytes::copy_from_slice(have.as_bytes()),
        neighbours,
        origin: false,
    })
}

fn drain(swarm: &mut Swarm) -> Vec<Action> {
    std::iter::from_fn(|| swarm.poll_action()).collect()
}

fn requests_to(actions: &[Action], conn: ConnId) -> Vec<u32> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send {
                conn: c,
                message: Message::PieceRequest { index },
            } if *c == conn => Some(*index),
            _ => None,
        })
        .collect()
}

/// Accepts an inbound connection from peer `from` with bitfield `have`.
fn accept(
    s: &mut Swarm,
    now: Instant,
    meta: &MetaInfo,
    from: u8,
    have: &Bitfield,
) -> (ConnId, Vec<Action>) {
    let conn = s.handle_incoming(now, addr(from));
    s.handle_message(now, conn, handshake(meta, from, have, Vec::new()));
    (conn, drain(s))
}

fn refused_with(actions: &[Action], conn: ConnId, code: ErrorCode) -> bool {
    actions.iter().any(|a| matches!(a, Action::Send { conn: c, message: Message::Error { code: e, .. } } if *c == conn && *e == code))
        && actions.contains(&Action::Close { conn })
}

/// A swarm with one torrent of `pieces` 1 KiB pieces, holding `have` of them.
fn with_torrent(config: SwarmConfig, have: Bitfield) -> (Swarm, Arc<MetaInfo>, Instant) {
    let pieces = have.len();
    let meta = blob(1, u64::from(pieces) * 1024, 1024);
    let mut s = swarm(config);
    let now = Instant::now();
    s.add_torrent(now, Arc::clone(&meta), have, String::new())
        .unwrap();
    drain(&mut s);
    (s, meta, now)
}

fn leeching(config: SwarmConfig, pieces: u32) -> (Swarm, Arc<MetaInfo>, Instant) {
    with_torrent(config, Bitfield::new(pieces))
}

fn seeding(pieces: u32) -> (Swarm, Arc<MetaInfo>, Instant) {
    with_torrent(SwarmConfig::default(), Bitfield::full(pieces))
}

#[test]
fn every_added_torrent_announces_at_once() {
    let mut s = swarm(SwarmConfig::default());
    let now = Instant::now();
    for seed in 0..3 {
        let meta = blob(seed, 4096, 1024);
        s.add_torrent(now, meta, Bitfield::new(4), String::new())
            .unwrap();
    }
    let announces = drain(&mut s)
        .into_iter()
        .filter(|a| matches!(a, Action::Announce { .. }))
        .count();
    assert_eq!(announces, 3);
}

#[test]
fn inbound_connections_are_capped_per_torrent() {
    let config = SwarmConfig {
        max_conns_per_torrent: 2,
        ..SwarmConfig::default()
    };
    let (mut s, meta, now) = leeching(config, 8);
    let empty = Bitfield::new(8);
    for n in 2..4 {
        let (conn, actions) = accept(&mut s, now, &meta, n, &empty);
        assert!(!actions.contains(&Action::Close { conn }));
    }
    let (third, actions) = accept(&mut s, now, &meta, 4, &empty);
    assert!(refused_with(&actions, third, ErrorCode::TooManyConnections));
    // A refusal for capacity is not held against the peer.
    assert!(!s.is_blacklisted(now, &peer(4), &meta.info_hash()));
}

#[test]
fn links_that_would_cluster_the_graph_are_refused() {
    let config = SwarmConfig {
        max_mutual_conns: 1,
        ..SwarmConfig::default()
    };
    let (mut s, meta, now) = leeching(config, 8);
    let empty = Bitfield::new(8);
    accept(&mut s, now, &meta, 2, &empty);
    accept(&mut s, now, &meta, 3, &empty);
    let conn = s.handle_incoming(now, addr(4));
    s.handle_message(
        now,
        conn,
        handshake(&meta, 4, &empty, vec![peer(2), peer(3)]),
    );
    assert!(refused_with(
        &drain(&mut s),
        conn,
        ErrorCode::TooManyMutualConnections
    ));
    let conn = s.handle_incoming(now, addr(5));
    s.handle_message(now, conn, handshake(&meta, 5, &empty, vec![peer(2)]));
    assert!(!drain(&mut s).contains(&Action::Close { conn }));
}

#[test]
fn seeders_and_origins_get_a_deeper_pipeline() {
    let (mut s, meta, now) = leeching(SwarmConfig::default(), 20);
    let mut partial = Bitfield::new(20);
    for i in 0..19 {
        partial.set(i).unwrap();
    }
    let (leecher, actions) = accept(&mut s, now, &meta, 2, &partial);
    assert_eq!(requests_to(&actions, leecher).len(), 3);
    let (seeder, actions) = accept(&mut s, now, &meta, 3, &Bitfield::full(20));
    assert_eq!(requests_to(&actions, seeder).len(), 5);
}

#[test]
fn a_normal_close_is_not_a_failure_but_bad_data_is() {
    let (mut s, meta, now) = leeching(SwarmConfig::default(), 8);
    let full = Bitfield::full(8);
    let (polite, _) = accept(&mut s, now, &meta, 2, &full);
    s.handle_closed(now, polite, ConnClosed::Normal);
    assert!(!s.is_blacklisted(now, &peer(2), &meta.info_hash()));
    assert_eq!(s.blacklistings(), 0);

    let (rude, actions) = accept(&mut s, now, &meta, 3, &full);
    let unrequested = (0..8)
        .find(|i| !requests_to(&actions, rude).contains(i))
        .unwrap();
    assert!(
        s.handle_piece_received(now, rude, unrequested, 1024)
            .is_none()
    );
    assert!(drain(&mut s).contains(&Action::Close { conn: rude }));
    assert!(s.is_blacklisted(now, &peer(3), &meta.info_hash()));
    assert!(!s.is_blacklisted(now + Duration::from_secs(31), &peer(3), &meta.info_hash()));
    // The snapshot the agent's `/x/blacklist` serves: the peer, its torrent, the time left.
    let later = now + Duration::from_secs(10);
    let listed = s.blacklist(later);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].peer_id, peer(3));
    assert_eq!(listed[0].info_hash, meta.info_hash());
    assert_eq!(listed[0].remaining, Duration::from_secs(20));
    assert!(s.blacklist(now + Duration::from_secs(31)).is_empty());
    // The driver's metrics count it.
    assert_eq!(s.blacklistings(), 1);
}

#[test]
fn a_timed_out_request_goes_to_another_peer() {
    let config = SwarmConfig {
        pipeline_limit: 1,
        seeder_pipeline_limit: 1,
        endgame_threshold: 0,
        ..SwarmConfig::default()
    };
    let (mut s, meta, now) = leeching(config.clone(), 1);
    let full = Bitfield::full(1);
    let (slow, actions) = accept(&mut s, now, &meta, 2, &full);
    assert_eq!(requests_to(&actions, slow), vec![0]);
    let (other, actions) = accept(&mut s, now, &meta, 3, &full);
    assert!(
        requests_to(&actions, other).is_empty(),
        "one piece, already requested"
    );
    let later = now + config.request_timeout(1024) + Duration::from_millis(1);
    s.handle_timeout(later);
    let actions = drain(&mut s);
    assert_eq!(requests_to(&actions, other), vec![0]);
    assert!(requests_to(&actions, slow).is_empty());
    // The slow peer's late payload is still welcome.
    assert!(s.handle_piece_received(later, slow, 0, 1024).is_some());
}

#[test]
fn endgame_requests_twice_and_cancels_the_loser() {
    let (mut s, meta, now) = leeching(SwarmConfig::default(), 2);
    let full = Bitfield::full(2);
    let (a, actions) = accept(&mut s, now, &meta, 2, &full);
    let mut asked_a = requests_to(&actions, a);
    asked_a.sort_unstable();
    assert_eq!(asked_a, vec![0, 1]);
    let (b, actions) = accept(&mut s, now, &meta, 3, &full);
    let mut asked_b = requests_to(&actions, b);
    asked_b.sort_unstable();
    assert_eq!(
        asked_b,
        vec![0, 1],
        "endgame: the same pieces from a second peer"
    );
    let (info_hash, piece) = s.handle_piece_received(now, a, 0, 1024).unwrap();
    s.handle_piece_written(now, a, info_hash, piece, Ok(()));
    let actions = drain(&mut s);
    assert!(actions.contains(&Action::Send {
        conn: b,
        message: Message::CancelPiece { index: 0 }
    }));
    // B's copy, already on its way, is accepted but not written twice.
    assert!(s.handle_piece_received(now, b, 0, 1024).is_none());
    assert!(!drain(&mut s).contains(&Action::Close { conn: b }));
}

#[test]
fn complete_peers_drop_their_link_and_idle_seeds_expire() {
    let (mut s, meta, now) = seeding(4);
    let (conn, actions) = accept(&mut s, now, &meta, 2, &Bitfield::full(4));
    assert!(
        actions.contains(&Action::Close { conn }),
        "two complete peers have nothing to swap"
    );
    let later = now + SwarmConfig::default().seeder_idle_timeout + Duration::from_secs(1);
    s.handle_timeout(later);
    let events: Vec<Event> = std::iter::from_fn(|| s.poll_event()).collect();
    assert!(events.contains(&Event::Removed {
        info_hash: meta.info_hash()
    }));
}

#[test]
fn a_candidate_at_our_own_address_is_never_dialed() {
    let (mut s, meta, now) = leeching(SwarmConfig::default(), 4);
    s.set_local_addr(addr(1));
    drain(&mut s);
    // Ourselves under the peer id of an earlier run, and a real neighbour.
    let stale_self = PeerInfo::new(peer(7), addr(1), false, false);
    let other = PeerInfo::new(peer(9), addr(9), false, false);
    s.handle_announce_response(now, meta.info_hash(), vec![stale_self, other.clone()], None);
    let dialed: Vec<PeerInfo> = drain(&mut s)
        .into_iter()
        .filter_map(|a| match a {
            Action::Dial { peer, .. } => Some(peer),
            _ => None,
        })
        .collect();
    assert_eq!(dialed, vec![other]);
}

#[test]
fn idle_links_are_replaced_by_new_neighbours() {
    let config = SwarmConfig {
        max_conns_per_torrent: 1,
        ..SwarmConfig::default()
    };
    let (mut s, meta, now) = leeching(config.clone(), 4);
    let mut one_piece = Bitfield::new(4);
    one_piece.set(0).unwrap();
    let (idle, _) = accept(&mut s, now, &meta, 2, &one_piece);
    let candidate = PeerInfo::new(peer(9), addr(9), false, true);
    s.handle_announce_response(now, meta.info_hash(), vec![candidate.clone()], None);
    assert!(
        !drain(&mut s)
            .iter()
            .any(|a| matches!(a, Action::Dial { .. })),
        "at the connection limit"
    );
    s.handle_timeout(now + config.conn_idle_timeout + Duration::from_millis(1));
    let actions = drain(&mut s);
    assert!(actions.contains(&Action::Close { conn: idle }));
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Dial { peer, .. } if *peer == candidate))
    );
    assert!(!s.is_blacklisted(now, &peer(2), &meta.info_hash()));
}

#[test]
fn a_link_with_nothing_to_exchange_makes_way_for_a_seeder_at_once() {
    let config = SwarmConfig {
        max_conns_per_torrent: 2,
        ..SwarmConfig::default()
    };
    let (mut s, meta, now) = leeching(config, 4);
    // Neighbour 2 holds what we hold (nothing); neighbour 3 has a piece for us.
    let (twin, _) = accept(&mut s, now, &meta, 2, &Bitfield::new(4));
    let mut one_piece = Bitfield::new(4);
    one_piece.set(1).unwrap();
    let (useful, _) = accept(&mut s, now, &meta, 3, &one_piece);
    drain(&mut s);
    // A leecher candidate does not displace anyone; a complete one displaces the twin.
    let leecher = PeerInfo::new(peer(8), addr(8), false, false);
    s.handle_announce_response(now, meta.info_hash(), vec![leecher], None);
    assert!(drain(&mut s).is_empty());
    let seeder = PeerInfo::new(peer(9), addr(9), false, true);
    s.handle_announce_response(now, meta.info_hash(), vec![seeder.clone()], None);
    let actions = drain(&mut s);
    assert!(actions.contains(&Action::Close { conn: twin }));
    assert!(!actions.contains(&Action::Close { conn: useful }));
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Dial { peer, .. } if *peer == seeder))
    );
    assert!(!s.is_blacklisted(now, &peer(2), &meta.info_hash()));
}

#[test]
fn an_origin_spreads_its_uploads() {
    let config = SwarmConfig {
        origin: true,
        ..SwarmConfig::default()
    };
    let (mut s, meta, now) = with_torrent(config, Bitfield::full(4));
    let (a, _) = accept(&mut s, now, &meta, 2, &Bitfield::new(4));
    let (b, _) = accept(&mut s, now, &meta, 3, &Bitfield::new(4));
    s.handle_message(now, a, Message::PieceRequest { index: 0 });
    assert!(
        drain(&mut s)
            .iter()
            .any(|x| matches!(x, Action::SendPiece { conn, .. } if *conn == a))
    );
    // Piece 0 has gone out once, pieces 1-3 never: B is steered to those.
    s.handle_message(now, b, Message::PieceRequest { index: 0 });
    let actions = drain(&mut s);
    assert!(actions.iter().any(|x| matches!(x, Action::Send { conn, message: Message::Error { code: ErrorCode::PieceUnavailable, index: Some(0), .. } } if *conn == b)));
    s.handle_message(now, b, Message::PieceRequest { index: 1 });
    assert!(
        drain(&mut s)
            .iter()
            .any(|x| matches!(x, Action::SendPiece { conn, .. } if *conn == b))
    );
}

#[test]
fn a_refused_announce_fails_a_download_but_not_a_seed() {
    let (mut swarm, meta, now) = leeching(SwarmConfig::default(), 4);
    swarm.handle_announce_refused(now, meta.info_hash());
    let events: Vec<Event> = std::iter::from_fn(|| swarm.poll_event()).collect();
    assert!(events.contains(&Event::Failed {
        info_hash: meta.info_hash(),
        reason: crate::swarm::FailReason::TrackerRefused,
    }));

    let (mut swarm, meta, now) = seeding(4);
    let _ = std::iter::from_fn(|| swarm.poll_event()).count();
    swarm.handle_announce_refused(now, meta.info_hash());
    assert!(std::iter::from_fn(|| swarm.poll_event()).all(|e| !matches!(e, Event::Failed { .. })));
    assert!(swarm.torrent_stats(&meta.info_hash()).is_some());
}

#[test]
fn an_under_connected_download_announces_again_soon_then_less_often() {
    let config = SwarmConfig {
        max_conns_per_torrent: 3,
        ..SwarmConfig::default()
    };
    let (quick, starving) = (
        config.quick_announce_interval,
        config.starving_announce_interval,
    );
    let (mut s, meta, start) = leeching(config, 8);
    s.handle_announce_response(start, meta.info_hash(), Vec::new(), None);
    // A seeder keeps requests in flight, so the download is not starving, only short of
    // neighbours with nobody left to dial.
    let (seeder, actions) = accept(&mut s, start, &meta, 2, &Bitfield::full(8));
    assert!(!requests_to(&actions, seeder).is_empty());
    let mut now = start;
    for wait in [quick, quick * 2, starving, starving] {
        assert_eq!(s.poll_timeout(), Some(now + wait));
        now += wait;
        s.handle_timeout(now);
        let announced = drain(&mut s)
            .iter()
            .any(|a| matches!(a, Action::Announce { .. }));
        assert!(announced, "no announce {:?} after the start", now - start);
        s.handle_announce_response(now, meta.info_hash(), Vec::new(), None);
    }

    // With every connection slot taken it waits for its interval.
    accept(&mut s, now, &meta, 3, &Bitfield::full(8));
    accept(&mut s, now, &meta, 4, &Bitfield::full(8));
    s.handle_timeout(now + starving);
    assert!(
        !drain(&mut s)
            .iter()
            .any(|a| matches!(a, Action::Announce { .. })),
        "a full download announced again after {starving:?}"
    );
}

/// A blob seeded on purpose stays in the swarm, announcing, when idle; another complete
/// torrent is dropped after `seeder_idle_timeout`.
#[test]
fn a_pinned_seed_stays_and_keeps_announcing_when_idle() {
    let mut s = swarm(SwarmConfig::default());
    let now = Instant::now();
    let (pinned, other) = (blob(1, 1 << 20, 256 << 10), blob(2, 1 << 20, 256 << 10));
    for meta in [&pinned, &other] {
        let full = Bitfield::full(meta.piece_count());
        s.add_torrent(now, Arc::clone(meta), full, String::new())
            .unwrap();
        s.handle_announce_response(now, meta.info_hash(), Vec::new(), None);
    }
    s.pin(&pinned.info_hash());
    drain(&mut s);
    let later = now + s.config().seeder_idle_timeout + Duration::from_secs(1);
    s.handle_timeout(later);
    let removed: Vec<_> = std::iter::from_fn(|| s.poll_event())
        .filter_map(|e| match e {
            Event::Removed { info_hash } => Some(info_hash),
            _ => None,
        })
        .collect();
    assert_eq!(removed, vec![other.info_hash()]);
    assert!(s.torrents().any(|h| *h == pinned.info_hash()));
    let announces_pinned = |actions: Vec<Action>| {
        actions.iter().any(
            |a| matches!(a, Action::Announce { info_hash, .. } if *info_hash == pinned.info_hash()),
        )
    };
    assert!(announces_pinned(drain(&mut s)));
    s.handle_announce_response(later, pinned.info_hash(), Vec::new(), None);
    // Still there long after, and still announcing.
    let much_later = later + s.config().seeder_idle_timeout * 3;
    s.handle_timeout(much_later);
    assert!(s.torrents().any(|h| *h == pinned.info_hash()));
    assert!(announces_pinned(drain(&mut s)));
}

/// A peer that sends a second handshake while its first waits for the torrent to be looked
/// up is a violation; the lookup's answer then accepts nothing (found by the fuzzer: both
/// were accepted and the connection was listed twice).
#[test]
fn a_second_handshake_while_the_first_is_resolved_is_refused() {
    let mut s = swarm(SwarmConfig::default());
    let now = Instant::now();
    let meta = blob(1, 1 << 20, 256 << 10);
    let conn = s.handle_incoming(now, addr(2));
    let empty = Bitfield::new(meta.piece_count());
    s.handle_message(now, conn, handshake(&meta, 2, &empty, vec![]));
    assert!(
        drain(&mut s)
            .iter()
            .any(|a| matches!(a, Action::Resolve { conn: c, .. } if *c == conn))
    );
    // The driver finds the blob and adds it; the peer's second handshake arrives first.
    let full = Bitfield::full(meta.piece_count());
    s.add_torrent(now, Arc::clone(&meta), full, String::new())
        .unwrap();
    s.handle_message(now, conn, handshake(&meta, 2, &empty, vec![]));
    s.handle_resolved(now, conn);
    s.check_invariants().unwrap();
    assert!(!s.is_established(conn));
    assert_eq!(s.torrent_stats(&meta.info_hash()).unwrap().conns, 0);
}
