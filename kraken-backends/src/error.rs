//! The one error type every backend returns.

use std::time::Duration;

/// A `Result` whose error is this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a backend operation failed.
///
/// The caller's next step depends on the cause: [`Error::NotFound`] means the blob is not
/// there (fetch it elsewhere, or answer 404), [`Error::is_transient`] errors may succeed when
/// retried, and the rest are mistakes in the request or the configuration that no retry fixes.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend has no blob under this name.
    #[error("blob {namespace}/{name} not found")]
    NotFound {
        /// The namespace the blob was looked up in.
        namespace: String,
        /// The name within the namespace.
        name: String,
    },
    /// This backend cannot perform the operation at all (a read-only backend asked to
    /// upload, an HTTP server asked to list). Route the operation to another backend.
    #[error("{backend} backend does not support {operation}")]
    Unsupported {
        /// The kind of backend, e.g. `"registry"`.
        backend: &'static str,
        /// The refused operation, e.g. `"upload"`.
        operation: &'static str,
    },
    /// No route of the [`Router`](crate::Router) matches the namespace. Add a route (a last
    /// `.*` route catches everything).
    #[error("no backend is configured for namespace {namespace:?}")]
    NoRoute {
        /// The unrouted namespace.
        namespace: String,
    },
    /// The name cannot be mapped to a storage path (it would escape the root, has empty
    /// segments, or is not a digest where the layout needs one). Fix the caller.
    #[error("invalid blob name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The requested byte range starts at or after the end of the blob.
    #[error("range starting at byte {offset} is past the end of a {size}-byte blob")]
    RangeNotSatisfiable {
        /// First byte asked for.
        offset: u64,
        /// The blob's size.
        size: u64,
    },
    /// The configuration cannot be used; the message says which field and why.
    #[error("invalid backend configuration: {0}")]
    Config(String),
    /// A readiness check failed; the message names each failing route and why.
    #[error("backends not ready: {0}")]
    NotReady(String),
    /// The server answered with a status this client does not expect.
    #[error("{method} {url} answered HTTP {status}")]
    Status {
        /// Request method.
        method: &'static str,
        /// Request URL (without credentials).
        url: String,
        /// The status code.
        status: u16,
    },
    /// The server's answer breaks the protocol: a body longer than announced, a missing
    /// header, JSON of the wrong shape, content whose digest does not match its name.
    #[error("invalid response from backend: {0}")]
    InvalidResponse(String),
    /// The request could not be sent or its answer could not be read (connection refused,
    /// reset, timed out). Usually transient.
    #[error("request to backend failed: {0}")]
    Transport(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A local or remote file operation failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// An error from the `object_store` client (S3, GCS, Azure) other than not-found.
    #[cfg(feature = "cloud")]
    #[error("object store request failed: {0}")]
    ObjectStore(#[source] object_store::Error),
    /// The operation took longer than allowed.
    #[error("backend operation timed out after {0:?}")]
    Timeout(Duration),
    /// A bug in this crate: an internal invariant did not hold. Please report it.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl Error {
    /// A [`Error::NotFound`] for this name.
    pub fn not_found(namespace: &str, name: &str) -> Self {
        Self::NotFound {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// Whether the blob does not exist (as opposed to the backend failing).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// Whether trying the same operation again may succeed: network failures, timeouts,
    /// server-side errors (HTTP 5xx), throttling (HTTP 429) and I/O errors. Not-found, bad
    /// names, bad ranges, unsupported operations and configuration errors are final.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport(_) | Self::Io(_) | Self::Timeout(_) => true,
            Self::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            #[cfg(feature = "cloud")]
            Self::ObjectStore(error) => !matches!(
                error,
                object_store::Error::NotFound { .. }
                    | object_store::Error::InvalidPath { .. }
                    | object_store::Error::NotSupported { .. }
                    | object_store::Error::NotImplemented { .. }
                    | object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
                    | object_store::Error::UnknownConfigurationKey { .. }
            ),
            Self::NotFound { .. }
            | Self::Unsupported { .. }
            | Self::NoRoute { .. }
            | Self::InvalidName { .. }
            | Self::RangeNotSatisfiable { .. }
            | Self::Config(_)
            | Self::NotReady(_)
            | Self::InvalidResponse(_)
            | Self::Internal(_) => false,
        }
    }

    pub(crate) fn transport(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Transport(Box::new(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_is_final_and_server_errors_are_transient() {
        let missing = Error::not_found("ns", "a");
        assert!(missing.is_not_found());
        assert!(!missing.is_transient());
        let status = |status| Error::Status {
            method: "GET",
            url: "http://x".into(),
            status,
        };
        assert!(status(503).is_transient());
        assert!(status(429).is_transient());
        assert!(!status(403).is_transient());
        assert!(!Error::InvalidResponse("x".into()).is_transient());
    }
}
