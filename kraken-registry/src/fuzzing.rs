//! Entry points for the fuzz targets (`fuzz/`) into parsers private to this crate, in std
//! types so that the crate's own types stay private. Built only with the `fuzzing` feature,
//! which only the fuzz crate turns on; the public API of ordinary builds is unchanged.

use crate::http::range::{RangeRequest, parse_content_range, parse_exclusive_content_range};
use crate::proxy::auth::{Credentials, parse_authorization, parse_htpasswd};

/// What a `Range` header selects of a blob (see `http::range::RangeRequest`).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum RangeAnswer {
    /// The whole blob.
    Whole,
    /// `length` bytes from `offset`.
    Part {
        /// First byte.
        offset: u64,
        /// Number of bytes.
        length: u64,
    },
    /// Nothing: `416`.
    Unsatisfiable,
}

/// The blob server's reading of a `Range` header for a blob of `size` bytes.
pub fn range(header: Option<&str>, size: u64) -> RangeAnswer {
    match RangeRequest::parse(header, size) {
        RangeRequest::Whole => RangeAnswer::Whole,
        RangeRequest::Part { offset, length } => RangeAnswer::Part { offset, length },
        RangeRequest::Unsatisfiable => RangeAnswer::Unsatisfiable,
    }
}

/// The OCI upload's `Content-Range` (`<start>-<end>`, inclusive).
pub fn content_range(value: &str) -> Option<(u64, u64)> {
    parse_content_range(value)
}

/// The origin upload's `Content-Range` (Go Kraken's `<start>-<end>`, end exclusive).
pub fn origin_content_range(value: &str) -> Option<(u64, u64)> {
    parse_exclusive_content_range(value)
}

/// The OCI API's query parameters, percent-decoded.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    crate::oci::query::query_pairs(query)
}

/// What the proxy reads of an `Authorization` header.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Authorization {
    /// A bearer token.
    Bearer(String),
    /// Basic credentials.
    Basic {
        /// User name.
        name: String,
        /// Password.
        password: String,
    },
}

/// The proxy's parse of an `Authorization` header value.
pub fn authorization(value: &str) -> Option<Authorization> {
    parse_authorization(value).map(|credentials| match credentials {
        Credentials::Bearer(token) => Authorization::Bearer(token.to_owned()),
        Credentials::Basic { name, password } => Authorization::Basic { name, password },
    })
}

/// The proxy's parse of an htpasswd file: the user names, or `None` when it is refused.
pub fn htpasswd(text: &str) -> Option<Vec<String>> {
    parse_htpasswd(text)
        .ok()
        .map(|users| users.into_iter().map(|user| user.name).collect())
}

/// The build-index's duplicate body: `(version, writer, delay)`, or `None` when refused.
pub fn duplicate_body(bytes: &[u8]) -> Option<(Option<u64>, Option<String>, Option<u64>)> {
    let body: crate::build_index::client::DuplicateBody = serde_json::from_slice(bytes).ok()?;
    Some((body.version, body.writer, body.delay))
}

/// The JSON the build-index sends as a duplicate body.
pub fn encode_duplicate_body(
    version: Option<u64>,
    writer: Option<String>,
    delay: Option<u64>,
) -> Vec<u8> {
    let body = crate::build_index::client::DuplicateBody {
        version,
        writer,
        delay,
    };
    serde_json::to_vec(&body).expect("a duplicate body serialises")
}

/// The journals on disk, by what they hold.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum JournalKind {
    /// The origin's write-back queue.
    OriginWriteBack,
    /// The build-index's tag store.
    Tags,
    /// The build-index's tag write-back queue.
    TagWriteBack,
    /// The build-index's replication queue.
    Replication,
}

impl JournalKind {
    /// Every kind.
    pub const ALL: [Self; 4] = [
        Self::OriginWriteBack,
        Self::Tags,
        Self::TagWriteBack,
        Self::Replication,
    ];
}

/// Replays a journal file of `kind` holding `bytes` and returns what a rewrite would write.
pub fn compact_journal(kind: JournalKind, bytes: &[u8]) -> Vec<u8> {
    use crate::build_index::store;
    use crate::durable::journal::compacted;
    match kind {
        JournalKind::OriginWriteBack => compacted::<crate::origin::queue::WriteBackTask>(bytes),
        JournalKind::Tags => compacted::<store::TagRecord>(bytes),
        JournalKind::TagWriteBack => compacted::<store::WriteBackTask>(bytes),
        JournalKind::Replication => compacted::<store::ReplicationTask>(bytes),
    }
}
