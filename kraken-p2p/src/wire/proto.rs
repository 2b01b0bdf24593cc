//! The protobuf messages of the peer protocol, as prost `Message` implementations.
//!
//! They are written out by hand rather than derived: `prost-derive` (0.14) is built on `syn`
//! 2, while every other proc macro kraken-p2p uses is on `syn` 3, so prost's `derive` feature
//! would add a second major version of `syn` (with `itertools` and `anyhow`) to every build of
//! this crate, the sans-IO `--no-default-features` one included. These few small messages
//! are easy to state directly.
//! The schema they implement is in `docs/protocol.md`; the golden tests in `wire::tests` pin
//! the bytes.

use ::bytes::{Buf, BufMut};
use prost::encoding::{DecodeContext, WireType, bool, bytes, message, skip_field, string, uint32};
use prost::{DecodeError, Message};

/// `Envelope`: exactly one of its fields is set.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Envelope {
    pub(super) handshake: Option<Handshake>,
    pub(super) piece_request: Option<Index>,
    pub(super) piece_payload: Option<PiecePayload>,
    pub(super) announce_piece: Option<Index>,
    pub(super) cancel_piece: Option<Index>,
    pub(super) error: Option<Error>,
    pub(super) complete: Option<Empty>,
}

/// `Handshake`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Handshake {
    pub(super) protocol_version: u32,
    pub(super) peer_id: Vec<u8>,
    pub(super) info_hash: Vec<u8>,
    pub(super) digest: String,
    pub(super) namespace: String,
    pub(super) bitfield: Vec<u8>,
    pub(super) neighbours: Vec<Vec<u8>>,
    pub(super) origin: bool,
}

/// `PieceRequest`, `AnnouncePiece`, `CancelPiece`: a piece index.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Index {
    pub(super) index: u32,
}

/// `PiecePayload`: the header before `length` raw bytes.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct PiecePayload {
    pub(super) index: u32,
    pub(super) length: u32,
}

/// `Error`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Error {
    pub(super) code: u32,
    pub(super) index: u32,
    pub(super) message: String,
}

/// `Complete` has no fields.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Empty;

/// Writes `Message` for a struct from a list of `(tag, field, codec)`; optional sub-messages
/// use the `message` codec and are written only when present, scalars only when not default
/// (proto3 rules).
macro_rules! impl_message {
    ($type:ty { $($tag:literal => $field:ident : $kind:ident),* $(,)? }) => {
        impl Message for $type {
            fn encode_raw(&self, buf: &mut impl BufMut) {
                $( impl_message!(@encode $kind, $tag, &self.$field, buf); )*
            }

            fn merge_field(
                &mut self,
                tag: u32,
                wire_type: WireType,
                buf: &mut impl Buf,
                ctx: DecodeContext,
            ) -> Result<(), DecodeError> {
                match tag {
                    $( $tag => impl_message!(@merge $kind, wire_type, &mut self.$field, buf, ctx), )*
                    _ => skip_field(wire_type, tag, buf, ctx),
                }
            }

            fn encoded_len(&self) -> usize {
                0 $( + impl_message!(@len $kind, $tag, &self.$field) )*
            }

            fn clear(&mut self) {
                *self = Self::default();
            }
        }
    };

    (@encode message, $tag:literal, $v:expr, $buf:ident) => {
        if let Some(m) = $v { message::encode($tag, m, $buf) }
    };
    (@merge message, $wt:ident, $v:expr, $buf:ident, $ctx:ident) => {
        message::merge($wt, $v.get_or_insert_with(Default::default), $buf, $ctx)
    };
    (@len message, $tag:literal, $v:expr) => {
        $v.as_ref().map_or(0, |m| message::encoded_len($tag, m))
    };

    (@encode repeated_bytes, $tag:literal, $v:expr, $buf:ident) => {
        bytes::encode_repeated($tag, $v, $buf)
    };
    (@merge repeated_bytes, $wt:ident, $v:expr, $buf:ident, $ctx:ident) => {
        bytes::merge_repeated($wt, $v, $buf, $ctx)
    };
    (@len repeated_bytes, $tag:literal, $v:expr) => {
        bytes::encoded_len_repeated($tag, $v)
    };

    (@encode $kind:ident, $tag:literal, $v:expr, $buf:ident) => {
        if !is_default($v) { $kind::encode($tag, $v, $buf) }
    };
    (@merge $kind:ident, $wt:ident, $v:expr, $buf:ident, $ctx:ident) => {
        $kind::merge($wt, $v, $buf, $ctx)
    };
    (@len $kind:ident, $tag:literal, $v:expr) => {
        if is_default($v) { 0 } else { $kind::encoded_len($tag, $v) }
    };
}

impl_message!(Envelope {
    1 => handshake: message,
    2 => piece_request: message,
    3 => piece_payload: message,
    4 => announce_piece: message,
    5 => cancel_piece: message,
    6 => error: message,
    7 => complete: message,
});

impl_message!(Handshake {
    1 => protocol_version: uint32,
    2 => peer_id: bytes,
    3 => info_hash: bytes,
    4 => digest: string,
    5 => namespace: string,
    6 => bitfield: bytes,
    7 => neighbours: repeated_bytes,
    8 => origin: bool,
});

impl_message!(Index { 1 => index: uint32 });

impl_message!(PiecePayload {
    1 => index: uint32,
    2 => length: uint32,
});

impl_message!(Error {
    1 => code: uint32,
    2 => index: uint32,
    3 => message: string,
});

/// proto3 omits fields that hold their default value.
fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

impl Message for Empty {
    fn encode_raw(&self, _buf: &mut impl BufMut) {}

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        0
    }

    fn clear(&mut self) {}
}
