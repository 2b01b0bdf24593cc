//! The parts of a request the endpoints read, and the checks of its headers and body that
//! several endpoints share.

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::http::{HeaderMap, Method, header};

use super::error::{ApiError, ErrorCode};
use super::name::RepoName;
use super::uploads::{RequestBody, Session};
use crate::http::range::parse_content_range;

/// The parts of a request the endpoints read.
pub(super) struct Req<'a> {
    pub(super) method: &'a Method,
    pub(super) headers: &'a HeaderMap,
    pub(super) query: &'a str,
}

impl Req<'_> {
    pub(super) fn header(&self, name: impl header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub(super) fn repo_name(name: &str) -> Result<RepoName, ApiError> {
    name.parse()
        .map_err(|e: super::name::NameError| ApiError::new(ErrorCode::NameInvalid, e.to_string()))
}

/// `Content-Length`, if present; `400 SIZE_INVALID` when not a number.
pub(super) fn content_length(req: &Req<'_>) -> Result<Option<u64>, ApiError> {
    req.header(header::CONTENT_LENGTH)
        .map(|v| {
            v.trim().parse::<u64>().map_err(|_| {
                ApiError::new(ErrorCode::SizeInvalid, "Content-Length is not a number")
            })
        })
        .transpose()
}

/// The length a chunk must have: from `Content-Range: <start>-<end>` (inclusive), which must
/// start where the upload ends (`416 RANGE_INVALID` otherwise), or else from
/// `Content-Length`; `None` for a streamed chunk.
pub(super) fn chunk_length(session: &Session, req: &Req<'_>) -> Result<Option<u64>, ApiError> {
    let length = content_length(req)?;
    let Some(range) = req.header(header::CONTENT_RANGE) else {
        return Ok(length);
    };
    let (start, end) = parse_content_range(range).ok_or_else(|| {
        ApiError::new(
            ErrorCode::BlobUploadInvalid,
            format!("Content-Range {range:?} is not <start>-<end>"),
        )
    })?;
    if start != session.size() {
        let mut error = ApiError::new(
            ErrorCode::RangeInvalid,
            format!(
                "chunk starts at {start} but the upload has {} bytes; chunks must be in order",
                session.size()
            ),
        );
        error = error.with_detail(serde_json::json!({"size": session.size()}));
        return Err(error);
    }
    let chunk = end - start + 1;
    if length.is_some_and(|length| length != chunk) {
        return Err(ApiError::new(
            ErrorCode::SizeInvalid,
            "Content-Length does not match Content-Range",
        ));
    }
    Ok(Some(chunk))
}

/// The whole body, or `None` when it is longer than `limit`. (Not `http_body_util::Limited`:
/// its error conversion makes the handler's future fail to be `Send`.)
pub(super) async fn read_limited(
    mut body: RequestBody,
    limit: usize,
) -> Result<Option<Bytes>, ApiError> {
    let mut data = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::new(
                ErrorCode::ManifestInvalid,
                format!("reading the manifest failed: {e}"),
            )
        })?;
        if let Ok(chunk) = frame.into_data() {
            if data.len() + chunk.len() > limit {
                return Ok(None);
            }
            data.extend_from_slice(&chunk);
        }
    }
    Ok(Some(data.freeze()))
}
