//! Manifests: a pure parser for Docker schema 2 manifests and manifest lists, and OCI image
//! manifests and image indexes (artifacts included).
//!
//! [`Manifest::parse`] checks what a registry must check before it stores a manifest — size,
//! JSON, schema version, media type (from the `Content-Type` header and the document, which
//! must agree), and the shape the media type requires — and exposes what callers need to
//! walk dependencies: the blobs a manifest references ([`Manifest::blobs`]), the child
//! manifests of an index or list ([`Manifest::manifests`], which a caller fetches and parses
//! in turn to walk a tree of indexes), the [`subject`](Manifest::subject), the
//! [`artifact_type`](Manifest::artifact_type), and the [`Descriptor`] that lists it in the
//! referrers API.
//!
//! ```
//! use kraken_registry::oci::manifest::{Manifest, ManifestKind, media_type};
//!
//! let config = format!("sha256:{}", "1".repeat(64));
//! let layer = format!("sha256:{}", "2".repeat(64));
//! let json = format!(r#"{{
//!   "schemaVersion": 2,
//!   "mediaType": "{}",
//!   "config": {{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "{config}", "size": 7}},
//!   "layers": [{{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "{layer}", "size": 9}}]
//! }}"#, media_type::OCI_MANIFEST);
//! let manifest = Manifest::parse(json.as_bytes(), Some(media_type::OCI_MANIFEST)).unwrap();
//! assert_eq!(manifest.kind(), ManifestKind::OciManifest);
//! let blobs: Vec<String> = manifest.blobs().map(|d| d.digest.to_string()).collect();
//! assert_eq!(blobs, [config, layer]);
//! assert!(manifest.manifests().is_empty());
//! ```

use std::collections::BTreeMap;
use std::fmt;

use kraken_core::Digest;
use serde::{Deserialize, Serialize};

mod dependencies;

pub(crate) use self::dependencies::manifest_dependencies;

/// Largest manifest accepted, in bytes (4 MiB, CNCF Distribution's bound). Callers check a
/// declared length against it before reading a body.
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;

/// The media types this parser knows.
pub mod media_type {
    /// Docker image manifest, schema 2.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list (multi-platform), schema 2.
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    /// OCI image manifest (images and artifacts).
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index (multi-platform images, artifact indexes, the referrers response).
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// The OCI empty descriptor's media type (`{}`), used as the config of artifacts.
    pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
}

/// Which of the four manifest formats a document is.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum ManifestKind {
    /// [`media_type::DOCKER_MANIFEST`].
    DockerManifest,
    /// [`media_type::DOCKER_MANIFEST_LIST`].
    DockerManifestList,
    /// [`media_type::OCI_MANIFEST`].
    OciManifest,
    /// [`media_type::OCI_INDEX`].
    OciIndex,
}

impl ManifestKind {
    /// The kind a media type names, if it is one of the four (parameters after `;` ignored).
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        match essence(media_type) {
            media_type::DOCKER_MANIFEST => Some(Self::DockerManifest),
            media_type::DOCKER_MANIFEST_LIST => Some(Self::DockerManifestList),
            media_type::OCI_MANIFEST => Some(Self::OciManifest),
            media_type::OCI_INDEX => Some(Self::OciIndex),
            _ => None,
        }
    }

    /// The media type.
    pub const fn media_type(self) -> &'static str {
        match self {
            Self::DockerManifest => media_type::DOCKER_MANIFEST,
            Self::DockerManifestList => media_type::DOCKER_MANIFEST_LIST,
            Self::OciManifest => media_type::OCI_MANIFEST,
            Self::OciIndex => media_type::OCI_INDEX,
        }
    }

    /// Whether documents of this kind list other manifests (an index or a manifest list)
    /// rather than blobs.
    pub const fn is_index(self) -> bool {
        matches!(self, Self::DockerManifestList | Self::OciIndex)
    }
}

impl fmt::Display for ManifestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.media_type())
    }
}

/// A content descriptor: what a manifest says about a blob or another manifest.
///
/// Unknown fields are ignored when parsing; `platform` is kept as raw JSON because only
/// clients interpret it.
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Eq, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// The artifact type, for manifests listed in an index or in the referrers API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// URLs the content may be fetched from instead (non-distributable layers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// The platform of a manifest listed in an index or manifest list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
}

impl Descriptor {
    /// A descriptor with no optional fields.
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Self {
        Self {
            media_type: media_type.into(),
            digest,
            size,
            artifact_type: None,
            annotations: BTreeMap::new(),
            urls: Vec::new(),
            platform: None,
        }
    }

    /// Whether the content is a non-distributable ("foreign") layer, which clients fetch from
    /// its `urls` and never push: a registry must not require it to be present.
    pub fn is_non_distributable(&self) -> bool {
        let media_type = essence(&self.media_type);
        media_type.contains(".nondistributable.") || media_type.contains(".foreign.")
    }
}

/// A blob or manifest a manifest depends on, from [`Manifest::dependencies`].
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Dependency<'a> {
    /// A blob: the config or a layer of an image manifest.
    Blob(&'a Descriptor),
    /// A child manifest of an index or manifest list; parse it to continue the walk.
    Manifest(&'a Descriptor),
}

/// Why a document is not an acceptable manifest. Every variant is the spec's
/// `MANIFEST_INVALID`.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The document is larger than the limit.
    #[error("manifest is {size} bytes; at most {limit} are accepted")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Not JSON, or a field has the wrong type (a descriptor's digest that is not sha256
    /// included).
    #[error("manifest is not valid JSON of a manifest")]
    Json(#[source] serde_json::Error),
    /// `schemaVersion` is missing or not 2 (schema 1 is not supported).
    #[error("schemaVersion must be 2, found {0}")]
    SchemaVersion(String),
    /// The media type is none of the four supported ones.
    #[error(
        "unsupported manifest media type {0:?} (supported: Docker schema 2 manifest and manifest list, OCI image manifest and index)"
    )]
    UnsupportedMediaType(String),
    /// The `Content-Type` header and the document's `mediaType` disagree.
    #[error("Content-Type {header:?} does not match the manifest's mediaType {document:?}")]
    MediaTypeMismatch {
        /// The header's media type.
        header: String,
        /// The document's `mediaType`.
        document: String,
    },
    /// Neither the header nor the document gives a media type, and the shape does not tell.
    #[error("manifest has no mediaType and its kind cannot be inferred")]
    UnknownKind,
    /// A field that the media type requires is missing, or one it forbids is present.
    #[error("invalid {kind} manifest: {reason}")]
    Shape {
        /// The kind the document claims to be.
        kind: ManifestKind,
        /// What is wrong.
        reason: &'static str,
    },
}

/// A parsed, validated manifest. Cheap to inspect; the original bytes are not kept (the
/// caller has them, and [`Manifest::digest`] names them).
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Manifest {
    kind: ManifestKind,
    digest: Digest,
    size: u64,
    config: Option<Descriptor>,
    layers: Vec<Descriptor>,
    manifests: Vec<Descriptor>,
    subject: Option<Descriptor>,
    artifact_type: Option<String>,
    annotations: BTreeMap<String, String>,
}

/// The fields that say what a document is, read first so that an unknown media type is
/// reported as such rather than as whatever field its format lacks.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    schema_version: Option<serde_json::Value>,
    media_type: Option<String>,
    config: Option<serde::de::IgnoredAny>,
    manifests: Option<serde::de::IgnoredAny>,
}

/// The document, once its media type is known.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

impl Manifest {
    /// Parses and validates `bytes`, whose media type is `content_type` (the `Content-Type`
    /// header, parameters allowed) and/or the document's `mediaType`. When both are given
    /// they must agree; when neither is, the kind is inferred from the shape as OCI (a
    /// `manifests` array makes an index, a `config` an image manifest), as Go Kraken did.
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Self, ManifestError> {
        if bytes.len() > MAX_MANIFEST_SIZE {
            return Err(ManifestError::TooLarge {
                size: bytes.len() as u64,
                limit: MAX_MANIFEST_SIZE as u64,
            });
        }
        let document: Header = serde_json::from_slice(bytes).map_err(ManifestError::Json)?;
        match &document.schema_version {
            Some(serde_json::Value::Number(n)) if n.as_u64() == Some(2) => {}
            Some(other) => return Err(ManifestError::SchemaVersion(other.to_string())),
            None => return Err(ManifestError::SchemaVersion("nothing".into())),
        }
        let header = content_type.map(essence).filter(|h| !h.is_empty());
        let kind = match (header, document.media_type.as_deref()) {
            (Some(header), Some(doc)) if header != essence(doc) => {
                return Err(ManifestError::MediaTypeMismatch {
                    header: header.to_owned(),
                    document: doc.to_owned(),
                });
            }
            (_, Some(media_type)) | (Some(media_type), None) => {
                ManifestKind::from_media_type(media_type).ok_or_else(|| {
                    ManifestError::UnsupportedMediaType(media_type.chars().take(200).collect())
                })?
            }
            (None, None) => match (&document.manifests, &document.config) {
                (Some(_), None) => ManifestKind::OciIndex,
                (None, Some(_)) => ManifestKind::OciManifest,
                _ => return Err(ManifestError::UnknownKind),
            },
        };
        let document: Document = serde_json::from_slice(bytes).map_err(ManifestError::Json)?;
        let shape = |reason| ManifestError::Shape { kind, reason };
        let (config, layers, manifests) = if kind.is_index() {
            if document.config.is_some() || document.layers.is_some() {
                return Err(shape("an index has no config or layers"));
            }
            let manifests = document
                .manifests
                .ok_or_else(|| shape("the manifests array is missing"))?;
            (None, Vec::new(), manifests)
        } else {
            if document.manifests.is_some() {
                return Err(shape("an image manifest has no manifests array"));
            }
            let config = document
                .config
                .ok_or_else(|| shape("the config descriptor is missing"))?;
            let layers = document
                .layers
                .ok_or_else(|| shape("the layers array is missing"))?;
            (Some(config), layers, Vec::new())
        };
        let docker = matches!(
            kind,
            ManifestKind::DockerManifest | ManifestKind::DockerManifestList
        );
        if docker && (document.subject.is_some() || document.artifact_type.is_some()) {
            return Err(shape("Docker manifests have no subject or artifactType"));
        }
        Ok(Self {
            kind,
            digest: Digest::sha256_of(bytes),
            size: bytes.len() as u64,
            config,
            layers,
            manifests,
            subject: document.subject,
            artifact_type: document.artifact_type,
            annotations: document.annotations.unwrap_or_default(),
        })
    }

    /// The format.
    pub fn kind(&self) -> ManifestKind {
        self.kind
    }

    /// The media type (the kind's).
    pub fn media_type(&self) -> &'static str {
        self.kind.media_type()
    }

    /// The sha256 of the bytes parsed.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Size of the bytes parsed.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The config descriptor of an image manifest.
    pub fn config(&self) -> Option<&Descriptor> {
        self.config.as_ref()
    }

    /// The layers of an image manifest (empty for indexes).
    pub fn layers(&self) -> &[Descriptor] {
        &self.layers
    }

    /// The blobs an image manifest references: its config, then its layers. Empty for
    /// indexes and manifest lists.
    pub fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.config.iter().chain(&self.layers)
    }

    /// The child manifests of an index or manifest list (empty for image manifests). Each is
    /// a manifest, possibly another index: fetch and parse it to walk further.
    pub fn manifests(&self) -> &[Descriptor] {
        &self.manifests
    }

    /// Everything this manifest references, blobs and child manifests, in document order
    /// (the subject excluded: it is a reference up, not a dependency).
    pub fn dependencies(&self) -> impl Iterator<Item = Dependency<'_>> {
        self.blobs()
            .map(Dependency::Blob)
            .chain(self.manifests.iter().map(Dependency::Manifest))
    }

    /// The manifest this one refers to (a signature's image, say), if any.
    pub fn subject(&self) -> Option<&Descriptor> {
        self.subject.as_ref()
    }

    /// The artifact type: the document's `artifactType`, else — for an OCI image manifest
    /// only, as the referrers API specifies — its config's media type.
    pub fn artifact_type(&self) -> Option<&str> {
        self.artifact_type.as_deref().or_else(|| match self.kind {
            ManifestKind::OciManifest => self.config.as_ref().map(|c| c.media_type.as_str()),
            _ => None,
        })
    }

    /// The document's annotations.
    pub fn annotations(&self) -> &BTreeMap<String, String> {
        &self.annotations
    }

    /// The descriptor of this manifest as the referrers API lists it: media type, digest,
    /// size, artifact type and annotations.
    pub fn descriptor(&self) -> Descriptor {
        let mut descriptor = Descriptor::new(self.media_type(), self.digest, self.size);
        descriptor.artifact_type = self.artifact_type().map(str::to_owned);
        descriptor.annotations = self.annotations.clone();
        descriptor
    }
}

/// A media type without its parameters (`; charset=…`), trimmed.
fn essence(media_type: &str) -> &str {
    media_type.split(';').next().unwrap_or_default().trim()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn digest(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    fn descriptor_json(media_type: &str, n: u8, size: u64) -> String {
        format!(
            r#"{{"mediaType":"{media_type}","digest":"{}","size":{size}}}"#,
            digest(n)
        )
    }

    /// A Docker schema 2 manifest as `docker push` writes it.
    const DOCKER_MANIFEST: &str = r#"{
   "schemaVersion": 2,
   "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
   "config": {
      "mediaType": "application/vnd.docker.container.image.v1+json",
      "size": 1469,
      "digest": "sha256:feb5d9fea6a5e9606aa995e879d862b825965ba48de054caab5ef356dc6b3412"
   },
   "layers": [
      {
         "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
         "size": 2479,
         "digest": "sha256:2db29710123e3e53a794f2694094b9b4338aa9ee5c40b930cb8063a1be392c54"
      },
      {
         "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
         "size": 1000,
         "digest": "sha256:1111111111111111111111111111111111111111111111111111111111111111",
         "urls": ["https://example.invalid/layer"]
      }
   ]
}"#;

    /// A Docker manifest list with two platforms.
    const DOCKER_LIST: &str = r#"{
  "schemaVersion": 2,
  "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
  "manifests": [
    {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": 525,
     "digest": "sha256:e692418e4cbaf90ca69d05a66403747baa33ee08806650b51fab815ad7fc331f",
     "platform": {"architecture": "amd64", "os": "linux"}},
    {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": 525,
     "digest": "sha256:7e9b6e7ba2842c91cf49f3e214d04a7a496f8214356f41d81a6e6dcad11f11e3",
     "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}}
  ]
}"#;

    /// An OCI artifact: artifactType, the empty config, a subject, annotations.
    const OCI_ARTIFACT: &str = r#"{
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.manifest.v1+json",
  "artifactType": "application/vnd.example.sbom.v1",
  "config": {"mediaType": "application/vnd.oci.empty.v1+json",
             "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", "size": 2},
  "layers": [{"mediaType": "application/spdx+json",
              "digest": "sha256:0000000000000000000000000000000000000000000000000000000000000001", "size": 10}],
  "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
              "digest": "sha256:0000000000000000000000000000000000000000000000000000000000000002", "size": 100},
  "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
  "customField": {"ignored": true}
}"#;

    #[test]
    fn docker_manifest_golden() {
        let m = Manifest::parse(
            DOCKER_MANIFEST.as_bytes(),
            Some(media_type::DOCKER_MANIFEST),
        )
        .unwrap();
        assert_eq!(m.kind(), ManifestKind::DockerManifest);
        assert_eq!(m.digest(), &Digest::sha256_of(DOCKER_MANIFEST.as_bytes()));
        assert_eq!(m.size(), DOCKER_MANIFEST.len() as u64);
        let blobs: Vec<_> = m.blobs().map(|d| (d.digest.hex(), d.size)).collect();
        assert_eq!(
            blobs,
            [
                (
                    "feb5d9fea6a5e9606aa995e879d862b825965ba48de054caab5ef356dc6b3412".into(),
                    1469
                ),
                (
                    "2db29710123e3e53a794f2694094b9b4338aa9ee5c40b930cb8063a1be392c54".into(),
                    2479
                ),
                ("1".repeat(64), 1000),
            ]
        );
        assert!(!m.layers()[0].is_non_distributable());
        assert!(m.layers()[1].is_non_distributable());
        assert!(m.manifests().is_empty());
        assert_eq!(m.subject(), None);
        assert_eq!(
            m.artifact_type(),
            None,
            "only OCI manifests fall back to config"
        );
        // No header: the document's mediaType decides.
        assert_eq!(
            Manifest::parse(DOCKER_MANIFEST.as_bytes(), None).unwrap(),
            m
        );
    }

    #[test]
    fn docker_list_golden() {
        let m = Manifest::parse(
            DOCKER_LIST.as_bytes(),
            Some("application/vnd.docker.distribution.manifest.list.v2+json; charset=utf-8"),
        )
        .unwrap();
        assert_eq!(m.kind(), ManifestKind::DockerManifestList);
        assert!(m.kind().is_index());
        assert_eq!(m.blobs().count(), 0);
        assert_eq!(m.manifests().len(), 2);
        assert_eq!(m.manifests()[1].platform.as_ref().unwrap()["variant"], "v8");
        let children: Vec<_> = m
            .dependencies()
            .map(|d| match d {
                Dependency::Manifest(d) => d.digest.hex()[..6].to_owned(),
                Dependency::Blob(_) => panic!("a list has no blobs"),
            })
            .collect();
        assert_eq!(children, ["e69241", "7e9b6e"]);
    }

    #[test]
    fn oci_artifact_golden() {
        let m = Manifest::parse(OCI_ARTIFACT.as_bytes(), Some(media_type::OCI_MANIFEST)).unwrap();
        assert_eq!(m.kind(), ManifestKind::OciManifest);
        assert_eq!(m.artifact_type(), Some("application/vnd.example.sbom.v1"));
        assert_eq!(
            m.subject().unwrap().digest.to_string(),
            format!("sha256:{}2", "0".repeat(63))
        );
        let d = m.descriptor();
        assert_eq!(d.media_type, media_type::OCI_MANIFEST);
        assert_eq!(d.digest, *m.digest());
        assert_eq!(d.size, OCI_ARTIFACT.len() as u64);
        assert_eq!(
            d.artifact_type.as_deref(),
            Some("application/vnd.example.sbom.v1")
        );
        assert_eq!(
            d.annotations["org.opencontainers.image.created"],
            "2024-01-01T00:00:00Z"
        );
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["artifactType"], "application/vnd.example.sbom.v1");
        assert!(json.get("urls").is_none() && json.get("platform").is_none());
    }

    #[test]
    fn artifact_type_falls_back_to_the_config_media_type() {
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{},"layers":[]}}"#,
            media_type::OCI_MANIFEST,
            descriptor_json("application/vnd.example.config", 1, 3)
        );
        let m = Manifest::parse(json.as_bytes(), None).unwrap();
        assert_eq!(m.artifact_type(), Some("application/vnd.example.config"));
        assert_eq!(
            m.descriptor().artifact_type.as_deref(),
            Some("application/vnd.example.config")
        );
    }

    #[test]
    fn oci_index_with_nested_index_and_inferred_kinds() {
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{},{}],"artifactType":"application/x-set"}}"#,
            descriptor_json(media_type::OCI_MANIFEST, 1, 10),
            descriptor_json(media_type::OCI_INDEX, 2, 20)
        );
        let m = Manifest::parse(index.as_bytes(), None).unwrap();
        assert_eq!(m.kind(), ManifestKind::OciIndex);
        assert_eq!(m.artifact_type(), Some("application/x-set"));
        assert_eq!(m.manifests()[1].media_type, media_type::OCI_INDEX);
        let m = Manifest::parse(index.as_bytes(), Some(media_type::OCI_INDEX)).unwrap();
        assert_eq!(m.kind(), ManifestKind::OciIndex);
        let image = format!(
            r#"{{"schemaVersion":2,"config":{},"layers":[]}}"#,
            descriptor_json("application/vnd.oci.image.config.v1+json", 1, 10)
        );
        assert_eq!(
            Manifest::parse(image.as_bytes(), None).unwrap().kind(),
            ManifestKind::OciManifest
        );
    }

    #[test]
    fn invalid_manifests_say_why() {
        let image = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{},"layers":[]}}"#,
            media_type::OCI_MANIFEST,
            descriptor_json("application/vnd.oci.image.config.v1+json", 1, 10)
        );
        let err = |bytes: &[u8], ct: Option<&str>| Manifest::parse(bytes, ct).unwrap_err();
        assert!(matches!(err(b"{", None), ManifestError::Json(_)));
        assert!(matches!(err(b"[]", None), ManifestError::Json(_)));
        assert!(matches!(
            err(br#"{"schemaVersion":1}"#, None),
            ManifestError::SchemaVersion(_)
        ));
        assert!(matches!(err(b"{}", None), ManifestError::SchemaVersion(_)));
        assert!(matches!(
            err(br#"{"schemaVersion":2}"#, None),
            ManifestError::UnknownKind
        ));
        let mismatch = err(image.as_bytes(), Some(media_type::OCI_INDEX));
        assert!(matches!(mismatch, ManifestError::MediaTypeMismatch { .. }));
        assert!(mismatch.to_string().contains(media_type::OCI_INDEX));
        let unknown = err(
            br#"{"schemaVersion":2,"config":{}}"#,
            Some("application/vnd.example.thing"),
        );
        assert!(
            unknown
                .to_string()
                .contains("application/vnd.example.thing")
        );
        assert!(matches!(
            err(
                image.replace(media_type::OCI_MANIFEST, "text/plain").as_bytes(),
                None
            ),
            ManifestError::UnsupportedMediaType(t) if t == "text/plain"
        ));
        // The header decides the kind when the document has no mediaType: a shape mismatch.
        let no_type = image.replace(
            &format!(r#""mediaType":"{}","#, media_type::OCI_MANIFEST),
            "",
        );
        assert!(matches!(
            err(no_type.as_bytes(), Some(media_type::OCI_INDEX)),
            ManifestError::Shape { .. }
        ));
        // A digest the descriptor grammar rejects, or an algorithm not supported.
        let bad_digest = image.replace(&digest(1), "sha256:xyz");
        assert!(matches!(
            err(bad_digest.as_bytes(), None),
            ManifestError::Json(_)
        ));
        let big = vec![b' '; MAX_MANIFEST_SIZE + 1];
        assert!(matches!(err(&big, None), ManifestError::TooLarge { .. }));
        let docker_with_subject = DOCKER_MANIFEST.replacen(
            "\"layers\"",
            &format!(
                "\"subject\": {},\n\"layers\"",
                descriptor_json(media_type::OCI_MANIFEST, 3, 3)
            ),
            1,
        );
        assert!(matches!(
            err(docker_with_subject.as_bytes(), None),
            ManifestError::Shape { .. }
        ));
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Manifest::parse(&bytes, None);
            let _ = Manifest::parse(&bytes, Some(media_type::OCI_INDEX));
        }

        #[test]
        fn generated_manifests_expose_exactly_their_references(
            config in (any::<u8>(), 0u64..1 << 40),
            layers in proptest::collection::vec((any::<u8>(), 0u64..1 << 40), 0..8),
            children in proptest::collection::vec((any::<u8>(), 0u64..1 << 20), 0..8),
            docker in any::<bool>(),
            subject in proptest::option::of(any::<u8>()),
        ) {
            let (image_type, index_type) = if docker {
                (media_type::DOCKER_MANIFEST, media_type::DOCKER_MANIFEST_LIST)
            } else {
                (media_type::OCI_MANIFEST, media_type::OCI_INDEX)
            };
            let subject = match subject {
                Some(n) if !docker => format!(r#","subject":{}"#, descriptor_json(media_type::OCI_MANIFEST, n, 1)),
                _ => String::new(),
            };
            let layer_json: Vec<_> = layers.iter().map(|(n, s)| descriptor_json("application/x-layer", *n, *s)).collect();
            let image = format!(
                r#"{{"schemaVersion":2,"mediaType":"{image_type}","config":{},"layers":[{}]{subject}}}"#,
                descriptor_json("application/x-config", config.0, config.1),
                layer_json.join(",")
            );
            let m = Manifest::parse(image.as_bytes(), Some(image_type)).unwrap();
            let expected: Vec<_> = std::iter::once(config).chain(layers.iter().copied())
                .map(|(n, s)| (digest(n), s)).collect();
            let found: Vec<_> = m.blobs().map(|d| (d.digest.to_string(), d.size)).collect();
            prop_assert_eq!(found, expected);
            prop_assert!(m.manifests().is_empty());
            prop_assert_eq!(m.subject().is_some(), !subject.is_empty());
            prop_assert_eq!(m.digest(), &Digest::sha256_of(image.as_bytes()));

            let child_json: Vec<_> = children.iter().map(|(n, s)| descriptor_json(image_type, *n, *s)).collect();
            let index = format!(
                r#"{{"schemaVersion":2,"mediaType":"{index_type}","manifests":[{}]}}"#,
                child_json.join(",")
            );
            let m = Manifest::parse(index.as_bytes(), None).unwrap();
            prop_assert!(m.kind().is_index());
            prop_assert_eq!(m.blobs().count(), 0);
            let found: Vec<_> = m.manifests().iter().map(|d| (d.digest.to_string(), d.size)).collect();
            let expected: Vec<_> = children.iter().map(|(n, s)| (digest(*n), *s)).collect();
            prop_assert_eq!(found, expected);
        }
    }
}
