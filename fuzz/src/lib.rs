//! Fuzz target bodies, kept in a library so that ordinary tests run them too (over the seed
//! inputs below) and the targets can never rot.
//!
//! Run a target with `cargo fuzz run -s none digest_parse` (cargo-fuzz; the `fuzz_targets/`
//! files only forward to these functions), or every target with `scripts/fuzz`. The seeds
//! in `corpus/<target>/` are run by the tests below too. Parsers private to
//! kraken-registry are reached through its hidden `fuzzing` module (feature `fuzzing`).

mod bodies;
mod config;
mod http;
mod names;

use kraken_core::{Bitfield, Digest, MetaInfo};

pub use crate::bodies::{announce_decode, duplicate_decode, journal_replay, manifest_parse};
pub use crate::config::{cidr_parse, config_toml};
pub use crate::http::{authorization_parse, content_range_parse, range_parse, segment_decode};
pub use crate::names::name_parse;

/// The swarm core driven by arbitrary inputs from several fake peers, with `STATE.md`'s
/// invariants checked after every step (`kraken_p2p::swarm::fuzzing`).
pub fn swarm_ops(data: &[u8]) {
    kraken_p2p::swarm::fuzzing::run(data);
}

/// A target's body: takes the fuzzer's input, panics on a bug.
pub type Target = fn(&[u8]);

/// Every target by name, as `fuzz_targets/` and `corpus/` name them.
pub const TARGETS: &[(&str, Target)] = &[
    ("digest_parse", digest_parse),
    ("metainfo_decode", metainfo_decode),
    ("bitfield_decode", bitfield_decode),
    ("wire_decode", wire_decode),
    ("manifest_parse", manifest_parse),
    ("range_parse", range_parse),
    ("content_range_parse", content_range_parse),
    ("segment_decode", segment_decode),
    ("name_parse", name_parse),
    ("announce_decode", announce_decode),
    ("duplicate_decode", duplicate_decode),
    ("journal_replay", journal_replay),
    ("authorization_parse", authorization_parse),
    ("cidr_parse", cidr_parse),
    ("config_toml", config_toml),
    ("swarm_ops", swarm_ops),
];

/// Parses arbitrary bytes as a digest; anything accepted must print back unchanged.
pub fn digest_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(digest) = text.parse::<Digest>() {
        assert_eq!(digest.to_string(), text, "accepted a non-canonical digest");
    }
}

/// Decodes arbitrary bytes as a metainfo; anything accepted must re-encode to the same bytes
/// (the encoding is canonical) and have self-consistent piece math.
pub fn metainfo_decode(data: &[u8]) {
    if let Ok(meta) = MetaInfo::decode(data) {
        assert_eq!(meta.encode(), data, "decoding is not canonical");
        let total: u64 = meta.pieces().map(|i| meta.piece_len(i)).sum();
        assert_eq!(total, meta.length());
    }
}

/// Decodes arbitrary bytes as a bitfield of a length taken from the first two bytes.
pub fn bitfield_decode(data: &[u8]) {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let bits = u32::from(u16::from_be_bytes(*len));
    if let Ok(field) = Bitfield::from_bytes(bits, rest) {
        assert_eq!(field.as_bytes(), rest);
        assert_eq!(field.iter_ones().count() as u32, field.count_ones());
    }
}

/// Feeds arbitrary bytes to the peer-protocol frame decoder, split at an arbitrary point as a
/// socket might deliver them; it must never panic, and every message decoded must encode to
/// the bytes it came from.
pub fn wire_decode(data: &[u8]) {
    use bytes::BytesMut;
    use kraken_p2p::wire::{FrameDecoder, encode};
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let split = usize::from(split).min(data.len());
    let mut decoder = FrameDecoder::new();
    decoder.set_max_payload(1 << 16);
    let mut buf = BytesMut::from(&data[..split]);
    let mut consumed = Vec::new();
    let mut rest = &data[split..];
    loop {
        match decoder.decode(&mut buf) {
            Ok(Some(message)) => {
                let mut again = BytesMut::new();
                encode(&message, &mut again);
                consumed.extend_from_slice(&again);
            }
            Ok(None) if !rest.is_empty() => {
                buf.extend_from_slice(rest);
                rest = &[];
            }
            Ok(None) | Err(_) => break,
        }
    }
    // Canonical re-encoding may differ from the input (unknown fields, non-minimal
    // varints), but it always decodes to the same messages.
    let mut decoder = FrameDecoder::new();
    decoder.set_max_payload(1 << 16);
    let mut again = BytesMut::from(&consumed[..]);
    while let Ok(Some(_)) = decoder.decode(&mut again) {}
    assert!(again.is_empty(), "re-encoded messages did not decode");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_accept_seed_inputs() {
        let meta = MetaInfo::from_bytes(&b"seed blob for the fuzzer".repeat(4), 64).unwrap();
        let encoded = meta.encode();
        metainfo_decode(&encoded);
        metainfo_decode(&encoded[..encoded.len() - 1]);
        metainfo_decode(b"");
        digest_parse(meta.digest().to_string().as_bytes());
        digest_parse(b"sha256:");
        digest_parse(&[0xff, 0xfe]);
        bitfield_decode(&[0, 10, 0xff, 0xc0]);
        bitfield_decode(&[0, 10, 0xff, 0xe0]);
        bitfield_decode(&[1]);
    }

    #[test]
    fn targets_accept_their_corpus() {
        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
        for (name, target) in TARGETS {
            let dir = corpus.join(name);
            let seeds: Vec<_> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .map(|entry| entry.unwrap().path())
                .collect();
            assert!(!seeds.is_empty(), "{name} has no seeds");
            for seed in seeds {
                target(&std::fs::read(&seed).unwrap());
            }
        }
    }

    #[test]
    fn targets_survive_pseudo_random_inputs() {
        // A cheap stand-in for a fuzzing run: mutate the seed encoding byte by byte.
        let meta = MetaInfo::from_bytes(&[7u8; 100], 64).unwrap();
        let encoded = meta.encode();
        for i in 0..encoded.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut mutated = encoded.clone();
                mutated[i] ^= flip;
                metainfo_decode(&mutated);
                bitfield_decode(&mutated);
                digest_parse(&mutated);
                wire_decode(&mutated);
            }
        }
    }
}
