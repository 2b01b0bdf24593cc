//! `kraken model push DIR REF` and `kraken model pull REF DIR`: a model directory as a CNCF
//! ModelPack artifact (model-spec v1) in any OCI registry — pushed through Kraken's proxy,
//! pulled from an agent, whose layers then travel over P2P.
//!
//! Pushing makes every file one layer, uncompressed (`….raw` media types), with its path in
//! the `org.cncf.model.filepath` annotation; the config lists the layers' digests as the
//! model's `diffIds`. Pulling ([`pull`]) also reads the tar and tar+gzip layers other
//! ModelPack tools (olot, modctl) write, unpacking them as they stream in ([`archive`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, ensure};
use kraken_core::collection::{self, TreeFile};
use kraken_core::{Digest, Hasher};
use serde::{Deserialize, Serialize};

mod archive;
mod pull;

/// The artifact type of a ModelPack manifest.
pub(crate) const ARTIFACT_TYPE: &str = "application/vnd.cncf.model.manifest.v1+json";
/// The media type of a ModelPack config.
pub(crate) const CONFIG_MEDIA_TYPE: &str = "application/vnd.cncf.model.config.v1+json";
/// The annotation naming a layer's path in the model directory.
pub(crate) const FILEPATH_ANNOTATION: &str = "org.cncf.model.filepath";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Most bytes of a manifest read from a registry.
const MAX_MANIFEST: usize = 4 << 20;
/// Longest wait for a registry's next bytes (a stalled transfer fails instead of hanging).
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .read_timeout(READ_TIMEOUT)
        .build()?)
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum ModelCommand {
    /// Push a model directory as a ModelPack artifact (e.g. through the proxy).
    Push(PushArgs),
    /// Pull a ModelPack artifact (e.g. from an agent) and lay its files out in a directory.
    Pull(PullArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct PushArgs {
    /// The model directory.
    dir: PathBuf,
    /// Where to push: `REGISTRY/REPOSITORY:TAG`, e.g. `localhost:15000/models/llama:v1`.
    reference: String,
    /// Talk plain HTTP to the registry instead of HTTPS.
    #[arg(long)]
    plain_http: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct PullArgs {
    /// What to pull: `REGISTRY/REPOSITORY:TAG` (or `@sha256:…`).
    reference: String,
    /// The directory to lay the model out in (created if missing).
    dir: PathBuf,
    /// Talk plain HTTP to the registry instead of HTTPS.
    #[arg(long)]
    plain_http: bool,
    /// Most bytes one archive layer may unpack to (a compressed layer that inflates past it
    /// is refused, and what it unpacked so far removed).
    #[arg(long, default_value = "64GiB")]
    max_unpacked_size: kraken_core::ByteSize,
}

pub(crate) async fn run(command: ModelCommand) -> anyhow::Result<()> {
    kraken_backends::install_crypto_provider();
    match command {
        ModelCommand::Push(args) => push(args).await,
        ModelCommand::Pull(args) => pull::pull(args).await,
    }
}

/// `REGISTRY/REPOSITORY:TAG` split up.
#[derive(Debug, PartialEq)]
struct Reference {
    registry: String,
    repository: String,
    tag: String,
}

impl Reference {
    fn parse(text: &str) -> anyhow::Result<Self> {
        let (registry, rest) = text
            .split_once('/')
            .with_context(|| format!("{text:?}: expected REGISTRY/REPOSITORY:TAG"))?;
        let (repository, tag) = match rest.split_once('@') {
            Some((repository, digest)) => (repository, digest),
            None => rest
                .rsplit_once(':')
                .filter(|(_, tag)| !tag.contains('/'))
                .with_context(|| format!("{text:?} names no tag"))?,
        };
        kraken_core::name::RepoName::validate(repository)
            .map_err(|e| anyhow::anyhow!("{text:?}: {e}"))?;
        Ok(Self {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag: tag.to_owned(),
        })
    }

    fn url(&self, plain_http: bool, rest: &str) -> String {
        let scheme = if plain_http { "http" } else { "https" };
        format!("{scheme}://{}/v2/{}/{rest}", self.registry, self.repository)
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: Digest,
    size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    artifact_type: Option<String>,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

/// The ModelPack media type of a file, from its name: weights, their configs, docs, code.
fn media_type(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    let extension = name.rsplit_once('.').map_or("", |(_, e)| e);
    match extension {
        "safetensors" | "bin" | "gguf" | "pt" | "pth" | "onnx" | "h5" | "msgpack" | "ckpt" => {
            "application/vnd.cncf.model.weight.v1.raw"
        }
        "json" | "yaml" | "yml" | "txt" | "model" | "tiktoken" if !name.starts_with("readme") => {
            "application/vnd.cncf.model.weight.config.v1.raw"
        }
        "md" | "rst" => "application/vnd.cncf.model.doc.v1.raw",
        "py" | "sh" | "ipynb" => "application/vnd.cncf.model.code.v1.raw",
        _ if name.starts_with("license") || name.starts_with("readme") => {
            "application/vnd.cncf.model.doc.v1.raw"
        }
        _ => "application/vnd.cncf.model.weight.config.v1.raw",
    }
}

fn sha256_of_file(path: &Path) -> anyhow::Result<(Digest, u64)> {
    use std::io::Read as _;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut hasher = Hasher::new();
    let mut buf = vec![0; 1 << 20];
    let mut size = 0;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok((hasher.finalize(), size));
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
}

async fn push(args: PushArgs) -> anyhow::Result<()> {
    let reference = Reference::parse(&args.reference)?;
    let dir = args.dir.clone();
    let files: Vec<(TreeFile, Digest, u64)> = tokio::task::spawn_blocking(move || {
        collection::list_tree(&dir)?
            .into_iter()
            .map(|file| {
                let (digest, size) = sha256_of_file(&file.source)?;
                Ok((file, digest, size))
            })
            .collect::<anyhow::Result<Vec<_>>>()
    })
    .await??;
    ensure!(!files.is_empty(), "{} holds no files", args.dir.display());
    let http = client()?;
    let mut layers = Vec::new();
    for (file, digest, size) in &files {
        upload_blob(&http, &reference, args.plain_http, *digest, *size, || {
            file_body(&file.source)
        })
        .await
        .with_context(|| format!("pushing {}", file.path))?;
        layers.push(Descriptor {
            media_type: media_type(&file.path).to_owned(),
            digest: *digest,
            size: *size,
            annotations: BTreeMap::from([(FILEPATH_ANNOTATION.to_owned(), file.path.clone())]),
        });
    }
    let name = reference
        .repository
        .rsplit('/')
        .next()
        .unwrap_or(&reference.repository);
    let config = serde_json::to_vec(&serde_json::json!({
        "descriptor": {"name": name, "version": reference.tag},
        "config": {},
        "modelfs": {
            "type": "layers",
            "diffIds": layers.iter().map(|l| l.digest.to_string()).collect::<Vec<_>>(),
        },
    }))?;
    let config_digest = Digest::sha256_of(&config);
    let config_len = config.len() as u64;
    upload_blob(
        &http,
        &reference,
        args.plain_http,
        config_digest,
        config_len,
        || Ok(reqwest::Body::from(config.clone())),
    )
    .await
    .context("pushing the model config")?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.to_owned()),
        artifact_type: Some(ARTIFACT_TYPE.to_owned()),
        config: Descriptor {
            media_type: CONFIG_MEDIA_TYPE.to_owned(),
            digest: config_digest,
            size: config_len,
            annotations: BTreeMap::new(),
        },
        layers,
    };
    let body = serde_json::to_vec(&manifest)?;
    let digest = Digest::sha256_of(&body);
    let response = http
        .put(reference.url(args.plain_http, &format!("manifests/{}", reference.tag)))
        .header(reqwest::header::CONTENT_TYPE, OCI_MANIFEST)
        .body(body)
        .send()
        .await
        .context("pushing the manifest")?;
    ensure!(
        response.status().is_success(),
        "pushing the manifest: {}: {}",
        response.status(),
        response.text().await.unwrap_or_default()
    );
    println!("{digest}");
    eprintln!(
        "pushed {} files of {} as {}",
        files.len(),
        args.dir.display(),
        args.reference
    );
    Ok(())
}

fn file_body(path: &Path) -> anyhow::Result<reqwest::Body> {
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
    Ok(reqwest::Body::wrap_stream(stream))
}

/// Uploads a blob unless the registry has it: `POST` an upload session, `PUT` the bytes.
async fn upload_blob(
    http: &reqwest::Client,
    reference: &Reference,
    plain_http: bool,
    digest: Digest,
    size: u64,
    body: impl FnOnce() -> anyhow::Result<reqwest::Body>,
) -> anyhow::Result<()> {
    let exists = http
        .head(reference.url(plain_http, &format!("blobs/{digest}")))
        .send()
        .await?;
    if exists.status().is_success() {
        return Ok(());
    }
    let started = http
        .post(reference.url(plain_http, "blobs/uploads/"))
        .send()
        .await?;
    ensure!(
        started.status() == reqwest::StatusCode::ACCEPTED,
        "starting an upload: {}",
        started.status()
    );
    let location = started
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .context("the registry gave no upload location")?;
    let mut url = reqwest::Url::parse(&reference.url(plain_http, ""))?.join(location)?;
    url.query_pairs_mut()
        .append_pair("digest", &digest.to_string());
    let done = http
        .put(url)
        .header(reqwest::header::CONTENT_LENGTH, size)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(body()?)
        .send()
        .await?;
    ensure!(
        done.status() == reqwest::StatusCode::CREATED,
        "uploading {digest}: {}: {}",
        done.status(),
        done.text().await.unwrap_or_default()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_and_media_types() {
        let r = Reference::parse("localhost:15000/models/llama:v1").unwrap();
        assert_eq!(
            r,
            Reference {
                registry: "localhost:15000".into(),
                repository: "models/llama".into(),
                tag: "v1".into()
            }
        );
        assert_eq!(
            r.url(true, "manifests/v1"),
            "http://localhost:15000/v2/models/llama/manifests/v1"
        );
        assert!(Reference::parse("localhost:15000/models/llama").is_err());
        assert!(Reference::parse("llama:v1").is_err());
        assert_eq!(
            media_type("model-00001-of-00002.safetensors"),
            "application/vnd.cncf.model.weight.v1.raw"
        );
        assert_eq!(
            media_type("tokenizer/tokenizer.json"),
            "application/vnd.cncf.model.weight.config.v1.raw"
        );
        assert_eq!(
            media_type("README.md"),
            "application/vnd.cncf.model.doc.v1.raw"
        );
        assert_eq!(
            media_type("LICENSE"),
            "application/vnd.cncf.model.doc.v1.raw"
        );
        assert_eq!(
            media_type("scripts/run.sh"),
            "application/vnd.cncf.model.code.v1.raw"
        );
    }
}
