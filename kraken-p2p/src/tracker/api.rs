//! The tracker's HTTP protocol: paths and bodies shared by server and client.
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | `GET` | `/health` | | `200 OK` |
//! | `POST` | `/announce/{info hash hex}` | JSON [`AnnounceRequest`] | JSON [`AnnounceResponse`] |
//! | `GET` | `/namespace/{ns}/blobs/{digest}/metainfo` | | `200` canonical metainfo bytes, or `404` |
//! | `POST` | `/namespace/{ns}/blobs/{digest}/metainfo` | canonical metainfo bytes | `201`, or `400` if it does not decode or names another blob |
//!
//! The announce path is Go Kraken's (V2), and so is the metainfo `GET`; the namespace is
//! percent-encoded into one path segment. Publishing metainfo is ours: it lets a seeder
//! distribute a blob where no origin runs.

use kraken_core::{Digest, PeerInfo};
use serde::{Deserialize, Serialize};

/// An announce: "I am `peer`, I take part in this torrent".
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Eq, PartialEq, Serialize)]
pub struct AnnounceRequest {
    /// The blob of the torrent.
    pub digest: Digest,
    /// Its namespace.
    #[serde(default)]
    pub namespace: String,
    /// The announcer, with its address and whether it is complete.
    pub peer: PeerInfo,
}

impl AnnounceRequest {
    /// An announce of `peer` for `digest` in `namespace`.
    pub fn new(digest: Digest, namespace: String, peer: PeerInfo) -> Self {
        Self {
            digest,
            namespace,
            peer,
        }
    }
}

/// The tracker's answer: peers to connect to and when to announce again.
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Eq, PartialEq, Serialize)]
pub struct AnnounceResponse {
    /// A random sample of the torrent's other peers, complete ones and origins first.
    pub peers: Vec<PeerInfo>,
    /// Milliseconds until the next announce.
    pub interval_ms: u64,
}

/// Percent-encodes a namespace into one path segment.
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes a percent-encoded path segment; `None` if it is malformed or not UTF-8.
pub fn decode_segment(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_round_trip() {
        for s in ["", "library/ubuntu", "a b%c", "ünï"] {
            assert_eq!(decode_segment(&encode_segment(s)).as_deref(), Some(s));
        }
        assert_eq!(encode_segment("library/ubuntu"), "library%2Fubuntu");
        assert_eq!(decode_segment("%zz"), None);
        assert_eq!(decode_segment("%4"), None);
        assert_eq!(decode_segment("%ff"), None);
    }
}
