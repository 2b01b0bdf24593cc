//! The origin's HTTP API on Go Kraken's paths (see `docs/origin.md` for the table).

use std::sync::Arc;

use hyper::http::{HeaderValue, Method, Request, Response, StatusCode, header};
use kraken_core::{BlobStatus, Digest, MetaInfo};
use kraken_p2p::http_server::{RequestBody, authorize};
use kraken_p2p::tls::{Role, Roles};
use kraken_p2p::tracker::api::decode_segment;

use super::client::CommitKind;
use super::fetch::{Availability, FetchFailure};
use super::namespaces::MAX_NAMESPACE_LEN;
use super::state::OriginState;
use super::uploads::{ChunkError, ClaimError};
use crate::error::{Error, error_chain};
use crate::http::body::{self, Body};
use crate::http::range::{RangeRequest, parse_exclusive_content_range};
use crate::http::text;

/// Largest `POST /internal/gc` body: about 850,000 marked digests.
const MAX_SWEEP_BODY: usize = 64 << 20;

/// Content type of blob bytes, as Go Kraken's origin sends it.
const BLOB_CONTENT_TYPE: &str = "application/octet-stream-v1";

/// The origin's route names for metrics and the access log.
pub(crate) fn route_name(method: &Method, path: &str) -> &'static str {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::POST, ["forcecleanup"]) => "forcecleanup",
        (&Method::POST, ["internal", "gc"]) => "gc_sweep",
        (&Method::DELETE, ["internal", "namespace", _, "blobs", _]) => "blob_delete",
        (&Method::GET, ["blobs", _, "locations"]) => "blob_locations",
        (&Method::GET, ["peer"]) => "peer",
        (_, ["namespace", _, "blobs", _, rest @ ..])
        | (_, ["internal", "namespace", _, "blobs", _, rest @ ..]) => match (method, rest) {
            (&Method::GET, []) => "blob_get",
            (&Method::HEAD, []) => "blob_head",
            (&Method::GET, ["metainfo"]) => "metainfo_get",
            (&Method::POST, ["prefetch"]) => "prefetch",
            (&Method::POST, ["verify"]) => "verify",
            (&Method::POST, ["uploads"]) => "upload_start",
            (&Method::PATCH, ["uploads", _]) => "upload_patch",
            (&Method::PUT, ["uploads", _]) => "upload_commit",
            _ => "other",
        },
        (
            &Method::PUT,
            [
                "internal",
                "duplicate",
                "namespace",
                _,
                "blobs",
                _,
                "uploads",
                _,
            ],
        ) => "replica_commit",
        _ => "other",
    }
}

/// Handles one request.
pub(crate) async fn handle(
    state: Arc<OriginState>,
    request: Request<RequestBody>,
) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let query = parts.uri.query().unwrap_or_default();
    let method = parts.method.clone();
    if let Err(refused) = authorize(&parts.extensions, allowed_roles(&method, &segments)) {
        return text(StatusCode::FORBIDDEN, &refused.to_string());
    }
    match (&method, segments.as_slice()) {
        (&Method::GET, ["health"]) => text(StatusCode::OK, "OK"),
        (&Method::GET, ["readiness"]) => {
            crate::http::readiness(vec![(
                "backends",
                crate::http::backend_ready(&*state.backend),
            )])
            .await
        }
        (&Method::GET, ["peer"]) => match &state.node {
            // Trackers add a blob's owners to every handout of it from this answer, so that
            // agents find the origins before (or without) their announce.
            Some(node) => json_response(&kraken_core::PeerInfo::new(
                node.peer_id(),
                node.advertise_addr(),
                true,
                true,
            )),
            None => text(
                StatusCode::NOT_FOUND,
                "this origin has no tracker: it does not seed",
            ),
        },
        (&Method::POST, ["forcecleanup"]) => {
            let Some(hours) = query_param(query, "ttl_hr").and_then(|v| v.parse::<u64>().ok())
            else {
                return text(
                    StatusCode::BAD_REQUEST,
                    "forcecleanup needs ttl_hr=<hours> (a whole number)",
                );
            };
            let ttl = std::time::Duration::from_secs(hours.saturating_mul(3600));
            let report = super::cleanup::force_cleanup(&state, ttl).await;
            json_response(&report)
        }
        (&Method::POST, ["internal", "gc"]) => {
            let request = match read_json::<super::gc::SweepRequest>(body, MAX_SWEEP_BODY).await {
                Ok(request) => request,
                Err(reason) => return text(StatusCode::BAD_REQUEST, &reason),
            };
            json_response(&super::gc::sweep(&state, request).await)
        }
        (&Method::GET, ["blobs", digest, "locations"]) => {
            let Ok(digest) = digest.parse::<Digest>() else {
                return bad_digest();
            };
            let owners = state.membership.view().owners(&digest).join(",");
            let mut response = text(StatusCode::OK, "");
            if let Ok(value) = HeaderValue::from_str(&owners) {
                response.headers_mut().insert("origin-locations", value);
            }
            response
        }
        (_, ["namespace", ns, "blobs", digest, rest @ ..])
        | (_, ["internal", "namespace", ns, "blobs", digest, rest @ ..]) => {
            let Some((namespace, digest)) = parse_blob(ns, digest) else {
                return bad_blob();
            };
            match (&method, rest) {
                (&Method::GET, []) => get_blob(&state, &namespace, &digest, &parts.headers).await,
                (&Method::HEAD, []) => {
                    head_blob(&state, &namespace, &digest, query.contains("local=true")).await
                }
                // Only under `/internal/`: a purge is for proxies and operators.
                (&Method::DELETE, []) if segments[0] == "internal" => {
                    match super::gc::purge(&state, &namespace, &digest).await {
                        Ok(purged) if purged.local || purged.backend => {
                            text(StatusCode::ACCEPTED, "")
                        }
                        Ok(_) => text(
                            StatusCode::NOT_FOUND,
                            "blob not on this origin nor in its backend",
                        ),
                        Err(e) => error_response(&e),
                    }
                }
                (&Method::GET, ["metainfo"]) => metainfo(&state, &namespace, &digest),
                (&Method::POST, ["prefetch"]) => prefetch(&state, &namespace, &digest),
                (&Method::POST, ["verify"]) => verify(&state, &digest),
                (&Method::POST, ["uploads"]) => {
                    if is_repair(query)
                        && let Some(refused) = refuse_repair(&state, &digest)
                    {
                        return refused;
                    }
                    start_upload(&state, &namespace, &digest, &parts.headers).await
                }
                (&Method::PATCH, ["uploads", id]) => {
                    patch_upload(&state, &namespace, &digest, id, &parts.headers, body).await
                }
                (&Method::PUT, ["uploads", id]) => {
                    commit(&state, &namespace, &digest, id, CommitKind::Primary).await
                }
                _ => not_found_route(),
            }
        }
        (
            &Method::PUT,
            [
                "internal",
                "duplicate",
                "namespace",
                ns,
                "blobs",
                digest,
                "uploads",
                id,
            ],
        ) => {
            let Some((namespace, digest)) = parse_blob(ns, digest) else {
                return bad_blob();
            };
            let kind = if is_repair(query) {
                CommitKind::Repair
            } else {
                CommitKind::Replica
            };
            commit(&state, &namespace, &digest, id, kind).await
        }
        _ => not_found_route(),
    }
}

/// Which client-certificate roles may call each endpoint (`docs/tls.md` has the matrix).
/// Reads are open; uploads come from proxies, build-indexes replicating across clusters and
/// origins re-replicating; replicas only from origins; purges from proxies; cleanup and
/// garbage collection only from operators.
fn allowed_roles(method: &Method, segments: &[&str]) -> Roles {
    const UPLOADERS: Roles = Roles::of(&[Role::Proxy, Role::BuildIndex, Role::Origin]);
    match (method, segments) {
        (&Method::GET | &Method::HEAD, _) => Roles::ANYONE,
        (&Method::POST, ["forcecleanup"] | ["internal", "gc"]) => Roles::OPERATORS,
        // A purge: the proxy's registry deletes.
        (&Method::DELETE, ["internal", "namespace", ..]) => Roles::of(&[Role::Proxy]),
        (&Method::PUT, ["internal", "duplicate", ..]) => Roles::of(&[Role::Origin]),
        (_, ["namespace" | "internal", .., "prefetch"]) => Roles::of(&Role::ALL),
        (_, ["namespace" | "internal", ..]) => UPLOADERS,
        _ => Roles::OPERATORS,
    }
}

async fn get_blob(
    state: &Arc<OriginState>,
    namespace: &str,
    digest: &Digest,
    headers: &hyper::HeaderMap,
) -> Response<Body> {
    // A miss waits for the one backend read every concurrent request shares, then serves.
    if matches!(state.store.status(digest), BlobStatus::Cached { .. }) {
        // A miss is counted by the fetcher, which every other read goes through.
        state.counters.cache(true);
    } else {
        let callback = on_fetched(state, namespace);
        if let Err(e) = state.fetcher.ensure(namespace, digest, callback).await {
            return error_response(&e);
        }
    }
    // A small blob is served from memory, kept there from a read of the store that hashed
    // to its digest.
    let memory = state.small.read(&state.store, digest).await;
    let blob = match memory {
        Some(_) => None,
        None => {
            let store = state.store.clone();
            let digest = *digest;
            match tokio::task::spawn_blocking(move || store.open_blob(&digest)).await {
                Ok(Ok(blob)) => Some(blob),
                Ok(Err(e)) => return error_response(&e.into()),
                Err(_) => return error_response(&Error::Internal("open task failed")),
            }
        }
    };
    let size = match (&memory, &blob) {
        (Some(bytes), _) => bytes.len() as u64,
        (None, Some(blob)) => blob.len(),
        (None, None) => return error_response(&Error::Internal("neither memory nor store")),
    };
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, offset, length) = match RangeRequest::parse(range_header, size) {
        RangeRequest::Whole => (StatusCode::OK, 0, size),
        RangeRequest::Part { offset, length } => (StatusCode::PARTIAL_CONTENT, offset, length),
        RangeRequest::Unsatisfiable => {
            let mut response = text(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable");
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii"),
            );
            return response;
        }
    };
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, BLOB_CONTENT_TYPE)
        .header(header::CONTENT_LENGTH, length)
        .header(header::ACCEPT_RANGES, "bytes");
    if status == StatusCode::PARTIAL_CONTENT {
        builder = builder.header(
            header::CONTENT_RANGE,
            format!("bytes {offset}-{}/{size}", offset + length - 1),
        );
    }
    let body = match (memory, blob) {
        (Some(bytes), _) => body::full(crate::small_blobs::slice(
            &bytes,
            Some(offset..offset + length),
        )),
        (None, Some(blob)) => body::blob_range(blob, offset, length),
        (None, None) => unreachable!("answered above"),
    };
    builder.body(body).expect("valid response parts")
}

async fn head_blob(
    state: &OriginState,
    namespace: &str,
    digest: &Digest,
    local_only: bool,
) -> Response<Body> {
    let size = match state.store.status(digest) {
        BlobStatus::Cached { length } => Some(length),
        _ if local_only => None,
        _ => match state.backend.stat(namespace, &digest.to_string()).await {
            Ok(info) => Some(info.size),
            Err(e) if e.is_not_found() => None,
            // "Not here" rather than a 5xx: this answers a client's existence check before a
            // push (through the proxy), which must go on, into the write-back queue, while
            // the backend is away. `/readiness` reports the backend.
            Err(e) => {
                tracing::warn!(
                    digest = %digest.fmt_short(),
                    error = %crate::error::error_chain(&e),
                    "backend unavailable for an existence check; answering 404"
                );
                None
            }
        },
    };
    match size {
        Some(size) => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_LENGTH, size)
            .header(header::CONTENT_TYPE, BLOB_CONTENT_TYPE)
            .body(body::empty())
            .expect("valid response parts"),
        None => {
            let mut response = Response::new(body::empty());
            *response.status_mut() = StatusCode::NOT_FOUND;
            response
        }
    }
}

/// `200` with the metainfo when the blob is here; `202` while it is fetched from the
/// backend (the fetch starts on the first ask); `404` when the backend lacks it.
fn metainfo(state: &Arc<OriginState>, namespace: &str, digest: &Digest) -> Response<Body> {
    match state
        .fetcher
        .availability(namespace, digest, on_fetched(state, namespace))
    {
        Availability::Cached(meta) => {
            // Asked for means wanted: make sure it is announced.
            state.seed(namespace, digest);
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .body(body::full(meta.encode()))
                .expect("valid response parts")
        }
        Availability::Fetching(_) => text(StatusCode::ACCEPTED, "fetching the blob; ask again"),
        Availability::Failed(failure) => failure_response(digest, failure),
        Availability::Busy => error_response(&Error::Busy("backend fetches")),
    }
}

fn prefetch(state: &Arc<OriginState>, namespace: &str, digest: &Digest) -> Response<Body> {
    match state
        .fetcher
        .availability(namespace, digest, on_fetched(state, namespace))
    {
        Availability::Cached(_) => text(StatusCode::OK, "cached"),
        Availability::Fetching(_) => text(StatusCode::ACCEPTED, "fetching"),
        Availability::Failed(failure) => failure_response(digest, failure),
        Availability::Busy => error_response(&Error::Busy("backend fetches")),
    }
}

/// A reader's report that our copy failed its digest: `202` while it is re-hashed (and
/// repaired if bad) in the background, or when it was checked moments ago.
fn verify(state: &Arc<OriginState>, digest: &Digest) -> Response<Body> {
    if super::integrity::report(state, digest) {
        text(StatusCode::ACCEPTED, "checking our copy")
    } else {
        text(
            StatusCode::ACCEPTED,
            "our copy is being or was just checked",
        )
    }
}

async fn start_upload(
    state: &Arc<OriginState>,
    namespace: &str,
    digest: &Digest,
    headers: &hyper::HeaderMap,
) -> Response<Body> {
    if let Some(refused) = refuse_upload(state, namespace, digest, CommitKind::Primary).await {
        return refused;
    }
    // The blob's length, when the uploader announces it, fixes its piece length: the chunks
    // can then be hashed as they arrive.
    let announced = headers
        .get(super::client::UPLOAD_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&length| length <= state.config.limits.max_blob_size.bytes())
        .map(|length| {
            (
                length,
                state.config_piece_lengths().piece_length_for(length),
            )
        });
    match state.uploads.create(announced) {
        Ok(id) => {
            let mut response = text(StatusCode::OK, "");
            response
                .headers_mut()
                .insert(header::LOCATION, HeaderValue::from_str(&id).expect("hex"));
            response
        }
        Err(e) => error_response(&e),
    }
}

async fn patch_upload(
    state: &Arc<OriginState>,
    namespace: &str,
    digest: &Digest,
    id: &str,
    headers: &hyper::HeaderMap,
    body: RequestBody,
) -> Response<Body> {
    if let Some(refused) = refuse_upload(state, namespace, digest, CommitKind::Primary).await {
        return refused;
    }
    if state.uploads.path(id).is_none() {
        return text(StatusCode::NOT_FOUND, "unknown upload");
    }
    // Go Kraken's form: `Content-Range: <start>-<end>`, end exclusive.
    let range = headers
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_exclusive_content_range);
    let Some((start, end)) = range else {
        return text(
            StatusCode::BAD_REQUEST,
            "Content-Range must be <start>-<end> (end exclusive)",
        );
    };
    let limits = &state.config.limits;
    if end > limits.max_blob_size.bytes() {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "blob larger than limits.max_blob_size",
        );
    }
    let length = end - start;
    if length > limits.max_chunk_size.bytes() {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "chunk larger than limits.max_chunk_size",
        );
    }
    match state.uploads.write_chunk(id, start, length, body).await {
        Ok(()) => text(StatusCode::OK, ""),
        Err(ChunkError::Busy) => {
            let mut response = text(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many upload chunks are being written; retry",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
        Err(ChunkError::Claimed(e)) => claim_refused(e),
        Err(ChunkError::Body(reason)) => text(StatusCode::BAD_REQUEST, reason),
        Err(ChunkError::Write(e)) => error_response(&e),
    }
}

async fn commit(
    state: &Arc<OriginState>,
    namespace: &str,
    digest: &Digest,
    id: &str,
    kind: CommitKind,
) -> Response<Body> {
    match kind {
        // A client wants the blob back: replicas of it are welcome again.
        CommitKind::Primary => state.tombstones.lift(digest),
        // Checked again: the blob may have been deleted since the upload started.
        CommitKind::Repair => {
            if let Some(refused) = refuse_repair(state, digest) {
                return refused;
            }
        }
        CommitKind::Replica => {}
    }
    if let Some(refused) = refuse_upload(state, namespace, digest, kind).await {
        return refused;
    }
    // Held to the end: chunks arriving during the commit are refused, so what is
    // installed is exactly what was hashed.
    let claim = match state.uploads.claim(id) {
        Ok(claim) => claim,
        Err(e) => return claim_refused(e),
    };
    match state.commit_upload(&claim, namespace, digest, kind).await {
        Ok(()) => text(StatusCode::CREATED, ""),
        Err(e) => error_response(&e),
    }
}

/// Whether an upload step's query marks it as a repair's (`repair=true`).
fn is_repair(query: &str) -> bool {
    query.split('&').any(|pair| pair == "repair=true")
}

/// `410` for a repair's upload step of a blob this origin deleted within
/// `cluster.tombstone_ttl`: another origin's repair pass would bring back a blob being
/// deleted cluster-wide.
fn refuse_repair(state: &OriginState, digest: &Digest) -> Option<Response<Body>> {
    let ago = state.tombstones.deleted_ago(digest)?;
    Some(text(
        StatusCode::GONE,
        &format!(
            "deleted from this origin {}s ago; repairs of it are refused for cluster.tombstone_ttl",
            ago.as_secs()
        ),
    ))
}

/// Why an upload step is refused before it starts: `400` for a namespace no backend serves
/// (the blob could never be written back), `409` for a blob already here — answered only
/// once its write-back to `namespace` is pending or done, since clients count a `409` as a
/// successful upload.
async fn refuse_upload(
    state: &Arc<OriginState>,
    namespace: &str,
    digest: &Digest,
    kind: CommitKind,
) -> Option<Response<Body>> {
    if !state.routes(namespace) {
        return Some(text(
            StatusCode::BAD_REQUEST,
            &format!(
                "no backend serves namespace {namespace:?}: the blob could never be written back"
            ),
        ));
    }
    if !matches!(state.store.status(digest), BlobStatus::Cached { .. }) {
        return None;
    }
    Some(
        match state.ensure_write_back(namespace, digest, kind).await {
            Ok(()) => text(StatusCode::CONFLICT, "blob already exists"),
            Err(e) => error_response(&e),
        },
    )
}

fn claim_refused(error: ClaimError) -> Response<Body> {
    match error {
        ClaimError::Unknown => text(StatusCode::NOT_FOUND, "unknown upload"),
        // Not 409: clients count a 409 on an upload step as "already here", a success.
        ClaimError::Busy => {
            let mut response = text(
                StatusCode::LOCKED,
                "upload busy: it is being committed, or another chunk is being written; retry",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
    }
}

fn on_fetched(state: &Arc<OriginState>, namespace: &str) -> impl FnOnce(MetaInfo) + Send + 'static {
    let state = Arc::clone(state);
    let namespace = namespace.to_owned();
    move |meta| state.fetched(&namespace, &meta)
}

fn parse_blob(namespace: &str, digest: &str) -> Option<(String, Digest)> {
    let namespace = decode_segment(namespace).filter(|ns| ns.len() <= MAX_NAMESPACE_LEN)?;
    Some((namespace, digest.parse().ok()?))
}

fn failure_response(digest: &Digest, failure: FetchFailure) -> Response<Body> {
    error_response(&failure.into_error(digest))
}

fn error_response(error: &Error) -> Response<Body> {
    let status = match error {
        e if e.is_not_found() => StatusCode::NOT_FOUND,
        Error::Origin { .. } | Error::Backend(_) => StatusCode::BAD_GATEWAY,
        Error::Config(_) => StatusCode::BAD_REQUEST,
        Error::Shutdown => StatusCode::SERVICE_UNAVAILABLE,
        Error::DigestMismatch { actual, .. } => {
            // The uploader (a proxy) reads the digest from the header to answer its client.
            let mut response = text(StatusCode::BAD_REQUEST, &error_chain(error));
            response.headers_mut().insert(
                super::client::ACTUAL_DIGEST,
                HeaderValue::from_str(&actual.to_string()).expect("a digest is ASCII"),
            );
            return response;
        }
        Error::Busy(_) => {
            let mut response = text(StatusCode::SERVICE_UNAVAILABLE, &error.to_string());
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if status.is_server_error() {
        tracing::warn!(error = %error_chain(error), "request failed");
    }
    text(status, &error_chain(error))
}

fn bad_digest() -> Response<Body> {
    text(StatusCode::BAD_REQUEST, "invalid digest")
}

fn bad_blob() -> Response<Body> {
    text(StatusCode::BAD_REQUEST, "invalid namespace or digest")
}

fn not_found_route() -> Response<Body> {
    text(StatusCode::NOT_FOUND, "no such route")
}

/// The value of `key` in a query string (`a=1&b=2`), undecoded.
fn query_param<'q>(query: &'q str, key: &str) -> Option<&'q str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find_map(|(k, v)| (k == key).then_some(v))
}

/// A JSON body of at most `limit` bytes; the reason it is not one.
async fn read_json<T: serde::de::DeserializeOwned>(
    body: RequestBody,
    limit: usize,
) -> std::result::Result<T, String> {
    use http_body_util::{BodyExt, Limited};
    let bytes = Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| format!("unreadable body (at most {limit} bytes): {e}"))?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| format!("invalid JSON: {e}"))
}

fn json_response<T: serde::Serialize>(value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(bytes) => {
            let mut response = Response::new(body::full(bytes));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "unserialisable report"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_are_for_operators_and_purges_for_proxies() {
        let d = "sha256:00";
        assert!(allowed_roles(&Method::POST, &["internal", "gc"]) == Roles::OPERATORS);
        let purge = ["internal", "namespace", "a", "blobs", d];
        assert!(allowed_roles(&Method::DELETE, &purge) == Roles::of(&[Role::Proxy]));
        // An upload's roles do not reach the purge: build-indexes and origins upload.
        assert!(
            allowed_roles(&Method::POST, &["namespace", "a", "blobs", d, "uploads"])
                != Roles::of(&[Role::Proxy])
        );
    }

    #[test]
    fn route_names_name_the_endpoint_never_the_path() {
        let d = "sha256:00";
        for (method, path, route) in [
            (
                Method::GET,
                format!("/namespace/a%2Fb/blobs/{d}"),
                "blob_get",
            ),
            (Method::HEAD, format!("/namespace/a/blobs/{d}"), "blob_head"),
            (
                Method::GET,
                format!("/internal/namespace/a/blobs/{d}"),
                "blob_get",
            ),
            (
                Method::GET,
                format!("/namespace/a/blobs/{d}/metainfo"),
                "metainfo_get",
            ),
            (
                Method::POST,
                format!("/namespace/a/blobs/{d}/uploads"),
                "upload_start",
            ),
            (
                Method::PATCH,
                format!("/namespace/a/blobs/{d}/uploads/u1"),
                "upload_patch",
            ),
            (
                Method::PUT,
                format!("/namespace/a/blobs/{d}/uploads/u1"),
                "upload_commit",
            ),
            (
                Method::PUT,
                format!("/internal/duplicate/namespace/a/blobs/{d}/uploads/u1"),
                "replica_commit",
            ),
            (
                Method::GET,
                format!("/blobs/{d}/locations"),
                "blob_locations",
            ),
            (Method::POST, "/forcecleanup".to_owned(), "forcecleanup"),
            (Method::DELETE, format!("/namespace/a/blobs/{d}"), "other"),
            (
                Method::DELETE,
                format!("/internal/namespace/a/blobs/{d}"),
                "blob_delete",
            ),
            (Method::POST, "/internal/gc".to_owned(), "gc_sweep"),
            (Method::GET, "/nothing/here".to_owned(), "other"),
        ] {
            assert_eq!(route_name(&method, &path), route, "{method} {path}");
        }
    }
}
