//! Who is calling the tracker: the publishing credential, and what the tracker believes of
//! a request (its source address, whether it may publish or speak for an origin).

use std::fmt;
#[cfg(feature = "server")]
use std::net::IpAddr;
use std::path::Path;

#[cfg(feature = "server")]
use hyper::http::request::Parts;
use serde::{Deserialize, Serialize};
#[cfg(feature = "server")]
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};
#[cfg(feature = "server")]
use crate::http_server::ConnectionInfo;
#[cfg(feature = "server")]
use crate::tls::Role;

/// The shared secret that lets a client without an origin certificate publish metainfo and
/// announce as an origin: sent as `Authorization: Bearer <token>`, compared in constant
/// time. Its `Debug` form hides it.
#[derive(Clone, Deserialize, Eq, PartialEq, Serialize)]
#[serde(transparent)]
pub struct PublishToken(String);

impl PublishToken {
    /// A token; `None` if it is empty or is not a valid header value (visible ASCII).
    pub fn new(token: impl Into<String>) -> Option<Self> {
        let token = token.into();
        let usable = !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic());
        usable.then_some(Self(token))
    }

    /// Reads a token from a file (surrounding whitespace ignored), as secrets are mounted.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)?;
        Self::new(text.trim()).ok_or(Error::Config(
            "the publish token file is empty or holds characters other than visible ASCII",
        ))
    }

    /// The value of the `Authorization` header that presents it.
    pub(crate) fn header_value(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Whether an `Authorization` header value presents this token.
    #[cfg(feature = "server")]
    fn presented_in(&self, header: &[u8]) -> bool {
        let Some(presented) = header.strip_prefix(b"Bearer ") else {
            return false;
        };
        // Lengths are not secret; the bytes are compared in constant time.
        presented.ct_eq(self.0.as_bytes()).into()
    }
}

impl fmt::Debug for PublishToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PublishToken(<redacted>)")
    }
}

/// Marks a request handed to the service by code in its own process (the service used as a
/// [`Tracker`](super::Tracker)): such a caller is the embedder itself, trusted to publish.
/// Only code can attach it; nothing a client sends becomes a request extension.
#[cfg(feature = "server")]
#[derive(Clone, Copy, Debug)]
pub(super) struct InProcess;

/// What the tracker believes of one request.
#[cfg(feature = "server")]
#[derive(Clone, Copy, Debug)]
pub(super) struct Caller {
    /// The connection's source address; `None` for a request that crossed no listener
    /// (handed to the service directly).
    pub(super) source: Option<IpAddr>,
    /// Authenticated as a publisher: an origin or operator certificate, or the token.
    pub(super) publisher: bool,
}

#[cfg(feature = "server")]
impl Caller {
    /// Reads the connection facts and the `Authorization` header of a request.
    pub(super) fn of(parts: &Parts, token: Option<&PublishToken>) -> Self {
        let info = parts.extensions.get::<ConnectionInfo>();
        let certified = info.is_some_and(|info| {
            info.client_certificate && matches!(info.role, Some(Role::Origin | Role::Operator))
        });
        let presented = token.is_some_and(|token| {
            parts
                .headers
                .get(hyper::http::header::AUTHORIZATION)
                .is_some_and(|value| token.presented_in(value.as_bytes()))
        });
        let in_process = parts.extensions.get::<InProcess>().is_some();
        Self {
            source: info.map(|info| info.remote.ip().to_canonical()),
            publisher: certified || presented || in_process,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_whole_and_hidden() {
        let token = PublishToken::new("s3cret").unwrap();
        assert!(token.presented_in(b"Bearer s3cret"));
        for wrong in [
            &b"Bearer s3cre"[..],
            b"Bearer s3cret2",
            b"s3cret",
            b"Basic s3cret",
            b"",
        ] {
            assert!(!token.presented_in(wrong), "{wrong:?}");
        }
        assert!(!format!("{token:?}").contains("s3cret"));
        assert!(PublishToken::new("").is_none());
        assert!(PublishToken::new("a b").is_none());
    }
}
