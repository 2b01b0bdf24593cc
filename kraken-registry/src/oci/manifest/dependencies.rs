//! What a manifest refers to: the parsed [`Manifest`] reduced to the digests that must exist.
//! The origin cluster walks these for the build-index's dependency checks and replication.

use kraken_core::Digest;

use super::Manifest;

/// The blobs a manifest refers to.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub(crate) struct Dependencies {
    /// Config and layers: blobs that must exist.
    pub(crate) blobs: Vec<Digest>,
    /// The size the manifest declares for each of `blobs`, in the same order (what a
    /// prefetch's size filters go by).
    pub(crate) blob_sizes: Vec<u64>,
    /// Child manifests of a manifest list or image index: they must exist, and so must
    /// their own dependencies.
    pub(crate) manifests: Vec<Digest>,
    /// The manifest this one refers to (`subject`, for referrers). Not required to exist:
    /// the distribution spec accepts a referrer before its subject.
    pub(crate) subject: Option<Digest>,
}

/// The dependencies of a Docker schema 2 manifest or manifest list, or an OCI image manifest
/// or index; `Ok(None)` when `bytes` is no manifest at all (a tag may name any blob: then
/// the blob is its only dependency). A document that claims to be a manifest
/// (`schemaVersion`) but is malformed is an error. Non-distributable ("foreign") layers are
/// not dependencies: registries never receive them.
pub(crate) fn manifest_dependencies(bytes: &[u8]) -> Result<Option<Dependencies>, String> {
    // Only a JSON object with a schemaVersion is taken for a manifest.
    let Ok(serde_json::Value::Object(object)) = serde_json::from_slice(bytes) else {
        return Ok(None);
    };
    if !object.contains_key("schemaVersion") {
        return Ok(None);
    }
    let manifest = Manifest::parse(bytes, None).map_err(|e| e.to_string())?;
    let (blobs, blob_sizes) = manifest
        .blobs()
        .filter(|d| !d.is_non_distributable())
        .map(|d| (d.digest, d.size))
        .unzip();
    Ok(Some(Dependencies {
        blobs,
        blob_sizes,
        manifests: manifest.manifests().iter().map(|d| d.digest).collect(),
        subject: manifest.subject().map(|d| d.digest),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(i: u8) -> Digest {
        Digest::sha256_of(&[i])
    }

    #[test]
    fn manifests_and_indexes_yield_their_references() {
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
               "config":{{"mediaType":"x","digest":"{}","size":1}},
               "layers":[{{"mediaType":"l","digest":"{}","size":2}},{{"mediaType":"l","digest":"{}","size":3}},
                 {{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"{}","size":9}}],
               "subject":{{"mediaType":"m","digest":"{}","size":4}}}}"#,
            digest(1),
            digest(2),
            digest(3),
            digest(7),
            digest(4)
        );
        let deps = manifest_dependencies(manifest.as_bytes()).unwrap().unwrap();
        assert_eq!(deps.blobs, vec![digest(1), digest(2), digest(3)]);
        assert_eq!(deps.blob_sizes, vec![1, 2, 3]);
        assert!(deps.manifests.is_empty());
        assert_eq!(deps.subject, Some(digest(4)));

        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"m","digest":"{}","size":1}},{{"mediaType":"m","digest":"{}","size":1}}]}}"#,
            digest(5),
            digest(6)
        );
        let deps = manifest_dependencies(index.as_bytes()).unwrap().unwrap();
        assert_eq!(deps.manifests, vec![digest(5), digest(6)]);
        assert!(deps.blobs.is_empty());
    }

    #[test]
    fn plain_blobs_are_no_manifests_and_bad_manifests_are_errors() {
        for blob in [&b"\x00\x01binary"[..], b"[1,2]", br#"{"a":1}"#, b""] {
            assert_eq!(manifest_dependencies(blob), Ok(None));
        }
        for bad in [
            &br#"{"schemaVersion":1,"fsLayers":[]}"#[..],
            br#"{"schemaVersion":2,"layers":[{"digest":"md5:x"}]}"#,
            br#"{"schemaVersion":2,"config":{"size":1}}"#,
            br#"{"schemaVersion":"2"}"#,
        ] {
            assert!(manifest_dependencies(bad).is_err(), "{bad:?}");
        }
    }
}
