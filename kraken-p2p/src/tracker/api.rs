//! The tracker's HTTP protocol: paths and bodies shared by server and client.
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | `GET` | `/health` | | `200 OK` |
//! | `POST` | `/announce/{info hash hex}` | JSON [`AnnounceRequest`] | JSON [`AnnounceResponse`] |
//! | `GET` | `/namespace/{ns}/blobs/{digest}/metainfo` | | `200` canonical metainfo bytes, or `404` |
//! | `GET` | `/namespace/{ns}/blobs/{digest}/metainfo?fresh=1` | | the same, asked of the origins again |
//! | `POST` | `/namespace/{ns}/blobs/{digest}/metainfo` | canonical metainfo bytes | `201`; `403` unless the caller is an authenticated publisher; `400` if it does not decode or names another blob |
//!
//! The announce path is Go Kraken's (V2), and so is the metainfo `GET`; the namespace is
//! percent-encoded into one path segment. Publishing metainfo is ours: it lets a seeder
//! distribute a blob where no origin runs. A publisher authenticates with an origin (or
//! operator) client certificate or with `Authorization: Bearer <publish token>`; the same
//! credential on an announce lets it claim `origin` and `complete` and its declared address.

use kraken_core::{Digest, PeerInfo};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
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

/// The query of a metainfo `GET` that asks the tracker to look the metainfo up at the
/// origins again instead of answering from what it kept: what a fetcher asks when the
/// metainfo it was given does not match the bytes anyone has.
pub const FRESH_QUERY: &str = "fresh=1";

/// What stays literal in an encoded segment: RFC 3986's unreserved characters. Everything
/// else, `/` included, is escaped, so a namespace is always one segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes a namespace into one path segment.
pub fn encode_segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// Decodes a percent-encoded path segment; `None` if it is malformed or not UTF-8.
pub fn decode_segment(s: &str) -> Option<String> {
    // percent-encoding passes a `%` without two hex digits through as it is; a segment that
    // has one was not encoded by a well-behaved client, so it is refused instead.
    let well_formed = s.split('%').skip(1).all(|escape| {
        escape
            .as_bytes()
            .get(..2)
            .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return None;
    }
    percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|decoded| decoded.into_owned())
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
        assert_eq!(decode_segment("a%2fb%2Fc"), Some("a/b/c".to_owned()));
        assert_eq!(encode_segment("a:b~c d"), "a%3Ab~c%20d");
        assert_eq!(decode_segment("100%"), None);
    }

    proptest::proptest! {
        #[test]
        fn any_string_round_trips_as_one_segment(s in ".{0,40}") {
            let encoded = encode_segment(&s);
            proptest::prop_assert!(!encoded.contains('/'));
            proptest::prop_assert_eq!(decode_segment(&encoded), Some(s));
        }
    }
}
