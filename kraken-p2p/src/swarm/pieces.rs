//! Piece exchange: the driver's reports on payloads (received, written, sent), serving
//! requests, tracking what neighbours have, requesting pieces (the picker itself is
//! [`Torrent::pick`]), timing requests out and backing off refusals.

use std::collections::BTreeMap;
use std::time::Instant;

use kraken_core::{Bitfield, InfoHash, PieceIndex};

use super::conn::{Conn, ConnState};
use super::timers::lower;
use super::torrent::{Phase, Torrent};
use super::{Action, ConnId, Event, FailReason, PieceWriteError, Swarm};
use crate::wire::{ErrorCode, Message};

/// The driver's reports on piece payloads: received, written (or not), sent.
impl Swarm {
    /// A piece payload of `length` bytes arrived. Returns the piece to verify and write if
    /// it was wanted; report the write with [`handle_piece_written`](Self::handle_piece_written).
    /// Unwanted payloads return `None` (and unsolicited ones close the connection).
    pub fn handle_piece_received(
        &mut self,
        now: Instant,
        conn: ConnId,
        index: u32,
        length: u64,
    ) -> Option<(InfoHash, PieceIndex)> {
        let c = self.conns.get(&conn)?;
        let info_hash = c.info_hash?;
        let solicited = c.requested.contains_key(&index) || c.cancelled.contains(&index);
        if c.state != ConnState::Active || !solicited {
            self.violation(now, conn, "unsolicited piece");
            return None;
        }
        // Checked before the request is taken off the connection: a violation closes it,
        // and closing forgets only the requests it still lists (a request taken off first
        // stayed in the torrent, holding its piece until the request timed out).
        let torrent = self.torrents.get(&info_hash)?;
        let Ok(piece) = torrent.meta.piece_index(index) else {
            self.violation(now, conn, "piece index out of range");
            return None;
        };
        if torrent.meta.piece_len(piece) != length {
            self.violation(now, conn, "wrong payload length");
            return None;
        }
        let c = self.conns.get_mut(&conn)?;
        c.requested.remove(&index);
        c.cancelled.remove(&index);
        c.last_activity = now;
        let torrent = self.torrents.get_mut(&info_hash)?;
        torrent.forget_request(index, conn);
        if torrent.have.get(index) || torrent.is_writing(index) {
            // An endgame duplicate.
            self.fill_requests(now, conn);
            return None;
        }
        // The sender is remembered with the piece: the link may be gone by the time the
        // piece is written, and the piece must still be credited (or blamed) to it.
        let sender = self.conns.get(&conn).and_then(Conn::key);
        torrent.start_writing(index, sender);
        self.fill_requests(now, conn);
        Some((info_hash, piece))
    }

    /// The driver's report on a piece from [`handle_piece_received`](Self::handle_piece_received).
    pub fn handle_piece_written(
        &mut self,
        now: Instant,
        conn: ConnId,
        info_hash: InfoHash,
        index: PieceIndex,
        result: Result<(), PieceWriteError>,
    ) {
        let Some(torrent) = self.torrents.get_mut(&info_hash) else {
            return;
        };
        if !torrent.is_writing(index.get()) {
            // A report for a piece this torrent never handed out (a late one for an
            // earlier torrent of the same info hash): it proves nothing about this one.
            return;
        }
        let writes_were_full = torrent.writing_count() >= self.config.max_pending_writes;
        let sender = torrent.finish_writing(index.get());
        match result {
            Ok(()) => {
                if torrent.mark_have(index.get()) {
                    let length = torrent.meta.piece_len(index);
                    torrent.last_progress = now;
                    if let Some((_, peer)) = sender {
                        *torrent.stats.received_from.entry(peer).or_default() += length;
                    }
                    self.on_piece_done(now, info_hash, index.get(), writes_were_full);
                }
            }
            Err(PieceWriteError::Corrupt) => {
                torrent.stats.corrupt_pieces += 1;
                tracing::warn!(%conn, torrent = %info_hash.fmt_short(), piece = index.get(), "peer sent a corrupt piece");
                if self.conns.contains_key(&conn) {
                    self.violation(now, conn, "corrupt piece");
                } else if let Some(peer) = sender {
                    self.blacklist_peer(now, peer, info_hash);
                }
                self.fill_all_requests(now, info_hash);
            }
            Err(PieceWriteError::Storage) => self.fail(info_hash, FailReason::Storage),
        }
    }

    /// A piece from [`Action::SendPiece`] has been sent (or failed to be).
    pub fn handle_piece_sent(&mut self, now: Instant, conn: ConnId, bytes: u64) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.queued_uploads = c.queued_uploads.saturating_sub(1);
        c.last_activity = now;
        if let Some(torrent) = c.info_hash.and_then(|h| self.torrents.get_mut(&h)) {
            torrent.stats.sent += bytes;
            torrent.last_progress = torrent.last_progress.max(now);
        }
    }
}

impl Swarm {
    pub(super) fn on_piece_request(&mut self, now: Instant, conn: ConnId, index: u32) {
        let c = self.conns.get_mut(&conn).expect("caller checked");
        let info_hash = c.info_hash.expect("active connections have a torrent");
        let torrent = &self.torrents[&info_hash];
        let Ok(piece) = torrent.meta.piece_index(index) else {
            self.violation(now, conn, "request out of range");
            return;
        };
        let spread = self.config.spread_uploads
            && self.config.origin
            && torrent.phase == Phase::Seeding
            && torrent.should_spread(index, &c.have);
        if !torrent.have.get(index)
            || c.queued_uploads >= self.config.max_queued_uploads_per_conn
            || spread
        {
            self.actions.push_back(Action::Send {
                conn,
                message: Message::Error {
                    code: ErrorCode::PieceUnavailable,
                    index: Some(index),
                    message: String::new(),
                },
            });
            return;
        }
        c.queued_uploads += 1;
        if let Some(torrent) = self.torrents.get_mut(&info_hash) {
            torrent.uploads[index as usize] += 1;
        }
        self.actions.push_back(Action::SendPiece {
            conn,
            info_hash,
            index: piece,
        });
    }

    pub(super) fn on_announce_piece(&mut self, now: Instant, conn: ConnId, index: u32) {
        let Some((c, torrent)) = active_conn(&mut self.conns, &mut self.torrents, conn) else {
            return;
        };
        if index >= torrent.meta.piece_count() {
            self.violation(now, conn, "announce out of range");
            return;
        }
        if c.have.set(index).unwrap_or(false) {
            torrent.availability[index as usize] += 1;
        }
        if torrent.phase == Phase::Seeding && c.have.is_full() {
            self.close(now, conn, false);
            return;
        }
        self.fill_requests(now, conn);
    }

    pub(super) fn on_peer_complete(&mut self, now: Instant, conn: ConnId) {
        let Some((c, torrent)) = active_conn(&mut self.conns, &mut self.torrents, conn) else {
            return;
        };
        torrent.remove_availability(&c.have);
        c.have = Bitfield::full(torrent.meta.piece_count());
        torrent.add_availability(&c.have);
        if torrent.phase == Phase::Seeding {
            self.close(now, conn, false);
        } else {
            self.fill_requests(now, conn);
        }
    }

    pub(super) fn on_peer_error(
        &mut self,
        now: Instant,
        conn: ConnId,
        code: ErrorCode,
        index: Option<u32>,
    ) {
        let c = self.conns.get_mut(&conn).expect("caller checked");
        match index {
            Some(index) if c.requested.remove(&index).is_some() => {
                let until = now + self.config.refused_piece_backoff;
                c.avoid.insert(index, until);
                let info_hash = c.info_hash.expect("active connections have a torrent");
                lower(&mut self.timer_floor, until);
                if let Some(t) = self.torrents.get_mut(&info_hash) {
                    t.forget_request(index, conn);
                }
                self.fill_all_requests(now, info_hash);
            }
            _ => tracing::debug!(%conn, %code, "peer reported an error"),
        }
    }

    /// A piece was verified and written: tell the neighbours that lack it, cancel endgame
    /// duplicates, and finish the torrent if it was the last.
    /// `index` is held now. `writes_were_full`: requests were held back by
    /// `max_pending_writes` until it was written.
    pub(super) fn on_piece_done(
        &mut self,
        now: Instant,
        info_hash: InfoHash,
        index: u32,
        writes_were_full: bool,
    ) {
        let torrent = self.torrents.get_mut(&info_hash).expect("caller checked");
        let duplicates = torrent.take_requests(index);
        let mut freed = Vec::with_capacity(duplicates.len());
        for request in duplicates {
            if let Some(c) = self.conns.get_mut(&request.conn)
                && c.requested.remove(&index).is_some()
            {
                c.cancelled.insert(index);
                freed.push(request.conn);
                self.actions.push_back(Action::Send {
                    conn: request.conn,
                    message: Message::CancelPiece { index },
                });
            }
        }
        // An origin is told too, though it holds the piece: it spreads its uploads by the
        // pieces we lack (`Torrent::should_spread`), and judged by the bitfield of our
        // handshake it refused everything we still needed once the other peers had left,
        // until an idle timeout replaced the link (issue 17).
        for &conn in &torrent.conns {
            let c = &self.conns[&conn];
            if c.state == ConnState::Active && (c.origin || !c.have.get(index)) {
                self.actions.push_back(Action::Send {
                    conn,
                    message: Message::AnnouncePiece { index },
                });
            }
        }
        self.events.push_back(Event::Progress {
            info_hash,
            have: torrent.have.count_ones(),
            total: torrent.have.len(),
        });
        self.check_complete(info_hash);
        // A held piece opens no new request by itself: only connections whose duplicate was
        // just cancelled have room they did not have, unless the write limit held everyone
        // back or endgame (which asks for pieces in flight) begins. Visiting every connection
        // after every piece stood out in the simulator's profile, mostly as cache misses.
        let retry = self.retry_origin_refusals(info_hash);
        let torrent = &self.torrents[&info_hash];
        let endgame = torrent.missing() <= self.config.endgame_threshold as u32;
        if writes_were_full || endgame || retry {
            self.fill_all_requests(now, info_hash);
        } else {
            for conn in freed {
                self.fill_requests(now, conn);
            }
        }
    }

    /// Forgets the refusal backoffs of the torrent's origins when nothing is in flight;
    /// returns whether there were any. An origin refuses a piece while we lack one it has
    /// uploaded less often (`Torrent::should_spread`), a judgement our next piece or a
    /// neighbour's leaving may change: a straggler whose last sources left waited out a
    /// backoff for a piece the origin would now serve. Called only when a piece is written
    /// or a link closes, never on a refusal, so it cannot loop.
    pub(super) fn retry_origin_refusals(&mut self, info_hash: InfoHash) -> bool {
        let Some(torrent) = self.torrents.get(&info_hash) else {
            return false;
        };
        if torrent.phase != Phase::Leeching || !torrent.nothing_in_flight() {
            return false;
        }
        let mut any = false;
        for conn in &torrent.conns {
            if let Some(c) = self.conns.get_mut(conn)
                && c.origin
            {
                any |= c.avoid.clear();
            }
        }
        any
    }

    pub(super) fn fill_all_requests(&mut self, now: Instant, info_hash: InfoHash) {
        let Some(torrent) = self.torrents.get(&info_hash) else {
            return;
        };
        for conn in torrent.conns.clone() {
            self.fill_requests(now, conn);
        }
    }

    /// Requests pieces from `conn` until its pipeline is full or it has nothing we need.
    pub(super) fn fill_requests(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.state != ConnState::Active {
            return;
        }
        let Some(torrent) = c.info_hash.and_then(|h| self.torrents.get_mut(&h)) else {
            return;
        };
        if torrent.phase != Phase::Leeching {
            return;
        }
        let limit = if c.origin || c.have.is_full() {
            self.config.seeder_pipeline_limit
        } else {
            self.config.pipeline_limit
        };
        let timeout = self.config.request_timeout(torrent.meta.piece_length());
        // With more neighbours, picking the same pieces as they do costs more: widen the
        // window of candidates as the neighbourhood grows.
        let window = self.config.sequential_window * torrent.conns.len().max(1);
        while c.requested.len() < limit && torrent.writing_count() < self.config.max_pending_writes
        {
            let endgame = torrent.missing() <= self.config.endgame_threshold as u32;
            let Some(index) = torrent.pick(
                &c.have,
                &c.requested,
                &c.avoid,
                now,
                conn,
                endgame,
                window,
                &mut self.rng,
            ) else {
                break;
            };
            let deadline = now + timeout;
            c.requested.insert(index, deadline);
            torrent.add_request(index, conn, deadline);
            lower(&mut self.timer_floor, deadline);
            self.actions.push_back(Action::Send {
                conn,
                message: Message::PieceRequest { index },
            });
        }
    }

    /// Forgets refusals whose backoff is over and asks those peers again.
    pub(super) fn expire_avoidance(&mut self, now: Instant) {
        let mut retry = Vec::new();
        for (&id, conn) in &mut self.conns {
            if conn.avoid.expire(now) {
                retry.push(id);
            }
        }
        for conn in retry {
            self.fill_requests(now, conn);
        }
    }

    pub(super) fn expire_requests(&mut self, now: Instant) {
        let mut expired = Vec::new();
        for (info_hash, torrent) in &mut self.torrents {
            let mut timed_out = Vec::new();
            torrent.expire_requests(now, &mut timed_out);
            expired.extend(
                timed_out
                    .into_iter()
                    .map(|(index, conn)| (*info_hash, index, conn)),
            );
        }
        for (info_hash, index, conn) in expired {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.requested.remove(&index);
                c.cancelled.insert(index);
                c.avoid
                    .insert(index, now + self.config.refused_piece_backoff);
                tracing::debug!(%conn, piece = index, "piece request timed out");
            }
            self.fill_all_requests(now, info_hash);
        }
    }
}

/// A connection and its torrent, borrowed together (they live in different maps).
fn active_conn<'a>(
    conns: &'a mut BTreeMap<ConnId, Conn>,
    torrents: &'a mut BTreeMap<InfoHash, Torrent>,
    conn: ConnId,
) -> Option<(&'a mut Conn, &'a mut Torrent)> {
    let c = conns.get_mut(&conn)?;
    let torrent = torrents.get_mut(&c.info_hash?)?;
    Some((c, torrent))
}
