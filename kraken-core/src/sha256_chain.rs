//! SHA-256 computed piece by piece: the hash's chaining value at every piece boundary.
//!
//! SHA-256 runs a compression function over 64-byte blocks, carrying a 32-byte state (the
//! chaining value) from one block to the next, and pads the last block with the message's
//! length. When pieces are whole blocks long, the state at the end of piece `i` depends only
//! on the state at the end of piece `i - 1` and piece `i`'s bytes. A metainfo that lists those
//! states lets a host check any piece on its own, in any order, with one pass over its bytes,
//! and the last piece's check, which ends in the padding, yields the SHA-256 of the whole
//! blob: checking every piece *is* computing the blob's digest, so nothing is hashed twice.
//! (Hashing each piece from the initial state, as BitTorrent does, costs a second full pass
//! over the blob to check its digest: half of a verified transfer's CPU.)

use sha2::block_api::compress256;

/// SHA-256's block length. Piece lengths are multiples of it.
pub(crate) const BLOCK_LEN: u64 = 64;

/// SHA-256's initial state (FIPS 180-4 §5.3.3).
const INITIAL: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// SHA-256's state between two blocks.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) struct ChainingValue([u32; 8]);

impl ChainingValue {
    /// The state before the first block.
    pub(crate) const INITIAL: Self = Self(INITIAL);

    /// The state from its big-endian encoding (the byte order of a SHA-256 digest).
    pub(crate) fn from_bytes(bytes: &[u8; 32]) -> Self {
        let mut words = [0; 8];
        for (word, chunk) in words.iter_mut().zip(bytes.as_chunks::<4>().0) {
            *word = u32::from_be_bytes(*chunk);
        }
        Self(words)
    }

    /// The big-endian encoding.
    pub(crate) fn to_bytes(self) -> [u8; 32] {
        let mut bytes = [0; 32];
        for (chunk, word) in bytes.as_chunks_mut::<4>().0.iter_mut().zip(self.0) {
            *chunk = word.to_be_bytes();
        }
        bytes
    }

    /// Runs the compression function over `data`'s whole blocks and returns the bytes left
    /// over (fewer than 64).
    pub(crate) fn absorb<'a>(&mut self, data: &'a [u8]) -> &'a [u8] {
        let (blocks, rest) = data.as_chunks::<64>();
        compress256(&mut self.0, blocks);
        rest
    }

    /// Absorbs `data`, pads it as the end of a message of `total_len` bytes and returns that
    /// message's SHA-256.
    pub(crate) fn finish(mut self, data: &[u8], total_len: u64) -> [u8; 32] {
        let rest = self.absorb(data);
        let mut tail = [0u8; 128];
        tail[..rest.len()].copy_from_slice(rest);
        tail[rest.len()] = 0x80;
        // The 0x80 byte and the 8-byte length need a second block when fewer than 9 bytes
        // of the first are free.
        let tail_len = if rest.len() < 56 { 64 } else { 128 };
        tail[tail_len - 8..tail_len].copy_from_slice(&total_len.wrapping_mul(8).to_be_bytes());
        self.absorb(&tail[..tail_len]);
        self.to_bytes()
    }
}

/// Hashes a byte stream fed in arbitrary slices, keeping the chaining value at the end of
/// every whole piece.
#[derive(Debug)]
pub(crate) struct PieceChain {
    piece_length: u64,
    state: ChainingValue,
    /// Bytes of an incomplete block, absorbed once the block fills.
    partial: [u8; 64],
    partial_len: usize,
    total: u64,
    boundaries: Vec<[u8; 32]>,
}

impl PieceChain {
    /// A chain over pieces of `piece_length` bytes, a positive multiple of [`BLOCK_LEN`].
    pub(crate) fn new(piece_length: u64) -> Self {
        debug_assert!(piece_length > 0 && piece_length.is_multiple_of(BLOCK_LEN));
        Self {
            piece_length,
            state: ChainingValue::INITIAL,
            partial: [0; 64],
            partial_len: 0,
            total: 0,
            boundaries: Vec::new(),
        }
    }

    /// The piece length the chain cuts at.
    pub(crate) fn piece_length(&self) -> u64 {
        self.piece_length
    }

    /// Feeds the next bytes.
    pub(crate) fn update(&mut self, mut data: &[u8]) {
        if self.partial_len > 0 {
            let take = data.len().min(64 - self.partial_len);
            self.partial[self.partial_len..self.partial_len + take].copy_from_slice(&data[..take]);
            self.partial_len += take;
            data = &data[take..];
            if self.partial_len < 64 {
                return;
            }
            let block = self.partial;
            self.partial_len = 0;
            self.absorb_whole_blocks(&block);
        }
        // Whole blocks straight from the caller's slice, stopping at each piece boundary.
        let whole = data.len() - data.len() % 64;
        self.absorb_whole_blocks(&data[..whole]);
        let rest = &data[whole..];
        self.partial[..rest.len()].copy_from_slice(rest);
        self.partial_len = rest.len();
    }

    fn absorb_whole_blocks(&mut self, mut blocks: &[u8]) {
        while !blocks.is_empty() {
            let to_boundary = self.piece_length - self.total % self.piece_length;
            let take = blocks
                .len()
                .min(usize::try_from(to_boundary).unwrap_or(usize::MAX));
            self.state.absorb(&blocks[..take]);
            self.total += take as u64;
            blocks = &blocks[take..];
            if self.total.is_multiple_of(self.piece_length) {
                self.boundaries.push(self.state.to_bytes());
            }
        }
    }

    /// The SHA-256 of everything fed, the number of bytes fed, and the piece hashes of
    /// [`MetaInfo`](crate::MetaInfo): the chaining value after each piece but the last, and
    /// the SHA-256 itself for the last.
    pub(crate) fn finish(mut self) -> ([u8; 32], u64, Vec<[u8; 32]>) {
        let length = self.total + self.partial_len as u64;
        let digest = self.state.finish(&self.partial[..self.partial_len], length);
        let pieces = length.div_ceil(self.piece_length) as usize;
        self.boundaries.truncate(pieces.saturating_sub(1));
        if pieces > 0 {
            self.boundaries.push(digest);
        }
        (digest, length, self.boundaries)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::digest::sha256;

    #[test]
    fn the_initial_state_and_padding_give_sha256() {
        // FIPS 180-4's examples: "abc" pads into one block, the 56-byte message into two.
        let abc = ChainingValue::INITIAL.finish(b"abc", 3);
        assert_eq!(
            crate::digest::hex_encode(&abc),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let two_blocks = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        assert_eq!(
            crate::digest::hex_encode(&ChainingValue::INITIAL.finish(two_blocks, 56)),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
    }

    #[test]
    fn chaining_values_round_trip_through_bytes() {
        let mut state = ChainingValue::INITIAL;
        state.absorb(&[7; 128]);
        assert_eq!(ChainingValue::from_bytes(&state.to_bytes()), state);
    }

    proptest! {
        #[test]
        fn a_chain_fed_in_any_slices_is_sha256_and_each_piece_checks_alone(
            len in 0usize..2000,
            blocks_per_piece in 1u64..6,
            cuts in proptest::collection::vec(0usize..2000, 0..6),
        ) {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 13) as u8).collect();
            let piece_length = blocks_per_piece * BLOCK_LEN;
            let mut chain = PieceChain::new(piece_length);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(len)).collect();
            cuts.sort_unstable();
            let mut at = 0;
            for cut in cuts.into_iter().chain([len]) {
                chain.update(&data[at..cut]);
                at = cut;
            }
            let (digest, length, hashes) = chain.finish();
            prop_assert_eq!(digest, sha256(&data));
            prop_assert_eq!(length, len as u64);
            prop_assert_eq!(hashes.len() as u64, (len as u64).div_ceil(piece_length));
            // Each piece, from the previous piece's value, reaches its own.
            for (i, piece) in data.chunks(piece_length as usize).enumerate() {
                let start = if i == 0 {
                    ChainingValue::INITIAL
                } else {
                    ChainingValue::from_bytes(&hashes[i - 1])
                };
                let reached = if i + 1 == hashes.len() {
                    start.finish(piece, len as u64)
                } else {
                    let mut state = start;
                    prop_assert!(state.absorb(piece).is_empty());
                    state.to_bytes()
                };
                prop_assert_eq!(reached, hashes[i]);
            }
        }
    }
}
