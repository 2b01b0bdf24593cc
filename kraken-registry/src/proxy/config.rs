//! The proxy's settings, as loaded from a TOML file by `kraken proxy --config`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use kraken_core::ByteSize;
use kraken_p2p::http_server::HttpLimits;
use kraken_p2p::metrics::MetricsConfig;
use kraken_p2p::tls::{ClientTlsConfig, ServerTlsConfig};
use serde::{Deserialize, Serialize};

use super::prefetch::PrefetchConfig;
use crate::address::check_host_port;
use crate::error::{Error, Result};
use crate::oci::OciConfig;
use crate::oci::manifest::MAX_MANIFEST_SIZE;
use crate::origin::ClusterConfig;

/// Settings of a [`Proxy`](super::Proxy).
///
/// ```toml
/// listen = "0.0.0.0:5000"
/// data_dir = "/var/lib/kraken/proxy"
///
/// [origins]
/// members = { dns = "origins.cluster-a:15002" }
///
/// [build_index]
/// addresses = ["build-index-1:15004", "build-index-2:15004"]
///
/// [auth]
/// htpasswd = "/etc/kraken/htpasswd"
/// tokens_sha256 = ["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Address the registry API (`/v2/…`) listens on. Required.
    pub listen: SocketAddr,
    /// Directory of uploads in progress (`uploads/`, emptied at start). Required.
    pub data_dir: PathBuf,
    /// The origin cluster that stores blobs and manifests: members (a static list or DNS),
    /// replicas and health checks, as a build-index's `[origins]`. Default: no members
    /// (every blob operation then fails).
    #[serde(default)]
    pub origins: ClusterConfig,
    /// The build-index cluster that stores tags.
    #[serde(default)]
    pub build_index: BuildIndexTarget,
    /// Who may push (and, optionally, pull). Default: no credentials, everything open.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Whether `DELETE /v2/<name>/manifests/<tag>` deletes the tag in the build-index, when
    /// `[delete] enabled` is off (it enables tag deletes too). Default: false (405).
    #[serde(default)]
    pub delete_tags: bool,
    /// Deletes of manifests, tags and blobs through the registry API (CNCF Distribution's
    /// `storage.delete.enabled`). Default: off (`405 UNSUPPORTED`).
    #[serde(default)]
    pub delete: DeleteConfig,
    /// Bounds on uploads, manifests and listings.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Timeouts, header bounds and connection limits of the HTTP listener (see
    /// [`HttpLimits`]).
    #[serde(default)]
    pub http: HttpLimits,
    /// TLS on the API, and which requests need a client certificate (see `docs/tls.md`).
    /// Default: plain HTTP.
    #[serde(default)]
    pub tls: Option<ServerTlsConfig>,
    /// TLS toward origins and build-indexes. Default: plain HTTP.
    #[serde(default)]
    pub client_tls: Option<ClientTlsConfig>,
    /// A separate listener for `/metrics` (every listener of the role answers it anyway;
    /// see `docs/metrics.md`). Default: none.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Prefetches and registry notifications: size filters, concurrency, bounds.
    #[serde(default)]
    pub prefetch: PrefetchConfig,
}

impl ProxyConfig {
    /// A config with defaults for everything but the listen address and data directory.
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen,
            data_dir: data_dir.into(),
            origins: ClusterConfig::default(),
            build_index: BuildIndexTarget::default(),
            auth: AuthConfig::default(),
            delete_tags: false,
            delete: DeleteConfig::default(),
            limits: LimitsConfig::default(),
            http: HttpLimits::default(),
            tls: None,
            client_tls: None,
            metrics: MetricsConfig::default(),
            prefetch: PrefetchConfig::default(),
        }
    }

    /// Checks the values that have no sensible meaning.
    pub fn validate(&self) -> Result<()> {
        self.http.validate().map_err(Error::Config)?;
        self.origins.validate()?;
        if self.build_index.addresses.is_empty() {
            return Err(Error::Config(
                "build_index.addresses must name at least one build-index".into(),
            ));
        }
        for address in &self.build_index.addresses {
            check_host_port("build_index.addresses", address)?;
        }
        if self.prefetch.min_blob_size > self.prefetch.max_blob_size {
            return Err(Error::Config(
                "prefetch.min_blob_size must not exceed prefetch.max_blob_size".into(),
            ));
        }
        if self.limits.max_page == 0 {
            return Err(Error::Config("limits.max_page must be at least 1".into()));
        }
        if self.limits.max_manifest_size.bytes() > MAX_MANIFEST_SIZE as u64 {
            return Err(Error::Config(format!(
                "limits.max_manifest_size must be at most {MAX_MANIFEST_SIZE} bytes"
            )));
        }
        self.auth.validate()
    }

    /// The `/v2/` handler's settings.
    pub(crate) fn oci(&self) -> OciConfig {
        let mut oci = OciConfig::new(self.data_dir.join("uploads"));
        oci.max_blob_size = self.limits.max_blob_size;
        oci.max_manifest_size = self.limits.max_manifest_size;
        oci.max_uploads = self.limits.max_uploads;
        oci.upload_ttl = self.limits.upload_ttl;
        oci.max_page = self.limits.max_page;
        oci
    }
}

/// `[delete]`: whether the registry API deletes (see `docs/proxy.md`, "Deletes").
///
/// ```toml
/// [delete]
/// enabled = true
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeleteConfig {
    /// `DELETE /v2/<name>/manifests/<digest>` removes the manifest from the origins and
    /// their backends and every tag of `<name>` pointing at it; `…/manifests/<tag>` removes
    /// the tag; `DELETE /v2/<name>/blobs/<digest>` removes the blob from the origins and
    /// their backends. Blobs are content-addressed across the cluster, so a deleted
    /// manifest or blob is gone for every repository. Default: false (`405 UNSUPPORTED`,
    /// with `Allow`).
    pub enabled: bool,
}

/// The build-index cluster the proxy puts tags to.
#[non_exhaustive]
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BuildIndexTarget {
    /// Build-indexes of the cluster (`host:port`), tried in order. Required (at least one).
    pub addresses: Vec<String>,
    /// Whether pushed tags are also replicated to the remote clusters the build-index is
    /// configured with for their repository (Go Kraken's proxy always asks for it; without
    /// remotes it does nothing). Default: true.
    #[serde(default = "yes")]
    pub replicate: bool,
}

impl BuildIndexTarget {
    /// The build-indexes at `addresses`, replicating.
    pub fn new<I>(addresses: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        Self {
            addresses: addresses.into_iter().map(Into::into).collect(),
            replicate: true,
        }
    }
}

fn yes() -> bool {
    true
}

/// Credentials. With none configured every request is allowed (mTLS through `[tls]` may
/// still guard writes). With any, writes need a valid user password or token, and reads
/// need one unless `anonymous_reads`. See `docs/proxy.md`.
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Users with bcrypt password hashes (`$2a$`, `$2b$`, `$2y$`). Default: none.
    pub users: Vec<UserConfig>,
    /// An htpasswd file of `name:bcrypt-hash` lines (as `htpasswd -B` writes them), read at
    /// start; its users are added to `users`. Default: none.
    pub htpasswd: Option<PathBuf>,
    /// Bearer tokens, as the lowercase hex SHA-256 of each token (`printf %s TOKEN |
    /// sha256sum`); a token is sent as `Authorization: Bearer TOKEN`, or as the password of
    /// basic auth with any user name. Default: none.
    pub tokens_sha256: Vec<String>,
    /// Whether reads (`GET`/`HEAD`, bar the `/v2/` ping) need no credentials. Default: true.
    pub anonymous_reads: bool,
    /// The realm named in `WWW-Authenticate`. Default: "kraken".
    pub realm: String,
    /// Which repositories users may read and push (see [`AccessRule`]). A user named by no
    /// rule may do everything. Default: none.
    pub access: Vec<AccessRule>,
    /// Threads that run bcrypt, apart from those that move blobs. Default: 2.
    pub password_threads: usize,
    /// Password checks waiting for those threads; beyond it a check is answered `503` with
    /// `Retry-After`. Default: 64.
    pub password_queue: usize,
    /// Wrong passwords (of known users) one client address may send a minute; beyond it
    /// its password checks are answered `429` without hashing until the minute is over.
    /// Default: 20.
    pub max_failures_per_minute: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            users: Vec::new(),
            htpasswd: None,
            tokens_sha256: Vec::new(),
            anonymous_reads: true,
            realm: "kraken".into(),
            access: Vec::new(),
            password_threads: 2,
            password_queue: 64,
            max_failures_per_minute: 20,
        }
    }
}

impl AuthConfig {
    fn validate(&self) -> Result<()> {
        for token in &self.tokens_sha256 {
            if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::Config(
                    "auth.tokens_sha256: each entry must be 64 hex digits".into(),
                ));
            }
        }
        for user in &self.users {
            user.validate()?;
        }
        if self.password_threads == 0 || self.password_queue == 0 {
            return Err(Error::Config(
                "auth.password_threads and auth.password_queue must be at least 1".into(),
            ));
        }
        super::access::RepositoryAccess::new(&self.access)?;
        if self.realm.contains('"') || self.realm.chars().any(char::is_control) {
            return Err(Error::Config(
                "auth.realm must not contain quotes or control characters".into(),
            ));
        }
        Ok(())
    }
}

/// A user allowed to push.
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The user name. Required.
    pub name: String,
    /// The bcrypt hash of the password (`htpasswd -nbB NAME PASSWORD`, the part after
    /// `:`). Required.
    pub bcrypt: String,
}

impl UserConfig {
    /// User `name` with password hash `bcrypt`.
    pub fn new(name: impl Into<String>, bcrypt: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            bcrypt: bcrypt.into(),
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.name.is_empty() || self.name.contains(':') {
            return Err(Error::Config(format!(
                "auth user {:?}: a name is not empty and has no ':'",
                self.name
            )));
        }
        if !["$2a$", "$2b$", "$2y$", "$2x$"]
            .iter()
            .any(|p| self.bcrypt.starts_with(p))
        {
            return Err(Error::Config(format!(
                "auth user {:?}: the password hash is not bcrypt ($2b$…)",
                self.name
            )));
        }
        Ok(())
    }
}

/// What one user may do to the repositories whose whole name matches a pattern.
///
/// ```toml
/// [[auth.access]]
/// user = "team-a-ci"
/// repositories = "team-a/.*"
/// access = "write"
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRule {
    /// The user (of `users` or the htpasswd file). Required.
    pub user: String,
    /// A regular expression a repository's whole name must match (`team-a/.*`). Required.
    pub repositories: String,
    /// `read` (pull) or `write` (pull and push). Required.
    pub access: AccessLevel,
}

impl AccessRule {
    /// `user` may `access` the repositories matching `repositories`.
    pub fn new(
        user: impl Into<String>,
        repositories: impl Into<String>,
        access: AccessLevel,
    ) -> Self {
        Self {
            user: user.into(),
            repositories: repositories.into(),
            access,
        }
    }
}

/// What an [`AccessRule`] allows; `write` includes `read`.
#[derive(Clone, Copy, Debug, Eq, Ord, PartialEq, PartialOrd, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessLevel {
    /// `GET` and `HEAD`: pulls.
    Read,
    /// Every method: pushes and deletes too.
    Write,
}

impl std::fmt::Display for AccessLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Read => "read",
            Self::Write => "write",
        })
    }
}

/// Bounds on what one request may ask or cause.
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest blob accepted (`413 SIZE_INVALID` above it). Default: 10GiB.
    pub max_blob_size: ByteSize,
    /// Largest manifest accepted, and read back from the origins; at most 4MiB. Default:
    /// 4MiB.
    pub max_manifest_size: ByteSize,
    /// Most uploads in progress at once (`429 TOOMANYREQUESTS` above it). Default: 1024.
    pub max_uploads: usize,
    /// An upload not written to for this long is deleted. Default: 1h.
    #[serde(with = "humantime_serde")]
    pub upload_ttl: Duration,
    /// Most entries in one page of `tags/list` or `_catalog`. Default: 1000.
    pub max_page: usize,
    /// Most tag names the catalog reads from the build-index to list repositories (it
    /// reads every tag, as Go Kraken's does); past it the catalog answers with what it
    /// found. Default: 1000000.
    pub max_catalog_scan: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_blob_size: ByteSize(10 << 30),
            max_manifest_size: ByteSize(MAX_MANIFEST_SIZE as u64),
            max_uploads: 1024,
            upload_ttl: Duration::from_secs(3600),
            max_page: 1000,
            max_catalog_scan: 1_000_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::origin::MembersConfig;

    #[test]
    fn the_documented_example_loads_with_defaults_and_bad_values_are_refused() {
        let example = r#"
            listen = "0.0.0.0:5000"
            data_dir = "/var/lib/kraken/proxy"

            [origins]
            members = { dns = "origins.cluster-a:15002" }

            [build_index]
            addresses = ["build-index-1:15004", "build-index-2:15004"]

            [auth]
            htpasswd = "/etc/kraken/htpasswd"
            tokens_sha256 = ["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]
        "#;
        let config: ProxyConfig = toml::from_str(example).unwrap();
        config.validate().unwrap();
        assert!(matches!(config.origins.members, MembersConfig::Dns(_)));
        assert!(config.build_index.replicate);
        assert!(config.auth.anonymous_reads);
        assert_eq!(config.auth.realm, "kraken");
        assert!(!config.delete_tags);
        assert_eq!(config.limits.max_blob_size, ByteSize(10 << 30));
        let oci = config.oci();
        assert_eq!(
            oci.upload_dir,
            PathBuf::from("/var/lib/kraken/proxy/uploads")
        );
        assert_eq!(oci.max_page, 1000);

        assert!(toml::from_str::<ProxyConfig>(&format!("bogus = 1\n{example}")).is_err());
        let mut bad = config.clone();
        bad.build_index.addresses.clear();
        assert!(bad.validate().is_err());
        let mut bad = config.clone();
        bad.auth.tokens_sha256 = vec!["abc".into()];
        assert!(bad.validate().is_err());
        let mut bad = config.clone();
        bad.auth.users = vec![UserConfig::new("ci", "plaintext")];
        assert!(bad.validate().is_err());
        let mut bad = config;
        bad.limits.max_manifest_size = ByteSize(5 << 20);
        assert!(bad.validate().is_err());
    }

    #[test]
    fn the_configuration_in_docs_proxy_md_loads() {
        let doc = include_str!("../../../docs/proxy.md");
        let start = doc.find("```toml\n").expect("a toml block") + "```toml\n".len();
        let end = start + doc[start..].find("```").expect("its end");
        let config: ProxyConfig = toml::from_str(&doc[start..end]).unwrap();
        assert_eq!(config.build_index.addresses.len(), 2);
        assert_eq!(config.auth.users[0].name, "ci");
        assert_eq!(config.auth.access[0].access, AccessLevel::Write);
        assert_eq!(config.auth.max_failures_per_minute, 20);
        assert_eq!(config.limits.max_catalog_scan, 1_000_000);
        assert_eq!(config.http.max_connections_per_client, 256);
        assert_eq!(config.http.header_read_timeout, Duration::from_secs(10));
        assert!(config.tls.is_some() && config.client_tls.is_some());
        assert!(!config.delete.enabled && !config.delete_tags);
    }
}
