//! A backend on any `object_store` store: S3 and S3-compatible servers, GCS, Azure Blob.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::BytesMut;
use futures::{StreamExt, TryStreamExt};
use kraken_core::ByteSize;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, BlobInfo, ByteRange, ByteStream, ListOptions, ListPage, UploadBody};
use crate::error::{Error, Result};
use crate::layout::{NameLayout, join_root};
use crate::listing::DEFAULT_PAGE_SIZE;

/// Smallest part S3 accepts in a multipart upload (except the last).
const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;

/// How large blobs are uploaded in parts.
///
/// ```toml
/// [upload]
/// part_size = "64MiB"  # default
/// concurrency = 4      # default
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MultipartConfig {
    /// Size of each part; a blob no larger than one part is uploaded in a single request.
    /// At least 5MiB (S3's minimum). Default: 64MiB.
    pub part_size: ByteSize,
    /// Parts uploaded at once. Memory use is about `part_size * (concurrency + 1)` per
    /// upload. Default: 4.
    pub concurrency: usize,
}

impl Default for MultipartConfig {
    fn default() -> Self {
        Self {
            part_size: ByteSize(64 * 1024 * 1024),
            concurrency: 4,
        }
    }
}

/// Blobs as objects in a bucket, through the `object_store` crate: streaming ranged GETs,
/// and multipart uploads for blobs larger than one part (aborted on failure).
///
/// Built by [`S3Config`](crate::S3Config), [`GcsConfig`](crate::GcsConfig) and
/// [`AzureConfig`](crate::AzureConfig), or from any store with [`CloudBackend::new`].
#[derive(Debug)]
pub struct CloudBackend {
    store: Arc<dyn ObjectStore>,
    root: String,
    layout: NameLayout,
    multipart: MultipartConfig,
}

impl CloudBackend {
    /// Blobs in `store` below `root`, named by `layout`.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        root: &str,
        layout: NameLayout,
        multipart: MultipartConfig,
    ) -> Result<Self> {
        if multipart.part_size.0 < MIN_PART_SIZE {
            return Err(Error::Config(format!(
                "upload.part_size {} is below the 5MiB minimum of S3",
                multipart.part_size
            )));
        }
        let root = root.trim_matches('/').to_owned();
        if !root.is_empty() {
            Path::parse(&root).map_err(|e| Error::Config(format!("root {root:?}: {e}")))?;
        }
        Ok(Self {
            store,
            root,
            layout,
            multipart,
        })
    }

    fn location(&self, name: &str) -> Result<Path> {
        let path = join_root(&self.root, &self.layout.path(name)?);
        Path::parse(&path).map_err(|_| Error::InvalidName {
            name: name.to_owned(),
            reason: "not a valid object path",
        })
    }

    /// The name stored at `location`, if one maps to it.
    fn name_of(&self, location: &Path) -> Option<String> {
        let path = location.as_ref();
        let relative = if self.root.is_empty() {
            path
        } else {
            path.strip_prefix(&self.root)?.strip_prefix('/')?
        };
        self.layout.name(relative)
    }

    async fn upload_multipart(
        &self,
        location: &Path,
        first_part: BytesMut,
        mut rest: ByteStream,
    ) -> Result<()> {
        let upload = self
            .store
            .put_multipart(location)
            .await
            .map_err(Error::ObjectStore)?;
        let mut writer =
            WriteMultipart::new_with_chunk_size(upload, self.multipart.part_size.0 as usize);
        writer.write(&first_part);
        drop(first_part);
        let mut written: Result<()> = Ok(());
        while let Some(chunk) = rest.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(error) => {
                    written = Err(error);
                    break;
                }
            };
            // Bounds the parts in flight, and so the memory this upload holds.
            if let Err(error) = writer
                .wait_for_capacity(self.multipart.concurrency.max(1))
                .await
            {
                written = Err(Error::ObjectStore(error));
                break;
            }
            writer.write(&chunk);
        }
        match written {
            Ok(()) => writer.finish().await.map(drop).map_err(Error::ObjectStore),
            Err(error) => {
                // Parts of an unfinished upload cost storage until aborted.
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(%location, error = &abort as &dyn std::error::Error, "could not abort multipart upload");
                }
                Err(error)
            }
        }
    }
}

fn store_error(error: object_store::Error, namespace: &str, name: &str) -> Error {
    match error {
        object_store::Error::NotFound { .. } => Error::not_found(namespace, name),
        other => Error::ObjectStore(other),
    }
}

#[async_trait]
impl Backend for CloudBackend {
    async fn stat(&self, namespace: &str, name: &str) -> Result<BlobInfo> {
        let meta = self
            .store
            .head(&self.location(name)?)
            .await
            .map_err(|e| store_error(e, namespace, name))?;
        Ok(BlobInfo::new(meta.size).with_modified(meta.last_modified.into()))
    }

    async fn download(
        &self,
        namespace: &str,
        name: &str,
        range: Option<ByteRange>,
    ) -> Result<ByteStream> {
        let location = self.location(name)?;
        let options = GetOptions {
            range: range.map(|range| match range.length() {
                Some(length) => {
                    GetRange::Bounded(range.offset()..range.offset().saturating_add(length))
                }
                None => GetRange::Offset(range.offset()),
            }),
            ..GetOptions::default()
        };
        match self.store.get_opts(&location, options).await {
            Ok(result) => Ok(result.into_stream().map_err(Error::ObjectStore).boxed()),
            Err(error) => {
                let error = store_error(error, namespace, name);
                // Stores report an unsatisfiable range in different ways; ask for the size to
                // tell it from other failures.
                if let (Some(range), Error::ObjectStore(_)) = (range, &error)
                    && let Ok(meta) = self.store.head(&location).await
                {
                    range.clamp_to(meta.size)?;
                }
                Err(error)
            }
        }
    }

    async fn upload(&self, _namespace: &str, name: &str, body: UploadBody) -> Result<()> {
        let location = self.location(name)?;
        let part_size = self.multipart.part_size.0 as usize;
        let mut stream = body.into_stream();
        // Read up to one part: a blob that fits goes up in one PUT, a larger one in parts.
        let mut first_part = BytesMut::new();
        while first_part.len() < part_size {
            match stream.next().await {
                Some(chunk) => first_part.extend_from_slice(&chunk?),
                None => {
                    let payload = PutPayload::from_bytes(first_part.freeze());
                    self.store
                        .put(&location, payload)
                        .await
                        .map_err(Error::ObjectStore)?;
                    return Ok(());
                }
            }
        }
        self.upload_multipart(&location, first_part, stream).await
    }

    async fn list(
        &self,
        _namespace: &str,
        prefix: &str,
        options: &ListOptions,
    ) -> Result<ListPage> {
        let dir = join_root(&self.root, &self.layout.list_dir(prefix));
        let dir = Path::parse(dir.trim_end_matches('/'))
            .map_err(|e| Error::Config(format!("list directory: {e}")))?;
        let limit = options.page_size(DEFAULT_PAGE_SIZE);
        let mut objects = match &options.continuation_token {
            Some(token) => {
                let offset = Path::parse(token).map_err(|_| Error::InvalidName {
                    name: token.clone(),
                    reason: "not a continuation token of this backend",
                })?;
                self.store.list_with_offset(Some(&dir), &offset)
            }
            None => self.store.list(Some(&dir)),
        };
        // S3, GCS and Azure list in key order, so the last key of a page is where the next
        // one starts. Reading one more than the page tells whether there is a next page.
        let mut page: Vec<(String, String)> = Vec::with_capacity(limit + 1);
        while let Some(meta) = objects.try_next().await.map_err(Error::ObjectStore)? {
            if let Some(name) = self
                .name_of(&meta.location)
                .filter(|n| n.starts_with(prefix))
            {
                page.push((meta.location.to_string(), name));
                if page.len() > limit {
                    break;
                }
            }
        }
        page.sort_unstable();
        let more = page.len() > limit;
        page.truncate(limit);
        let token = more
            .then(|| page.last().map(|(location, _)| location.clone()))
            .flatten();
        Ok(ListPage::new(
            page.into_iter().map(|(_, name)| name).collect(),
            token,
        ))
    }

    async fn delete(&self, namespace: &str, name: &str) -> Result<()> {
        let location = self.location(name)?;
        // S3 deletes of missing keys succeed; not-found must be asked for first.
        self.store
            .head(&location)
            .await
            .map_err(|e| store_error(e, namespace, name))?;
        self.store
            .delete(&location)
            .await
            .map_err(|e| store_error(e, namespace, name))
    }
}
