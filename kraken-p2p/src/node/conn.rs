//! Connection tasks: they move bytes and nothing else.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use kraken_core::PieceIndex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::actor::ActorEvent;
use super::halves::{ReadSide, WriteSide, unless_stalled};
pub(crate) use super::piece_source::PieceSource;
use super::rate::RateLimiter;
use super::transport::BoxStream;
use crate::swarm::{ConnClosed, ConnId};
use crate::wire::{self, FrameDecoder, Message, WireError};

/// Bytes handed to the egress limiter at once while sending a piece, so that many
/// connections interleave instead of one piece monopolising the budget.
pub(super) const SEND_CHUNK: usize = 256 << 10;

/// What the actor asks a connection's writer to send.
#[derive(Debug)]
pub(crate) enum Outgoing {
    Message(Message),
    Piece {
        index: PieceIndex,
        range: std::ops::Range<u64>,
        source: PieceSource,
    },
    /// Send the messages queued before this (a refusal, say; queued pieces are dropped),
    /// flush, and close.
    Close,
}

/// The actor's handle on a connection task.
#[derive(Debug)]
pub(crate) struct ConnHandle {
    pub(crate) outgoing: mpsc::Sender<Outgoing>,
    pub(crate) cancel: CancellationToken,
    /// Set when the actor closes the connection: queued pieces are no longer sent.
    pub(crate) closing: CancellationToken,
    /// Largest piece payload the reader accepts: 0 until the torrent is known.
    pub(crate) max_payload: Arc<AtomicU32>,
}

impl ConnHandle {
    /// Closes the connection once the messages queued so far are written: with no room to
    /// queue the close, at once.
    pub(crate) fn close(self) {
        self.closing.cancel();
        if self.outgoing.try_send(Outgoing::Close).is_err() {
            self.cancel.cancel();
        }
    }
}

pub(crate) struct ConnTask {
    pub(crate) conn: ConnId,
    pub(crate) stream: BoxStream,
    pub(crate) events: mpsc::Sender<ActorEvent>,
    pub(crate) outgoing: mpsc::Receiver<Outgoing>,
    pub(crate) cancel: CancellationToken,
    pub(crate) closing: CancellationToken,
    pub(crate) max_payload: Arc<AtomicU32>,
    pub(crate) ingress: Option<Arc<RateLimiter>>,
    pub(crate) egress: Option<Arc<RateLimiter>>,
    /// See [`NodeConfig::write_stall_timeout`](super::NodeConfig::write_stall_timeout).
    pub(crate) write_stall: Duration,
}

impl ConnTask {
    /// Runs the reader and the writer until either ends or the connection is cancelled,
    /// then reports how it ended.
    pub(crate) async fn run(self, span: tracing::Span) {
        let Self {
            conn,
            stream,
            events,
            outgoing,
            cancel,
            closing,
            max_payload,
            ingress,
            egress,
            write_stall,
        } = self;
        let stream = Mutex::new(stream);
        let (reader, writer) = (ReadSide(&stream), WriteSide(&stream));
        let how = async {
            tokio::select! {
                () = cancel.cancelled() => ConnClosed::Normal,
                how = read_loop(conn, reader, &events, &max_payload, ingress.as_deref()) => how,
                how = write_loop(conn, writer, outgoing, &events, egress.as_deref(), &closing, write_stall) => how,
            }
        }
        .instrument(span)
        .await;
        // The actor may already have forgotten the connection; then this is ignored.
        let _ = events.send(ActorEvent::Closed { conn, how }).await;
    }
}

async fn read_loop(
    conn: ConnId,
    mut reader: ReadSide<'_>,
    events: &mpsc::Sender<ActorEvent>,
    max_payload: &AtomicU32,
    ingress: Option<&RateLimiter>,
) -> ConnClosed {
    let mut decoder = FrameDecoder::new();
    let mut buf = BytesMut::with_capacity(64 << 10);
    loop {
        decoder.set_max_payload(max_payload.load(Ordering::Relaxed));
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(message)) => {
                    if events
                        .send(ActorEvent::Message { conn, message })
                        .await
                        .is_err()
                    {
                        return ConnClosed::Normal;
                    }
                    // The handshake may have told the actor the piece length.
                    decoder.set_max_payload(max_payload.load(Ordering::Relaxed));
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "peer sent an invalid frame");
                    return ConnClosed::ProtocolError;
                }
            }
        }
        if buf.capacity() - buf.len() < 16 << 10 {
            buf.reserve(64 << 10);
        }
        match reader.read_buf(&mut buf).await {
            Ok(0) => return ConnClosed::Normal,
            Ok(n) => {
                if let Some(limiter) = ingress {
                    limiter.acquire(n).await;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "read failed");
                return ConnClosed::Normal;
            }
        }
    }
}

/// A queued item whose piece (if any) is already coming off the disk.
enum Ready {
    Message(Message),
    /// A piece ready to send, or being prepared on the blocking pool.
    Piece {
        index: PieceIndex,
        range: std::ops::Range<u64>,
        prepared: Preparation,
    },
    /// Everything before was written: flush and close.
    Close,
}

/// A piece ready to send, or being read on the blocking pool.
enum Preparation {
    Done(Prepared),
    Reading(tokio::task::JoinHandle<Prepared>),
}

/// A piece ready to send.
enum Prepared {
    /// In the page cache: sent from the file by the kernel (`sendfile`). The spare buffer
    /// the preparation did not need comes back with it.
    Cached(PieceSource, Vec<u8>),
    /// Read into the buffer: the transport copies, or the piece was not in the page cache.
    /// A `sendfile` of it would have read the disk on the runtime thread, stalling every
    /// other connection of the process meanwhile; an agent that drops its downloads from
    /// the page cache (`drop_behind`) serves its neighbours this way.
    Read(Vec<u8>, kraken_core::Result<()>),
}

impl Ready {
    /// Starts preparing a piece at once (reading it into `buf`, unless it will be sent
    /// zero-copy from the page cache), so the disk read overlaps the previous send.
    fn start(item: Outgoing, spare: &mut Vec<Vec<u8>>, zero_copy: bool) -> Self {
        match item {
            Outgoing::Message(message) => Self::Message(message),
            Outgoing::Close => Self::Close,
            Outgoing::Piece {
                index,
                range,
                source,
            } => {
                let mut buf = spare.pop().unwrap_or_default();
                let piece = range.clone();
                // The check never waits for the disk (`RWF_NOWAIT` probes), so it runs here: a
                // cached piece, the common case, is ready without a hop to the blocking pool,
                // whose thread a busy machine may schedule only after this send has drained.
                let prepared = if zero_copy && source.is_cached(piece.clone()) {
                    Preparation::Done(Prepared::Cached(source, buf))
                } else {
                    Preparation::Reading(tokio::task::spawn_blocking(move || {
                        let result = source.read_into(piece, &mut buf);
                        Prepared::Read(buf, result)
                    }))
                };
                Self::Piece {
                    index,
                    range,
                    prepared,
                }
            }
        }
    }
}

async fn write_loop(
    conn: ConnId,
    mut writer: WriteSide<'_>,
    mut outgoing: mpsc::Receiver<Outgoing>,
    events: &mpsc::Sender<ActorEvent>,
    egress: Option<&RateLimiter>,
    closing: &CancellationToken,
    stall: Duration,
) -> ConnClosed {
    let mut frame = BytesMut::new();
    let mut next: Option<Ready> = None;
    // Two piece buffers cycle between the one being sent and the one being read ahead.
    let mut spare: Vec<Vec<u8>> = Vec::with_capacity(2);
    let zero_copy = writer.supports_send_file();
    loop {
        let item = match next.take() {
            Some(item) => item,
            None => match outgoing.recv().await {
                None => break,
                // A piece for a connection being closed is not worth reading.
                Some(Outgoing::Piece { .. }) if closing.is_cancelled() => continue,
                Some(item) => Ready::start(item, &mut spare, zero_copy),
            },
        };
        if matches!(item, Ready::Close) {
            break;
        }
        let result: Result<(), WireError> = async {
            match item {
                Ready::Close => {}
                Ready::Message(message) => {
                    frame.clear();
                    wire::encode(&message, &mut frame);
                    if let Some(limiter) = egress {
                        limiter.acquire(frame.len()).await;
                    }
                    unless_stalled(stall, writer.write_all(&frame)).await?;
                }
                Ready::Piece {
                    index,
                    range,
                    prepared,
                } => {
                    let prepared = match prepared {
                        Preparation::Done(prepared) => prepared,
                        Preparation::Reading(task) => task
                            .await
                            .map_err(|_| std::io::Error::other("piece read task failed"))?,
                    };
                    // Read ahead: one more piece comes off the disk while this one is sent.
                    if let Ok(item) = outgoing.try_recv() {
                        next = Some(Ready::start(item, &mut spare, zero_copy));
                    }
                    let len = range.end - range.start;
                    frame.clear();
                    wire::encode_payload_header(index.get(), len as u32, &mut frame);
                    match prepared {
                        Prepared::Cached(source, buf) => {
                            spare.push(buf);
                            let file = source.file_for(range.clone())?;
                            unless_stalled(stall, writer.write_all(&frame)).await?;
                            writer.send_file(file, range, egress, stall).await?;
                        }
                        Prepared::Read(data, result) => {
                            result.map_err(std::io::Error::other)?;
                            unless_stalled(stall, writer.write_all(&frame)).await?;
                            for chunk in data.chunks(SEND_CHUNK) {
                                if let Some(limiter) = egress {
                                    limiter.acquire(chunk.len()).await;
                                }
                                unless_stalled(stall, writer.write_all(chunk)).await?;
                            }
                            spare.push(data);
                        }
                    }
                    let _ = events
                        .send(ActorEvent::PieceSent { conn, bytes: len })
                        .await;
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::debug!(error = %e, "write failed");
            return match e {
                WireError::Io(e) if e.kind() == io::ErrorKind::TimedOut => ConnClosed::Stalled,
                _ => ConnClosed::Normal,
            };
        }
    }
    // Flushes what is buffered (TLS records) and says goodbye; bounded like every write.
    let _ = unless_stalled(stall, writer.shutdown()).await;
    ConnClosed::Normal
}
