//! The `/v2/` HTTP handler: routes a request, validates it, and answers with the spec's
//! statuses, headers and error codes, over any [`RegistryStorage`].

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use http_body_util::BodyExt;
use hyper::http::{HeaderValue, Method, Request, Response, StatusCode, header};
use kraken_core::Digest;
use serde::Serialize;

use super::config::OciConfig;
use super::error::{ApiError, ErrorCode};
use super::manifest::{Dependency, Manifest, media_type};
use super::name::{Reference, RepoName, Tag, parse_digest};
use super::query::{link, next_page, param, query_pairs};
use super::request::{Req, chunk_length, content_length, read_limited, repo_name};
use super::response::{
    blob_created, empty, error_response, insert, json, method_not_allowed, upload_accepted,
};
use super::router::{Route, route};
use super::storage::{Operation, Page, RegistryStorage, StorageError};
use super::stream_put;
use super::uploads::{RequestBody, Session, UploadLimits, UploadSessions, too_large};
use crate::http::body::{self, Body};
use crate::http::range::RangeRequest;

/// The response body type: bytes, or an I/O error that aborts the response.
pub type ResponseBody = Body;

/// Blob and manifest existence checks a manifest `PUT` runs at once.
const CHECK_CONCURRENCY: usize = 8;

/// How often, at most, a request sweeps stale uploads.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// The OCI distribution API v1.1 (`/v2/…`) over a [`RegistryStorage`]. Cheap to clone.
///
/// Mount it in any hyper service: give it the requests whose path starts with `/v2`
/// ([`OciHandler::handle`]); [`OciServer`](super::OciServer) does that on a TCP listener.
#[derive(Clone, Debug)]
pub struct OciHandler {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    storage: Arc<dyn RegistryStorage>,
    uploads: UploadSessions,
    config: OciConfig,
    last_sweep: std::sync::Mutex<Instant>,
}

impl OciHandler {
    /// A handler over `storage`. Creates (and empties) `config.upload_dir`.
    pub fn new(storage: Arc<dyn RegistryStorage>, config: OciConfig) -> crate::Result<Self> {
        let limits = UploadLimits {
            max_size: config.max_blob_size.bytes(),
            max_sessions: config.max_uploads,
            ttl: config.upload_ttl,
        };
        let uploads = UploadSessions::open(&config.upload_dir, limits)?;
        Ok(Self {
            inner: Arc::new(Inner {
                storage,
                uploads,
                config,
                last_sweep: std::sync::Mutex::new(Instant::now()),
            }),
        })
    }

    /// The storage.
    pub fn storage(&self) -> &Arc<dyn RegistryStorage> {
        &self.inner.storage
    }

    /// Answers one request. Never panics on request data; every refusal is a spec status
    /// and error body.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<ResponseBody>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.sweep_now_and_then();
        let (parts, body) = request.into_parts();
        let body: RequestBody = body.map_err(Into::into).boxed_unsync();
        let request = Req {
            method: &parts.method,
            headers: &parts.headers,
            query: parts.uri.query().unwrap_or_default(),
        };
        let mut response = match self.dispatch(parts.uri.path(), &request, body).await {
            Ok(response) => response,
            Err(error) => error_response(&error),
        };
        if response.status() == StatusCode::METHOD_NOT_ALLOWED {
            // RFC 9110: a 405 names the methods the resource does allow.
            let allowed = route(parts.uri.path())
                .map_or_else(Vec::new, |route| allowed_methods(&route, self.store()));
            insert(response.headers_mut(), header::ALLOW, allowed.join(", "));
        }
        response.headers_mut().insert(
            "docker-distribution-api-version",
            HeaderValue::from_static("registry/2.0"),
        );
        response
    }

    async fn dispatch(
        &self,
        path: &str,
        req: &Req<'_>,
        body: RequestBody,
    ) -> Result<Response<Body>, ApiError> {
        let route = route(path).ok_or_else(|| {
            ApiError::new(ErrorCode::NameUnknown, "no such endpoint")
                .with_status(StatusCode::NOT_FOUND)
        })?;
        let method = req.method;
        match route {
            Route::Base => match *method {
                Method::GET | Method::HEAD => Ok(json(StatusCode::OK, &serde_json::json!({}))),
                _ => Err(method_not_allowed()),
            },
            Route::Catalog => match *method {
                Method::GET => self.catalog(req).await,
                _ => Err(method_not_allowed()),
            },
            Route::Tags { name } => {
                let repo = repo_name(name)?;
                match *method {
                    Method::GET => self.tags(&repo, req).await,
                    _ => Err(method_not_allowed()),
                }
            }
            Route::Manifest { name, reference } => {
                let repo = repo_name(name)?;
                let reference = match Reference::parse(&reference) {
                    // No manifest can have a name no tag can have: a read or a delete of
                    // one is `MANIFEST_UNKNOWN`, as OCI clients and the conformance tests
                    // expect; `MANIFEST_INVALID` is for what a `PUT` sends.
                    Err(e)
                        if e.code() == ErrorCode::ManifestInvalid
                            && matches!(*method, Method::GET | Method::HEAD | Method::DELETE) =>
                    {
                        return Err(ApiError::new(ErrorCode::ManifestUnknown, e.message()));
                    }
                    parsed => parsed?,
                };
                match *method {
                    Method::GET => self.get_manifest(&repo, &reference, true).await,
                    Method::HEAD => self.get_manifest(&repo, &reference, false).await,
                    Method::PUT => self.put_manifest(&repo, reference, req, body).await,
                    Method::DELETE => {
                        self.store().manifest_delete(&repo, &reference).await?;
                        Ok(empty(StatusCode::ACCEPTED))
                    }
                    _ => Err(method_not_allowed()),
                }
            }
            Route::Blob { name, digest } => {
                let repo = repo_name(name)?;
                let digest = parse_digest(&digest)?;
                match *method {
                    Method::GET => self.get_blob(&repo, &digest, req, true).await,
                    Method::HEAD => self.get_blob(&repo, &digest, req, false).await,
                    Method::DELETE => {
                        self.store().blob_delete(&repo, &digest).await?;
                        Ok(empty(StatusCode::ACCEPTED))
                    }
                    _ => Err(method_not_allowed()),
                }
            }
            Route::Uploads { name } => {
                let repo = repo_name(name)?;
                match *method {
                    Method::POST => self.start_upload(&repo, req, body).await,
                    _ => Err(method_not_allowed()),
                }
            }
            Route::Upload { name, id } => {
                let repo = repo_name(name)?;
                // A storage that takes no pushes has no sessions: say so, not "unknown".
                self.store().allows(Operation::PushBlob)?;
                match *method {
                    Method::GET => self.upload_status(&repo, &id).await,
                    Method::PATCH => self.patch_upload(&repo, &id, req, body).await,
                    Method::PUT => self.finish_upload(&repo, &id, req, body).await,
                    Method::DELETE => self.cancel_upload(&repo, &id).await,
                    _ => Err(method_not_allowed()),
                }
            }
            Route::Referrers { name, digest } => {
                let repo = repo_name(name)?;
                let digest = parse_digest(&digest)?;
                match *method {
                    Method::GET => self.referrers(&repo, &digest, req).await,
                    _ => Err(method_not_allowed()),
                }
            }
        }
    }

    fn store(&self) -> &dyn RegistryStorage {
        self.inner.storage.as_ref()
    }

    fn sweep_now_and_then(&self) {
        let now = Instant::now();
        {
            let mut last = self
                .inner
                .last_sweep
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if now.saturating_duration_since(*last) < SWEEP_EVERY {
                return;
            }
            *last = now;
        }
        self.inner.uploads.sweep(now);
    }

    // ---- blobs ----

    async fn get_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        req: &Req<'_>,
        with_body: bool,
    ) -> Result<Response<Body>, ApiError> {
        let size = self.store().blob_stat(repo, digest).await?;
        let range = req.header(header::RANGE);
        let (status, offset, length) = match RangeRequest::parse(range, size) {
            RangeRequest::Whole => (StatusCode::OK, 0, size),
            RangeRequest::Part { offset, length } => (StatusCode::PARTIAL_CONTENT, offset, length),
            RangeRequest::Unsatisfiable => {
                let mut response = error_response(&ApiError::new(
                    ErrorCode::RangeInvalid,
                    format!(
                        "range {:?} is outside the blob's {size} bytes",
                        range.unwrap_or_default()
                    ),
                ));
                insert(
                    response.headers_mut(),
                    header::CONTENT_RANGE,
                    format!("bytes */{size}"),
                );
                return Ok(response);
            }
        };
        let body = if with_body {
            let range = (status == StatusCode::PARTIAL_CONTENT).then_some(offset..offset + length);
            let stream = self.store().blob_read(repo, digest, range).await?;
            body::stream(stream)
        } else {
            body::empty()
        };
        let mut response = Response::new(body);
        *response.status_mut() = status;
        let headers = response.headers_mut();
        insert(headers, header::CONTENT_LENGTH, length.to_string());
        insert(
            headers,
            header::CONTENT_TYPE,
            "application/octet-stream".into(),
        );
        insert(headers, header::ACCEPT_RANGES, "bytes".into());
        insert(headers, "docker-content-digest", digest.to_string());
        insert(headers, header::ETAG, format!("\"{digest}\""));
        if status == StatusCode::PARTIAL_CONTENT {
            insert(
                headers,
                header::CONTENT_RANGE,
                format!("bytes {offset}-{}/{size}", offset + length - 1),
            );
        }
        Ok(response)
    }

    // ---- uploads ----

    async fn start_upload(
        &self,
        repo: &RepoName,
        req: &Req<'_>,
        body: RequestBody,
    ) -> Result<Response<Body>, ApiError> {
        self.store().allows(Operation::PushBlob)?;
        let query = query_pairs(req.query);
        if let Some(mount) = param(&query, "mount") {
            let digest = parse_digest(mount)?;
            let from = param(&query, "from").map(repo_name).transpose()?;
            if self.store().allows(Operation::MountBlob).is_ok() {
                match self.store().blob_mount(repo, &digest, from.as_ref()).await {
                    Ok(_) => return Ok(blob_created(repo, &digest)),
                    // The spec: when a mount cannot be done, start an ordinary upload.
                    Err(e @ StorageError::Failed(_)) => return Err(e.into()),
                    Err(e) => tracing::debug!(error = %e, "mount not possible; starting an upload"),
                }
            }
        } else if let Some(digest) = param(&query, "digest") {
            // Single-request monolithic upload.
            let digest = parse_digest(digest)?;
            let (mut session, _slot) = self.inner.uploads.create_detached(repo)?;
            let result = self
                .store_upload(&mut session, &digest, req, body, false)
                .await;
            session.discard();
            return result.map(|()| blob_created(repo, &digest));
        }
        let id = self.inner.uploads.create(repo)?;
        Ok(upload_accepted(StatusCode::ACCEPTED, repo, &id, 0))
    }

    async fn upload_status(&self, repo: &RepoName, id: &str) -> Result<Response<Body>, ApiError> {
        let session = self.inner.uploads.get(repo, id)?;
        let session = session.lock().await;
        session.check(repo)?;
        Ok(upload_accepted(
            StatusCode::NO_CONTENT,
            repo,
            id,
            session.size(),
        ))
    }

    async fn patch_upload(
        &self,
        repo: &RepoName,
        id: &str,
        req: &Req<'_>,
        body: RequestBody,
    ) -> Result<Response<Body>, ApiError> {
        let session = self.inner.uploads.get(repo, id)?;
        let mut session = session.lock().await;
        session.check(repo)?;
        let expected = match chunk_length(&session, req) {
            Ok(expected) => expected,
            // Out of order: say where the upload stands, so the client can resume.
            Err(e) if e.code() == ErrorCode::RangeInvalid => {
                let mut response = upload_accepted(e.status(), repo, id, session.size());
                *response.body_mut() = body::full(e.to_json());
                response.headers_mut().remove(header::CONTENT_LENGTH);
                insert(
                    response.headers_mut(),
                    header::CONTENT_TYPE,
                    "application/json".into(),
                );
                return Ok(response);
            }
            Err(e) => return Err(e),
        };
        let max = self.inner.uploads.limits().max_size;
        session.append(body, expected, max).await?;
        Ok(upload_accepted(
            StatusCode::ACCEPTED,
            repo,
            id,
            session.size(),
        ))
    }

    async fn finish_upload(
        &self,
        repo: &RepoName,
        id: &str,
        req: &Req<'_>,
        body: RequestBody,
    ) -> Result<Response<Body>, ApiError> {
        let query = query_pairs(req.query);
        let digest = param(&query, "digest").ok_or_else(|| {
            ApiError::new(
                ErrorCode::DigestInvalid,
                "the digest query parameter is required",
            )
        })?;
        let digest = parse_digest(digest)?;
        let session = self.inner.uploads.get(repo, id)?;
        let mut session = session.lock().await;
        session.check(repo)?;
        let result = self
            .store_upload(&mut session, &digest, req, body, true)
            .await;
        // Finished or failed, the session is over: a failed digest check leaves nothing.
        self.inner.uploads.remove(id);
        session.close();
        result.map(|()| blob_created(repo, &digest))
    }

    /// Appends the request's body to `session`, checks the digest and stores the blob.
    async fn store_upload(
        &self,
        session: &mut Session,
        digest: &Digest,
        req: &Req<'_>,
        body: RequestBody,
        chunk: bool,
    ) -> Result<(), ApiError> {
        let expected = if chunk {
            chunk_length(session, req)?
        } else {
            content_length(req)?
        };
        let max = self.inner.uploads.limits().max_size;
        // A whole blob in one request of known length goes on as it arrives, to a storage
        // that takes streams (the proxy's): written nowhere here.
        if session.size() == 0
            && self.store().streams_blob_puts()
            && let Some(length) = expected.filter(|&length| length > 0)
        {
            if length > max {
                return Err(too_large(max));
            }
            return stream_put::put(self.store(), &session.repo, digest, length, body).await;
        }
        session.append(body, expected, max).await?;
        let actual = session.digest();
        if actual != *digest {
            return Err(ApiError::digest_invalid(digest, &actual));
        }
        self.store()
            .blob_put(&session.repo, digest, session.path(), session.size())
            .await?;
        Ok(())
    }

    async fn cancel_upload(&self, repo: &RepoName, id: &str) -> Result<Response<Body>, ApiError> {
        let session = self.inner.uploads.get(repo, id)?;
        let mut session = session.lock().await;
        session.check(repo)?;
        self.inner.uploads.remove(id);
        session.close();
        Ok(empty(StatusCode::NO_CONTENT))
    }

    // ---- manifests ----

    async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        with_body: bool,
    ) -> Result<Response<Body>, ApiError> {
        let manifest = self.store().manifest_get(repo, reference).await?;
        let length = manifest.bytes.len();
        let body = if with_body {
            body::full(manifest.bytes)
        } else {
            body::empty()
        };
        let mut response = Response::new(body);
        let headers = response.headers_mut();
        insert(headers, header::CONTENT_TYPE, manifest.media_type);
        insert(headers, header::CONTENT_LENGTH, length.to_string());
        insert(
            headers,
            "docker-content-digest",
            manifest.digest.to_string(),
        );
        insert(headers, header::ETAG, format!("\"{}\"", manifest.digest));
        Ok(response)
    }

    async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: Reference,
        req: &Req<'_>,
        body: RequestBody,
    ) -> Result<Response<Body>, ApiError> {
        self.store().allows(Operation::PushManifest)?;
        let limit = (self.inner.config.max_manifest_size.bytes() as usize)
            .min(super::manifest::MAX_MANIFEST_SIZE);
        let too_large = || {
            ApiError::new(
                ErrorCode::ManifestInvalid,
                format!("manifest larger than the registry's limit of {limit} bytes"),
            )
            .with_status(StatusCode::PAYLOAD_TOO_LARGE)
        };
        if content_length(req)?.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let bytes = read_limited(body, limit).await?.ok_or_else(too_large)?;
        let manifest = Manifest::parse(&bytes, req.header(header::CONTENT_TYPE)).map_err(|e| {
            ApiError::new(ErrorCode::ManifestInvalid, crate::error::error_chain(&e))
        })?;
        let mut tags = Vec::new();
        match &reference {
            Reference::Digest(digest) if digest != manifest.digest() => {
                return Err(ApiError::new(
                    ErrorCode::DigestInvalid,
                    format!("manifest has digest {}, not {digest}", manifest.digest()),
                ));
            }
            Reference::Digest(_) => {}
            Reference::Tag(tag) => tags.push(tag.clone()),
        }
        // `PUT …/manifests/<digest>?tag=a&tag=b` (distribution spec, end-7b).
        for (key, value) in query_pairs(req.query) {
            if key == "tag" {
                let tag = value
                    .parse::<Tag>()
                    .map_err(|e| ApiError::new(ErrorCode::ManifestInvalid, e.to_string()))?;
                if !tags.contains(&tag) {
                    tags.push(tag);
                }
            }
        }
        self.check_dependencies(repo, &manifest).await?;
        self.store()
            .manifest_put(repo, &manifest, bytes, &tags)
            .await?;
        let mut response = empty(StatusCode::CREATED);
        let headers = response.headers_mut();
        let digest = manifest.digest();
        insert(
            headers,
            header::LOCATION,
            format!("/v2/{repo}/manifests/{digest}"),
        );
        insert(headers, "docker-content-digest", digest.to_string());
        if let Some(subject) = manifest.subject() {
            insert(headers, "oci-subject", subject.digest.to_string());
        }
        Ok(response)
    }

    /// `MANIFEST_BLOB_UNKNOWN` unless every blob (bar non-distributable layers) and every
    /// child manifest is in the repository. The subject need not exist (the spec).
    async fn check_dependencies(
        &self,
        repo: &RepoName,
        manifest: &Manifest,
    ) -> Result<(), ApiError> {
        let storage = self.store();
        let mut checks = Vec::new();
        for dependency in manifest.dependencies() {
            checks.push(check_dependency(storage, repo, dependency));
        }
        futures::stream::iter(checks)
            .buffer_unordered(CHECK_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await
            .map(drop)
    }

    // ---- listings ----

    async fn tags(&self, repo: &RepoName, req: &Req<'_>) -> Result<Response<Body>, ApiError> {
        let query = query_pairs(req.query);
        let (last, limit) = self.page(&query)?;
        let mut tags = if limit == 0 {
            Vec::new()
        } else {
            let page = Page {
                last,
                limit: limit + 1,
            };
            self.store().tags(repo, page).await?
        };
        let next = next_page(&mut tags, limit, |t| t.as_str().to_owned());
        #[derive(Serialize)]
        struct TagList<'a> {
            name: &'a str,
            tags: Vec<&'a str>,
        }
        let list = TagList {
            name: repo.as_str(),
            tags: tags.iter().map(Tag::as_str).collect(),
        };
        let mut response = json(StatusCode::OK, &list);
        if let Some(last) = next {
            link(
                &mut response,
                &format!("/v2/{repo}/tags/list"),
                limit,
                &last,
            );
        }
        Ok(response)
    }

    async fn catalog(&self, req: &Req<'_>) -> Result<Response<Body>, ApiError> {
        let query = query_pairs(req.query);
        let (last, limit) = self.page(&query)?;
        let mut repos = if limit == 0 {
            Vec::new()
        } else {
            let page = Page {
                last,
                limit: limit + 1,
            };
            self.store().catalog(page).await?
        };
        let next = next_page(&mut repos, limit, |r| r.as_str().to_owned());
        let list = serde_json::json!({
            "repositories": repos.iter().map(RepoName::as_str).collect::<Vec<_>>(),
        });
        let mut response = json(StatusCode::OK, &list);
        if let Some(last) = next {
            link(&mut response, "/v2/_catalog", limit, &last);
        }
        Ok(response)
    }

    /// `last` and the page size from `n` (at most `max_page`).
    fn page<'q>(
        &self,
        query: &'q [(String, String)],
    ) -> Result<(Option<&'q str>, usize), ApiError> {
        let max = self.inner.config.max_page;
        let limit = match param(query, "n") {
            None => max,
            Some(n) => n.parse::<usize>().map_err(|_| {
                ApiError::new(
                    ErrorCode::PaginationNumberInvalid,
                    format!("n={n:?} is not a number"),
                )
            })?,
        };
        Ok((param(query, "last"), limit.min(max)))
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        req: &Req<'_>,
    ) -> Result<Response<Body>, ApiError> {
        let query = query_pairs(req.query);
        let filter = param(&query, "artifactType");
        let mut manifests = self.store().referrers(repo, subject).await?;
        if let Some(filter) = filter {
            manifests.retain(|d| d.artifact_type.as_deref() == Some(filter));
        }
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_INDEX,
            "manifests": manifests,
        });
        let mut response = json(StatusCode::OK, &index);
        let headers = response.headers_mut();
        insert(headers, header::CONTENT_TYPE, media_type::OCI_INDEX.into());
        if filter.is_some() {
            insert(headers, "oci-filters-applied", "artifactType".into());
        }
        Ok(response)
    }
}

/// The methods `route` answers over `storage` (the `Allow` header of a `405`).
fn allowed_methods(route: &Route<'_>, storage: &dyn RegistryStorage) -> Vec<&'static str> {
    let can = |operation| storage.allows(operation).is_ok();
    let mut methods = Vec::new();
    match route {
        Route::Base => methods.extend(["GET", "HEAD"]),
        Route::Tags { .. } if can(Operation::ListTags) => methods.push("GET"),
        Route::Catalog if can(Operation::Catalog) => methods.push("GET"),
        Route::Referrers { .. } if can(Operation::Referrers) => methods.push("GET"),
        Route::Tags { .. } | Route::Catalog | Route::Referrers { .. } => {}
        Route::Manifest { .. } => {
            methods.extend(["GET", "HEAD"]);
            if can(Operation::PushManifest) {
                methods.push("PUT");
            }
            if can(Operation::DeleteManifest) {
                methods.push("DELETE");
            }
        }
        Route::Blob { .. } => {
            methods.extend(["GET", "HEAD"]);
            if can(Operation::DeleteBlob) {
                methods.push("DELETE");
            }
        }
        Route::Uploads { .. } => {
            if can(Operation::PushBlob) {
                methods.push("POST");
            }
        }
        Route::Upload { .. } => {
            if can(Operation::PushBlob) {
                methods.extend(["GET", "PATCH", "PUT", "DELETE"]);
            }
        }
    }
    methods
}

/// `MANIFEST_BLOB_UNKNOWN` unless `dependency` is in the repository.
async fn check_dependency(
    storage: &dyn RegistryStorage,
    repo: &RepoName,
    dependency: Dependency<'_>,
) -> Result<(), ApiError> {
    let (descriptor, found) = match dependency {
        Dependency::Blob(d) if d.is_non_distributable() => return Ok(()),
        Dependency::Blob(d) => (d, storage.blob_stat(repo, &d.digest).await.map(drop)),
        Dependency::Manifest(d) => {
            let reference = Reference::Digest(d.digest);
            (d, storage.manifest_get(repo, &reference).await.map(drop))
        }
    };
    match found {
        Ok(()) => Ok(()),
        Err(e) if e.is_not_found() => Err(ApiError::new(
            ErrorCode::ManifestBlobUnknown,
            format!(
                "manifest references {}, which is unknown to repository {repo}",
                descriptor.digest
            ),
        )
        .with_detail(serde_json::json!({"digest": descriptor.digest.to_string()}))),
        Err(e) => Err(e.into()),
    }
}
