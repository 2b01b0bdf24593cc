//! Name layouts: how a blob name becomes a storage path, and back.

use std::str::FromStr;

use kraken_core::Digest;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Directory below a backend's root where the fs and WebHDFS backends write uploads before
/// renaming them into place. No name maps below it and listings skip it.
pub(crate) const UPLOAD_DIR: &str = "_uploads";
/// Where CNCF Distribution keeps blob data inside its storage root.
const DOCKER_BLOBS: &str = "docker/registry/v2/blobs/";
/// Longest name any layout accepts; far above real digests and paths, far below what
/// would strain a server.
const MAX_NAME_LEN: usize = 1024;

/// How a path-based backend maps a blob name to a path below its root.
///
/// Configured as `layout = "identity"` (the default) or `layout = "docker_blob"`.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, Deserialize, Eq, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NameLayout {
    /// The name is the path: `a/b/c` is stored at `<root>/a/b/c`. Names may contain `/` but
    /// no empty, `.` or `..` segments, so they never leave the root.
    #[default]
    Identity,
    /// CNCF Distribution's blob layout, so a bucket an existing registry wrote can be read:
    /// `sha256:abcd…` is stored at `<root>/docker/registry/v2/blobs/sha256/ab/abcd…/data`.
    /// Names must be digests.
    DockerBlob,
}

impl NameLayout {
    /// The relative path (no leading `/`) of `name`.
    pub fn path(self, name: &str) -> Result<String> {
        match self {
            Self::Identity => {
                check_relative_path(name)?;
                Ok(name.to_owned())
            }
            Self::DockerBlob => {
                let digest = Digest::from_str(name).map_err(|_| Error::InvalidName {
                    name: name.to_owned(),
                    reason: "the docker_blob layout needs a digest such as sha256:<64 hex>",
                })?;
                let hex = digest.hex();
                Ok(format!(
                    "{DOCKER_BLOBS}{}/{}/{hex}/data",
                    digest.algorithm(),
                    &hex[..2]
                ))
            }
        }
    }

    /// Like [`NameLayout::path`], but refusing names that map into [`UPLOAD_DIR`], for
    /// backends that stage uploads there.
    pub(crate) fn path_outside_uploads(self, name: &str) -> Result<String> {
        let path = self.path(name)?;
        if is_upload_path(&path) {
            return Err(Error::InvalidName {
                name: name.to_owned(),
                reason: "the _uploads directory is reserved for uploads in progress",
            });
        }
        Ok(path)
    }

    /// The name stored at relative `path`, or `None` if no name maps to it (a file some
    /// other program put there).
    pub fn name(self, path: &str) -> Option<String> {
        match self {
            Self::Identity => check_relative_path(path).ok().map(|()| path.to_owned()),
            Self::DockerBlob => {
                let rest = path.strip_prefix(DOCKER_BLOBS)?.strip_suffix("/data")?;
                let mut parts = rest.split('/');
                let (algorithm, shard, hex) = (parts.next()?, parts.next()?, parts.next()?);
                if parts.next().is_some() || !hex.starts_with(shard) || shard.len() != 2 {
                    return None;
                }
                let digest = Digest::from_str(&format!("{algorithm}:{hex}")).ok()?;
                Some(digest.to_string())
            }
        }
    }

    /// The directory (empty, or ending in `/`) below which every name starting with
    /// `prefix` is stored: where a listing has to look.
    pub fn list_dir(self, prefix: &str) -> String {
        match self {
            Self::Identity => match prefix.rfind('/') {
                Some(slash) => prefix[..=slash].to_owned(),
                None => String::new(),
            },
            Self::DockerBlob => match prefix.split_once(':') {
                Some((algorithm, hex))
                    if hex.len() >= 2 && hex.is_char_boundary(2) && is_plain_segment(algorithm) =>
                {
                    format!("{DOCKER_BLOBS}{algorithm}/{}/", &hex[..2])
                }
                Some((algorithm, _)) if is_plain_segment(algorithm) => {
                    format!("{DOCKER_BLOBS}{algorithm}/")
                }
                _ => DOCKER_BLOBS.to_owned(),
            },
        }
    }
}

/// Whether relative `path` lies in [`UPLOAD_DIR`].
pub(crate) fn is_upload_path(path: &str) -> bool {
    path.split('/').next() == Some(UPLOAD_DIR)
}

/// A fresh relative path in [`UPLOAD_DIR`] to stage an upload at.
pub(crate) fn temp_upload_path() -> String {
    format!("{UPLOAD_DIR}/{:016x}", rand::random::<u64>())
}

/// Joins a backend root (may be empty, with or without slashes) and a relative path.
pub(crate) fn join_root(root: &str, path: &str) -> String {
    let root = root.trim_matches('/');
    if root.is_empty() {
        path.to_owned()
    } else {
        format!("{root}/{path}")
    }
}

/// Rejects names that are not plain relative paths: empty, absolute, with empty, `.` or
/// `..` segments, backslashes, control characters, or longer than [`MAX_NAME_LEN`].
fn check_relative_path(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("longer than 1024 bytes")
    } else if name.chars().any(|c| c.is_control() || c == '\\') {
        Some("contains a control character or a backslash")
    } else if !name.split('/').all(is_plain_segment) {
        Some("has an empty, '.' or '..' segment, or starts with '/'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

fn is_plain_segment(segment: &str) -> bool {
    !matches!(segment, "" | "." | "..") && !segment.contains('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789";

    #[test]
    fn identity_rejects_names_that_escape_the_root() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "a/./b",
            "a/",
            "a\\..\\b",
            "a\0b",
        ] {
            assert!(
                matches!(
                    NameLayout::Identity.path(bad),
                    Err(Error::InvalidName { .. })
                ),
                "{bad:?} was accepted"
            );
        }
        assert_eq!(NameLayout::Identity.path("a/b.c").unwrap(), "a/b.c");
        assert!(NameLayout::Identity.path(&"x".repeat(2000)).is_err());
    }

    #[test]
    fn docker_blob_layout_matches_distribution_and_round_trips() {
        let name = format!("sha256:{HEX}");
        let path = NameLayout::DockerBlob.path(&name).unwrap();
        assert_eq!(
            path,
            format!("docker/registry/v2/blobs/sha256/ab/{HEX}/data")
        );
        assert_eq!(NameLayout::DockerBlob.name(&path), Some(name.clone()));
        assert!(NameLayout::DockerBlob.path("../../etc").is_err());
        assert_eq!(
            NameLayout::DockerBlob.name(&format!("docker/registry/v2/blobs/sha256/cd/{HEX}/data")),
            None,
            "a blob under the wrong shard is not a name"
        );
        assert_eq!(
            NameLayout::DockerBlob.list_dir("sha256:ab"),
            "docker/registry/v2/blobs/sha256/ab/"
        );
        assert_eq!(NameLayout::DockerBlob.list_dir(""), DOCKER_BLOBS);
    }

    #[test]
    fn identity_lists_from_the_prefix_directory() {
        assert_eq!(NameLayout::Identity.list_dir("a/b/c"), "a/b/");
        assert_eq!(NameLayout::Identity.list_dir("abc"), "");
        assert_eq!(join_root("/kraken/", "a/b"), "kraken/a/b");
        assert_eq!(join_root("", "a"), "a");
    }
}
