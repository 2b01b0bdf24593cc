//! Test images written as OCI image layouts, with no internet: gzip'd tar layers of
//! deterministic pseudo-random content (and a static busybox, so the image can run), a config
//! whose `diff_ids` are the uncompressed layers' digests, a manifest, and `index.json` naming
//! each image by tag (`org.opencontainers.image.ref.name`). Also multi-platform image indexes.
//! Every writer returns the digests a pull must give back. And manifests, artifacts and
//! generated images in memory, for tests that push over the registry API.
//!
//! The one home of the tests' image builders: the client tests' layouts, the registry tests'
//! manifest builders and generated two-layer images, and a layout writer of the registry's
//! skopeo tests (two fixed uncompressed layers), which [`OciLayout`] replaced.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use kraken_core::Digest;
use serde_json::{Value, json};

use crate::pseudo_random_bytes;

/// An OCI image manifest.
pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// An OCI image index (multi-platform).
pub const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// An OCI image config.
pub const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// A gzip'd tar layer, as [`OciLayout`] writes them.
pub const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// An uncompressed tar layer, as the in-memory builders describe theirs.
pub const TAR_LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
/// Docker's image manifest, which `docker push` rewrites OCI images into.
pub const DOCKER_MANIFEST_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker's manifest list, which `docker push` rewrites OCI indexes into.
pub const DOCKER_LIST_TYPE: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Where the static busybox comes from (Debian's `busybox-static`).
pub const BUSYBOX: &str = "/bin/busybox";
/// Fixed modification time of every file in a layer, so layers are reproducible.
const MTIME: u64 = 1_700_000_000;

/// What to put in one image.
#[derive(Clone, Debug)]
pub struct ImageSpec {
    /// Sizes of the pseudo-random data layers, one file each.
    pub layer_sizes: Vec<usize>,
    /// Seed of the data layers: images with different seeds share no data layer.
    pub seed: u64,
    /// Adds a first layer with `/bin/busybox` (when [`BUSYBOX`] exists and the architecture
    /// is amd64) and makes it the image's command, so `ctr run`/`docker run` can run it.
    pub busybox: bool,
    /// The config's `architecture` (`amd64`, `arm64`, …); the OS is `linux`.
    pub architecture: String,
}

impl ImageSpec {
    /// An amd64 image with busybox and data layers of these sizes.
    pub fn new(layer_sizes: &[usize], seed: u64) -> Self {
        Self {
            layer_sizes: layer_sizes.to_vec(),
            seed,
            busybox: true,
            architecture: "amd64".to_owned(),
        }
    }

    /// The same image without busybox: data layers only, nothing to run.
    pub fn without_busybox(mut self) -> Self {
        self.busybox = false;
        self
    }

    /// The same image for another architecture (busybox only goes into amd64 images).
    pub fn for_architecture(mut self, architecture: &str) -> Self {
        architecture.clone_into(&mut self.architecture);
        self
    }
}

/// The digests of an image that was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// Digest of the manifest: what a pull by tag must resolve to.
    pub manifest: Digest,
    /// Size of the manifest in bytes.
    pub manifest_size: u64,
    /// Digest of the config.
    pub config: Digest,
    /// The compressed layers, in order: the blobs a pull downloads.
    pub layers: Vec<Digest>,
    /// The uncompressed layers, as the config lists them.
    pub diff_ids: Vec<Digest>,
    /// Whether the image has `/bin/busybox` as its command.
    pub runnable: bool,
    /// The config's `architecture`.
    pub architecture: String,
}

impl Image {
    /// Every blob of the image: config, then layers.
    pub fn blobs(&self) -> Vec<Digest> {
        std::iter::once(self.config)
            .chain(self.layers.iter().cloned())
            .collect()
    }
}

/// The digests of a multi-platform index that was written.
#[derive(Clone, Debug)]
pub struct ImageIndex {
    /// Digest of the index: what a pull by tag must resolve to.
    pub index: Digest,
    /// The images it lists, in order.
    pub manifests: Vec<Image>,
}

/// An OCI image layout directory being written.
#[derive(Debug)]
pub struct OciLayout {
    dir: PathBuf,
    refs: Vec<Value>,
}

impl OciLayout {
    /// Creates an empty layout in `dir` (created if missing).
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir.join("blobs/sha256"))?;
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let layout = Self {
            dir: dir.to_owned(),
            refs: Vec::new(),
        };
        layout.write_index()?;
        Ok(layout)
    }

    /// The layout's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The skopeo reference of a tag: `oci:DIR:TAG`.
    pub fn reference(&self, tag: &str) -> String {
        format!("oci:{}:{tag}", self.dir.display())
    }

    /// Writes an image and names it `tag`.
    pub fn add_image(&mut self, tag: &str, spec: &ImageSpec) -> Result<Image> {
        let image = self.write_image(spec)?;
        self.add_ref(tag, MANIFEST_TYPE, &image.manifest, image.manifest_size)?;
        Ok(image)
    }

    /// Writes one image per spec and an index of them (platform `linux/ARCH` each), and names
    /// the index `tag`.
    pub fn add_index(&mut self, tag: &str, specs: &[ImageSpec]) -> Result<ImageIndex> {
        let manifests = specs
            .iter()
            .map(|spec| self.write_image(spec))
            .collect::<Result<Vec<_>>>()?;
        let entries: Vec<Value> = manifests
            .iter()
            .map(|image| {
                json!({
                    "mediaType": MANIFEST_TYPE,
                    "digest": image.manifest.to_string(),
                    "size": image.manifest_size,
                    "platform": {"architecture": image.architecture, "os": "linux"},
                })
            })
            .collect();
        let index = json!({"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": entries});
        let (digest, size) = self.write_blob(&serde_json::to_vec(&index)?)?;
        self.add_ref(tag, INDEX_TYPE, &digest, size)?;
        Ok(ImageIndex {
            index: digest,
            manifests,
        })
    }

    fn write_image(&self, spec: &ImageSpec) -> Result<Image> {
        let mut contents: Vec<Vec<(String, Vec<u8>, u32)>> = Vec::new();
        let runnable = spec.busybox && spec.architecture == "amd64" && Path::new(BUSYBOX).is_file();
        if runnable {
            let busybox = std::fs::read(BUSYBOX).context("read busybox")?;
            contents.push(vec![("bin/busybox".to_owned(), busybox, 0o755)]);
        }
        for (i, &size) in spec.layer_sizes.iter().enumerate() {
            let seed = spec.seed.wrapping_mul(1000).wrapping_add(i as u64);
            let name = format!("data/{}-{i}.bin", spec.seed);
            contents.push(vec![(name, pseudo_random_bytes(size, seed), 0o644)]);
        }
        let (mut layers, mut diff_ids, mut descriptors) = (Vec::new(), Vec::new(), Vec::new());
        for files in &contents {
            let tar = tar_of(files)?;
            diff_ids.push(Digest::sha256_of(&tar));
            let (digest, size) = self.write_blob(&gzip(&tar)?)?;
            descriptors.push(descriptor(LAYER_TYPE, &digest, size));
            layers.push(digest);
        }
        let cmd = if runnable {
            json!(["/bin/busybox", "echo", "hello from kraken e2e"])
        } else {
            json!(["/nothing-to-run"])
        };
        let config = json!({
            "created": "2023-11-14T22:13:20Z",
            "architecture": spec.architecture,
            "os": "linux",
            "config": {"Cmd": cmd, "Env": ["PATH=/bin"]},
            "rootfs": {
                "type": "layers",
                "diff_ids": diff_ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
            },
            "history": contents.iter().map(|_| json!({"created_by": "kraken e2e test"})).collect::<Vec<_>>(),
        });
        let (config_digest, config_size) = self.write_blob(&serde_json::to_vec(&config)?)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": descriptor(CONFIG_TYPE, &config_digest, config_size),
            "layers": descriptors,
        });
        let (manifest_digest, manifest_size) = self.write_blob(&serde_json::to_vec(&manifest)?)?;
        Ok(Image {
            manifest: manifest_digest,
            manifest_size,
            config: config_digest,
            layers,
            diff_ids,
            runnable,
            architecture: spec.architecture.clone(),
        })
    }

    fn write_blob(&self, content: &[u8]) -> Result<(Digest, u64)> {
        let digest = Digest::sha256_of(content);
        std::fs::write(self.blob_path(&digest), content)?;
        Ok((digest, content.len() as u64))
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest.hex())
    }

    fn add_ref(&mut self, tag: &str, media_type: &str, digest: &Digest, size: u64) -> Result<()> {
        self.refs
            .retain(|entry| entry["annotations"]["org.opencontainers.image.ref.name"] != tag);
        let entry = json!({
            "mediaType": media_type,
            "digest": digest.to_string(),
            "size": size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        });
        self.refs.push(entry);
        self.write_index()
    }

    fn write_index(&self) -> Result<()> {
        let index = json!({"schemaVersion": 2, "manifests": self.refs});
        std::fs::write(self.dir.join("index.json"), serde_json::to_vec(&index)?)?;
        Ok(())
    }
}

/// What [`check_layout`] found under a tag of a layout a client wrote.
#[derive(Debug)]
pub struct LayoutCheck {
    /// Digest of the manifest or index the tag names.
    pub top: Digest,
    /// The media type `index.json` gives it.
    pub media_type: String,
    /// Digests of every blob reachable from it (manifests, configs, layers), each present and
    /// matching its digest.
    pub blobs: Vec<Digest>,
}

/// Checks the OCI layout in `dir` (as `skopeo copy … oci:DIR:TAG` writes it): `tag` is in
/// `index.json`, and every blob reachable from it is present and hashes to its name.
pub fn check_layout(dir: &Path, tag: &str) -> Result<LayoutCheck> {
    let index: Value = serde_json::from_slice(&std::fs::read(dir.join("index.json"))?)?;
    let entry = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|entry| entry["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .with_context(|| format!("no {tag:?} in {}/index.json: {index}", dir.display()))?;
    let top: Digest = entry["digest"].as_str().context("digest")?.parse()?;
    let media_type = entry["mediaType"].as_str().unwrap_or_default().to_owned();
    let mut blobs = Vec::new();
    let mut pending = vec![top];
    while let Some(digest) = pending.pop() {
        let path = dir
            .join("blobs")
            .join(digest.algorithm().name())
            .join(digest.hex());
        let content =
            std::fs::read(&path).with_context(|| format!("blob {digest} missing in the layout"))?;
        ensure!(
            Digest::sha256_of(&content) == digest,
            "blob {digest} has other content"
        );
        if let Ok(document) = serde_json::from_slice::<Value>(&content) {
            for child in children(&document) {
                pending.push(child?);
            }
        }
        blobs.push(digest);
    }
    Ok(LayoutCheck {
        top,
        media_type,
        blobs,
    })
}

/// The digests a manifest (config and layers) or an index (manifests) refers to; nothing for
/// other JSON (a config).
pub fn children(document: &Value) -> Vec<Result<Digest>> {
    // An image config has a `config` too, but no `schemaVersion`.
    if document.get("schemaVersion").is_none() {
        return Vec::new();
    }
    let descriptors = document["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(document.get("config"))
        .chain(document["layers"].as_array().into_iter().flatten());
    descriptors
        .map(|descriptor| match descriptor["digest"].as_str() {
            Some(digest) => digest.parse().context("a descriptor's digest"),
            None => bail!("descriptor without a digest: {descriptor}"),
        })
        .collect()
}

/// A tar archive of `(path, content, mode)` files, with their parent directories, all owned by
/// root and dated 2023-11-14 (a fixed time, so layers are reproducible).
pub fn tar_of(files: &[(String, Vec<u8>, u32)]) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut dirs: Vec<String> = Vec::new();
    for (path, content, mode) in files {
        let mut parent = String::new();
        for part in path
            .split('/')
            .rev()
            .skip(1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            parent = format!("{parent}{part}/");
            if !dirs.contains(&parent) {
                append(&mut builder, &parent, tar::EntryType::Directory, 0o755, &[])?;
                dirs.push(parent.clone());
            }
        }
        append(&mut builder, path, tar::EntryType::Regular, *mode, content)?;
    }
    Ok(builder.into_inner()?)
}

fn append(
    builder: &mut tar::Builder<Vec<u8>>,
    path: &str,
    kind: tar::EntryType,
    mode: u32,
    content: &[u8],
) -> Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(MTIME);
    header.set_size(content.len() as u64);
    builder.append_data(&mut header, path, content)?;
    Ok(())
}

/// `data` gzip'd (no file name, modification time 0: reproducible).
pub fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data)?;
    Ok(encoder.finish()?)
}

/// An OCI descriptor: `{"mediaType", "digest", "size"}`.
pub fn descriptor(media_type: &str, digest: &Digest, size: u64) -> Value {
    json!({"mediaType": media_type, "digest": digest.to_string(), "size": size})
}

/// Media types of an image's manifest, config and layers.
#[derive(Clone, Copy, Debug)]
pub struct MediaTypes {
    /// The manifest's `mediaType`.
    pub manifest: &'static str,
    /// The config descriptor's.
    pub config: &'static str,
    /// Every layer descriptor's.
    pub layer: &'static str,
}

/// An OCI image with uncompressed tar layers.
pub const OCI_MEDIA_TYPES: MediaTypes = MediaTypes {
    manifest: MANIFEST_TYPE,
    config: CONFIG_TYPE,
    layer: TAR_LAYER_TYPE,
};

/// An image manifest of `types` over a config and layers (`(digest, size)` each).
pub fn manifest_of(types: &MediaTypes, config: (Digest, u64), layers: &[(Digest, u64)]) -> Vec<u8> {
    let layers: Vec<Value> = layers
        .iter()
        .map(|(digest, size)| descriptor(types.layer, digest, *size))
        .collect();
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": types.manifest,
        "config": descriptor(types.config, &config.0, config.1),
        "layers": layers,
    }))
    .expect("JSON values serialise")
}

/// An OCI image manifest over a config and uncompressed layers (`(digest, size)` each).
pub fn image_manifest(config: (Digest, usize), layers: &[(Digest, usize)]) -> Vec<u8> {
    let layers: Vec<(Digest, u64)> = layers
        .iter()
        .map(|(digest, size)| (*digest, *size as u64))
        .collect();
    manifest_of(&OCI_MEDIA_TYPES, (config.0, config.1 as u64), &layers)
}

/// An artifact manifest with `subject`, over the empty config and one blob.
pub fn artifact_manifest(
    subject: (Digest, usize),
    artifact_type: &str,
    blob: (Digest, usize),
) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "artifactType": artifact_type,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                   "digest": Digest::sha256_of(b"{}").to_string(), "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": blob.0.to_string(), "size": blob.1}],
        "subject": {"mediaType": MANIFEST_TYPE, "digest": subject.0.to_string(), "size": subject.1},
    }))
    .expect("JSON values serialise")
}

/// The blobs and manifest of an image generated in memory.
#[derive(Clone, Debug)]
pub struct TestImage {
    /// The manifest's bytes.
    pub manifest: Vec<u8>,
    /// The manifest's digest.
    pub digest: Digest,
    /// The config's bytes.
    pub config: Vec<u8>,
    /// The layers' bytes, in order.
    pub layers: Vec<Vec<u8>>,
}

/// A two-layer image with layers of `sizes` bytes (different `seed`s give different images):
/// a config whose `diff_ids` name the layers, and a manifest of `types`.
pub fn two_layer_image(seed: u64, sizes: [usize; 2], types: &MediaTypes) -> TestImage {
    let layers = vec![
        pseudo_random_bytes(sizes[0], seed),
        pseudo_random_bytes(sizes[1], seed + 1),
    ];
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| Digest::sha256_of(l).to_string())
        .collect();
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": {"Labels": {"seed": seed.to_string()}},
    }))
    .expect("JSON values serialise");
    let of = |data: &[u8]| (Digest::sha256_of(data), data.len() as u64);
    let layer_descriptors: Vec<_> = layers.iter().map(|l| of(l)).collect();
    let manifest = manifest_of(types, of(&config), &layer_descriptors);
    TestImage {
        digest: Digest::sha256_of(&manifest),
        manifest,
        config,
        layers,
    }
}

/// Pushes a blob to `repo` of the registry at `registry` (`http://host:port`) the way docker
/// does: `POST` an upload, `PUT` its bytes with the digest. Asserts each step's status.
pub async fn push_blob(
    client: &reqwest::Client,
    registry: &str,
    repo: &str,
    content: &[u8],
) -> Digest {
    let digest = Digest::sha256_of(content);
    let started = client
        .post(format!("{registry}/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .expect("start upload");
    assert_eq!(started.status(), 202, "start upload");
    let location = started.headers()["location"]
        .to_str()
        .expect("an ASCII location")
        .to_owned();
    let mut url = reqwest::Url::parse(registry)
        .expect("a registry URL")
        .join(&location)
        .expect("a location relative to the registry");
    url.query_pairs_mut()
        .append_pair("digest", &digest.to_string());
    let finished = client
        .put(url)
        .body(content.to_vec())
        .send()
        .await
        .expect("finish upload");
    assert_eq!(finished.status(), 201, "finish upload");
    digest
}

/// Pushes `manifest` (of `media_type`) to `repo` of the registry at `registry` as `reference`
/// and asserts `201 Created`; returns the answer's headers (`docker-content-digest`, …).
pub async fn push_manifest(
    client: &reqwest::Client,
    registry: &str,
    repo: &str,
    reference: &str,
    media_type: &str,
    manifest: &[u8],
) -> reqwest::header::HeaderMap {
    let pushed = client
        .put(format!("{registry}/v2/{repo}/manifests/{reference}"))
        .header("content-type", media_type)
        .body(manifest.to_vec())
        .send()
        .await
        .expect("push manifest");
    let headers = pushed.headers().clone();
    assert_eq!(
        pushed.status(),
        201,
        "push manifest: {:?}",
        pushed.text().await
    );
    headers
}
