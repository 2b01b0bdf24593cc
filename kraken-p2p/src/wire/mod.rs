//! The peer wire protocol: messages and their framing.
//!
//! One TCP (or TLS) connection carries one torrent between two peers. Every message is a
//! frame: a 4-byte big-endian length, then that many bytes of a protobuf `Envelope` with
//! exactly one body set. A piece payload's header is followed directly by the piece's raw
//! bytes, so pieces are never copied into or out of protobuf. The full byte-level
//! specification is `docs/protocol.md`.
//!
//! **Goals:** a peer can check every length before allocating for it; a peer that breaks the
//! protocol is identified with a typed reason; the format can grow (protobuf fields, a
//! protocol version in the handshake). **Non-goals:** multiplexing torrents on one
//! connection; encryption and authentication (the transport's job).
//!
//! This module is pure: [`FrameDecoder`] and [`encode`] work on byte buffers and do no I/O.
//!
//! ```
//! use bytes::BytesMut;
//! use kraken_p2p::wire::{self, FrameDecoder, Message};
//!
//! let mut buf = BytesMut::new();
//! wire::encode(&Message::PieceRequest { index: 7 }, &mut buf);
//! assert_eq!(&buf[..], b"\x00\x00\x00\x04\x12\x02\x08\x07");
//! let mut decoder = FrameDecoder::new();
//! assert_eq!(decoder.decode(&mut buf).unwrap(), Some(Message::PieceRequest { index: 7 }));
//! ```

#[cfg(feature = "runtime-tokio")]
mod codec;
mod proto;

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kraken_core::{Digest, InfoHash, PeerId};
use prost::Message as _;

#[cfg(feature = "runtime-tokio")]
pub use self::codec::PeerCodec;

/// The protocol version this build speaks. A handshake with another version is refused with
/// [`ErrorCode::UnsupportedVersion`].
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest protobuf frame accepted: 256 KiB. It bounds every message but piece payloads;
/// the largest legitimate frame is a handshake carrying the bitfield of a blob with the
/// maximum piece count (128 KiB).
pub const MAX_FRAME_LEN: usize = 256 << 10;

/// The most neighbours a handshake may list.
pub const MAX_NEIGHBOURS: usize = 64;

/// The longest namespace a handshake may carry, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 256;

/// A message between two peers.
#[non_exhaustive]
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Message {
    /// The first message each side sends.
    Handshake(Handshake),
    /// "Send me piece `index`."
    PieceRequest {
        /// The piece.
        index: u32,
    },
    /// A piece's bytes.
    PiecePayload {
        /// The piece.
        index: u32,
        /// Its bytes; the receiver checks length and hash against the metainfo.
        data: Bytes,
    },
    /// "I now have piece `index`."
    AnnouncePiece {
        /// The piece.
        index: u32,
    },
    /// "I no longer need piece `index`" (endgame duplicates).
    CancelPiece {
        /// The piece.
        index: u32,
    },
    /// A request failed, or the connection is being refused.
    Error {
        /// What went wrong.
        code: ErrorCode,
        /// The piece concerned, if any.
        index: Option<u32>,
        /// Human-readable detail.
        message: String,
    },
    /// "I now have every piece."
    Complete,
}

/// The handshake: who is speaking, about which torrent, and what it has.
#[non_exhaustive]
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Handshake {
    /// The sender's protocol version.
    pub protocol_version: u32,
    /// The sender's peer id.
    pub peer_id: PeerId,
    /// The torrent.
    pub info_hash: InfoHash,
    /// The blob the torrent carries, so the receiver can find it in its store.
    pub digest: Digest,
    /// The namespace the blob belongs to (may be empty).
    pub namespace: String,
    /// The sender's bitfield, in `kraken_core::Bitfield`'s encoding; the receiver checks its
    /// length against the metainfo.
    pub bitfield: Bytes,
    /// Peers the sender is already connected to for this torrent, so the receiver can refuse
    /// links that would cluster the graph.
    pub neighbours: Vec<PeerId>,
    /// Whether the sender is an origin.
    pub origin: bool,
}

impl Handshake {
    /// A handshake of the current protocol version from a non-origin `peer_id` with no
    /// neighbours, holding the pieces in `bitfield` (the wire form of a
    /// [`Bitfield`](kraken_core::Bitfield)).
    pub fn new(
        peer_id: PeerId,
        info_hash: InfoHash,
        digest: Digest,
        namespace: String,
        bitfield: Bytes,
    ) -> Self {
        Self {
            protocol_version: PROTOCOL_VERSION,
            peer_id,
            info_hash,
            digest,
            namespace,
            bitfield,
            neighbours: Vec::new(),
            origin: false,
        }
    }
}

/// Why a request or a connection was refused.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum ErrorCode {
    /// The requested piece is not available from this peer.
    PieceUnavailable,
    /// The peer does not serve this torrent.
    UnknownTorrent,
    /// The peer is at its connection limit for this torrent.
    TooManyConnections,
    /// The peer broke the protocol.
    ProtocolViolation,
    /// The handshake's protocol version is not supported.
    UnsupportedVersion,
    /// The peer is shutting down.
    ShuttingDown,
    /// The peer refuses because the link would cluster the graph.
    TooManyMutualConnections,
    /// A code this build does not know.
    Other(u32),
}

impl ErrorCode {
    fn to_wire(self) -> u32 {
        match self {
            Self::PieceUnavailable => 1,
            Self::UnknownTorrent => 2,
            Self::TooManyConnections => 3,
            Self::ProtocolViolation => 4,
            Self::UnsupportedVersion => 5,
            Self::ShuttingDown => 6,
            Self::TooManyMutualConnections => 7,
            Self::Other(code) => code,
        }
    }

    fn from_wire(code: u32) -> Self {
        match code {
            1 => Self::PieceUnavailable,
            2 => Self::UnknownTorrent,
            3 => Self::TooManyConnections,
            4 => Self::ProtocolViolation,
            5 => Self::UnsupportedVersion,
            6 => Self::ShuttingDown,
            7 => Self::TooManyMutualConnections,
            other => Self::Other(other),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PieceUnavailable => f.write_str("piece unavailable"),
            Self::UnknownTorrent => f.write_str("unknown torrent"),
            Self::TooManyConnections => f.write_str("too many connections"),
            Self::ProtocolViolation => f.write_str("protocol violation"),
            Self::UnsupportedVersion => f.write_str("unsupported protocol version"),
            Self::ShuttingDown => f.write_str("shutting down"),
            Self::TooManyMutualConnections => f.write_str("too many mutual connections"),
            Self::Other(code) => write!(f, "error code {code}"),
        }
    }
}

/// Why bytes from a peer are not a valid frame. The connection must be closed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// A frame longer than [`MAX_FRAME_LEN`].
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME_LEN}")]
    FrameTooLarge(usize),
    /// A piece payload longer than the connection's piece length (or any payload before the
    /// handshake set one).
    #[error("piece payload of {length} bytes exceeds the limit of {max}")]
    PayloadTooLarge {
        /// The announced length.
        length: u32,
        /// The limit.
        max: u32,
    },
    /// The frame is not a valid protobuf envelope.
    #[error("malformed frame")]
    Protobuf(#[from] prost::DecodeError),
    /// The envelope has no body, or more than one.
    #[error("frame must carry exactly one message, found {0}")]
    BodyCount(usize),
    /// A field has an invalid value.
    #[error("invalid {0}")]
    InvalidField(&'static str),
    /// The transport failed.
    #[error("connection I/O failed")]
    Io(#[from] std::io::Error),
}

/// Appends `message` as one frame (and, for a payload, its bytes) to `dst`.
pub fn encode(message: &Message, dst: &mut BytesMut) {
    encode_header(message, dst);
    if let Message::PiecePayload { data, .. } = message {
        dst.extend_from_slice(data);
    }
}

/// Appends `message`'s frame to `dst` without a payload's raw bytes, so a sender can write
/// those straight from its own buffer.
pub fn encode_header(message: &Message, dst: &mut BytesMut) {
    put_frame(&to_envelope(message), dst);
}

/// Appends the frame that announces a piece payload of `length` bytes; the payload's bytes
/// must follow it on the stream.
pub fn encode_payload_header(index: u32, length: u32, dst: &mut BytesMut) {
    let envelope = proto::Envelope {
        piece_payload: Some(proto::PiecePayload { index, length }),
        ..proto::Envelope::default()
    };
    put_frame(&envelope, dst);
}

fn put_frame(envelope: &proto::Envelope, dst: &mut BytesMut) {
    let len = envelope.encoded_len();
    dst.reserve(4 + len);
    dst.put_u32(len as u32);
    envelope.encode_raw(dst);
}

/// Decodes frames from a byte stream, one message at a time.
///
/// A short buffer is not an error: [`decode`](Self::decode) returns `Ok(None)` and waits for
/// more bytes. Every length is checked before any allocation: frames against
/// [`MAX_FRAME_LEN`], payloads against the limit set by [`set_max_payload`](Self::set_max_payload)
/// (zero until the handshake tells the connection its piece length).
#[derive(Debug, Default)]
pub struct FrameDecoder {
    max_payload: u32,
    pending_payload: Option<(u32, usize)>,
}

impl FrameDecoder {
    /// A decoder that accepts no piece payloads yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts piece payloads up to `max` bytes from now on.
    pub fn set_max_payload(&mut self, max: u32) {
        self.max_payload = max;
    }

    /// Takes one message off the front of `buf`, if a whole one is there.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, WireError> {
        if let Some((index, length)) = self.pending_payload {
            if buf.len() < length {
                buf.reserve(length - buf.len());
                return Ok(None);
            }
            self.pending_payload = None;
            let data = buf.split_to(length).freeze();
            return Ok(Some(Message::PiecePayload { index, data }));
        }
        let Some(header) = buf.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*header) as usize;
        if len > MAX_FRAME_LEN {
            return Err(WireError::FrameTooLarge(len));
        }
        if buf.len() < 4 + len {
            buf.reserve(4 + len - buf.len());
            return Ok(None);
        }
        buf.advance(4);
        let frame = buf.split_to(len);
        let envelope = proto::Envelope::decode(frame.freeze())?;
        if let Some(payload) = &envelope.piece_payload {
            if payload.length > self.max_payload {
                return Err(WireError::PayloadTooLarge {
                    length: payload.length,
                    max: self.max_payload,
                });
            }
            check_one_body(&envelope)?;
            self.pending_payload = Some((payload.index, payload.length as usize));
            return self.decode(buf);
        }
        from_envelope(envelope).map(Some)
    }
}

fn check_one_body(e: &proto::Envelope) -> Result<(), WireError> {
    let count = [
        e.handshake.is_some(),
        e.piece_request.is_some(),
        e.piece_payload.is_some(),
        e.announce_piece.is_some(),
        e.cancel_piece.is_some(),
        e.error.is_some(),
        e.complete.is_some(),
    ]
    .into_iter()
    .filter(|&present| present)
    .count();
    if count == 1 {
        Ok(())
    } else {
        Err(WireError::BodyCount(count))
    }
}

fn from_envelope(e: proto::Envelope) -> Result<Message, WireError> {
    check_one_body(&e)?;
    let index = |i: Option<proto::Index>| i.map(|i| i.index);
    if let Some(h) = e.handshake {
        return handshake_from_proto(h).map(Message::Handshake);
    }
    if let Some(index) = index(e.piece_request) {
        return Ok(Message::PieceRequest { index });
    }
    if let Some(index) = index(e.announce_piece) {
        return Ok(Message::AnnouncePiece { index });
    }
    if let Some(index) = index(e.cancel_piece) {
        return Ok(Message::CancelPiece { index });
    }
    if let Some(error) = e.error {
        let index = (error.index != 0).then(|| error.index - 1);
        return Ok(Message::Error {
            code: ErrorCode::from_wire(error.code),
            index,
            message: error.message,
        });
    }
    if e.complete.is_some() {
        return Ok(Message::Complete);
    }
    // Payloads are handled by the decoder before this point.
    Err(WireError::BodyCount(0))
}

fn handshake_from_proto(h: proto::Handshake) -> Result<Handshake, WireError> {
    let peer_id = PeerId::from_bytes(
        h.peer_id
            .try_into()
            .map_err(|_| WireError::InvalidField("peer id"))?,
    );
    let info_hash = InfoHash::from_bytes(
        h.info_hash
            .try_into()
            .map_err(|_| WireError::InvalidField("info hash"))?,
    );
    let digest = h
        .digest
        .parse()
        .map_err(|_| WireError::InvalidField("digest"))?;
    if h.namespace.len() > MAX_NAMESPACE_LEN {
        return Err(WireError::InvalidField("namespace"));
    }
    if h.neighbours.len() > MAX_NEIGHBOURS {
        return Err(WireError::InvalidField("neighbour count"));
    }
    let neighbours = h
        .neighbours
        .into_iter()
        .map(|n| n.try_into().map(PeerId::from_bytes))
        .collect::<Result<_, _>>()
        .map_err(|_| WireError::InvalidField("neighbour peer id"))?;
    Ok(Handshake {
        protocol_version: h.protocol_version,
        peer_id,
        info_hash,
        digest,
        namespace: h.namespace,
        bitfield: Bytes::from(h.bitfield),
        neighbours,
        origin: h.origin,
    })
}

fn to_envelope(message: &Message) -> proto::Envelope {
    let index = |index: u32| Some(proto::Index { index });
    let mut e = proto::Envelope::default();
    match message {
        Message::Handshake(h) => {
            e.handshake = Some(proto::Handshake {
                protocol_version: h.protocol_version,
                peer_id: h.peer_id.as_bytes().to_vec(),
                info_hash: h.info_hash.as_bytes().to_vec(),
                digest: h.digest.to_string(),
                namespace: h.namespace.clone(),
                bitfield: h.bitfield.to_vec(),
                neighbours: h.neighbours.iter().map(|n| n.as_bytes().to_vec()).collect(),
                origin: h.origin,
            });
        }
        Message::PieceRequest { index: i } => e.piece_request = index(*i),
        Message::PiecePayload { index, data } => {
            e.piece_payload = Some(proto::PiecePayload {
                index: *index,
                length: data.len() as u32,
            });
        }
        Message::AnnouncePiece { index: i } => e.announce_piece = index(*i),
        Message::CancelPiece { index: i } => e.cancel_piece = index(*i),
        Message::Error {
            code,
            index,
            message,
        } => {
            e.error = Some(proto::Error {
                code: code.to_wire(),
                // 0 means "no piece"; piece i is sent as i + 1.
                index: index.map_or(0, |i| i.saturating_add(1)),
                message: message.clone(),
            });
        }
        Message::Complete => e.complete = Some(proto::Empty),
    }
    e
}

#[cfg(test)]
mod tests;
