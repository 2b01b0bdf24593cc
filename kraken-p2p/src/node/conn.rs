//! Connection tasks: they move bytes and nothing else.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::BytesMut;
use kraken_core::{Blob, Download, PieceIndex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::actor::ActorEvent;
use super::rate::RateLimiter;
use super::transport::BoxStream;
use crate::swarm::{ConnClosed, ConnId};
use crate::wire::{self, FrameDecoder, Message, WireError};

/// Bytes handed to the egress limiter at once while sending a piece, so that many
/// connections interleave instead of one piece monopolising the budget.
const SEND_CHUNK: usize = 256 << 10;

/// Where a piece to send is read from.
#[derive(Clone, Debug)]
pub(crate) enum PieceSource {
    /// A complete blob.
    Blob(Blob),
    /// A download in progress (or finished: its file handle stays valid).
    Partial(Download),
}

impl PieceSource {
    /// Reads the bytes of `range` (one piece) into `buf`, reusing its allocation.
    fn read_into(&self, range: std::ops::Range<u64>, buf: &mut Vec<u8>) -> kraken_core::Result<()> {
        // Resizing only when the length changes: equal-sized pieces reuse the bytes without
        // zeroing them again.
        let len = (range.end - range.start) as usize;
        if buf.len() != len {
            buf.resize(len, 0);
        }
        match self {
            Self::Blob(blob) => blob.read_exact_at(range.start, buf),
            Self::Partial(download) => download.read_exact_at(range.start, buf),
        }
    }
}

/// What the actor asks a connection's writer to send.
#[derive(Debug)]
pub(crate) enum Outgoing {
    Message(Message),
    Piece {
        index: PieceIndex,
        range: std::ops::Range<u64>,
        source: PieceSource,
    },
}

/// The actor's handle on a connection task.
#[derive(Debug)]
pub(crate) struct ConnHandle {
    pub(crate) outgoing: mpsc::Sender<Outgoing>,
    pub(crate) cancel: CancellationToken,
    /// Largest piece payload the reader accepts: 0 until the torrent is known.
    pub(crate) max_payload: Arc<AtomicU32>,
}

pub(crate) struct ConnTask {
    pub(crate) conn: ConnId,
    pub(crate) stream: BoxStream,
    pub(crate) events: mpsc::Sender<ActorEvent>,
    pub(crate) outgoing: mpsc::Receiver<Outgoing>,
    pub(crate) cancel: CancellationToken,
    pub(crate) max_payload: Arc<AtomicU32>,
    pub(crate) ingress: Option<Arc<RateLimiter>>,
    pub(crate) egress: Option<Arc<RateLimiter>>,
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
            max_payload,
            ingress,
            egress,
        } = self;
        let (reader, writer) = tokio::io::split(stream);
        let how = async {
            tokio::select! {
                () = cancel.cancelled() => ConnClosed::Normal,
                how = read_loop(conn, reader, &events, &max_payload, ingress.as_deref()) => how,
                how = write_loop(conn, writer, outgoing, &events, egress.as_deref()) => how,
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
    mut reader: tokio::io::ReadHalf<BoxStream>,
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

/// A queued item whose piece (if any) is already being read from disk.
enum Ready {
    Message(Message),
    Piece {
        index: PieceIndex,
        read: tokio::task::JoinHandle<(Vec<u8>, kraken_core::Result<()>)>,
    },
}

impl Ready {
    /// Starts reading a piece at once into `buf`, so the disk read overlaps the previous send.
    fn start(item: Outgoing, spare: &mut Vec<Vec<u8>>) -> Self {
        match item {
            Outgoing::Message(message) => Self::Message(message),
            Outgoing::Piece {
                index,
                range,
                source,
            } => {
                let mut buf = spare.pop().unwrap_or_default();
                Self::Piece {
                    index,
                    read: tokio::task::spawn_blocking(move || {
                        let result = source.read_into(range, &mut buf);
                        (buf, result)
                    }),
                }
            }
        }
    }
}

async fn write_loop(
    conn: ConnId,
    mut writer: tokio::io::WriteHalf<BoxStream>,
    mut outgoing: mpsc::Receiver<Outgoing>,
    events: &mpsc::Sender<ActorEvent>,
    egress: Option<&RateLimiter>,
) -> ConnClosed {
    let mut frame = BytesMut::new();
    let mut next: Option<Ready> = None;
    // Two piece buffers cycle between the one being sent and the one being read ahead.
    let mut spare: Vec<Vec<u8>> = Vec::with_capacity(2);
    loop {
        let item = match next.take() {
            Some(item) => item,
            None => match outgoing.recv().await {
                Some(item) => Ready::start(item, &mut spare),
                None => break,
            },
        };
        let result: Result<(), WireError> = async {
            match item {
                Ready::Message(message) => {
                    frame.clear();
                    wire::encode(&message, &mut frame);
                    if let Some(limiter) = egress {
                        limiter.acquire(frame.len()).await;
                    }
                    writer.write_all(&frame).await?;
                }
                Ready::Piece { index, read } => {
                    let (data, result) = read
                        .await
                        .map_err(|_| std::io::Error::other("piece read task failed"))?;
                    result.map_err(std::io::Error::other)?;
                    // Read ahead: one more piece comes off the disk while this one is sent.
                    if let Ok(item) = outgoing.try_recv() {
                        next = Some(Ready::start(item, &mut spare));
                    }
                    frame.clear();
                    wire::encode_payload_header(index.get(), data.len() as u32, &mut frame);
                    writer.write_all(&frame).await?;
                    for chunk in data.chunks(SEND_CHUNK) {
                        if let Some(limiter) = egress {
                            limiter.acquire(chunk.len()).await;
                        }
                        writer.write_all(chunk).await?;
                    }
                    let _ = events
                        .send(ActorEvent::PieceSent {
                            conn,
                            bytes: data.len() as u64,
                        })
                        .await;
                    spare.push(data);
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::debug!(error = %e, "write failed");
            return ConnClosed::Normal;
        }
    }
    let _ = writer.shutdown().await;
    ConnClosed::Normal
}
