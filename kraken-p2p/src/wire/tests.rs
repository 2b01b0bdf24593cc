use proptest::prelude::*;

use super::*;

fn frame(message: &Message) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode(message, &mut buf);
    buf.to_vec()
}

fn decode_all(bytes: &[u8], max_payload: u32) -> Result<Vec<Message>, WireError> {
    let mut decoder = FrameDecoder::new();
    decoder.set_max_payload(max_payload);
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(m) = decoder.decode(&mut buf)? {
        out.push(m);
    }
    assert!(buf.is_empty(), "bytes left over");
    Ok(out)
}

fn sample_handshake() -> Handshake {
    Handshake {
        protocol_version: PROTOCOL_VERSION,
        peer_id: PeerId::from_bytes([0x11; 20]),
        info_hash: InfoHash::from_bytes([0x22; 32]),
        digest: Digest::from_sha256_bytes([0x33; 32]),
        namespace: "ns".into(),
        bitfield: Bytes::from_static(&[0b1010_0000]),
        neighbours: vec![PeerId::from_bytes([0x44; 20])],
        origin: true,
    }
}

#[test]
fn golden_small_messages() {
    let cases: &[(Message, &[u8])] = &[
        (
            Message::PieceRequest { index: 7 },
            b"\x00\x00\x00\x04\x12\x02\x08\x07",
        ),
        (
            Message::PieceRequest { index: 0 },
            b"\x00\x00\x00\x02\x12\x00",
        ),
        (
            Message::AnnouncePiece { index: 300 },
            b"\x00\x00\x00\x05\x22\x03\x08\xac\x02",
        ),
        (
            Message::CancelPiece { index: 1 },
            b"\x00\x00\x00\x04\x2a\x02\x08\x01",
        ),
        (Message::Complete, b"\x00\x00\x00\x02\x3a\x00"),
        (
            Message::Error {
                code: ErrorCode::PieceUnavailable,
                index: Some(2),
                message: "no".into(),
            },
            b"\x00\x00\x00\x0a\x32\x08\x08\x01\x10\x03\x1a\x02no",
        ),
        (
            Message::PiecePayload {
                index: 1,
                data: Bytes::from_static(b"abc"),
            },
            b"\x00\x00\x00\x06\x1a\x04\x08\x01\x10\x03abc",
        ),
    ];
    for (message, bytes) in cases {
        assert_eq!(frame(message), *bytes, "{message:?}");
        assert_eq!(decode_all(bytes, 16).unwrap(), vec![message.clone()]);
    }
}

#[test]
fn golden_handshake() {
    // Envelope field 1 (handshake), 162 bytes: 3 + 162 = 165 in the frame.
    let mut expected = b"\x00\x00\x00\xa5\x0a\xa2\x01".to_vec();
    expected.extend_from_slice(b"\x08\x01"); // protocol_version 1
    expected.extend_from_slice(b"\x12\x14");
    expected.extend_from_slice(&[0x11; 20]); // peer id
    expected.extend_from_slice(b"\x1a\x20");
    expected.extend_from_slice(&[0x22; 32]); // info hash
    expected.extend_from_slice(b"\x22\x47sha256:");
    expected.extend_from_slice("33".repeat(32).as_bytes()); // digest
    expected.extend_from_slice(b"\x2a\x02ns"); // namespace
    expected.extend_from_slice(b"\x32\x01\xa0"); // bitfield
    expected.extend_from_slice(b"\x3a\x14");
    expected.extend_from_slice(&[0x44; 20]); // neighbour
    expected.extend_from_slice(b"\x40\x01"); // origin
    let message = Message::Handshake(sample_handshake());
    assert_eq!(frame(&message), expected);
    assert_eq!(decode_all(&expected, 0).unwrap(), vec![message]);
}

#[test]
fn rejects_oversized_frames_before_allocating() {
    let mut bytes = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes().to_vec();
    bytes.push(0);
    assert!(matches!(
        decode_all(&bytes, 0),
        Err(WireError::FrameTooLarge(_))
    ));
    let payload = frame(&Message::PiecePayload {
        index: 0,
        data: Bytes::from_static(&[0; 17]),
    });
    assert!(matches!(
        decode_all(&payload, 16),
        Err(WireError::PayloadTooLarge {
            length: 17,
            max: 16
        })
    ));
    // Before the handshake no payload is acceptable at all.
    assert!(matches!(
        decode_all(
            &frame(&Message::PiecePayload {
                index: 0,
                data: Bytes::from_static(b"x")
            }),
            0
        ),
        Err(WireError::PayloadTooLarge { .. })
    ));
}

#[test]
fn rejects_bad_envelopes_and_fields() {
    // No body.
    assert!(matches!(
        decode_all(b"\x00\x00\x00\x00", 0),
        Err(WireError::BodyCount(0))
    ));
    // Two bodies.
    assert!(matches!(
        decode_all(b"\x00\x00\x00\x04\x12\x00\x3a\x00", 0),
        Err(WireError::BodyCount(2))
    ));
    // Garbage protobuf.
    assert!(matches!(
        decode_all(b"\x00\x00\x00\x02\xff\xff", 0),
        Err(WireError::Protobuf(_))
    ));
    // A handshake with a short peer id.
    let mut h = sample_handshake();
    h.neighbours.clear();
    let mut bytes = frame(&Message::Handshake(h));
    let pos = bytes.windows(2).position(|w| w == b"\x12\x14").unwrap();
    bytes[pos + 1] = 0x13;
    bytes.remove(pos + 2);
    let len = (bytes.len() - 4) as u32;
    bytes[..4].copy_from_slice(&len.to_be_bytes());
    bytes[5] -= 1;
    assert!(matches!(
        decode_all(&bytes, 0),
        Err(WireError::InvalidField("peer id"))
    ));
}

#[test]
fn unknown_fields_are_skipped_for_forward_compatibility() {
    // PieceRequest { index: 7 } with an extra field 9 (varint 1) inside.
    let bytes = b"\x00\x00\x00\x06\x12\x04\x08\x07\x48\x01";
    assert_eq!(
        decode_all(bytes, 0).unwrap(),
        vec![Message::PieceRequest { index: 7 }]
    );
}

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        any::<u32>().prop_map(|index| Message::PieceRequest { index }),
        any::<u32>().prop_map(|index| Message::AnnouncePiece { index }),
        any::<u32>().prop_map(|index| Message::CancelPiece { index }),
        Just(Message::Complete),
        (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..64)).prop_map(|(index, data)| {
            Message::PiecePayload {
                index,
                data: Bytes::from(data),
            }
        }),
        (1u32..10, proptest::option::of(0u32..u32::MAX), ".{0,20}").prop_map(
            |(code, index, message)| {
                Message::Error {
                    code: ErrorCode::from_wire(code),
                    index,
                    message,
                }
            }
        ),
        (
            any::<u32>(),
            any::<[u8; 20]>(),
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
            "[a-z/]{0,30}",
            proptest::collection::vec(any::<u8>(), 0..40),
            proptest::collection::vec(any::<[u8; 20]>(), 0..5),
            any::<bool>(),
        )
            .prop_map(|(v, p, i, d, namespace, bitfield, neighbours, origin)| {
                Message::Handshake(Handshake {
                    protocol_version: v,
                    peer_id: PeerId::from_bytes(p),
                    info_hash: InfoHash::from_bytes(i),
                    digest: Digest::from_sha256_bytes(d),
                    namespace,
                    bitfield: Bytes::from(bitfield),
                    neighbours: neighbours.into_iter().map(PeerId::from_bytes).collect(),
                    origin,
                })
            }),
    ]
}

proptest! {
    #[test]
    fn round_trips_in_any_chunking(messages in proptest::collection::vec(arb_message(), 1..8), chunk in 1usize..50) {
        let mut stream = Vec::new();
        for m in &messages {
            stream.extend_from_slice(&frame(m));
        }
        let mut decoder = FrameDecoder::new();
        decoder.set_max_payload(64);
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for piece in stream.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Some(m) = decoder.decode(&mut buf).unwrap() {
                decoded.push(m);
            }
        }
        prop_assert_eq!(decoded, messages);
    }

    #[test]
    fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_all_lenient(&bytes);
    }
}

fn decode_all_lenient(bytes: &[u8]) -> Result<Vec<Message>, WireError> {
    let mut decoder = FrameDecoder::new();
    decoder.set_max_payload(1 << 20);
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(m) = decoder.decode(&mut buf)? {
        out.push(m);
    }
    Ok(out)
}

#[cfg(feature = "runtime-tokio")]
#[tokio::test]
async fn the_tokio_codec_frames_a_stream() {
    use futures::{SinkExt, StreamExt};
    use tokio_util::codec::{FramedRead, FramedWrite};

    let (client, server) = tokio::io::duplex(64);
    let mut codec = PeerCodec::new();
    codec.set_max_payload(16);
    let mut reader = FramedRead::new(server, codec);
    let sent = vec![
        Message::Handshake(sample_handshake()),
        Message::PiecePayload {
            index: 3,
            data: Bytes::from_static(b"0123456789abcdef"),
        },
        Message::Complete,
    ];
    // The duplex pipe holds 64 bytes: write from another task while this one reads.
    let to_send = sent.clone();
    let writing = tokio::spawn(async move {
        let mut writer = FramedWrite::new(client, PeerCodec::new());
        for m in to_send {
            writer.send(m).await.unwrap();
        }
    });
    let mut received = Vec::new();
    while let Some(m) = reader.next().await {
        received.push(m.unwrap());
    }
    writing.await.unwrap();
    assert_eq!(received, sent);
}
