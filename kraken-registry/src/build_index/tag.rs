//! Tag names: `repository:tag`, checked against the OCI distribution spec's grammar.

use std::fmt;
use std::str::FromStr;

use kraken_core::name::{NameError, RepoName, Tag, TagError};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// A tag's full name, `repository:tag` (`library/ubuntu:22.04`): the repository is a
/// [`RepoName`] and the tag a [`Tag`], in the OCI distribution spec's grammar.
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
        RepoName::validate(repository).map_err(|e| {
            invalid(match e {
                NameError::Empty | NameError::TooLong(_) => {
                    "the repository must have 1 to 255 characters"
                }
                _ => {
                    "the repository must be lowercase letters and digits, separated by '.', '_', \
                     '__', dashes or '/'"
                }
            })
        })?;
        Tag::validate(tag).map_err(|e| {
            invalid(match e {
                TagError::Empty | TagError::TooLong(_) => "the tag must have 1 to 128 characters",
                _ => {
                    "the tag must be letters, digits, '_', '.' or '-', not starting with '.' or '-'"
                }
            })
        })?;
        Ok(Self {
            full: full.to_owned(),
            colon,
        })
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
