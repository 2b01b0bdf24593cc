//! Settings of the `/v2/` handler.

use std::path::PathBuf;
use std::time::Duration;

use kraken_core::ByteSize;
use serde::{Deserialize, Serialize};

use super::manifest::MAX_MANIFEST_SIZE;

/// Settings of an [`OciHandler`](super::OciHandler): where uploads go and the limits that
/// bound disk, memory and work per client.
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OciConfig {
    /// Directory of uploads in progress. Emptied when the handler starts: sessions do not
    /// survive a restart. Required.
    pub upload_dir: PathBuf,
    /// Largest blob accepted; a larger upload is refused with `413 SIZE_INVALID` and
    /// nothing is stored. Default: 10GiB.
    #[serde(default = "defaults::max_blob_size")]
    pub max_blob_size: ByteSize,
    /// Largest manifest accepted (`413 MANIFEST_INVALID` above it); at most 4MiB, the
    /// parser's own bound. Default: 4MiB.
    #[serde(default = "defaults::max_manifest_size")]
    pub max_manifest_size: ByteSize,
    /// Most uploads in progress at once; more are refused with `429 TOOMANYREQUESTS`.
    /// Default: 1024.
    #[serde(default = "defaults::max_uploads")]
    pub max_uploads: usize,
    /// An upload not written to for this long is deleted. Default: 1h.
    #[serde(default = "defaults::upload_ttl", with = "humantime_serde")]
    pub upload_ttl: Duration,
    /// Most entries in one page of `tags/list` or `_catalog`, whatever `n` asks. Default:
    /// 1000.
    #[serde(default = "defaults::max_page")]
    pub max_page: usize,
}

impl OciConfig {
    /// Defaults, with uploads under `upload_dir`.
    pub fn new(upload_dir: impl Into<PathBuf>) -> Self {
        Self {
            upload_dir: upload_dir.into(),
            max_blob_size: defaults::max_blob_size(),
            max_manifest_size: defaults::max_manifest_size(),
            max_uploads: defaults::max_uploads(),
            upload_ttl: defaults::upload_ttl(),
            max_page: defaults::max_page(),
        }
    }
}

mod defaults {
    use super::*;

    pub(super) fn max_blob_size() -> ByteSize {
        ByteSize(10 << 30)
    }
    pub(super) fn max_manifest_size() -> ByteSize {
        ByteSize(MAX_MANIFEST_SIZE as u64)
    }
    pub(super) fn max_uploads() -> usize {
        1024
    }
    pub(super) fn upload_ttl() -> Duration {
        Duration::from_secs(3600)
    }
    pub(super) fn max_page() -> usize {
        1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_needs_only_the_upload_dir() {
        let config: OciConfig =
            toml::from_str(r#"upload_dir = "/var/lib/kraken/uploads""#).unwrap();
        assert_eq!(config.max_blob_size, ByteSize(10 << 30));
        assert_eq!(config.upload_ttl, Duration::from_secs(3600));
        let config: OciConfig = toml::from_str(
            "upload_dir = \"u\"\nmax_blob_size = \"1MiB\"\nupload_ttl = \"5m\"\nmax_uploads = 3",
        )
        .unwrap();
        assert_eq!(config.max_blob_size, ByteSize(1 << 20));
        assert_eq!(config.upload_ttl, Duration::from_secs(300));
        assert_eq!(config.max_uploads, 3);
        assert!(toml::from_str::<OciConfig>("max_uploads = 3").is_err());
        assert!(toml::from_str::<OciConfig>("upload_dir = \"u\"\nbogus = 1").is_err());
    }
}
