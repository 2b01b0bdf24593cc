//! Request bodies and files: manifests, the tracker's announce, the build-index's duplicate
//! body and the write-back journals replayed from disk.

use kraken_core::Digest;
use kraken_p2p::tracker::api::AnnounceRequest;
use kraken_registry::fuzzing::{self, JournalKind};
use kraken_registry::oci::Manifest;

/// `Content-Type`s a manifest is pushed with; the first input byte picks one.
const CONTENT_TYPES: [Option<&str>; 7] = [
    None,
    Some("application/vnd.docker.distribution.manifest.v2+json"),
    Some("application/vnd.docker.distribution.manifest.list.v2+json"),
    Some("application/vnd.oci.image.manifest.v1+json"),
    Some("application/vnd.oci.image.index.v1+json"),
    Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
    Some("application/json"),
];

/// A manifest (the bytes after the first, which picks the `Content-Type`): one that parses
/// has the digest and size of its bytes, and parses again as the same kind when pushed
/// with its own media type.
pub fn manifest_parse(data: &[u8]) {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[usize::from(pick) % CONTENT_TYPES.len()];
    let Ok(manifest) = Manifest::parse(bytes, content_type) else {
        return;
    };
    assert_eq!(*manifest.digest(), Digest::sha256_of(bytes));
    assert_eq!(manifest.size(), bytes.len() as u64);
    let again = Manifest::parse(bytes, Some(manifest.media_type()))
        .expect("a manifest parses with its own media type");
    assert_eq!(again.kind(), manifest.kind());
    assert_eq!(again.blobs().count(), manifest.blobs().count());
}

/// The tracker's announce body: one that decodes re-encodes to JSON that decodes the same.
pub fn announce_decode(data: &[u8]) {
    if let Ok(request) = serde_json::from_slice::<AnnounceRequest>(data) {
        let json = serde_json::to_vec(&request).expect("an announce serialises");
        let again: AnnounceRequest = serde_json::from_slice(&json).expect("re-encoded announce");
        assert_eq!(again, request);
    }
}

/// The build-index's duplicate body: one that decodes re-encodes to JSON that decodes the
/// same.
pub fn duplicate_decode(data: &[u8]) {
    if let Some((version, writer, delay)) = fuzzing::duplicate_body(data) {
        let json = fuzzing::encode_duplicate_body(version, writer.clone(), delay);
        assert_eq!(
            fuzzing::duplicate_body(&json),
            Some((version, writer, delay))
        );
    }
}

/// Every journal replayed from arbitrary bytes on disk: never panics, and what a rewrite
/// leaves is newline-terminated and replays to itself.
pub fn journal_replay(data: &[u8]) {
    for kind in JournalKind::ALL {
        let compacted = fuzzing::compact_journal(kind, data);
        assert!(compacted.is_empty() || compacted.ends_with(b"\n"));
        assert_eq!(
            fuzzing::compact_journal(kind, &compacted),
            compacted,
            "{kind:?} journal is not a fixed point of replay"
        );
    }
}
