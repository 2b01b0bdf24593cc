//! The proxy: the OCI distribution API through which images are pushed into a Kraken
//! cluster.
//!
//! A [`Proxy`] serves `/v2/…` ([`OciHandler`](crate::oci::OciHandler): uploads verified by
//! sha256, manifests parsed and their references checked) over [`ProxyStorage`]:
//!
//! - **Blobs** go to the origin cluster, to the first healthy owner of the digest on the
//!   ring (which replicates them to the other owners and writes them back to the backend),
//!   with the **repository as namespace** — Go Kraken sends `"TODO"` — so the origins'
//!   backend routing by namespace works for pushes.
//! - **Manifests** are blobs in the origins too; **tags** (`repository:tag` → digest) are
//!   put to the build-index, which checks that the manifest and everything it refers to
//!   are in the origins. A tag is read from the build-index on every request: a re-pointed
//!   tag is seen at once.
//! - **Referrers**: each subject with referrers has an OCI image index of their
//!   descriptors, stored in the origins and tagged `repository:sha256-<subject hex>` (the
//!   distribution spec's referrers tag schema), updated on every manifest put with a
//!   `subject`.
//! - **Listings**: `tags/list` from the build-index's tags of the repository; `_catalog`
//!   from all its tags, reduced to repositories.
//! - **Cold start**: `/proxy/v1|v2/registry/prefetch` and `/registry/notifications` warm
//!   the origins for an image, through indexes, before agents pull it ([`PrefetchConfig`]).
//! - **Auth**: optional basic auth (bcrypt, on its own threads, with failures limited per
//!   client address) and bearer tokens for writes ([`AuthConfig`]), per-user repository
//!   rules ([`AccessRule`]), and mTLS through `[tls]`.
//!
//! Layout, config and the differences from Go Kraken are in `docs/proxy.md`.
//!
//! ```no_run
//! # async fn example() -> kraken_registry::Result<()> {
//! use kraken_registry::origin::MembersConfig;
//! use kraken_registry::proxy::{BuildIndexTarget, Proxy, ProxyConfig};
//!
//! let mut config = ProxyConfig::new("0.0.0.0:5000".parse().unwrap(), "/var/lib/kraken/proxy");
//! config.origins.members = MembersConfig::Dns("origins.internal:15002".into());
//! config.build_index = BuildIndexTarget::new(["build-index.internal:15004"]);
//! let proxy = Proxy::builder(config).spawn().await?;
//! // `skopeo copy … docker://<proxy>:5000/repo:tag` now pushes into the cluster; then:
//! proxy.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod access;
pub(crate) mod auth;
mod config;
mod notifications;
mod password;
mod prefetch;
mod service;
mod storage;

pub use self::config::{
    AccessLevel, AccessRule, AuthConfig, BuildIndexTarget, DeleteConfig, LimitsConfig, ProxyConfig,
    UserConfig,
};
pub use self::prefetch::PrefetchConfig;
pub use self::service::{Proxy, ProxyBuilder};
pub use self::storage::ProxyStorage;
