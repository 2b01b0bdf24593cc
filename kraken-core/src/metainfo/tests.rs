use std::io::{self, Read};

use proptest::prelude::*;

use super::*;

fn blob(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
}

/// Made-up piece hashes for `count` pieces that end, as they must, at `digest`.
fn hashes_ending_at(digest: &Digest, count: usize) -> Vec<[u8; 32]> {
    let mut hashes = vec![[0; 32]; count];
    if let Some(last) = hashes.last_mut() {
        *last = digest.as_bytes().try_into().unwrap();
    }
    hashes
}

#[test]
fn golden_encoding() {
    let data = b"0123456789".repeat(10);
    let meta = MetaInfo::from_bytes(&data, 64).unwrap();
    let encoded = meta.encode();
    let mut expected = Vec::new();
    expected.extend_from_slice(b"KRMI\x02\x01");
    expected.extend_from_slice(Digest::sha256_of(&data).as_bytes());
    expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 100]);
    expected.extend_from_slice(&[0, 0, 0, 64]);
    expected.extend_from_slice(&[0, 0, 0, 2]);
    // SHA-256's state after the first 64 bytes, computed by an independent
    // implementation of the compression function (Python, FIPS 180-4).
    let mut first = [0; 32];
    hex_decode_into(
        "f1fe7b0990beace30f0b4ecb81f036bc154ecb060d1b3fda528f9103b9275e1c",
        &mut first,
    )
    .unwrap();
    expected.extend_from_slice(&first);
    expected.extend_from_slice(Digest::sha256_of(&data).as_bytes());
    assert_eq!(encoded, expected);
    // Pins the info hash: any change to the encoding changes every torrent's name.
    assert_eq!(
        meta.info_hash().to_string(),
        Digest::sha256_of(&expected).hex()
    );
    assert_eq!(
        meta.info_hash().to_string(),
        "60d0279ec22dc068612c0fe49fa8f90c8f322b9cb00488486ded5ce1d01155cf"
    );
}

#[test]
fn decode_rejects_damage() {
    let good = MetaInfo::from_bytes(&blob(200), 64).unwrap().encode();
    let decode_err = |bytes: &[u8]| match MetaInfo::decode(bytes) {
        Err(Error::MetaInfo(e)) => e,
        other => panic!("expected a metainfo error, got {other:?}"),
    };
    assert!(matches!(
        decode_err(&good[..10]),
        MetaInfoError::Truncated { .. }
    ));
    assert!(matches!(
        decode_err(&good[..good.len() - 1]),
        MetaInfoError::Truncated { .. }
    ));
    let mut long = good.clone();
    long.push(0);
    assert_eq!(decode_err(&long), MetaInfoError::TrailingBytes(1));
    let mut bad = good.clone();
    bad[0] = b'X';
    assert_eq!(decode_err(&bad), MetaInfoError::BadMagic);
    let mut bad = good.clone();
    bad[4] = 1;
    assert_eq!(decode_err(&bad), MetaInfoError::UnsupportedVersion(1));
    let mut bad = good.clone();
    bad[5] = 9;
    assert_eq!(decode_err(&bad), MetaInfoError::UnknownAlgorithm(9));
    let mut bad = good.clone();
    bad[46..50].copy_from_slice(&0u32.to_be_bytes());
    assert_eq!(decode_err(&bad), MetaInfoError::BadPieceLength(0));
    let mut bad = good.clone();
    bad[46..50].copy_from_slice(&100u32.to_be_bytes());
    assert_eq!(decode_err(&bad), MetaInfoError::BadPieceLength(100));
    let mut bad = good.clone();
    bad[50..54].copy_from_slice(&5u32.to_be_bytes());
    assert!(matches!(
        decode_err(&bad),
        MetaInfoError::PieceCountMismatch {
            expected: 4,
            found: 5
        }
    ));
    let mut bad = good.clone();
    *bad.last_mut().unwrap() ^= 1;
    assert_eq!(decode_err(&bad), MetaInfoError::ChainDoesNotEndAtDigest);
    // A header that claims a huge blob must fail on the count, before any allocation.
    let mut huge = good[..HEADER_LEN].to_vec();
    huge[38..46].copy_from_slice(&u64::MAX.to_be_bytes());
    huge[46..50].copy_from_slice(&64u32.to_be_bytes());
    huge[50..54].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(decode_err(&huge), MetaInfoError::TooManyPieces(_)));
}

#[test]
fn from_parts_checks_consistency() {
    let d = Digest::sha256_of(b"something");
    assert!(MetaInfo::from_parts(d, 150, 64, hashes_ending_at(&d, 3)).is_ok());
    assert!(MetaInfo::from_parts(d, 150, 64, hashes_ending_at(&d, 2)).is_err());
    assert!(MetaInfo::from_parts(d, 150, 64, vec![[0; 32]; 3]).is_err());
    assert!(MetaInfo::from_parts(d, 150, 0, vec![]).is_err());
    assert!(MetaInfo::from_parts(d, 150, 50, hashes_ending_at(&d, 3)).is_err());
    assert!(MetaInfo::from_parts(d, 150, MAX_PIECE_LENGTH + 64, hashes_ending_at(&d, 1)).is_err());
    // An empty blob has no pieces, and only the SHA-256 of nothing as its digest.
    assert!(MetaInfo::from_parts(Digest::sha256_of(b""), 0, 64, vec![]).is_ok());
    assert!(MetaInfo::from_parts(d, 0, 64, vec![]).is_err());
}

#[test]
fn piece_index_is_validated() {
    let meta = MetaInfo::from_bytes(&blob(150), 64).unwrap();
    assert_eq!(meta.piece_index(2).unwrap().get(), 2);
    assert!(matches!(
        meta.piece_index(3),
        Err(Error::PieceIndexOutOfRange { index: 3, count: 3 })
    ));
    assert!(meta.piece_index(u32::MAX).is_err());
}

#[test]
fn verify_piece_checks_length_and_hash() {
    let data = blob(150);
    let meta = MetaInfo::from_bytes(&data, 64).unwrap();
    let [first, middle, last] = [0, 1, 2].map(|i| meta.piece_index(i).unwrap());
    assert!(meta.verify_piece(first, &data[..64]).is_ok());
    assert!(meta.verify_piece(middle, &data[64..128]).is_ok());
    assert!(meta.verify_piece(last, &data[128..]).is_ok());
    assert!(matches!(
        meta.verify_piece(last, &data[127..]),
        Err(Error::PieceLengthMismatch { index: 2, .. })
    ));
    let mut corrupt = data[128..].to_vec();
    corrupt[0] ^= 1;
    assert!(matches!(
        meta.verify_piece(last, &corrupt),
        Err(Error::PieceHashMismatch { index: 2 })
    ));
    // A genuine piece of the blob in the wrong place fails too.
    assert!(matches!(
        meta.verify_piece(middle, &data[..64]),
        Err(Error::PieceHashMismatch { index: 1 })
    ));
}

#[test]
fn reader_and_in_memory_generation_agree_across_buffer_boundaries() {
    // Sizes around the 1 MiB read buffer and the piece length.
    for len in [0, 1, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 3 << 20] {
        let data = blob(len);
        for piece_length in [1024, 1 << 18, 1 << 20, 3 << 19] {
            let from_reader = MetaInfo::from_reader(&data[..], piece_length).unwrap();
            let in_memory = MetaInfo::from_bytes(&data, piece_length).unwrap();
            assert_eq!(from_reader, in_memory, "len {len} piece {piece_length}");
            assert_eq!(*from_reader.digest(), Digest::sha256_of(&data));
        }
    }
}

#[test]
fn reader_errors_are_reported() {
    struct Failing(usize);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::other("disk on fire"));
            }
            let n = buf.len().min(self.0);
            self.0 -= n;
            Ok(n)
        }
    }
    let err = MetaInfo::from_reader(Failing(5 << 20), 1 << 20).unwrap_err();
    assert!(matches!(err, Error::Read(_)), "{err:?}");
}

#[test]
fn an_empty_range_covers_no_piece() {
    // The case proptest once found against an oracle that forgot empty ranges.
    // Its 676-byte blob of 6-byte pieces, scaled to whole blocks.
    let d = Digest::sha256_of(b"");
    let meta = MetaInfo::from_parts(d, 676 * 64, 6 * 64, hashes_ending_at(&d, 113)).unwrap();
    assert_eq!(meta.pieces_covering(675 * 64..675 * 64), 0..0);
    assert_eq!(meta.pieces_covering(675 * 64..676 * 64), 112..113);
}

proptest! {
    #[test]
    fn piece_math_at_the_boundaries(blocks in 1u64..80, which in 0usize..5) {
        let piece_length = blocks * 64;
        let len = [0, 1, piece_length - 1, piece_length, piece_length + 1][which];
        let data = blob(len as usize);
        let meta = MetaInfo::from_bytes(&data, piece_length).unwrap();
        prop_assert_eq!(meta.length(), len);
        prop_assert_eq!(u64::from(meta.piece_count()), len.div_ceil(piece_length));
        let mut covered = 0;
        for index in meta.pieces() {
            let range = meta.piece_range(index);
            prop_assert_eq!(range.start, covered);
            prop_assert!(meta.piece_len(index) > 0 && meta.piece_len(index) <= piece_length);
            let bytes = &data[range.start as usize..range.end as usize];
            prop_assert!(meta.verify_piece(index, bytes).is_ok());
            covered = range.end;
        }
        prop_assert_eq!(covered, len);
        prop_assert!(meta.piece_index(meta.piece_count()).is_err());
        prop_assert_eq!(meta.pieces_covering(0..len), 0..meta.piece_count());
    }

    #[test]
    fn encode_decode_round_trip(len in 0usize..3000, blocks in 1u64..12) {
        let piece_length = blocks * 64;
        let meta = MetaInfo::from_bytes(&blob(len), piece_length).unwrap();
        let encoded = meta.encode();
        let decoded = MetaInfo::decode(&encoded).unwrap();
        prop_assert_eq!(decoded.info_hash(), meta.info_hash());
        prop_assert_eq!(&decoded, &meta);
        prop_assert_eq!(decoded.encode(), encoded);
    }

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(meta) = MetaInfo::decode(&bytes) {
            prop_assert_eq!(meta.encode(), bytes);
        }
    }

    #[test]
    fn pieces_covering_matches_piece_ranges(len in 1u64..10_000, blocks in 1u64..8, a in 0u64..10_000, b in 0u64..10_000) {
        let piece_length = blocks * 64;
        let d = Digest::sha256_of(b"");
        let hashes = hashes_ending_at(&d, len.div_ceil(piece_length) as usize);
        let meta = MetaInfo::from_parts(d, len, piece_length, hashes).unwrap();
        let range = a.min(b)..a.max(b);
        let covering = meta.pieces_covering(range.clone());
        for index in meta.pieces() {
            let r = meta.piece_range(index);
            // An empty range holds no byte, so it overlaps no piece.
            let overlaps = !range.is_empty() && r.start < range.end.min(len) && range.start < r.end;
            prop_assert_eq!(covering.contains(&index.get()), overlaps);
        }
    }
}
