//! Metainfo: how a blob is cut into pieces, and the hash of each piece.
//!
//! A blob of `length` bytes is cut into `ceil(length / piece_length)` pieces; every piece but
//! the last is `piece_length` bytes long, a multiple of 64 bytes (SHA-256's block), and a
//! zero-length blob has no pieces. Each piece has a hash (Go Kraken uses CRC32, which detects
//! accidents but not forgery), so a host can check every piece it receives before it writes
//! or re-serves it.
//!
//! A piece's hash is not the SHA-256 of the piece alone but the state SHA-256 reaches over
//! the blob at the end of that piece (its *chaining value*; for the last piece, after the
//! padding, the blob's digest itself). A piece is checked by running SHA-256's compression
//! from the previous piece's value over its bytes and comparing with its own; because the
//! chain starts at SHA-256's initial state and ends at the digest, a host that has checked
//! every piece has computed the blob's SHA-256 without a second pass over it (see
//! `sha256_chain.rs`). The checks stay independent: any piece, in any order, on any thread.
//!
//! # Canonical encoding (version 2)
//!
//! The metainfo travels and is stored in exactly one binary form; its SHA-256 is the
//! [`InfoHash`] that names the torrent. All integers are big-endian.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `KRMI` (`4b 52 4d 49`) |
//! | 4 | 1 | encoding version, `2` |
//! | 5 | 1 | blob digest algorithm: `1` = sha256 |
//! | 6 | 32 | blob digest |
//! | 38 | 8 | blob length in bytes |
//! | 46 | 4 | piece length in bytes: a multiple of 64 in `64..=`[`MAX_PIECE_LENGTH`] |
//! | 50 | 4 | piece count; must equal `ceil(length / piece length)`, at most [`MAX_PIECE_COUNT`] |
//! | 54 | 32 × count | each piece's hash, in order: SHA-256's chaining value after the piece (its eight 32-bit words, big-endian); the last one equals the blob digest |
//!
//! Nothing may follow the last piece hash. Because every field is fixed-size or determined by
//! the ones before it, each metainfo has one encoding, and a decoder checks the total length
//! against the header before it allocates anything. (Version 1 hashed each piece from
//! SHA-256's initial state; this build reads only version 2, and the blob store regenerates a
//! cached blob's version-1 metainfo from the blob.)

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::ops::Range;
use std::path::Path;
use std::str::FromStr;

use crate::digest::{Algorithm, Digest, hex_decode_into, hex_encode, sha256};
use crate::error::{Error, Result};
use crate::piece_length::PieceLengthPolicy;
use crate::sha256_chain::{BLOCK_LEN, ChainingValue, PieceChain};

/// The largest piece length a metainfo may declare: 64 MiB. It bounds the memory a piece
/// buffer may need anywhere in the system.
pub const MAX_PIECE_LENGTH: u64 = 64 << 20;

/// The most pieces a metainfo may have: 2^20. With 4 MiB pieces that is a 4 TiB blob; the
/// encoding is then 32 MiB.
pub const MAX_PIECE_COUNT: u32 = 1 << 20;

/// Length of the fixed header of the canonical encoding, before the piece hashes.
pub const HEADER_LEN: usize = 54;

const MAGIC: &[u8; 4] = b"KRMI";
const VERSION: u8 = 2;
const ALGORITHM_SHA256: u8 = 1;
const PIECE_HASH_LEN: usize = 32;

/// Why bytes are not a valid metainfo encoding.
#[non_exhaustive]
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
pub enum MetaInfoError {
    /// Fewer bytes than the header, or than the piece count in the header requires.
    #[error("metainfo truncated: {needed} bytes needed, {found} present")]
    Truncated {
        /// Bytes the encoding needs.
        needed: usize,
        /// Bytes given.
        found: usize,
    },
    /// Bytes after the last piece hash.
    #[error("metainfo has {0} trailing bytes")]
    TrailingBytes(usize),
    /// The magic number is wrong: this is not a metainfo.
    #[error("not a metainfo (bad magic)")]
    BadMagic,
    /// An encoding version this build does not read.
    #[error("unsupported metainfo version {0}")]
    UnsupportedVersion(u8),
    /// A digest algorithm code this build does not know.
    #[error("unknown digest algorithm code {0}")]
    UnknownAlgorithm(u8),
    /// A piece length that is not a multiple of 64 in `64..=`[`MAX_PIECE_LENGTH`].
    #[error("piece length {0} is not a multiple of 64 bytes in 64..={MAX_PIECE_LENGTH}")]
    BadPieceLength(u64),
    /// The last piece hash differs from the blob digest (or, for an empty blob, the digest
    /// is not the SHA-256 of nothing): no bytes could pass every piece check.
    #[error("the piece hashes do not end at the blob digest")]
    ChainDoesNotEndAtDigest,
    /// The piece count disagrees with the length and piece length.
    #[error("piece count {found} does not match length / piece length ({expected})")]
    PieceCountMismatch {
        /// Count implied by length and piece length.
        expected: u64,
        /// Count in the header.
        found: u32,
    },
    /// More pieces than [`MAX_PIECE_COUNT`].
    #[error("{0} pieces exceed the limit of {MAX_PIECE_COUNT}")]
    TooManyPieces(u64),
}

/// The SHA-256 of a metainfo's canonical encoding: the torrent's name on the wire and at the
/// tracker.
#[derive(Clone, Copy, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct InfoHash([u8; 32]);

impl InfoHash {
    /// An info hash from its raw bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 12 hex characters, for logs.
    pub fn fmt_short(&self) -> String {
        hex_encode(&self.0[..6])
    }
}

impl fmt::Display for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex_encode(&self.0))
    }
}

impl fmt::Debug for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InfoHash({self})")
    }
}

impl FromStr for InfoHash {
    type Err = Error;

    /// Exactly 64 lowercase hex characters.
    fn from_str(s: &str) -> Result<Self> {
        let mut bytes = [0; 32];
        hex_decode_into(s, &mut bytes).map_err(|_| Error::InvalidInfoHash)?;
        Ok(Self(bytes))
    }
}

crate::serde_str::serde_via_str!(InfoHash);

/// The index of a piece, checked against the metainfo it came from.
///
/// The only way to get one is [`MetaInfo::piece_index`] (or iterating [`MetaInfo::pieces`]),
/// so code that holds a `PieceIndex` need not check bounds again.
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct PieceIndex(u32);

impl PieceIndex {
    /// The index as a number.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for PieceIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A blob's digest, length, piece length and piece hashes.
#[derive(Clone, Eq, PartialEq)]
pub struct MetaInfo {
    digest: Digest,
    length: u64,
    piece_length: u64,
    piece_hashes: Vec<[u8; 32]>,
    info_hash: InfoHash,
}

impl MetaInfo {
    /// Builds a metainfo from its parts, checking that they agree.
    pub fn from_parts(
        digest: Digest,
        length: u64,
        piece_length: u64,
        piece_hashes: Vec<[u8; 32]>,
    ) -> Result<Self> {
        let count = check_piece_math(length, piece_length)?;
        if piece_hashes.len() as u64 != u64::from(count) {
            return Err(MetaInfoError::PieceCountMismatch {
                expected: u64::from(count),
                found: u32::try_from(piece_hashes.len()).unwrap_or(u32::MAX),
            }
            .into());
        }
        check_chain_end(&digest, &piece_hashes)?;
        Ok(Self::assemble(digest, length, piece_length, piece_hashes))
    }

    /// Generates the metainfo of everything `reader` yields, in one streaming pass.
    ///
    /// One SHA-256 pass gives both the digest and the piece hashes, so generation runs at the
    /// speed of `openssl dgst -sha256`. Memory use is one 1 MiB buffer, whatever the blob's
    /// size.
    pub fn from_reader<R: Read>(mut reader: R, piece_length: u64) -> Result<Self> {
        const BUFFER_LEN: usize = 1 << 20;
        let mut generator = MetaInfoGenerator::new(piece_length)?;
        let mut buffer = vec![0; BUFFER_LEN];
        loop {
            let filled = read_full(&mut reader, &mut buffer).map_err(Error::Read)?;
            if filled == 0 {
                return generator.finish();
            }
            generator.update(&buffer[..filled]);
        }
    }

    /// Generates the metainfo of a file, choosing the piece length from its size by `policy`.
    pub fn from_file(path: &Path, policy: &PieceLengthPolicy) -> Result<Self> {
        let file = File::open(path).map_err(|source| Error::io(path, source))?;
        let size = file
            .metadata()
            .map_err(|source| Error::io(path, source))?
            .len();
        Self::from_reader(file, policy.piece_length_for(size))
    }

    /// Generates the metainfo of an in-memory blob.
    pub fn from_bytes(data: &[u8], piece_length: u64) -> Result<Self> {
        let mut generator = MetaInfoGenerator::new(piece_length)?;
        generator.update(data);
        generator.finish()
    }

    /// Decodes the canonical encoding, rejecting anything that is not exactly one.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let header: &[u8; HEADER_LEN] = bytes
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(MetaInfoError::Truncated {
                needed: HEADER_LEN,
                found: bytes.len(),
            })?;
        if &header[0..4] != MAGIC {
            return Err(MetaInfoError::BadMagic.into());
        }
        if header[4] != VERSION {
            return Err(MetaInfoError::UnsupportedVersion(header[4]).into());
        }
        if header[5] != ALGORITHM_SHA256 {
            return Err(MetaInfoError::UnknownAlgorithm(header[5]).into());
        }
        let digest = Digest::from_sha256_bytes(header[6..38].try_into().expect("32-byte slice"));
        let length = u64::from_be_bytes(header[38..46].try_into().expect("8-byte slice"));
        let piece_length = encoded_piece_length(header).expect("the header holds it");
        let count = u32::from_be_bytes(header[50..54].try_into().expect("4-byte slice"));
        let expected = check_piece_math(length, piece_length)?;
        if count != expected {
            return Err(MetaInfoError::PieceCountMismatch {
                expected: u64::from(expected),
                found: count,
            }
            .into());
        }
        // count <= MAX_PIECE_COUNT, so this cannot overflow, and we allocate only once the
        // input is known to hold every hash.
        let needed = HEADER_LEN + count as usize * PIECE_HASH_LEN;
        match bytes.len().cmp(&needed) {
            std::cmp::Ordering::Less => {
                return Err(MetaInfoError::Truncated {
                    needed,
                    found: bytes.len(),
                }
                .into());
            }
            std::cmp::Ordering::Greater => {
                return Err(MetaInfoError::TrailingBytes(bytes.len() - needed).into());
            }
            std::cmp::Ordering::Equal => {}
        }
        let piece_hashes: Vec<[u8; 32]> = bytes[HEADER_LEN..]
            .chunks_exact(PIECE_HASH_LEN)
            .map(|c| c.try_into().expect("32-byte chunk"))
            .collect();
        check_chain_end(&digest, &piece_hashes)?;
        Ok(Self {
            digest,
            length,
            piece_length,
            piece_hashes,
            info_hash: InfoHash(sha256(bytes)),
        })
    }

    /// The canonical encoding (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        encode_parts(
            &self.digest,
            self.length,
            self.piece_length,
            &self.piece_hashes,
        )
    }

    /// The blob's digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The blob's length in bytes.
    pub fn length(&self) -> u64 {
        self.length
    }

    /// The length of every piece but the last.
    pub fn piece_length(&self) -> u64 {
        self.piece_length
    }

    /// The number of pieces.
    pub fn piece_count(&self) -> u32 {
        // from_parts/decode/assemble checked the count against MAX_PIECE_COUNT.
        self.piece_hashes.len() as u32
    }

    /// The SHA-256 of the canonical encoding.
    pub fn info_hash(&self) -> InfoHash {
        self.info_hash
    }

    /// Checks a piece number against this metainfo.
    pub fn piece_index(&self, index: u32) -> Result<PieceIndex> {
        if index < self.piece_count() {
            Ok(PieceIndex(index))
        } else {
            Err(Error::PieceIndexOutOfRange {
                index,
                count: self.piece_count(),
            })
        }
    }

    /// Every piece index, in order.
    pub fn pieces(&self) -> impl Iterator<Item = PieceIndex> + use<> {
        (0..self.piece_count()).map(PieceIndex)
    }

    /// The byte range a piece covers in the blob.
    pub fn piece_range(&self, index: PieceIndex) -> Range<u64> {
        let start = u64::from(index.0) * self.piece_length;
        start..(start + self.piece_length).min(self.length)
    }

    /// The length of one piece: `piece_length`, or less for the last one.
    pub fn piece_len(&self, index: PieceIndex) -> u64 {
        let range = self.piece_range(index);
        range.end - range.start
    }

    /// One piece's hash: SHA-256's chaining value over the blob at the end of the piece (the
    /// blob digest for the last piece; see the module docs).
    pub fn piece_hash(&self, index: PieceIndex) -> &[u8; 32] {
        &self.piece_hashes[index.0 as usize]
    }

    /// The pieces that hold any byte of `range` (clamped to the blob).
    pub fn pieces_covering(&self, range: Range<u64>) -> Range<u32> {
        let end = range.end.min(self.length);
        if range.start >= end {
            return 0..0;
        }
        let first = range.start / self.piece_length;
        let last = (end - 1) / self.piece_length;
        // Both are below piece_count, which fits in u32.
        first as u32..last as u32 + 1
    }

    /// Checks a piece's bytes against its length and hash: one SHA-256 pass over them, from
    /// the previous piece's chaining value. Once every piece has passed, the blob's bytes
    /// hash to its digest.
    pub fn verify_piece(&self, index: PieceIndex, data: &[u8]) -> Result<()> {
        let expected = self.piece_len(index);
        if data.len() as u64 != expected {
            return Err(Error::PieceLengthMismatch {
                index: index.0,
                expected,
                found: data.len() as u64,
            });
        }
        let i = index.0 as usize;
        let mut state = match i.checked_sub(1) {
            None => ChainingValue::INITIAL,
            Some(previous) => ChainingValue::from_bytes(&self.piece_hashes[previous]),
        };
        let reached = if i + 1 == self.piece_hashes.len() {
            state.finish(data, self.length)
        } else {
            // Every piece but the last is whole blocks long (the piece length is checked).
            state.absorb(data);
            state.to_bytes()
        };
        if reached != self.piece_hashes[i] {
            return Err(Error::PieceHashMismatch { index: index.0 });
        }
        Ok(())
    }

    fn assemble(
        digest: Digest,
        length: u64,
        piece_length: u64,
        piece_hashes: Vec<[u8; 32]>,
    ) -> Self {
        let encoding = encode_parts(&digest, length, piece_length, &piece_hashes);
        let info_hash = InfoHash(sha256(&encoding));
        Self {
            digest,
            length,
            piece_length,
            piece_hashes,
            info_hash,
        }
    }
}

impl fmt::Debug for MetaInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetaInfo")
            .field("digest", &self.digest)
            .field("length", &self.length)
            .field("piece_length", &self.piece_length)
            .field("piece_count", &self.piece_count())
            .field("info_hash", &self.info_hash)
            .finish()
    }
}

/// Computes a metainfo incrementally from bytes fed in order, on the calling thread.
///
/// Use it where the bytes pass by anyway (for example while an upload is written to disk);
/// [`MetaInfo::from_reader`] drains a reader through it.
#[derive(Debug)]
pub struct MetaInfoGenerator {
    chain: PieceChain,
}

impl MetaInfoGenerator {
    /// A generator cutting pieces of `piece_length` bytes.
    pub fn new(piece_length: u64) -> Result<Self> {
        check_piece_length(piece_length)?;
        Ok(Self {
            chain: PieceChain::new(piece_length),
        })
    }

    /// Feeds the next bytes of the blob.
    pub fn update(&mut self, data: &[u8]) {
        self.chain.update(data);
    }

    /// The metainfo of everything fed.
    pub fn finish(self) -> Result<MetaInfo> {
        let piece_length = self.chain.piece_length();
        let (digest, length, piece_hashes) = self.chain.finish();
        check_piece_math(length, piece_length)?;
        Ok(MetaInfo::assemble(
            Digest::from_sha256_bytes(digest),
            length,
            piece_length,
            piece_hashes,
        ))
    }
}

impl io::Write for MetaInfoGenerator {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The piece length field of an encoding's header, of any version, if the bytes reach it.
pub(crate) fn encoded_piece_length(encoding: &[u8]) -> Option<u64> {
    let field: [u8; 4] = encoding.get(46..50)?.try_into().ok()?;
    Some(u64::from(u32::from_be_bytes(field)))
}

/// Fills `buffer` unless the reader ends first; returns how much was read.
fn read_full<R: Read>(reader: &mut R, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn check_piece_length(piece_length: u64) -> Result<()> {
    if piece_length == 0
        || piece_length > MAX_PIECE_LENGTH
        || !piece_length.is_multiple_of(BLOCK_LEN)
    {
        return Err(MetaInfoError::BadPieceLength(piece_length).into());
    }
    Ok(())
}

/// Checks that the piece hashes end at the digest, which every piece check relies on: the
/// last piece's check computes the blob's SHA-256 and compares it with the last hash.
fn check_chain_end(digest: &Digest, piece_hashes: &[[u8; 32]]) -> Result<()> {
    let end = match piece_hashes.last() {
        Some(last) => *last,
        None => sha256(b""),
    };
    if end.as_slice() != digest.as_bytes() {
        return Err(MetaInfoError::ChainDoesNotEndAtDigest.into());
    }
    Ok(())
}

/// Checks the piece length and returns the piece count of a blob of `length` bytes.
fn check_piece_math(length: u64, piece_length: u64) -> Result<u32> {
    check_piece_length(piece_length)?;
    let count = length.div_ceil(piece_length);
    if count > u64::from(MAX_PIECE_COUNT) {
        return Err(MetaInfoError::TooManyPieces(count).into());
    }
    Ok(count as u32)
}

fn encode_parts(
    digest: &Digest,
    length: u64,
    piece_length: u64,
    piece_hashes: &[[u8; 32]],
) -> Vec<u8> {
    let algorithm = match digest.algorithm() {
        Algorithm::Sha256 => ALGORITHM_SHA256,
    };
    let mut out = Vec::with_capacity(HEADER_LEN + piece_hashes.len() * PIECE_HASH_LEN);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(algorithm);
    out.extend_from_slice(digest.as_bytes());
    out.extend_from_slice(&length.to_be_bytes());
    // Constructors checked piece_length <= MAX_PIECE_LENGTH and the count against
    // MAX_PIECE_COUNT, so both fit in 32 bits.
    out.extend_from_slice(&(piece_length as u32).to_be_bytes());
    out.extend_from_slice(&(piece_hashes.len() as u32).to_be_bytes());
    for hash in piece_hashes {
        out.extend_from_slice(hash);
    }
    out
}

#[cfg(test)]
mod tests {
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
        assert!(
            MetaInfo::from_parts(d, 150, MAX_PIECE_LENGTH + 64, hashes_ending_at(&d, 1)).is_err()
        );
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
}
