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

mod codec;
mod generate;

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use self::codec::encode_parts;
pub(crate) use self::codec::encoded_piece_length;
pub use self::codec::{HEADER_LEN, MetaInfoError};
pub use self::generate::MetaInfoGenerator;
use crate::digest::{Digest, hex_decode_into, hex_encode, sha256};
use crate::error::{Error, Result};
use crate::sha256_chain::{BLOCK_LEN, ChainingValue};

/// The largest piece length a metainfo may declare: 64 MiB. It bounds the memory a piece
/// buffer may need anywhere in the system.
pub const MAX_PIECE_LENGTH: u64 = 64 << 20;

/// The most pieces a metainfo may have: 2^20. With 4 MiB pieces that is a 4 TiB blob; the
/// encoding is then 32 MiB.
pub const MAX_PIECE_COUNT: u32 = 1 << 20;

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

#[cfg(test)]
mod tests;
