//! An HTTP client of the origin blob API: what origins use to replicate to each other, what
//! a tracker uses to ask them for metainfo, and what a proxy or a test uses to upload.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kraken_core::{Digest, MetaInfo};
use kraken_p2p::tracker::MetaInfoLookup;
use kraken_p2p::tracker::api::encode_segment;
use reqwest::StatusCode;

use kraken_p2p::tls::ClientTls;

use crate::error::{Error, Result};

/// Bytes sent per upload `PATCH`, as Go Kraken's uploader does.
pub const UPLOAD_CHUNK: u64 = 32 << 20;
/// The request header in which an uploader announces a blob's length when it starts the
/// upload (ours, not Go Kraken's): the origin then hashes the chunks as they arrive in order
/// and its commit reads nothing again.
pub(crate) const UPLOAD_LENGTH: &str = "upload-length";
/// The header of an origin's `400` answer to a commit whose bytes hash to another digest
/// than the one they were uploaded as (ours, not Go Kraken's): the digest of the bytes. The
/// client makes it [`Error::DigestMismatch`], which the proxy answers `DIGEST_INVALID`.
pub(crate) const ACTUAL_DIGEST: &str = "kraken-actual-digest";
/// Largest metainfo answer read.
const MAX_METAINFO: usize =
    kraken_core::METAINFO_HEADER_LEN + kraken_core::MAX_PIECE_COUNT as usize * 32;
/// How long one origin's garbage-collection sweep may take.
const SWEEP_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
/// Largest error answer read (only its start is reported).
const MAX_ERROR_BODY: usize = 64 << 10;
/// Attempts of a read that origins answer `503` with `Retry-After` (busy: at
/// `limits.max_backend_fetches`) before the `503` is the answer.
const BUSY_ATTEMPTS: u32 = 6;
/// Longest `Retry-After` waited out: a larger one is cut to this, so that a hostile or
/// misconfigured origin cannot park a caller.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// Which commit ends an upload.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum CommitKind {
    /// A client's upload: the receiving origin writes the blob back to the backend at once
    /// and replicates it to the blob's other owners.
    Primary,
    /// Origin to origin: the receiver keeps a replica and writes it back only after
    /// [`ClusterConfig::replica_write_back_delay`](super::ClusterConfig::replica_write_back_delay).
    Replica,
    /// Origin to origin, from a repair pass: a replica that the receiver refuses (`410`,
    /// [`Error::Deleted`]) when it deleted the blob within
    /// [`ClusterConfig::tombstone_ttl`](super::ClusterConfig::tombstone_ttl).
    Repair,
}

/// A client of any number of origins, named by `host:port`. Cheap to clone.
#[derive(Clone, Debug)]
pub struct OriginClient {
    http: reqwest::Client,
    /// `http` or, with TLS, `https`.
    scheme: &'static str,
}

impl OriginClient {
    /// A plain-HTTP client with a 5 s connect timeout and a 5 min timeout per request.
    pub fn new() -> Result<Self> {
        Self::with_tls(None)
    }

    /// A client that speaks HTTPS to every origin with `tls` (the pinned CA, and the
    /// certificate origins ask for on writes), or plain HTTP without. Timeouts as
    /// [`new`](Self::new).
    pub fn with_tls(tls: Option<&ClientTls>) -> Result<Self> {
        let http = crate::http::client(tls)?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        Ok(Self { http, scheme })
    }

    /// `{scheme}://{origin}{path}`.
    fn url(&self, origin: &str, path: &str) -> String {
        format!("{}://{origin}{path}", self.scheme)
    }

    /// `{scheme}://origin{prefix}/{namespace}/blobs/{digest}`.
    fn blob_url(&self, origin: &str, prefix: &str, namespace: &str, digest: &Digest) -> String {
        self.url(
            origin,
            &format!("{prefix}/{}/blobs/{digest}", encode_segment(namespace)),
        )
    }

    /// Whether `origin` answers `GET /health` with 200 within `timeout`.
    pub async fn is_healthy(&self, origin: &str, timeout: Duration) -> bool {
        let request = self.http.get(self.url(origin, "/health")).timeout(timeout);
        matches!(request.send().await, Ok(r) if r.status() == StatusCode::OK)
    }

    /// The P2P identity and address `origin` seeds from (`GET /peer`); `None` if it does not
    /// seed.
    pub async fn peer(&self, origin: &str) -> Result<Option<kraken_core::PeerInfo>> {
        let response = self
            .send(origin, self.http.get(self.url(origin, "/peer")))
            .await?;
        match response.status() {
            StatusCode::OK => {
                let body = self.body(origin, response, 4096).await?;
                serde_json::from_slice(&body).map(Some).map_err(|e| {
                    origin_error(origin, StatusCode::OK, &format!("invalid peer: {e}"))
                })
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.status_error(origin, response).await),
        }
    }

    /// The blob's size if `origin` has it — on its disk only when `local`, else also in its
    /// backend — or `None`.
    pub async fn stat(
        &self,
        origin: &str,
        namespace: &str,
        digest: &Digest,
        local: bool,
    ) -> Result<Option<u64>> {
        let url = format!(
            "{}?local={local}",
            self.blob_url(origin, "/namespace", namespace, digest)
        );
        let response = self.send(origin, self.http.head(url)).await?;
        match response.status() {
            // reqwest reports a HEAD answer's (empty) body length, not the header.
            StatusCode::OK => Ok(response
                .headers()
                .get(reqwest::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok())),
            StatusCode::NOT_FOUND => Ok(None),
            status => Err(origin_error(origin, status, "")),
        }
    }

    /// Asks `origin` for a blob's metainfo; an origin that does not hold the blob fetches it
    /// from its backend and answers [`MetaInfoLookup::Pending`] meanwhile.
    pub async fn metainfo(
        &self,
        origin: &str,
        namespace: &str,
        digest: &Digest,
    ) -> Result<MetaInfoLookup> {
        let url = format!(
            "{}/metainfo",
            self.blob_url(origin, "/namespace", namespace, digest)
        );
        let response = self.send(origin, self.http.get(url)).await?;
        match response.status() {
            StatusCode::OK => {
                let body = self.body(origin, response, MAX_METAINFO).await?;
                let meta = MetaInfo::decode(&body).map_err(|e| Error::Origin {
                    origin: origin.to_owned(),
                    reason: format!("invalid metainfo: {e}"),
                })?;
                if meta.digest() != digest {
                    return Err(origin_error(
                        origin,
                        StatusCode::OK,
                        "metainfo of another blob",
                    ));
                }
                Ok(MetaInfoLookup::Found(meta))
            }
            StatusCode::ACCEPTED => Ok(MetaInfoLookup::Pending),
            // Busy (too many backend fetches): "not yet", as while it fetches. The tracker
            // answers `202` and agents ask again, backing off, instead of failing.
            _ if busy_delay(&response).is_some() => Ok(MetaInfoLookup::Pending),
            StatusCode::NOT_FOUND => Ok(MetaInfoLookup::NotFound),
            _ => Err(self.status_error(origin, response).await),
        }
    }

    /// The origins that own `digest` in `origin`'s view of the ring.
    pub async fn locations(&self, origin: &str, digest: &Digest) -> Result<Vec<String>> {
        let url = self.url(origin, &format!("/blobs/{digest}/locations"));
        let response = self.send(origin, self.http.get(url)).await?;
        if response.status() != StatusCode::OK {
            return Err(origin_error(origin, response.status(), ""));
        }
        let header = response
            .headers()
            .get("origin-locations")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        Ok(header
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// Downloads a blob of at most `max_len` bytes into memory (for manifests), verified
    /// against `digest`. [`Error::NotFound`] if neither `origin` nor its backend has it.
    pub async fn download(
        &self,
        origin: &str,
        namespace: &str,
        digest: &Digest,
        max_len: u64,
    ) -> Result<Bytes> {
        let mut data = Vec::new();
        self.download_with(origin, namespace, digest, max_len, |chunk| {
            data.extend_from_slice(chunk);
            Ok(())
        })
        .await?;
        Ok(data.into())
    }

    /// Downloads a blob of at most `max_len` bytes into the file `path` (created or
    /// truncated), verified against `digest`; returns its size. On an error the file may
    /// hold part of the blob.
    pub async fn download_to_file(
        &self,
        origin: &str,
        namespace: &str,
        digest: &Digest,
        path: &Path,
        max_len: u64,
    ) -> Result<u64> {
        use std::io::Write as _;
        let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
        // Small writes to a buffered file: not worth a trip to the blocking pool each.
        let size = self
            .download_with(origin, namespace, digest, max_len, |chunk| {
                file.write_all(chunk)
            })
            .await?;
        let file = file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(size)
    }

    /// Streams a blob's bytes into `sink`, checking the length bound as they come and the
    /// digest at the end.
    async fn download_with(
        &self,
        origin: &str,
        namespace: &str,
        digest: &Digest,
        max_len: u64,
        mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<u64> {
        let url = self.blob_url(origin, "/namespace", namespace, digest);
        let mut response = self.send_patiently(origin, || self.http.get(&url)).await?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Err(Error::NotFound(*digest)),
            _ => return Err(self.status_error(origin, response).await),
        }
        if response.content_length().is_some_and(|len| len > max_len) {
            return Err(origin_error(
                origin,
                StatusCode::OK,
                "blob larger than the limit",
            ));
        }
        let mut hasher = kraken_core::Hasher::new();
        let mut size = 0u64;
        loop {
            let chunk = response.chunk().await.map_err(|e| Error::Origin {
                origin: origin.to_owned(),
                reason: e.to_string(),
            })?;
            let Some(chunk) = chunk else { break };
            size += chunk.len() as u64;
            if size > max_len {
                return Err(origin_error(
                    origin,
                    StatusCode::OK,
                    "blob larger than the limit",
                ));
            }
            hasher.update(&chunk);
            sink(&chunk)?;
        }
        let actual = hasher.finalize();
        if actual != *digest {
            return Err(Error::DigestMismatch {
                expected: *digest,
                actual,
            });
        }
        Ok(size)
    }

    /// Starts reading blob `digest` from `origin` — bytes `range` of it (start inclusive, end
    /// exclusive), or all of it — and returns the response whose body is to be streamed with
    /// the number of bytes it must have, or `None` if neither `origin` nor its backend has
    /// the blob. The caller verifies the bytes (a whole blob's digest) and caps the body at
    /// that length (a chunked answer has no `Content-Length` to hold it to); the status and
    /// the announced length are checked here.
    pub(crate) async fn read(
        &self,
        origin: &str,
        namespace: &str,
        digest: &Digest,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<Option<(reqwest::Response, u64)>> {
        let url = self.blob_url(origin, "/namespace", namespace, digest);
        let (header, expected) = match &range {
            Some(range) if range.start >= range.end => {
                return Err(Error::Internal("an empty range of a blob was asked for"));
            }
            Some(range) => (
                Some(format!("bytes={}-{}", range.start, range.end - 1)),
                StatusCode::PARTIAL_CONTENT,
            ),
            None => (None, StatusCode::OK),
        };
        let request = || {
            let request = self.http.get(&url);
            match &header {
                Some(value) => request.header(reqwest::header::RANGE, value),
                None => request,
            }
        };
        let response = self.send_patiently(origin, request).await?;
        match response.status() {
            status if status == expected => {}
            StatusCode::NOT_FOUND => return Ok(None),
            _ => return Err(self.status_error(origin, response).await),
        }
        if let (Some(range), Some(length)) = (&range, response.content_length())
            && length != range.end - range.start
        {
            return Err(origin_error(
                origin,
                response.status(),
                "answer length differs from the range asked for",
            ));
        }
        let length = match (&range, response.content_length()) {
            (Some(range), _) => range.end - range.start,
            (None, Some(length)) => length,
            (None, None) => {
                return Err(origin_error(
                    origin,
                    response.status(),
                    "a whole blob without Content-Length",
                ));
            }
        };
        Ok(Some((response, length)))
    }

    /// Uploads a blob held in memory (start, chunks, commit). An origin that already has the
    /// blob answers `409`, which counts as success.
    pub async fn upload_bytes(
        &self,
        origin: &str,
        namespace: &str,
        digest: &Digest,
        data: Bytes,
        kind: CommitKind,
    ) -> Result<()> {
        let length = data.len() as u64;
        self.upload(
            origin,
            namespace,
            digest,
            length,
            kind,
            &ChunkSource::Memory(data),
        )
        .await
    }

    /// Uploads a blob from a file, [`UPLOAD_CHUNK`] bytes per request.
    pub async fn upload_file(
        &self,
        origin: &str,
        namespace: &str,
        digest: &Digest,
        path: &Path,
        kind: CommitKind,
    ) -> Result<()> {
        let length = tokio::fs::metadata(path).await?.len();
        let source = ChunkSource::File(path.to_owned());
        self.upload(origin, namespace, digest, length, kind, &source)
            .await
    }

    /// Starts an upload at `origin`, announcing the blob's `length` when known: its id, or
    /// `None` if the origin has the blob already.
    pub(crate) async fn start_upload(
        &self,
        origin: &str,
        namespace: &str,
        digest: &Digest,
        length: Option<u64>,
    ) -> Result<Option<String>> {
        self.begin_upload(origin, namespace, digest, length, CommitKind::Primary)
            .await
    }

    /// [`start_upload`](Self::start_upload) for an upload that `kind` will commit: a
    /// repair's is refused at once by an origin that deleted the blob lately.
    async fn begin_upload(
        &self,
        origin: &str,
        namespace: &str,
        digest: &Digest,
        length: Option<u64>,
        kind: CommitKind,
    ) -> Result<Option<String>> {
        let uploads = format!(
            "{}/uploads{}",
            self.blob_url(origin, "/namespace", namespace, digest),
            repair_query(kind)
        );
        let mut request = self.http.post(&uploads);
        if let Some(length) = length {
            request = request.header(UPLOAD_LENGTH, length);
        }
        let started = self.send(origin, request).await?;
        match started.status() {
            StatusCode::OK => {}
            StatusCode::CONFLICT => return Ok(None),
            StatusCode::GONE if kind == CommitKind::Repair => {
                return Err(deleted(origin, digest));
            }
            status => return Err(origin_error(origin, status, "start upload")),
        }
        let upload_id = started
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| origin_error(origin, StatusCode::OK, "no upload id in Location"))?
            .to_owned();
        Ok(Some(upload_id))
    }

    async fn upload(
        &self,
        origin: &str,
        namespace: &str,
        digest: &Digest,
        length: u64,
        kind: CommitKind,
        source: &ChunkSource,
    ) -> Result<()> {
        let Some(id) = self
            .begin_upload(origin, namespace, digest, Some(length), kind)
            .await?
        else {
            return Ok(());
        };
        self.send_upload(origin, namespace, digest, &id, length, kind, source)
            .await
    }

    /// Sends the bytes of upload `upload_id` in chunks, then commits it.
    #[allow(clippy::too_many_arguments)] // one upload's every coordinate
    pub(crate) async fn send_upload(
        &self,
        origin: &str,
        namespace: &str,
        digest: &Digest,
        upload_id: &str,
        length: u64,
        kind: CommitKind,
        source: &ChunkSource,
    ) -> Result<()> {
        let uploads = format!(
            "{}/uploads",
            self.blob_url(origin, "/namespace", namespace, digest)
        );
        let mut offset = 0;
        while offset < length {
            let end = (offset + UPLOAD_CHUNK).min(length);
            let chunk = source.body(offset, end - offset).await?;
            let request = self
                .http
                .patch(format!("{uploads}/{upload_id}"))
                .header("content-range", format!("{offset}-{end}"))
                .header(reqwest::header::CONTENT_LENGTH, end - offset)
                .body(chunk);
            let response = self.send(origin, request).await?;
            match response.status() {
                StatusCode::OK => {}
                StatusCode::CONFLICT => return Ok(()),
                status => return Err(origin_error(origin, status, "upload chunk")),
            }
            offset = end;
        }
        let commit = match kind {
            CommitKind::Primary => format!("{uploads}/{upload_id}"),
            CommitKind::Replica | CommitKind::Repair => format!(
                "{}/uploads/{upload_id}{}",
                self.blob_url(origin, "/internal/duplicate/namespace", namespace, digest),
                repair_query(kind)
            ),
        };
        let response = self.send(origin, self.http.put(commit)).await?;
        match (response.status(), actual_digest(&response)) {
            (StatusCode::CREATED | StatusCode::CONFLICT, _) => Ok(()),
            (StatusCode::BAD_REQUEST, Some(actual)) => Err(Error::DigestMismatch {
                expected: *digest,
                actual,
            }),
            (StatusCode::GONE, _) if kind == CommitKind::Repair => Err(deleted(origin, digest)),
            _ => Err(self.status_error(origin, response).await),
        }
    }

    async fn send(
        &self,
        origin: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        request.send().await.map_err(|e| Error::Origin {
            origin: origin.to_owned(),
            reason: e.to_string(),
        })
    }

    /// [`send`](Self::send), and again while `origin` answers `503` with `Retry-After`
    /// (busy), after that delay (at most [`MAX_RETRY_AFTER`]), [`BUSY_ATTEMPTS`] times in
    /// all; then the last answer. Only for requests that are safe to repeat.
    async fn send_patiently(
        &self,
        origin: &str,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let mut attempt = 1;
        loop {
            let response = self.send(origin, request()).await?;
            match busy_delay(&response) {
                Some(delay) if attempt < BUSY_ATTEMPTS => {
                    tracing::debug!(%origin, ?delay, attempt, "origin busy; retrying after its Retry-After");
                    drop(response);
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                _ => return Ok(response),
            }
        }
    }

    /// Asks `origin` to fetch a blob from its backend if it does not hold it (`POST
    /// …/prefetch`), waiting out `503` busy answers as [`download`](Self::download) does:
    /// `true` if it holds the blob, `false` if it is fetching it, [`Error::NotFound`] if its
    /// backend lacks it.
    pub async fn prefetch(&self, origin: &str, namespace: &str, digest: &Digest) -> Result<bool> {
        let url = format!(
            "{}/prefetch",
            self.blob_url(origin, "/namespace", namespace, digest)
        );
        let response = self.send_patiently(origin, || self.http.post(&url)).await?;
        match response.status() {
            StatusCode::OK => Ok(true),
            StatusCode::ACCEPTED => Ok(false),
            StatusCode::NOT_FOUND => Err(Error::NotFound(*digest)),
            _ => Err(self.status_error(origin, response).await),
        }
    }

    /// The error for an unexpected answer, with the start of its body.
    async fn status_error(&self, origin: &str, response: reqwest::Response) -> Error {
        let status = response.status();
        let body = self
            .body(origin, response, MAX_ERROR_BODY)
            .await
            .unwrap_or_default();
        origin_error(origin, status, &String::from_utf8_lossy(&body))
    }

    /// The whole body of `response`, or an error if it is longer than `max` bytes, whatever
    /// its `Content-Length` says (a chunked answer has none).
    async fn body(
        &self,
        origin: &str,
        mut response: reqwest::Response,
        max: usize,
    ) -> Result<Bytes> {
        let status = response.status();
        let too_large = || origin_error(origin, status, "answer too large");
        if response
            .content_length()
            .is_some_and(|len| len > max as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| Error::Origin {
            origin: origin.to_owned(),
            reason: e.to_string(),
        })? {
            if body.len() + chunk.len() > max {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.into())
    }

    /// Purges a blob from `origin` and from its backend under `namespace`
    /// (`DELETE /internal/namespace/{ns}/blobs/{d}`): `true` if either had it.
    pub async fn delete(&self, origin: &str, namespace: &str, digest: &Digest) -> Result<bool> {
        let url = self.blob_url(origin, "/internal/namespace", namespace, digest);
        let response = self.send(origin, self.http.delete(url)).await?;
        match response.status() {
            StatusCode::ACCEPTED | StatusCode::OK | StatusCode::NO_CONTENT => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.status_error(origin, response).await),
        }
    }

    /// Asks `origin` to sweep what `request` does not mark (`POST /internal/gc`); its report.
    pub async fn sweep(
        &self,
        origin: &str,
        request: &super::SweepRequest,
    ) -> Result<super::SweepReport> {
        let url = self.url(origin, "/internal/gc");
        let body = serde_json::to_vec(request).map_err(|e| Error::Origin {
            origin: origin.to_owned(),
            reason: format!("unserialisable sweep request: {e}"),
        })?;
        // A sweep of a large disk and backend outlasts the usual per-request timeout.
        let request = self
            .http
            .post(url)
            .timeout(SWEEP_TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let response = self.send(origin, request).await?;
        if response.status() != StatusCode::OK {
            return Err(self.status_error(origin, response).await);
        }
        // A report lists at most every blob the origin and its backend hold.
        let body = self.body(origin, response, 1 << 30).await?;
        serde_json::from_slice(&body).map_err(|e| Error::Origin {
            origin: origin.to_owned(),
            reason: format!("invalid sweep report: {e}"),
        })
    }

    /// Tells `origin` that its copy of `digest` did not hash to `digest`, so that it checks
    /// (and repairs) it. Best effort: a failure is only logged.
    pub(crate) async fn report_corrupt(&self, origin: &str, namespace: &str, digest: &Digest) {
        let url = format!(
            "{}/verify",
            self.blob_url(origin, "/namespace", namespace, digest)
        );
        match self.send(origin, self.http.post(url)).await {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => {
                tracing::warn!(%origin, status = %response.status(), "an origin refused a corruption report");
            }
            Err(e) => {
                tracing::warn!(%origin, error = %e, "could not report a corrupt copy to its origin");
            }
        }
    }
}

/// Where upload chunks come from.
pub(crate) enum ChunkSource {
    Memory(Bytes),
    File(PathBuf),
    /// Bytes arriving from a client: each chunk's body streams the next bytes as they come.
    Stream(Arc<tokio::sync::Mutex<StreamCursor>>),
}

/// A stream of bytes being cut into chunks: a frame across a chunk's end is split, and its
/// rest starts the next chunk.
pub(crate) struct StreamCursor {
    chunks: crate::oci::ByteStream,
    leftover: Option<Bytes>,
}

impl ChunkSource {
    pub(crate) fn stream(chunks: crate::oci::ByteStream) -> Self {
        Self::Stream(Arc::new(tokio::sync::Mutex::new(StreamCursor {
            chunks,
            leftover: None,
        })))
    }

    /// The body of the chunk of `length` bytes at `offset`.
    async fn body(&self, offset: u64, length: u64) -> Result<reqwest::Body> {
        match self {
            Self::Memory(data) => Ok(data
                .slice(offset as usize..(offset + length) as usize)
                .into()),
            Self::File(path) => {
                let path = path.clone();
                let read = tokio::task::spawn_blocking(move || {
                    let file = std::fs::File::open(&path)?;
                    kraken_core::store::read_vec_at(&file, offset, length as usize).map(Bytes::from)
                });
                Ok(read
                    .await
                    .map_err(|_| Error::Internal("chunk read task failed"))??
                    .into())
            }
            Self::Stream(cursor) => {
                Ok(reqwest::Body::wrap_stream(take(Arc::clone(cursor), length)))
            }
        }
    }
}

/// How long a `503` answer asks to be left alone (`Retry-After` in seconds, at most
/// [`MAX_RETRY_AFTER`]); `None` for any other answer, or a `503` without a delay (a
/// shutdown), which is not retried.
fn busy_delay(response: &reqwest::Response) -> Option<Duration> {
    if response.status() != StatusCode::SERVICE_UNAVAILABLE {
        return None;
    }
    let seconds: u64 = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

/// The digest an origin found uploaded bytes to have ([`ACTUAL_DIGEST`]), if it says.
fn actual_digest(response: &reqwest::Response) -> Option<Digest> {
    response
        .headers()
        .get(ACTUAL_DIGEST)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The next `length` bytes of `cursor`, as they arrive. An error, or the end of the bytes
/// before `length`, ends it with an error: the chunk is then cut short, and the origin
/// refuses it.
fn take(
    cursor: Arc<tokio::sync::Mutex<StreamCursor>>,
    length: u64,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + Sync + 'static {
    futures::stream::unfold((cursor, length), |(cursor, remaining)| async move {
        if remaining == 0 {
            return None;
        }
        let mut held = cursor.lock().await;
        let next = match held.leftover.take() {
            Some(bytes) => Some(Ok(bytes)),
            None => futures::StreamExt::next(&mut held.chunks).await,
        };
        let item = match next {
            None => Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the upload ended early",
            )),
            Some(Err(e)) => Err(e),
            Some(Ok(mut bytes)) => {
                if bytes.len() as u64 > remaining {
                    held.leftover = Some(bytes.split_off(remaining as usize));
                }
                Ok(bytes)
            }
        };
        drop(held);
        // After an error, nothing more.
        let remaining = item.as_ref().map_or(0, |b| remaining - b.len() as u64);
        Some((item, (cursor, remaining)))
    })
}

/// The query that marks a repair's upload steps (`410` from an origin that deleted the blob
/// lately).
fn repair_query(kind: CommitKind) -> &'static str {
    if kind == CommitKind::Repair {
        "?repair=true"
    } else {
        ""
    }
}

fn deleted(origin: &str, digest: &Digest) -> Error {
    Error::Deleted {
        origin: origin.to_owned(),
        digest: *digest,
    }
}

fn origin_error(origin: &str, status: StatusCode, what: &str) -> Error {
    let what: String = what.chars().take(200).collect();
    Error::Origin {
        origin: origin.to_owned(),
        reason: format!("{status}: {what}"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use http_body_util::BodyExt as _;
    use hyper::body::Frame;
    use kraken_testkit::TestServer;

    use super::*;

    type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

    /// A chunked answer (no `Content-Length`) that never ends.
    fn endless(status: u16) -> hyper::Response<Body> {
        let chunk = Bytes::from(vec![b'x'; 1 << 20]);
        let frames = futures::stream::repeat_with(move || Ok(Frame::data(chunk.clone())));
        hyper::Response::builder()
            .status(status)
            .body(http_body_util::StreamBody::new(frames).boxed())
            .unwrap()
    }

    /// A chunked answer of `chunks`.
    pub(crate) fn chunked(status: u16, chunks: &[&'static [u8]]) -> hyper::Response<Body> {
        let frames: Vec<std::io::Result<Frame<Bytes>>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c))))
            .collect();
        hyper::Response::builder()
            .status(status)
            .body(http_body_util::StreamBody::new(futures::stream::iter(frames)).boxed())
            .unwrap()
    }

    async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(60), future)
            .await
            .unwrap_or_else(|_| panic!("{what} read without end"))
    }

    #[tokio::test]
    async fn an_endless_chunked_metainfo_is_refused() {
        let server = TestServer::start(|_| async { endless(200) }).await;
        let origin = server.addr().to_string();
        let digest = Digest::sha256_of(b"blob");
        let client = OriginClient::new().unwrap();
        let result = within("metainfo", client.metainfo(&origin, "ns", &digest)).await;
        let error = result.map(|_| ()).unwrap_err().to_string();
        assert!(error.contains("too large"), "{error}");
    }

    #[tokio::test]
    async fn an_endless_error_answer_is_read_only_in_part() {
        let server = TestServer::start(|_| async { endless(500) }).await;
        let origin = server.addr().to_string();
        let digest = Digest::sha256_of(b"blob");
        let client = OriginClient::new().unwrap();
        let result = within(
            "error body",
            client.download(&origin, "ns", &digest, 1 << 40),
        )
        .await;
        assert!(result.is_err());
    }

    #[tokio::test]
    async fn a_whole_blob_without_content_length_is_refused() {
        let server = TestServer::start(|_| async { chunked(200, &[b"abc"]) }).await;
        let origin = server.addr().to_string();
        let digest = Digest::sha256_of(b"abc");
        let client = OriginClient::new().unwrap();
        let result = client.read(&origin, "ns", &digest, None).await;
        let error = result.map(|_| ()).unwrap_err().to_string();
        assert!(error.contains("Content-Length"), "{error}");
    }
}
