//! [`FrameDecoder`] as a `tokio_util` codec, for `FramedRead`/`FramedWrite`.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use super::{FrameDecoder, Message, WireError, encode};

/// The peer protocol as a `tokio_util::codec` codec.
#[derive(Debug, Default)]
pub struct PeerCodec {
    decoder: FrameDecoder,
}

impl PeerCodec {
    /// A codec that accepts no piece payloads until [`set_max_payload`](Self::set_max_payload).
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts piece payloads up to `max` bytes from now on.
    pub fn set_max_payload(&mut self, max: u32) {
        self.decoder.set_max_payload(max);
    }
}

impl Decoder for PeerCodec {
    type Item = Message;
    type Error = WireError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, WireError> {
        self.decoder.decode(src)
    }
}

impl Encoder<Message> for PeerCodec {
    type Error = WireError;

    fn encode(&mut self, item: Message, dst: &mut BytesMut) -> Result<(), WireError> {
        encode(&item, dst);
        Ok(())
    }
}
