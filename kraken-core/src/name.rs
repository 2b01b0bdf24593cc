//! Repository names and tags, in the OCI distribution spec's grammar.
//!
//! This is the one definition every Kraken crate checks names against: the registry's `/v2/`
//! API, the build-index's `repository:tag` names and the registry backend's URLs. A value
//! that passes is safe as a path on disk or in a URL: names are lowercase alphanumerics joined
//! by `.`, `_`, `__`, dashes and `/` (so never `..`, an empty component or a leading `/`),
//! and tags contain no `/` or `:`.
//!
//! ```
//! use kraken_core::name::{RepoName, Tag};
//!
//! let repo: RepoName = "library/ubuntu".parse().unwrap();
//! let tag: Tag = "22.04".parse().unwrap();
//! assert_eq!(format!("{repo}:{tag}"), "library/ubuntu:22.04");
//! assert!("Library/Ubuntu".parse::<RepoName>().is_err());
//! assert!(Tag::validate(".hidden").is_err());
//! ```

use std::fmt;
use std::str::FromStr;

use crate::serde_str::serde_via_str;

/// Longest repository name, in bytes. The spec leaves the bound to registries and notes that
/// many clients stop at 255 for the host name, `/` and the name together; Docker Hub and
/// CNCF Distribution cap the name itself at 255, and so do we.
pub const MAX_REPO_NAME_LEN: usize = 255;

/// Longest tag, in bytes (the spec's `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`).
pub const MAX_TAG_LEN: usize = 128;

/// A repository name: `/`-separated components, each
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, at most [`MAX_REPO_NAME_LEN`] bytes
/// (`library/ubuntu`, `my-org/app.v2`).
#[derive(Clone, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct RepoName(String);

/// Why a string is not a repository name.
#[non_exhaustive]
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("repository name is empty")]
    Empty,
    /// The name is longer than [`MAX_REPO_NAME_LEN`].
    #[error("repository name is {0} bytes long; at most {MAX_REPO_NAME_LEN} are allowed")]
    TooLong(usize),
    /// A `/`-separated component does not match `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` (shown
    /// cut at 64 characters).
    #[error(
        "repository name component {0:?} must be lowercase letters and digits, joined by `.`, `_`, `__` or dashes"
    )]
    BadComponent(String),
}

impl RepoName {
    /// Checks `name` against the grammar without keeping it: for callers that only need to
    /// know (a URL built from a name, a `repository:tag`).
    pub fn validate(name: &str) -> Result<(), NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > MAX_REPO_NAME_LEN {
            return Err(NameError::TooLong(name.len()));
        }
        match name.split('/').find(|c| !is_name_component(c)) {
            Some(component) => Err(NameError::BadComponent(
                component.chars().take(64).collect(),
            )),
            None => Ok(()),
        }
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`: alphanumeric runs joined by exactly one of `.`, `_`,
/// `__`, or any number of `-`.
fn is_name_component(component: &str) -> bool {
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut rest = component.as_bytes();
    loop {
        let run = rest.iter().take_while(|b| alnum(b)).count();
        if run == 0 {
            // Empty component, or a separator at the start, at the end or after another.
            return false;
        }
        rest = &rest[run..];
        if rest.is_empty() {
            return true;
        }
        let separator_len = rest.iter().take_while(|b| !alnum(b)).count();
        let (separator, after) = rest.split_at(separator_len);
        let valid = match separator {
            b"." | b"_" | b"__" => true,
            dashes => dashes.iter().all(|&b| b == b'-'),
        };
        if !valid {
            return false;
        }
        rest = after;
    }
}

impl FromStr for RepoName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::validate(s)?;
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

serde_via_str!(RepoName);

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}` (`latest`, `v1.2.3`, `sha256-<hex>`).
#[derive(Clone, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct Tag(String);

/// Why a string is not a tag.
#[non_exhaustive]
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
pub enum TagError {
    /// The tag is empty.
    #[error("tag is empty")]
    Empty,
    /// The tag is longer than [`MAX_TAG_LEN`].
    #[error("tag is {0} bytes long; at most {MAX_TAG_LEN} are allowed")]
    TooLong(usize),
    /// The tag has a character outside `a-zA-Z0-9._-`, or starts with `.` or `-` (shown cut
    /// at [`MAX_TAG_LEN`] characters).
    #[error(
        "invalid tag {0:?}: a tag is letters, digits, `_`, `.` and `-`, not starting with `.` or `-`"
    )]
    BadCharacter(String),
}

impl Tag {
    /// Checks `tag` against the grammar without keeping it.
    pub fn validate(tag: &str) -> Result<(), TagError> {
        let bytes = tag.as_bytes();
        let Some(&first) = bytes.first() else {
            return Err(TagError::Empty);
        };
        if bytes.len() > MAX_TAG_LEN {
            return Err(TagError::TooLong(bytes.len()));
        }
        let valid = (first.is_ascii_alphanumeric() || first == b'_')
            && bytes
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if valid {
            Ok(())
        } else {
            Err(TagError::BadCharacter(
                tag.chars().take(MAX_TAG_LEN).collect(),
            ))
        }
    }

    /// The tag as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = TagError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::validate(s)?;
        Ok(Self(s.to_owned()))
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

serde_via_str!(Tag);

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;

    use proptest::prelude::*;
    use regex_lite::Regex;

    use super::*;

    /// The spec's expressions, as the oracle the hand-written matchers are checked against.
    const NAME_REGEX: &str =
        r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$";
    const TAG_REGEX: &str = r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$";

    fn name_oracle(s: &str) -> bool {
        static NAME: LazyLock<Regex> = LazyLock::new(|| Regex::new(NAME_REGEX).unwrap());
        NAME.is_match(s) && s.len() <= MAX_REPO_NAME_LEN
    }

    fn tag_oracle(s: &str) -> bool {
        static TAG: LazyLock<Regex> = LazyLock::new(|| Regex::new(TAG_REGEX).unwrap());
        TAG.is_match(s)
    }

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
            &"a".repeat(MAX_REPO_NAME_LEN),
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
            &"a".repeat(MAX_REPO_NAME_LEN + 1),
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
    fn errors_say_what_is_wrong() {
        assert_eq!(RepoName::validate(""), Err(NameError::Empty));
        assert_eq!(
            RepoName::validate(&"a".repeat(256)),
            Err(NameError::TooLong(256))
        );
        assert_eq!(
            RepoName::validate("library/Ubuntu"),
            Err(NameError::BadComponent("Ubuntu".into()))
        );
        assert_eq!(Tag::validate(""), Err(TagError::Empty));
        assert_eq!(Tag::validate(&"t".repeat(129)), Err(TagError::TooLong(129)));
        assert_eq!(
            Tag::validate("-x"),
            Err(TagError::BadCharacter("-x".into()))
        );
    }

    #[test]
    fn names_and_tags_are_strings_in_serde() {
        let repo: RepoName = serde_json::from_str(r#""library/ubuntu""#).unwrap();
        assert_eq!(serde_json::to_string(&repo).unwrap(), r#""library/ubuntu""#);
        assert!(serde_json::from_str::<RepoName>(r#""Ubuntu""#).is_err());
        let tag: Tag = serde_json::from_str(r#""v1""#).unwrap();
        assert_eq!(tag.as_str(), "v1");
        assert!(serde_json::from_str::<Tag>(r#"".v1""#).is_err());
    }

    /// Valid names, built from the grammar: components of alphanumeric runs joined by the
    /// allowed separators, themselves joined by `/`.
    fn valid_name() -> impl Strategy<Value = String> {
        let component = "[a-z0-9]{1,8}((\\.|_|__|-{1,3})[a-z0-9]{1,8}){0,3}";
        prop::collection::vec(component, 1..5)
            .prop_map(|components| components.join("/"))
            .prop_filter("within the length limit", |name| {
                name.len() <= MAX_REPO_NAME_LEN
            })
    }

    /// What no valid name may contain: characters outside `a-z0-9._-/`, and separator runs
    /// the grammar has no place for.
    fn forbidden() -> impl Strategy<Value = String> {
        prop_oneof![
            "[A-Z:@ %\\\\?#é\u{0}\n+~]".prop_map(String::from),
            Just("..".to_owned()),
            Just("___".to_owned()),
            Just("._".to_owned()),
            Just("_.".to_owned()),
            Just("-.".to_owned()),
            Just(".-".to_owned()),
            Just("-_".to_owned()),
            Just("//".to_owned()),
        ]
    }

    /// Strings near the grammar, valid or not: alphanumeric runs, separators, slashes and a
    /// few forbidden characters in any order.
    fn name_like() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            4 => "[a-z0-9]{1,3}",
            1 => "[._/-]",
            1 => Just("__".to_owned()),
            1 => Just("--".to_owned()),
            1 => "[A:é]",
        ];
        prop::collection::vec(token, 0..12).prop_map(|tokens| tokens.concat())
    }

    proptest! {
        #[test]
        fn names_built_from_the_grammar_are_accepted(name in valid_name()) {
            prop_assert_eq!(RepoName::validate(&name), Ok(()));
            prop_assert!(name_oracle(&name));
        }

        #[test]
        fn a_forbidden_character_or_separator_anywhere_is_refused(
            name in valid_name(),
            insert in forbidden(),
            at in any::<prop::sample::Index>(),
        ) {
            // Every position is a char boundary: valid names are ASCII.
            let at = at.index(name.len() + 1);
            let mutated = format!("{}{insert}{}", &name[..at], &name[at..]);
            prop_assert!(RepoName::validate(&mutated).is_err(), "{:?}", mutated);
            prop_assert!(!name_oracle(&mutated));
        }

        #[test]
        fn a_separator_or_slash_at_either_end_is_refused(
            name in valid_name(),
            separator in "[._/-]",
            at_end in any::<bool>(),
        ) {
            let mutated = if at_end {
                format!("{name}{separator}")
            } else {
                format!("{separator}{name}")
            };
            prop_assert!(RepoName::validate(&mutated).is_err(), "{:?}", mutated);
        }

        #[test]
        fn names_agree_with_the_spec_regex(s in name_like()) {
            prop_assert_eq!(RepoName::validate(&s).is_ok(), name_oracle(&s), "{:?}", s);
        }

        #[test]
        fn long_names_agree_with_the_spec_regex_and_limit(
            s in "[a-z0-9]{1,9}((\\.|_|__|-{1,2}|/)[a-z0-9]{1,9}){20,40}"
        ) {
            prop_assert_eq!(RepoName::validate(&s).is_ok(), name_oracle(&s), "{:?}", s);
        }

        #[test]
        fn tags_agree_with_the_spec_regex(s in "[a-zA-Z0-9._\\-/: é]{0,140}") {
            prop_assert_eq!(Tag::validate(&s).is_ok(), tag_oracle(&s), "{:?}", s);
        }

        #[test]
        fn tags_built_from_the_grammar_are_accepted(tag in "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}") {
            prop_assert_eq!(Tag::validate(&tag), Ok(()));
        }
    }
}
