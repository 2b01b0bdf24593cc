//! Tag names: `repository:tag`, checked against the OCI distribution spec's grammar.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// Longest repository name (the OCI distribution spec lets registries cap it; Docker Hub
/// and CNCF Distribution use 255).
pub const MAX_REPOSITORY_LEN: usize = 255;
/// Longest tag, per the OCI distribution spec.
pub const MAX_TAG_LEN: usize = 128;

/// A tag's full name, `repository:tag` (`library/ubuntu:22.04`): the repository matches
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*` and is at most
/// [`MAX_REPOSITORY_LEN`] bytes; the tag matches `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
/// Parse one with [`str::parse`] or build it with [`TagName::new`].
#[derive(Clone, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct TagName {
    full: String,
    colon: usize,
}

impl TagName {
    /// The tag `tag` of repository `repository`.
    pub fn new(repository: &str, tag: &str) -> Result<Self> {
        format!("{repository}:{tag}").parse()
    }

    /// The repository: `library/ubuntu`. Blobs of its images live in the origins under this
    /// namespace.
    pub fn repository(&self) -> &str {
        &self.full[..self.colon]
    }

    /// The tag within the repository: `22.04`.
    pub fn tag(&self) -> &str {
        &self.full[self.colon + 1..]
    }

    /// The full name: `library/ubuntu:22.04`.
    pub fn as_str(&self) -> &str {
        &self.full
    }
}

impl FromStr for TagName {
    type Err = Error;

    fn from_str(full: &str) -> Result<Self> {
        let invalid = |reason| Error::InvalidTag {
            tag: full.chars().take(300).collect(),
            reason,
        };
        let colon = full
            .rfind(':')
            .ok_or_else(|| invalid("no ':' between repository and tag"))?;
        let (repository, tag) = (&full[..colon], &full[colon + 1..]);
        if repository.is_empty() || repository.len() > MAX_REPOSITORY_LEN {
            return Err(invalid("the repository must have 1 to 255 characters"));
        }
        if !repository.split('/').all(is_path_component) {
            return Err(invalid(
                "the repository must be lowercase letters and digits, separated by '.', '_', \
                 '__', dashes or '/'",
            ));
        }
        if tag.is_empty() || tag.len() > MAX_TAG_LEN {
            return Err(invalid("the tag must have 1 to 128 characters"));
        }
        let mut chars = tag.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
            return Err(invalid(
                "the tag must be letters, digits, '_', '.' or '-', not starting with '.' or '-'",
            ));
        }
        Ok(Self {
            full: full.to_owned(),
            colon,
        })
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        let separator = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let ok = match &component[separator..i] {
            "." | "_" | "__" => true,
            dashes => dashes.bytes().all(|b| b == b'-'),
        };
        if !ok {
            return false;
        }
    }
}

impl fmt::Display for TagName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl Serialize for TagName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.full)
    }
}

impl<'de> Deserialize<'de> for TagName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let full = String::deserialize(deserializer)?;
        full.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_distribution_grammar() {
        let name: TagName = "library/ubuntu:22.04".parse().unwrap();
        assert_eq!((name.repository(), name.tag()), ("library/ubuntu", "22.04"));
        for good in [
            "a:b",
            "a-b/c__d/e.f:_x",
            "a--b:Latest-1.2_3",
            "registry/sub/x:v1",
        ] {
            assert!(good.parse::<TagName>().is_ok(), "{good}");
        }
        let long_repo = format!("{}:t", "a".repeat(256));
        let long_tag = format!("a:{}", "t".repeat(129));
        for bad in [
            "",
            "ubuntu",
            ":tag",
            "ubuntu:",
            "Ubuntu:1",
            "a/:1",
            "/a:1",
            "a//b:1",
            "a.-b:1",
            "a___b:1",
            "a:.x",
            "a:-x",
            "a:x/y",
            "a:x y",
            "a\u{e9}:1",
            "a:b\n",
            long_repo.as_str(),
            long_tag.as_str(),
        ] {
            assert!(bad.parse::<TagName>().is_err(), "{bad:?}");
        }
        assert_eq!(TagName::new("a/b", "1").unwrap().to_string(), "a/b:1");
    }
}
