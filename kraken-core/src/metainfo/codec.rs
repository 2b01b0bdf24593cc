//! The canonical encoding (version 2, laid out in the metainfo module's docs): encoding,
//! decoding with every check, and the errors of bytes that are not exactly one encoding.

use super::{
    InfoHash, MAX_PIECE_COUNT, MAX_PIECE_LENGTH, MetaInfo, check_chain_end, check_piece_math,
};
use crate::digest::{Algorithm, Digest, sha256};
use crate::error::Result;

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

impl MetaInfo {
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
}

/// The piece length field of an encoding's header, of any version, if the bytes reach it.
pub(crate) fn encoded_piece_length(encoding: &[u8]) -> Option<u64> {
    let field: [u8; 4] = encoding.get(46..50)?.try_into().ok()?;
    Some(u64::from(u32::from_be_bytes(field)))
}

pub(super) fn encode_parts(
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
