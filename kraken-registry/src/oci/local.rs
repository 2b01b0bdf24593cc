//! [`LocalRegistry`]: a complete read-write [`RegistryStorage`] on a local directory.
//!
//! Layout under the root:
//!
//! ```text
//! blobs/sha256/<hex>                              content: blobs and manifests, by digest
//! repositories/<name>/_blobs/<hex>                 the blob is in the repository (empty file)
//! repositories/<name>/_manifests/<hex>             the manifest is in the repository (its media type)
//! repositories/<name>/_tags/<tag>                  the tag (the digest it points at)
//! repositories/<name>/_referrers/<subject>/<hex>   a referrer of <subject> (its descriptor, JSON)
//! tmp/                                             files being written, renamed into place
//! ```
//!
//! Repository name components start with a letter or digit, so they never collide with the
//! `_` directories. Every file is written to `tmp/` and renamed into place, so a reader sees
//! the old or the new content, never a part. Deleting a blob or manifest unlinks it from the
//! repository; its content stays under `blobs/` (there is no garbage collection yet).

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use kraken_core::Digest;

use super::manifest::{Descriptor, Manifest};
use super::name::{Reference, RepoName, Tag};
use super::storage::{
    ByteStream, Page, RegistryStorage, StorageError, StorageResult, StoredManifest,
};
use crate::http::body::read_chunks;

/// A registry on a local directory: blobs content-addressed, manifests, tags and referrers
/// per repository. Cheap to clone.
#[derive(Clone, Debug)]
pub struct LocalRegistry {
    inner: Arc<Layout>,
}

#[derive(Debug)]
struct Layout {
    root: PathBuf,
}

impl LocalRegistry {
    /// Opens (creating if needed) a registry under `root`.
    pub fn open(root: impl AsRef<Path>) -> crate::Result<Self> {
        let root = root.as_ref().to_owned();
        for dir in ["blobs/sha256", "repositories", "tmp"] {
            fs::create_dir_all(root.join(dir))?;
        }
        Ok(Self {
            inner: Arc::new(Layout { root }),
        })
    }

    /// The directory the registry lives in.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Runs `f` on the blocking pool with the layout.
    async fn blocking<T, F>(&self, f: F) -> StorageResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Layout) -> StorageResult<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StorageError::failed(format!("storage task failed: {e}")))?
    }
}

impl Layout {
    fn content(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    fn repo(&self, repo: &RepoName) -> PathBuf {
        self.root.join("repositories").join(repo.as_str())
    }

    fn blob_link(&self, repo: &RepoName, digest: &Digest) -> PathBuf {
        self.repo(repo).join("_blobs").join(digest.hex())
    }

    fn manifest_link(&self, repo: &RepoName, digest: &Digest) -> PathBuf {
        self.repo(repo).join("_manifests").join(digest.hex())
    }

    fn tag(&self, repo: &RepoName, tag: &Tag) -> PathBuf {
        self.repo(repo).join("_tags").join(tag.as_str())
    }

    fn referrer(&self, repo: &RepoName, subject: &Digest, digest: &Digest) -> PathBuf {
        self.referrers(repo, subject).join(digest.hex())
    }

    fn referrers(&self, repo: &RepoName, subject: &Digest) -> PathBuf {
        self.repo(repo).join("_referrers").join(subject.hex())
    }

    /// Writes `data` to `path` atomically: a temporary file, synced, renamed into place.
    fn write(&self, path: &Path, data: &[u8]) -> std::io::Result<()> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let tmp = self.tmp_path();
        let result = (|| {
            let mut file = File::create(&tmp)?;
            file.write_all(data)?;
            file.sync_data()?;
            fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn tmp_path(&self) -> PathBuf {
        self.root
            .join("tmp")
            .join(format!("{:032x}", rand::random::<u128>()))
    }

    /// Moves a verified file into the content store (copying across file systems).
    fn install(&self, digest: &Digest, file: &Path) -> std::io::Result<()> {
        let target = self.content(digest);
        if target.exists() {
            return Ok(());
        }
        File::open(file)?.sync_all()?;
        match fs::rename(file, &target) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::CrossesDevices => {
                let tmp = self.tmp_path();
                let result = fs::copy(file, &tmp)
                    .and_then(|_| File::open(&tmp)?.sync_all())
                    .and_then(|()| fs::rename(&tmp, &target));
                if result.is_err() {
                    let _ = fs::remove_file(&tmp);
                }
                result
            }
            Err(e) => Err(e),
        }
    }

    fn blob_size(&self, repo: &RepoName, digest: &Digest) -> StorageResult<u64> {
        if !self.blob_link(repo, digest).exists() {
            return Err(StorageError::BlobUnknown(*digest));
        }
        match fs::metadata(self.content(digest)) {
            Ok(meta) => Ok(meta.len()),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(StorageError::BlobUnknown(*digest)),
            Err(e) => Err(e.into()),
        }
    }

    fn resolve(&self, repo: &RepoName, reference: &Reference) -> StorageResult<Digest> {
        let unknown = || StorageError::ManifestUnknown(reference.to_string());
        let digest = match reference {
            Reference::Digest(digest) => *digest,
            Reference::Tag(tag) => read_optional(&self.tag(repo, tag))?
                .and_then(|text| String::from_utf8(text).ok())
                .and_then(|text| text.trim().parse().ok())
                .ok_or_else(unknown)?,
        };
        if !self.manifest_link(repo, &digest).exists() {
            return Err(unknown());
        }
        Ok(digest)
    }

    fn manifest(&self, repo: &RepoName, reference: &Reference) -> StorageResult<StoredManifest> {
        let digest = self.resolve(repo, reference)?;
        let unknown = || StorageError::ManifestUnknown(reference.to_string());
        let media_type = read_optional(&self.manifest_link(repo, &digest))?.ok_or_else(unknown)?;
        let bytes = read_optional(&self.content(&digest))?.ok_or_else(unknown)?;
        let media_type = String::from_utf8(media_type)
            .map_err(|_| StorageError::failed(format!("corrupt media type of {digest}")))?;
        Ok(StoredManifest::new(Bytes::from(bytes), media_type, digest))
    }

    fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> StorageResult<()> {
        let stored = self.manifest(repo, &Reference::Digest(*digest))?;
        // Its referrers entry: the subject is in the document.
        if let Ok(manifest) = Manifest::parse(&stored.bytes, Some(&stored.media_type))
            && let Some(subject) = manifest.subject()
        {
            remove_optional(&self.referrer(repo, &subject.digest, digest))?;
        }
        let tags_dir = self.repo(repo).join("_tags");
        for tag in list_dir(&tags_dir)? {
            let path = tags_dir.join(&tag);
            let points_here = read_optional(&path)?
                .is_some_and(|text| text.trim_ascii() == digest.to_string().as_bytes());
            if points_here {
                remove_optional(&path)?;
            }
        }
        remove_optional(&self.manifest_link(repo, digest))?;
        Ok(())
    }

    /// Repository names under `dir` (relative `prefix`), depth first.
    fn walk_repos(&self, dir: &Path, prefix: &str, out: &mut Vec<String>) -> std::io::Result<()> {
        let mut is_repo = false;
        for name in list_dir(dir)? {
            if name.starts_with('_') {
                is_repo = true;
            } else if dir.join(&name).is_dir() {
                let child = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}/{name}")
                };
                self.walk_repos(&dir.join(&name), &child, out)?;
            }
        }
        if is_repo && !prefix.is_empty() {
            out.push(prefix.to_owned());
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl RegistryStorage for LocalRegistry {
    async fn blob_stat(&self, repo: &RepoName, digest: &Digest) -> StorageResult<u64> {
        let (repo, digest) = (repo.clone(), *digest);
        self.blocking(move |l| l.blob_size(&repo, &digest)).await
    }

    async fn blob_read(
        &self,
        repo: &RepoName,
        digest: &Digest,
        range: Option<std::ops::Range<u64>>,
    ) -> StorageResult<ByteStream> {
        let (repo, digest) = (repo.clone(), *digest);
        let (file, size) = self
            .blocking(move |l| {
                let size = l.blob_size(&repo, &digest)?;
                Ok((File::open(l.content(&digest))?, size))
            })
            .await?;
        let range = range.unwrap_or(0..size);
        if range.start > range.end || range.end > size {
            return Err(StorageError::failed("blob range outside the blob"));
        }
        let chunks = read_chunks(
            move |offset, n| kraken_core::store::read_vec_at(&file, offset, n),
            range.start,
            range.end - range.start,
        );
        Ok(Box::pin(chunks))
    }

    async fn blob_put(
        &self,
        repo: &RepoName,
        digest: &Digest,
        file: &Path,
        _size: u64,
    ) -> StorageResult<()> {
        let (repo, digest, file) = (repo.clone(), *digest, file.to_owned());
        self.blocking(move |l| {
            l.install(&digest, &file)?;
            l.write(&l.blob_link(&repo, &digest), b"")?;
            Ok(())
        })
        .await
    }

    async fn blob_mount(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: Option<&RepoName>,
    ) -> StorageResult<u64> {
        let (repo, digest, from) = (repo.clone(), *digest, from.cloned());
        self.blocking(move |l| {
            let size = match &from {
                Some(from) => l.blob_size(from, &digest)?,
                // Anonymous mount: the content is here, whichever repository has it.
                None => match fs::metadata(l.content(&digest)) {
                    Ok(meta) => meta.len(),
                    Err(e) if e.kind() == ErrorKind::NotFound => {
                        return Err(StorageError::BlobUnknown(digest));
                    }
                    Err(e) => return Err(e.into()),
                },
            };
            l.write(&l.blob_link(&repo, &digest), b"")?;
            Ok(size)
        })
        .await
    }

    async fn blob_delete(&self, repo: &RepoName, digest: &Digest) -> StorageResult<()> {
        let (repo, digest) = (repo.clone(), *digest);
        self.blocking(move |l| {
            if remove_optional(&l.blob_link(&repo, &digest))? {
                Ok(())
            } else {
                Err(StorageError::BlobUnknown(digest))
            }
        })
        .await
    }

    async fn manifest_get(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> StorageResult<StoredManifest> {
        let (repo, reference) = (repo.clone(), reference.clone());
        self.blocking(move |l| l.manifest(&repo, &reference)).await
    }

    async fn manifest_put(
        &self,
        repo: &RepoName,
        manifest: &Manifest,
        bytes: Bytes,
        tags: &[Tag],
    ) -> StorageResult<()> {
        let (repo, tags) = (repo.clone(), tags.to_vec());
        let digest = *manifest.digest();
        let media_type = manifest.media_type();
        let referrer = manifest
            .subject()
            .map(|subject| (subject.digest, manifest.descriptor()));
        self.blocking(move |l| {
            if !l.content(&digest).exists() {
                l.write(&l.content(&digest), &bytes)?;
            }
            l.write(&l.manifest_link(&repo, &digest), media_type.as_bytes())?;
            if let Some((subject, descriptor)) = referrer {
                let json = serde_json::to_vec(&descriptor).map_err(StorageError::failed)?;
                l.write(&l.referrer(&repo, &subject, &digest), &json)?;
            }
            for tag in &tags {
                l.write(&l.tag(&repo, tag), digest.to_string().as_bytes())?;
            }
            Ok(())
        })
        .await
    }

    async fn manifest_delete(&self, repo: &RepoName, reference: &Reference) -> StorageResult<()> {
        let (repo, reference) = (repo.clone(), reference.clone());
        self.blocking(move |l| match &reference {
            Reference::Tag(tag) => {
                if remove_optional(&l.tag(&repo, tag))? {
                    Ok(())
                } else {
                    Err(StorageError::ManifestUnknown(reference.to_string()))
                }
            }
            Reference::Digest(digest) => l.delete_manifest(&repo, digest),
        })
        .await
    }

    async fn tags(&self, repo: &RepoName, page: Page<'_>) -> StorageResult<Vec<Tag>> {
        let repo = repo.clone();
        let (last, limit) = (page.last.map(str::to_owned), page.limit);
        self.blocking(move |l| {
            if !l.repo(&repo).is_dir() {
                return Err(StorageError::NameUnknown(repo));
            }
            let mut tags: Vec<Tag> = list_dir(&l.repo(&repo).join("_tags"))?
                .into_iter()
                .filter_map(|name| name.parse().ok())
                .collect();
            tags.sort();
            Ok(page_of(tags, last.as_deref(), limit, Tag::as_str))
        })
        .await
    }

    async fn catalog(&self, page: Page<'_>) -> StorageResult<Vec<RepoName>> {
        let (last, limit) = (page.last.map(str::to_owned), page.limit);
        self.blocking(move |l| {
            let mut names = Vec::new();
            l.walk_repos(&l.root.join("repositories"), "", &mut names)?;
            let mut repos: Vec<RepoName> = names.iter().filter_map(|n| n.parse().ok()).collect();
            repos.sort();
            Ok(page_of(repos, last.as_deref(), limit, RepoName::as_str))
        })
        .await
    }

    async fn referrers(&self, repo: &RepoName, subject: &Digest) -> StorageResult<Vec<Descriptor>> {
        let (repo, subject) = (repo.clone(), *subject);
        self.blocking(move |l| {
            let dir = l.referrers(&repo, &subject);
            let mut descriptors = Vec::new();
            for name in list_dir(&dir)? {
                let Some(json) = read_optional(&dir.join(&name))? else {
                    continue; // deleted meanwhile
                };
                let descriptor: Descriptor = serde_json::from_slice(&json).map_err(|e| {
                    StorageError::failed(format!(
                        "corrupt referrer {}: {e}",
                        dir.join(&name).display()
                    ))
                })?;
                descriptors.push(descriptor);
            }
            descriptors.sort_by_key(|d| d.digest);
            Ok(descriptors)
        })
        .await
    }
}

/// The entries of a sorted listing after `last`, at most `limit`.
fn page_of<T>(sorted: Vec<T>, last: Option<&str>, limit: usize, key: fn(&T) -> &str) -> Vec<T> {
    sorted
        .into_iter()
        .filter(|item| last.is_none_or(|last| key(item) > last))
        .take(limit)
        .collect()
}

/// The file's content, or `None` when it does not exist.
fn read_optional(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(data) => Ok(Some(data)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes a file; whether it was there.
fn remove_optional(path: &Path) -> std::io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Names in a directory; empty when it does not exist.
fn list_dir(dir: &Path) -> std::io::Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        if let Ok(name) = entry?.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}
