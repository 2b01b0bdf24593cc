//! The distribution spec's error codes and its error body, `{"errors":[{code, message, detail}]}`.

use std::fmt;

use hyper::http::StatusCode;
use kraken_core::Digest;
use serde::Serialize;

/// An error code of the OCI distribution spec v1.1, plus three that CNCF Distribution defines
/// and clients know ([`RangeInvalid`](Self::RangeInvalid),
/// [`PaginationNumberInvalid`](Self::PaginationNumberInvalid) and [`Unknown`](Self::Unknown)).
///
/// Each code has the HTTP status this registry answers it with ([`ErrorCode::status`]); an
/// [`ApiError`] may override the status where the spec asks for another one (a body too large
/// is `413` with `SIZE_INVALID` or `MANIFEST_INVALID`, say).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum ErrorCode {
    /// `BLOB_UNKNOWN`, 404: the blob is not in the repository.
    BlobUnknown,
    /// `BLOB_UPLOAD_INVALID`, 400: the upload cannot proceed (bad body, bad request).
    BlobUploadInvalid,
    /// `BLOB_UPLOAD_UNKNOWN`, 404: no such upload session (finished, cancelled or expired).
    BlobUploadUnknown,
    /// `DIGEST_INVALID`, 400: a digest is malformed, or the content does not match it.
    DigestInvalid,
    /// `MANIFEST_BLOB_UNKNOWN`, 400 (as CNCF Distribution answers it): a manifest
    /// references a blob or manifest the repository does not have.
    ManifestBlobUnknown,
    /// `MANIFEST_INVALID`, 400: the manifest is not valid JSON, has an unknown media type,
    /// or fails a structural check.
    ManifestInvalid,
    /// `MANIFEST_UNKNOWN`, 404: no manifest by that tag or digest.
    ManifestUnknown,
    /// `NAME_INVALID`, 400: the repository name does not match the spec's grammar.
    NameInvalid,
    /// `NAME_UNKNOWN`, 404: no such repository.
    NameUnknown,
    /// `SIZE_INVALID`, 400: a length does not match the content, or exceeds a limit.
    SizeInvalid,
    /// `UNAUTHORIZED`, 401: authentication is required.
    Unauthorized,
    /// `DENIED`, 403: a policy forbids the operation to this client (missing credentials,
    /// a repository outside the user's patterns, say).
    Denied,
    /// `UNSUPPORTED`, 405: this registry does not implement or offer the operation (a push
    /// to the pull-only agent, say), or a parameter
    /// asks for something it does not support (a digest algorithm other than sha256).
    Unsupported,
    /// `TOOMANYREQUESTS`, 429: a limit on concurrent work was reached; retry later.
    TooManyRequests,
    /// `RANGE_INVALID`, 416: a `Range` or `Content-Range` cannot be satisfied (a chunk out
    /// of order, a range past the end of a blob).
    RangeInvalid,
    /// `PAGINATION_NUMBER_INVALID`, 400: the `n` query parameter is not a number.
    PaginationNumberInvalid,
    /// `UNKNOWN`, 500: the registry failed (CNCF Distribution's code for it; the spec has
    /// none).
    Unknown,
}

impl ErrorCode {
    /// The code as written in error bodies, e.g. `BLOB_UNKNOWN`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BlobUnknown => "BLOB_UNKNOWN",
            Self::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            Self::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Self::DigestInvalid => "DIGEST_INVALID",
            Self::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Self::ManifestInvalid => "MANIFEST_INVALID",
            Self::ManifestUnknown => "MANIFEST_UNKNOWN",
            Self::NameInvalid => "NAME_INVALID",
            Self::NameUnknown => "NAME_UNKNOWN",
            Self::SizeInvalid => "SIZE_INVALID",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::Denied => "DENIED",
            Self::Unsupported => "UNSUPPORTED",
            Self::TooManyRequests => "TOOMANYREQUESTS",
            Self::RangeInvalid => "RANGE_INVALID",
            Self::PaginationNumberInvalid => "PAGINATION_NUMBER_INVALID",
            Self::Unknown => "UNKNOWN",
        }
    }

    /// The HTTP status this code is answered with unless an [`ApiError`] says otherwise.
    pub const fn status(self) -> StatusCode {
        match self {
            Self::BlobUnknown
            | Self::BlobUploadUnknown
            | Self::ManifestUnknown
            | Self::NameUnknown => StatusCode::NOT_FOUND,
            Self::BlobUploadInvalid
            | Self::DigestInvalid
            | Self::ManifestBlobUnknown
            | Self::ManifestInvalid
            | Self::NameInvalid
            | Self::SizeInvalid
            | Self::PaginationNumberInvalid => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Denied => StatusCode::FORBIDDEN,
            Self::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Self::RangeInvalid => StatusCode::RANGE_NOT_SATISFIABLE,
            Self::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One error as the `/v2/` API reports it: a code, a message for humans, optional
/// machine-readable detail, and the HTTP status of the response.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    code: ErrorCode,
    status: StatusCode,
    message: String,
    detail: Option<serde_json::Value>,
}

impl ApiError {
    /// An error with `code`'s usual status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            status: code.status(),
            message: message.into(),
            detail: None,
        }
    }

    /// Adds machine-readable detail (the spec leaves its shape to the registry).
    #[must_use]
    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }

    /// Answers with `status` instead of the code's usual one.
    #[must_use]
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// `DIGEST_INVALID`: the bytes pushed hash to `actual`, not `expected`.
    pub(crate) fn digest_invalid(expected: &Digest, actual: &Digest) -> Self {
        Self::new(
            ErrorCode::DigestInvalid,
            format!("uploaded content has digest {actual}, not {expected}"),
        )
        .with_detail(
            serde_json::json!({"expected": expected.to_string(), "actual": actual.to_string()}),
        )
    }

    /// The code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The HTTP status of the response.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The detail, if any.
    pub fn detail(&self) -> Option<&serde_json::Value> {
        self.detail.as_ref()
    }

    /// The response body: `{"errors":[{"code":…,"message":…,"detail":…}]}`.
    pub fn to_json(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Body<'a> {
            errors: [Entry<'a>; 1],
        }
        #[derive(Serialize)]
        struct Entry<'a> {
            code: &'static str,
            message: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            detail: Option<&'a serde_json::Value>,
        }
        let body = Body {
            errors: [Entry {
                code: self.code.as_str(),
                message: &self.message,
                detail: self.detail.as_ref(),
            }],
        };
        // Serializing strings and JSON values into memory cannot fail.
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_has_the_spec_shape() {
        let error = ApiError::new(ErrorCode::BlobUnknown, "blob unknown to registry")
            .with_detail(serde_json::json!({"digest": "sha256:00"}));
        assert_eq!(error.status(), StatusCode::NOT_FOUND);
        let body: serde_json::Value = serde_json::from_slice(&error.to_json()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"errors": [{
                "code": "BLOB_UNKNOWN",
                "message": "blob unknown to registry",
                "detail": {"digest": "sha256:00"},
            }]})
        );
        let plain = ApiError::new(ErrorCode::Denied, "no");
        let body: serde_json::Value = serde_json::from_slice(&plain.to_json()).unwrap();
        assert!(body["errors"][0].get("detail").is_none());
    }

    #[test]
    fn statuses_follow_the_spec() {
        use ErrorCode::*;
        for (code, status) in [
            (BlobUnknown, 404),
            (BlobUploadInvalid, 400),
            (BlobUploadUnknown, 404),
            (DigestInvalid, 400),
            (ManifestBlobUnknown, 400),
            (ManifestInvalid, 400),
            (ManifestUnknown, 404),
            (NameInvalid, 400),
            (NameUnknown, 404),
            (SizeInvalid, 400),
            (Unauthorized, 401),
            (Denied, 403),
            (Unsupported, 405),
            (TooManyRequests, 429),
            (RangeInvalid, 416),
            (PaginationNumberInvalid, 400),
            (Unknown, 500),
        ] {
            assert_eq!(code.status().as_u16(), status, "{code}");
        }
        assert_eq!(ErrorCode::TooManyRequests.as_str(), "TOOMANYREQUESTS");
    }
}
