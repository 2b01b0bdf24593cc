//! Received pieces: verified and written on the blocking pool, and made durable in the
//! background as a download goes.

use std::time::Instant;

use kraken_core::InfoHash;

use super::{Actor, ActorEvent};
use crate::node::conn::PieceSource;
use crate::swarm::{ConnId, PieceWriteError};

/// A download's written pieces are made durable every this many bytes, in the background:
/// the disk then writes while pieces arrive, and completing a 1 GiB blob waits for the last
/// 64 MiB instead of all of it, which shortens a large fetch. It also keeps a large download
/// from piling up dirty pages.
const WRITE_BACK_EVERY: u64 = 64 << 20;

/// With [`NodeConfig::drop_behind`](crate::NodeConfig::drop_behind), the newest durable
/// bytes that stay in the page cache after a write-back or the download's end: a stream just
/// behind the download, or a neighbour asking for a piece just announced, still reads them
/// from memory.
const DROP_BEHIND_LAG: u64 = 16 << 20;

/// Drops from the page cache the first `durable` bytes of `download` (known durable) but the
/// newest [`DROP_BEHIND_LAG`]: the one place both a write-back and the download's end do it.
pub(super) fn drop_behind(download: &kraken_core::Download, durable: u64) {
    download.drop_cached(durable.saturating_sub(DROP_BEHIND_LAG));
}

impl Actor {
    pub(super) fn on_payload(
        &mut self,
        now: Instant,
        conn: ConnId,
        index: u32,
        data: bytes::Bytes,
    ) {
        self.counters
            .received(self.swarm.is_origin(conn), data.len() as u64);
        let Some((info_hash, piece)) =
            self.swarm
                .handle_piece_received(now, conn, index, data.len() as u64)
        else {
            return;
        };
        let Some(download) = self.partial_download(&info_hash) else {
            return;
        };
        // A download kept in the page cache starts each piece's write-back at once, so that
        // completing it waits for its last pieces only, not up to `WRITE_BACK_EVERY` bytes
        // (30 ms of a 1 GiB fetch here). One that drops behind leaves the disk to its periodic
        // write-backs and to neighbours' reads of the pieces it dropped: writing every piece
        // at once made the devcluster's second cold pull slower (`docs/benchmarks.md`).
        let write_ahead = !self.config.drop_behind;
        self.spawn_blocking(
            self.torrent_span(&info_hash),
            move || {
                download
                    .write_piece(piece, &data)
                    .map(|written| {
                        if written && write_ahead {
                            download.start_write_back(piece);
                        }
                    })
                    .map_err(|e| match e {
                        kraken_core::Error::PieceHashMismatch { .. }
                        | kraken_core::Error::PieceLengthMismatch { .. } => {
                            PieceWriteError::Corrupt
                        }
                        e => {
                            tracing::error!(error = %e, "writing a piece failed");
                            PieceWriteError::Storage
                        }
                    })
            },
            move |result| ActorEvent::PieceWritten {
                conn,
                info_hash,
                index: piece,
                result,
            },
        );
    }

    /// Counts piece `index` as written and starts a background write-back when
    /// [`WRITE_BACK_EVERY`] bytes await one.
    pub(super) fn write_back_if_due(
        &mut self,
        info_hash: &InfoHash,
        index: kraken_core::PieceIndex,
    ) {
        let Some(torrent) = self.torrents.get_mut(info_hash) else {
            return;
        };
        let PieceSource::Partial(download) = &torrent.source else {
            return;
        };
        torrent.unsynced += torrent.meta.piece_len(index);
        if torrent.writing_back || torrent.unsynced < WRITE_BACK_EVERY {
            return;
        }
        torrent.unsynced = 0;
        torrent.writing_back = true;
        let download = download.clone();
        let info_hash = *info_hash;
        let drop_behind = self.config.drop_behind;
        self.spawn_blocking(
            self.torrent_span(&info_hash),
            move || match download.write_back() {
                Ok(durable) if drop_behind => self::drop_behind(&download, durable),
                Ok(_) => {}
                // Not fatal: finishing the download syncs again and reports failure.
                Err(e) => tracing::warn!(error = %e, "background write-back failed"),
            },
            move |()| ActorEvent::WrittenBack { info_hash },
        );
    }
}
