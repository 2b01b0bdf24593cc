//! A stateful driver of one [`Swarm`] for the fuzz target (`fuzz/fuzz_targets/swarm_ops.rs`)
//! and the swarm's property test: arbitrary inputs from several fake peers (some sharing an
//! address, some claiming each other's ids), with [`Swarm::check_invariants`] after every
//! step and [`Swarm::check_action`] on every action. It panics on the first broken
//! invariant.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arbitrary::{Result, Unstructured};
use bytes::Bytes;
use kraken_core::{Bitfield, InfoHash, MetaInfo, PeerId, PeerInfo, PieceIndex};

use super::{Action, ConnClosed, ConnId, FinishError, PieceWriteError, Swarm, SwarmConfig};
use crate::wire::{ErrorCode, Handshake, Message};

/// Fake peers: ids 1..=PEERS, on three addresses.
const PEERS: u8 = 6;

fn peer_id(n: u8) -> PeerId {
    PeerId::from_bytes([n; 20])
}

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1 + n % 3], 7000 + u16::from(n)))
}

/// Runs the ops encoded in `data` until it runs out.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let _ = Driver::new(&mut u).and_then(|mut d| d.run(&mut u));
}

struct Driver {
    swarm: Swarm,
    now: Instant,
    metas: Vec<Arc<MetaInfo>>,
    /// Connections the swarm knows or knew, to aim inputs at.
    conns: Vec<ConnId>,
    /// Pieces handed out for writing, waiting for their report.
    writes: Vec<(ConnId, InfoHash, PieceIndex)>,
    /// Torrents waiting for `handle_finished`.
    finishing: Vec<InfoHash>,
    resolving: Vec<ConnId>,
}

impl Driver {
    fn new(u: &mut Unstructured<'_>) -> Result<Self> {
        let mut config = SwarmConfig {
            rng_seed: Some(u.arbitrary()?),
            origin: u.arbitrary()?,
            ..SwarmConfig::default()
        };
        config.max_conns_per_torrent = u.int_in_range(1..=4)?;
        config.max_inbound_per_ip = u.int_in_range(1..=4)?;
        config.max_conns_per_ip_per_torrent = u.int_in_range(1..=3)?;
        config.pipeline_limit = u.int_in_range(1..=3)?;
        config.max_pending_writes = u.int_in_range(1..=3)?;
        config.endgame_threshold = u.int_in_range(0..=3)?;
        config.max_conns = u.int_in_range(1..=6)?;
        let metas = (0..2u8)
            .map(|i| {
                let data: Vec<u8> = (0..(200 + usize::from(i) * 64))
                    .map(|b| b as u8 ^ i)
                    .collect();
                Arc::new(MetaInfo::from_bytes(&data, 64).expect("metainfo of test bytes"))
            })
            .collect();
        Ok(Self {
            swarm: Swarm::new(config, peer_id(0)),
            now: Instant::now(),
            metas,
            conns: Vec::new(),
            writes: Vec::new(),
            finishing: Vec::new(),
            resolving: Vec::new(),
        })
    }

    fn run(&mut self, u: &mut Unstructured<'_>) -> Result<()> {
        while !u.is_empty() {
            self.step(u)?;
            self.drain();
            if let Err(e) = self.swarm.check_invariants() {
                panic!("invariant broken: {e}");
            }
        }
        Ok(())
    }

    fn conn(&self, u: &mut Unstructured<'_>) -> Result<ConnId> {
        if self.conns.is_empty() {
            return Ok(ConnId(u.int_in_range(1..=8)?));
        }
        Ok(*u.choose(&self.conns)?)
    }

    fn meta(&self, u: &mut Unstructured<'_>) -> Result<Arc<MetaInfo>> {
        Ok(Arc::clone(u.choose(&self.metas)?))
    }

    fn bitfield(meta: &MetaInfo, u: &mut Unstructured<'_>) -> Result<Bitfield> {
        let mut have = Bitfield::new(meta.piece_count());
        match u.int_in_range(0..=2)? {
            0 => {}
            1 => have = Bitfield::full(meta.piece_count()),
            _ => {
                for i in 0..meta.piece_count() {
                    if u.arbitrary()? {
                        let _ = have.set(i);
                    }
                }
            }
        }
        Ok(have)
    }

    fn step(&mut self, u: &mut Unstructured<'_>) -> Result<()> {
        let now = self.now;
        match u.int_in_range(0..=15)? {
            0 => {
                let meta = self.meta(u)?;
                let have = Self::bitfield(&meta, u)?;
                let _ = self.swarm.add_torrent(now, meta, have, String::new());
            }
            1 => {
                let meta = self.meta(u)?;
                self.swarm.remove_torrent(&meta.info_hash());
            }
            2 => {
                let from = u.int_in_range(1..=PEERS)?;
                let conn = self.swarm.handle_incoming(now, addr(from));
                self.conns.push(conn);
                if u.arbitrary()? {
                    self.swarm.handle_authenticated(conn, peer_id(from));
                }
            }
            3 => {
                let conn = self.conn(u)?;
                let meta = self.meta(u)?;
                let claimed = u.int_in_range(0..=PEERS)?;
                let have = Self::bitfield(&meta, u)?;
                let mut h = Handshake::new(
                    peer_id(claimed),
                    meta.info_hash(),
                    *meta.digest(),
                    String::new(),
                    Bytes::copy_from_slice(have.as_bytes()),
                );
                h.origin = u.arbitrary()?;
                let n = u.int_in_range(0..=3)?;
                h.neighbours = (0..n).map(|i| peer_id(i + 1)).collect();
                if u.ratio(1, 16)? {
                    h.bitfield = Bytes::from_static(&[0xff; 9]);
                }
                self.swarm.handle_message(now, conn, Message::Handshake(h));
            }
            4 => {
                let conn = self.conn(u)?;
                let index = u.int_in_range(0..=6)?;
                self.swarm
                    .handle_message(now, conn, Message::PieceRequest { index });
            }
            5 => {
                let conn = self.conn(u)?;
                let index = u.int_in_range(0..=6)?;
                let message = match u.int_in_range(0..=3)? {
                    0 => Message::AnnouncePiece { index },
                    1 => Message::Complete,
                    2 => Message::CancelPiece { index },
                    _ => Message::Error {
                        code: ErrorCode::PieceUnavailable,
                        index: u.arbitrary::<bool>()?.then_some(index),
                        message: String::new(),
                    },
                };
                self.swarm.handle_message(now, conn, message);
            }
            6 => {
                let conn = self.conn(u)?;
                let index = u.int_in_range(0..=6)?;
                let length = if u.arbitrary()? {
                    64
                } else {
                    u.int_in_range(0..=200)?
                };
                if let Some((info_hash, piece)) =
                    self.swarm.handle_piece_received(now, conn, index, length)
                {
                    self.writes.push((conn, info_hash, piece));
                }
            }
            7 if !self.writes.is_empty() => {
                let i = u.choose_index(self.writes.len())?;
                let (conn, info_hash, piece) = self.writes.swap_remove(i);
                let result = match u.int_in_range(0..=5)? {
                    0 => Err(PieceWriteError::Corrupt),
                    1 => Err(PieceWriteError::Storage),
                    _ => Ok(()),
                };
                self.swarm
                    .handle_piece_written(now, conn, info_hash, piece, result);
            }
            8 => {
                let conn = self.conn(u)?;
                self.swarm.handle_piece_sent(now, conn, 64);
            }
            9 => {
                let conn = self.conn(u)?;
                let how = *u.choose(&[
                    ConnClosed::Normal,
                    ConnClosed::DialFailed,
                    ConnClosed::ProtocolError,
                    ConnClosed::Stalled,
                ])?;
                self.swarm.handle_closed(now, conn, how);
            }
            10 => {
                let conn = self.conn(u)?;
                self.swarm.handle_connected(now, conn);
            }
            11 if !self.resolving.is_empty() => {
                let conn = self
                    .resolving
                    .swap_remove(u.choose_index(self.resolving.len())?);
                self.swarm.handle_resolved(now, conn);
            }
            12 => {
                let meta = self.meta(u)?;
                let n = u.int_in_range(0..=PEERS)?;
                let mut peers = Vec::new();
                for _ in 0..n {
                    let p = u.int_in_range(0..=PEERS)?;
                    peers.push(PeerInfo::new(
                        peer_id(p),
                        addr(p),
                        u.arbitrary()?,
                        u.arbitrary()?,
                    ));
                }
                let interval = Duration::from_millis(u.int_in_range(0..=5000)?);
                match u.int_in_range(0..=2)? {
                    0 => self.swarm.handle_announce_response(
                        now,
                        meta.info_hash(),
                        peers,
                        Some(interval),
                    ),
                    1 => self.swarm.handle_announce_failed(now, meta.info_hash()),
                    _ => self.swarm.handle_announce_refused(now, meta.info_hash()),
                }
            }
            13 if !self.finishing.is_empty() => {
                let info_hash = self
                    .finishing
                    .swap_remove(u.choose_index(self.finishing.len())?);
                let result = match u.int_in_range(0..=4)? {
                    0 => Err(FinishError::DigestMismatch),
                    1 => Err(FinishError::Storage),
                    _ => Ok(()),
                };
                self.swarm.handle_finished(now, info_hash, result);
            }
            _ => {
                self.now += Duration::from_millis(u.int_in_range(0..=40_000)?);
                self.swarm.handle_timeout(self.now);
            }
        }
        Ok(())
    }

    fn drain(&mut self) {
        while let Some(action) = self.swarm.poll_action() {
            if let Err(e) = self.swarm.check_action(&action) {
                panic!("bad action {action:?}: {e}");
            }
            match action {
                Action::Dial { conn, .. } => self.conns.push(conn),
                Action::Resolve { conn, .. } => self.resolving.push(conn),
                Action::Finish { info_hash } => self.finishing.push(info_hash),
                _ => {}
            }
        }
        while self.swarm.poll_event().is_some() {}
        if self.conns.len() > 64 {
            self.conns.drain(..32);
        }
    }
}
