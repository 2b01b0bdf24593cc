//! Repository names, tags and references.

use kraken_core::name::{MAX_REPO_NAME_LEN, MAX_TAG_LEN, RepoName, Tag};
use kraken_registry::build_index::TagName;
use kraken_registry::oci::Reference;

/// Names, tags, `repository:tag` and `/manifests/` references: what parses re-validates,
/// prints back unchanged and is safe as a path (no `..`, empty component or leading `/`).
pub fn name_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(name) = text.parse::<RepoName>() {
        assert_eq!(name.as_str(), text);
        assert!(RepoName::validate(name.as_str()).is_ok());
        assert!(text.len() <= MAX_REPO_NAME_LEN);
        assert!(
            text.split('/')
                .all(|c| !c.is_empty() && c != ".." && c != ".")
        );
    }
    if let Ok(tag) = text.parse::<Tag>() {
        assert_eq!(tag.to_string(), text);
        assert!(text.len() <= MAX_TAG_LEN);
        assert!(!text.contains(['/', ':']) && !text.starts_with(['.', '-']));
    }
    if let Ok(full) = text.parse::<TagName>() {
        assert_eq!(format!("{}:{}", full.repository(), full.tag()), text);
        assert!(RepoName::validate(full.repository()).is_ok());
        assert!(Tag::validate(full.tag()).is_ok());
    }
    if let Ok(reference) = Reference::parse(text) {
        assert_eq!(reference.to_string(), text);
    }
}
