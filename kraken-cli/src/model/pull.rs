//! `kraken model pull REF DIR`: reads a ModelPack manifest and its config, checks every layer
//! against them, and lays the files out under `DIR`.
//!
//! Raw layers (`….raw`, what `kraken model push` writes) are one file each, at the path in
//! their `org.cncf.model.filepath` annotation (or, failing that, `org.opencontainers.image.title`).
//! Archive layers (`….tar`, `….tar+gzip`, what olot and modctl write) are unpacked as they
//! stream in; their paths are the archive's. Every path is untrusted input (the collection
//! rules: relative, no `..`, no links), every layer's size and digest and every `diffId` of the
//! config are checked before anything is renamed into place, and no path may come twice.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::Path;

use anyhow::{Context as _, ensure};
use futures::TryStreamExt as _;
use kraken_core::collection;
use kraken_core::{Digest, Hasher};
use serde::Deserialize;

use super::archive::{self, Expected, LayerFormat};
use super::{
    ARTIFACT_TYPE, CONFIG_MEDIA_TYPE, Descriptor, FILEPATH_ANNOTATION, MAX_MANIFEST, Manifest,
    OCI_MANIFEST, PullArgs, Reference, client,
};

/// The annotation OCI tools (olot among them) put a layer's file name in.
const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";

/// The part of a ModelPack config that pulling checks: one `diffId` per layer.
#[derive(Debug, Deserialize)]
struct ModelConfig {
    modelfs: ModelFs,
}

#[derive(Debug, Deserialize)]
struct ModelFs {
    #[serde(rename = "diffIds")]
    diff_ids: Vec<String>,
}

/// A `diffId` as a digest. The model spec writes `sha256:…`; olot 1.2 writes the bare hex,
/// which is accepted as SHA-256.
fn diff_id(text: &str) -> anyhow::Result<Digest> {
    let full = if text.contains(':') {
        text.to_owned()
    } else {
        format!("sha256:{text}")
    };
    full.parse()
        .with_context(|| format!("the config's diffId {text:?}"))
}

pub(super) async fn pull(args: PullArgs) -> anyhow::Result<()> {
    let reference = Reference::parse(&args.reference)?;
    let http = client()?;
    let body = read_bounded(
        &http,
        &reference.url(args.plain_http, &format!("manifests/{}", reference.tag)),
        Some(OCI_MANIFEST),
    )
    .await
    .context("fetching the manifest")?;
    let manifest: Manifest = serde_json::from_slice(&body).context("reading the manifest")?;
    ensure!(
        manifest.artifact_type.as_deref() == Some(ARTIFACT_TYPE)
            || manifest.config.media_type == CONFIG_MEDIA_TYPE,
        "{} is not a ModelPack artifact",
        args.reference
    );
    let config = read_bounded(
        &http,
        &reference.url(
            args.plain_http,
            &format!("blobs/{}", manifest.config.digest),
        ),
        None,
    )
    .await
    .context("fetching the model config")?;
    let actual = Digest::sha256_of(&config);
    ensure!(
        actual == manifest.config.digest,
        "the model config hashes to {actual}, the manifest says {}",
        manifest.config.digest
    );
    let config: ModelConfig =
        serde_json::from_slice(&config).context("reading the model config")?;
    ensure!(
        config.modelfs.diff_ids.len() == manifest.layers.len(),
        "the config lists {} diffIds for {} layers",
        config.modelfs.diff_ids.len(),
        manifest.layers.len()
    );

    // Check everything the manifest says before the first byte is written.
    let mut claimed = HashSet::new();
    let mut plan = Vec::new();
    for (layer, id) in manifest.layers.iter().zip(&config.modelfs.diff_ids) {
        let id = diff_id(id)?;
        let format = LayerFormat::of(&layer.media_type)
            .with_context(|| format!("layer {}", layer.digest))?;
        if format == LayerFormat::Raw {
            let path = raw_path(layer)?;
            collection::validate_path(&path)?;
            ensure!(claimed.insert(path.clone()), "{path:?} appears twice");
            ensure!(
                id == layer.digest,
                "{path}: a raw layer's diffId must be its digest ({}), the config says {id}",
                layer.digest
            );
        }
        plan.push((layer, format, id));
    }

    let mut files = 0;
    for (layer, format, id) in plan {
        match format {
            LayerFormat::Raw => {
                let path = raw_path(layer)?;
                let (dir, relative) = (args.dir.clone(), path.clone());
                let target =
                    tokio::task::spawn_blocking(move || collection::prepare_path(&dir, &relative))
                        .await??;
                fetch_raw(&http, &reference, args.plain_http, layer, &target)
                    .await
                    .with_context(|| format!("pulling {path}"))?;
                files += 1;
            }
            LayerFormat::Tar(compression) => {
                let expected = Expected {
                    digest: layer.digest,
                    size: layer.size,
                    diff_id: id,
                    max_unpacked: args.max_unpacked_size.bytes(),
                };
                let unpacked = fetch_archive(
                    &http,
                    &reference,
                    args.plain_http,
                    compression,
                    expected,
                    &args.dir,
                )
                .await
                .with_context(|| format!("pulling layer {}", layer.digest))?;
                for path in &unpacked.files {
                    ensure!(
                        claimed.insert(path.clone()),
                        "{path:?} appears in two layers"
                    );
                }
                files += unpacked.files.len();
                let dir = args.dir.clone();
                tokio::task::spawn_blocking(move || unpacked.place(&dir)).await??;
            }
        }
    }
    eprintln!(
        "pulled {files} files in {} layers of {} into {}",
        manifest.layers.len(),
        args.reference,
        args.dir.display()
    );
    Ok(())
}

/// Where a raw layer goes: its ModelPack file path, else its OCI title.
fn raw_path(layer: &Descriptor) -> anyhow::Result<String> {
    layer
        .annotations
        .get(FILEPATH_ANNOTATION)
        .or_else(|| layer.annotations.get(TITLE_ANNOTATION))
        .cloned()
        .with_context(|| {
            format!(
                "raw layer {} has neither {FILEPATH_ANNOTATION} nor {TITLE_ANNOTATION}",
                layer.digest
            )
        })
}

/// A small document (manifest, config), read whole up to [`MAX_MANIFEST`] bytes.
async fn read_bounded(
    http: &reqwest::Client,
    url: &str,
    accept: Option<&str>,
) -> anyhow::Result<Vec<u8>> {
    let mut request = http.get(url);
    if let Some(accept) = accept {
        request = request.header(reqwest::header::ACCEPT, accept);
    }
    let mut response = request.send().await?;
    ensure!(response.status().is_success(), "{}", response.status());
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        ensure!(
            body.len() + chunk.len() <= MAX_MANIFEST,
            "larger than {MAX_MANIFEST} bytes"
        );
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Streams an archive layer into a staging directory under `dest`, verified; the caller
/// places it.
async fn fetch_archive(
    http: &reqwest::Client,
    reference: &Reference,
    plain_http: bool,
    compression: archive::Compression,
    expected: Expected,
    dest: &Path,
) -> anyhow::Result<archive::Unpacked> {
    let response = http
        .get(reference.url(plain_http, &format!("blobs/{}", expected.digest)))
        .send()
        .await?;
    ensure!(response.status().is_success(), "{}", response.status());
    let stream = response.bytes_stream().map_err(std::io::Error::other);
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
    let staging = dest.join(format!(".kraken-pull-{}", expected.digest.hex()));
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    tokio::task::spawn_blocking(move || archive::unpack(reader, compression, &expected, &staging))
        .await?
}

/// Downloads one raw layer to a temporary file beside `target`, checks its size and digest,
/// and renames it into place.
async fn fetch_raw(
    http: &reqwest::Client,
    reference: &Reference,
    plain_http: bool,
    layer: &Descriptor,
    target: &Path,
) -> anyhow::Result<()> {
    let mut response = http
        .get(reference.url(plain_http, &format!("blobs/{}", layer.digest)))
        .send()
        .await?;
    ensure!(response.status().is_success(), "{}", response.status());
    let tmp = target.with_extension("kraken-partial");
    let mut file = std::fs::File::create(&tmp)?;
    let mut hasher = Hasher::new();
    let mut size = 0u64;
    let result = async {
        while let Some(chunk) = response.chunk().await? {
            size += chunk.len() as u64;
            ensure!(
                size <= layer.size,
                "more bytes than the manifest's {}",
                layer.size
            );
            hasher.update(&chunk);
            file.write_all(&chunk)?;
        }
        ensure!(
            size == layer.size,
            "{size} bytes, the manifest says {}",
            layer.size
        );
        let actual = hasher.finalize();
        ensure!(actual == layer.digest, "content hashes to {actual}");
        file.sync_data()?;
        std::fs::rename(&tmp, target)?;
        Ok(())
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_ids_with_or_without_the_algorithm() {
        let hex = "a".repeat(64);
        assert_eq!(
            diff_id(&hex).unwrap(),
            diff_id(&format!("sha256:{hex}")).unwrap()
        );
        assert!(diff_id("sha256:short").is_err());
        assert!(diff_id("md5:abc").is_err());
    }

    #[test]
    fn a_raw_layer_is_placed_by_its_file_path_then_its_title() {
        let digest = Digest::sha256_of(b"x");
        let mut layer = Descriptor {
            media_type: "application/vnd.cncf.model.weight.v1.raw".into(),
            digest,
            size: 1,
            annotations: [(TITLE_ANNOTATION.to_owned(), "w.bin".to_owned())].into(),
        };
        assert_eq!(raw_path(&layer).unwrap(), "w.bin");
        layer
            .annotations
            .insert(FILEPATH_ANNOTATION.into(), "sub/w.bin".into());
        assert_eq!(raw_path(&layer).unwrap(), "sub/w.bin");
        layer.annotations.clear();
        assert!(raw_path(&layer).is_err());
    }
}
