//! Repository names, tags, references and digests as the distribution spec writes them.
//!
//! Each type is validated when parsed, so a value that exists is safe to use as a path on
//! disk or in a URL: names are lowercase alphanumerics and `._-/`, never `..`; tags and
//! digests contain no `/`.

use std::fmt;
use std::str::FromStr;

use kraken_core::{Digest, DigestError};

use super::error::{ApiError, ErrorCode};

/// Longest repository name accepted, in bytes. The spec leaves the bound to registries and
/// notes that many clients stop at 255 (host name included).
pub const MAX_NAME_LEN: usize = 255;

/// Longest tag, in bytes (the spec's `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`).
pub const MAX_TAG_LEN: usize = 128;

/// A repository name: path components `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` separated by `/`,
/// at most [`MAX_NAME_LEN`] bytes.
#[derive(Clone, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct RepoName(String);

/// Why a string is not a repository name.
#[non_exhaustive]
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("repository name is empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`].
    #[error("repository name is {0} bytes long; at most {MAX_NAME_LEN} are allowed")]
    TooLong(usize),
    /// A `/`-separated component does not match `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
    #[error(
        "repository name component {0:?} must be lowercase letters and digits, joined by `.`, `_`, `__` or dashes"
    )]
    BadComponent(String),
}

impl RepoName {
    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for RepoName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong(s.len()));
        }
        for component in s.split('/') {
            if !valid_component(component) {
                let shown: String = component.chars().take(64).collect();
                return Err(NameError::BadComponent(shown));
            }
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for RepoName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Clone, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct Tag(String);

/// Why a string is not a tag.
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
#[error(
    "invalid tag {0:?}: a tag is 1 to {MAX_TAG_LEN} of `a-zA-Z0-9._-`, not starting with `.` or `-`"
)]
pub struct TagError(String);

impl Tag {
    /// The tag as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = TagError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= MAX_TAG_LEN
            && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
            && bytes
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if valid {
            Ok(Self(s.to_owned()))
        } else {
            Err(TagError(s.chars().take(MAX_TAG_LEN + 1).collect()))
        }
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Tag {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

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
    /// `MANIFEST_INVALID`, since the spec has no code of its own for tags.
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

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`: alphanumeric runs joined by exactly one of `.`, `_`,
/// `__`, or any number of `-`.
fn valid_component(component: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = component.as_bytes();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let dashes = separator.bytes().all(|b| b == b'-');
        if !(dashes || matches!(separator, "." | "_" | "__")) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_spec_grammar() {
        for good in [
            "a",
            "library/ubuntu",
            "a/b/c/d",
            "foo.bar",
            "foo_bar",
            "foo__bar",
            "foo---bar",
            "0",
            "my-org/my.repo_name/x9",
            &"a".repeat(MAX_NAME_LEN),
        ] {
            assert!(good.parse::<RepoName>().is_ok(), "{good}");
        }
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            "A",
            "a/B",
            "a..b",
            "a.-b",
            "a___b",
            "_a",
            "a_",
            "-a",
            "a-",
            "..",
            "a/../b",
            "a b",
            "a:b",
            "é",
            "a/_uploads",
            &"a".repeat(MAX_NAME_LEN + 1),
        ] {
            assert!(bad.parse::<RepoName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn tags_follow_the_spec_grammar() {
        for good in ["latest", "v1.0.0", "_x", "A-b_c.d", "0", &"t".repeat(128)] {
            assert!(good.parse::<Tag>().is_ok(), "{good}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", "a b", "ä", &"t".repeat(129)] {
            assert!(bad.parse::<Tag>().is_err(), "{bad}");
        }
    }

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
