//! Repository names, tags, references and digests as the distribution spec writes them.
//!
//! Each type is validated when parsed, so a value that exists is safe to use as a path on
//! disk or in a URL: names are lowercase alphanumerics and `._-/`, never `..`; tags and
//! digests contain no `/`. Names and tags are [`kraken_core::name`]'s; this module adds
//! what the `/v2/` API makes of them: references and digests with the spec's error codes.

use std::fmt;

use kraken_core::{Digest, DigestError};

use super::error::{ApiError, ErrorCode};

// The grammar of names and tags is kraken-core's, shared with the build-index and the
// backends.
pub use kraken_core::name::{NameError, RepoName, Tag, TagError};

/// What follows `/manifests/`: a tag or a digest.
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub enum Reference {
    /// A tag.
    Tag(Tag),
    /// A digest.
    Digest(Digest),
}

impl Reference {
    /// Parses a reference: a digest when it contains `:` (tags cannot), else a tag. A bad
    /// digest is `DIGEST_INVALID` or `UNSUPPORTED` (see [`parse_digest`]); a bad tag is
    /// `MANIFEST_INVALID`, since the spec has no code of its own for tags (the handler
    /// answers a read or a delete of one `MANIFEST_UNKNOWN` instead: no manifest has it).
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        if s.contains(':') {
            parse_digest(s).map(Self::Digest)
        } else {
            s.parse::<Tag>()
                .map(Self::Tag)
                .map_err(|e| ApiError::new(ErrorCode::ManifestInvalid, e.to_string()))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tag(tag) => tag.fmt(f),
            Self::Digest(digest) => digest.fmt(f),
        }
    }
}

/// Parses a digest from a request, with the spec's error codes: a string that is not a
/// digest at all is `DIGEST_INVALID`; a well-formed digest of an algorithm this registry does
/// not implement (`sha512:…`) is `UNSUPPORTED` with status 400, since the request is valid
/// but asks for something missing here.
pub fn parse_digest(s: &str) -> Result<Digest, ApiError> {
    match s.parse::<Digest>() {
        Ok(digest) => Ok(digest),
        Err(DigestError::UnknownAlgorithm(_)) if well_formed_digest(s) => {
            let algorithm = s.split_once(':').map_or(s, |(a, _)| a);
            Err(ApiError::new(
                ErrorCode::Unsupported,
                format!("digest algorithm {algorithm:?} is not supported (only sha256 is)"),
            )
            .with_status(hyper::http::StatusCode::BAD_REQUEST))
        }
        Err(e) => Err(ApiError::new(ErrorCode::DigestInvalid, e.to_string())),
    }
}

/// The OCI image spec's digest grammar: `algorithm ":" encoded` with algorithm
/// `[a-z0-9]+([+._-][a-z0-9]+)*` and encoded `[a-zA-Z0-9=_-]+`.
fn well_formed_digest(s: &str) -> bool {
    let Some((algorithm, encoded)) = s.split_once(':') else {
        return false;
    };
    let algorithm_ok = algorithm.split(['+', '.', '_', '-']).all(|part| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    });
    let encoded_ok = !encoded.is_empty()
        && encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'));
    algorithm_ok && encoded_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_invalid_or_unsupported_as_the_spec_says() {
        let good = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(parse_digest(&good).unwrap().to_string(), good);
        let sha512 = format!("sha512:{}", "ab".repeat(64));
        let e = parse_digest(&sha512).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Unsupported);
        assert_eq!(e.status().as_u16(), 400);
        for bad in [
            "",
            "sha256",
            "sha256:",
            "sha256:abc",
            &format!("sha256:{}", "AB".repeat(32)),
            &format!("sha256:{}", "ab".repeat(33)),
            "SHA256:00",
            ":00",
            "sha512:",
            "sha 512:00",
        ] {
            assert_eq!(
                parse_digest(bad).unwrap_err().code(),
                ErrorCode::DigestInvalid,
                "{bad}"
            );
        }
    }

    #[test]
    fn references_are_tags_or_digests() {
        assert!(matches!(Reference::parse("latest"), Ok(Reference::Tag(_))));
        let digest = format!("sha256:{}", "0".repeat(64));
        assert!(matches!(
            Reference::parse(&digest),
            Ok(Reference::Digest(_))
        ));
        assert_eq!(
            Reference::parse("sha256:zz").unwrap_err().code(),
            ErrorCode::DigestInvalid
        );
        assert_eq!(
            Reference::parse("-bad").unwrap_err().code(),
            ErrorCode::ManifestInvalid
        );
    }
}
