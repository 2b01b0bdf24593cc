//! Building the handler's responses: JSON and empty bodies, the spec's error body, and the
//! headers of a created blob or an upload in progress.

use hyper::http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use kraken_core::Digest;

use super::error::{ApiError, ErrorCode};
use super::name::RepoName;
use crate::http::body::{self, Body};

pub(super) fn blob_created(repo: &RepoName, digest: &Digest) -> Response<Body> {
    let mut response = empty(StatusCode::CREATED);
    let headers = response.headers_mut();
    insert(
        headers,
        header::LOCATION,
        format!("/v2/{repo}/blobs/{digest}"),
    );
    insert(headers, "docker-content-digest", digest.to_string());
    response
}

/// `202` (or `204` for a status query) with the upload's `Location`, id and `Range`.
pub(super) fn upload_accepted(
    status: StatusCode,
    repo: &RepoName,
    id: &str,
    size: u64,
) -> Response<Body> {
    let mut response = empty(status);
    let headers = response.headers_mut();
    insert(
        headers,
        header::LOCATION,
        format!("/v2/{repo}/blobs/uploads/{id}"),
    );
    insert(headers, "docker-upload-uuid", id.to_owned());
    // CNCF Distribution's convention: `0-0` for an empty upload, else the last byte held.
    insert(
        headers,
        header::RANGE,
        format!("0-{}", size.saturating_sub(1)),
    );
    insert(headers, header::CONTENT_LENGTH, "0".into());
    response
}

pub(super) fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::Unsupported,
        "method not allowed on this endpoint",
    )
}

pub(super) fn error_response(error: &ApiError) -> Response<Body> {
    let mut response = Response::new(body::full(error.to_json()));
    *response.status_mut() = error.status();
    insert(
        response.headers_mut(),
        header::CONTENT_TYPE,
        "application/json".into(),
    );
    response
}

pub(super) use crate::http::json;

pub(super) fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = status;
    response
}

/// Sets a header; values built here are ASCII, and one that is not is left out rather than
/// failing the response.
pub(super) fn insert(headers: &mut HeaderMap, name: impl header::IntoHeaderName, value: String) {
    if let Ok(value) = HeaderValue::try_from(value) {
        headers.insert(name, value);
    }
}
