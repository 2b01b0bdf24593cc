//! The registry port: the allowed-CIDR check, Go Kraken's agent endpoints, and `/v2/`.

use std::sync::Arc;

use hyper::http::{HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use kraken_core::{BlobStatus, Digest};
use kraken_p2p::http_server::{ConnectionInfo, RequestBody, authorize};
use kraken_p2p::tls::Roles;
use kraken_p2p::tracker::api::decode_segment;

use super::preload::preload;
use super::runtime::{self, Runtime};
use super::state::AgentState;
use crate::build_index::TagName;
use crate::error::error_chain;
use crate::http::{Body, body, json, text};
use crate::oci::{ApiError, ErrorCode, StorageError};

pub(crate) async fn handle(
    state: Arc<AgentState>,
    request: Request<RequestBody>,
) -> Response<Body> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    match (&method, path.as_str()) {
        // Probes answer everyone: they reveal nothing and kubelets probe from the node's IP.
        (&Method::GET, "/health") => return health(&state).await,
        (&Method::GET, "/readiness") => return readiness(&state).await,
        _ => {}
    }
    let remote = request
        .extensions()
        .get::<ConnectionInfo>()
        .map(|info| info.remote.ip());
    if !remote.is_some_and(|ip| state.config.allowed_cidrs.iter().any(|c| c.contains(ip))) {
        let who = remote.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
        tracing::debug!(client = %who, %path, "refused: not in allowed_cidrs");
        return api_error(&ApiError::new(
            ErrorCode::Denied,
            format!("client {who} is not in the agent's allowed_cidrs"),
        ));
    }
    let allowed = allowed_roles(&method, &path);
    if let Err(refused) = authorize(request.extensions(), allowed) {
        return text(StatusCode::FORBIDDEN, &refused.to_string());
    }
    if path == "/v2" || path.starts_with("/v2/") {
        let request = if state.config.ns_as_prefix {
            with_ns_prefix(request)
        } else {
            request
        };
        return state.oci.handle(request).await;
    }
    let query = request.uri().query().map(str::to_owned);
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["tags", rest @ ..]) if !rest.is_empty() => {
            let tag = match tag_name(rest) {
                Ok(tag) => tag,
                Err(reason) => return text(StatusCode::BAD_REQUEST, &reason),
            };
            match state.storage.resolve_tag(&tag).await {
                Ok(Some(digest)) => text(StatusCode::OK, &digest.to_string()),
                Ok(None) => text(StatusCode::NOT_FOUND, &format!("tag {tag} not found")),
                Err(e) => failure(&e),
            }
        }
        (&Method::GET, ["namespace", ns, "blobs", digest]) => {
            let Some(namespace) = decode_segment(ns) else {
                return text(
                    StatusCode::BAD_REQUEST,
                    "invalid percent-encoding of the namespace",
                );
            };
            let digest = match blob_digest(digest) {
                Ok(digest) => digest,
                Err(reason) => return text(StatusCode::BAD_REQUEST, &reason),
            };
            namespace_blob(&state, &namespace, &digest).await
        }
        (&Method::DELETE, ["blobs", digest]) => {
            let digest = match blob_digest(digest) {
                Ok(digest) => digest,
                Err(reason) => return text(StatusCode::BAD_REQUEST, &reason),
            };
            delete_blob(&state, digest).await
        }
        (&Method::GET, ["preload", "tags", rest @ ..]) if !rest.is_empty() => {
            let tag = match tag_name(rest) {
                Ok(tag) => tag,
                Err(reason) => return text(StatusCode::BAD_REQUEST, &reason),
            };
            let runtime = match Runtime::from_query(query.as_deref().unwrap_or_default()) {
                Ok(runtime) => runtime,
                Err(reason) => return text(StatusCode::BAD_REQUEST, &reason),
            };
            let limits = &state.config.limits;
            let report = match preload(
                &state.storage,
                &tag,
                limits.preload_max_manifests,
                limits.preload_concurrency,
            )
            .await
            {
                Ok(Some(report)) => report,
                Ok(None) => return text(StatusCode::NOT_FOUND, &format!("tag {tag} not found")),
                Err(e) if e.is_not_found() => {
                    return text(StatusCode::NOT_FOUND, &error_chain(&e));
                }
                Err(e) => return failure(&e),
            };
            let Some(runtime) = runtime else {
                return json(StatusCode::OK, &report);
            };
            // The image is in the cache: the runtime's pull through this agent is local.
            let config = &state.config.container_runtime;
            match runtime::pull(config, &runtime, &state.runtime_registry, &tag).await {
                Ok(()) => json(StatusCode::OK, &report.pulled_by(runtime.name())),
                Err(reason) => {
                    tracing::warn!(%tag, runtime = runtime.name(), %reason, "preload: the runtime's pull failed");
                    text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &format!(
                            "{tag} is cached, but {} could not pull it: {reason}",
                            runtime.name()
                        ),
                    )
                }
            }
        }
        (&Method::GET, ["x", "blacklist"]) => match state.storage.node().blacklist().await {
            Ok(entries) => json(
                StatusCode::OK,
                &entries.iter().map(BlacklistItem::from).collect::<Vec<_>>(),
            ),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &error_chain(&e)),
        },
        _ => text(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}

/// One entry of `GET /x/blacklist`: Go Kraken's `{peer_id, info_hash, remaining}`
/// (`remaining` in nanoseconds, as Go encodes a duration), with the peer's address and the
/// torrent's digest when the node still has the torrent.
#[derive(Debug, serde::Serialize)]
struct BlacklistItem {
    peer_id: String,
    ip: String,
    info_hash: String,
    digest: Option<String>,
    remaining: u64,
}

impl From<&(kraken_p2p::swarm::BlacklistEntry, Option<Digest>)> for BlacklistItem {
    fn from((entry, digest): &(kraken_p2p::swarm::BlacklistEntry, Option<Digest>)) -> Self {
        Self {
            peer_id: entry.peer_id.to_string(),
            ip: entry.ip.to_string(),
            info_hash: entry.info_hash.to_string(),
            digest: digest.map(|d| d.to_string()),
            remaining: u64::try_from(entry.remaining.as_nanos()).unwrap_or(u64::MAX),
        }
    }
}

/// The agent's route names for metrics and the access log: the OCI API's
/// ([`crate::oci::route_name`]) under `/v2/`, and Go Kraken's agent endpoints.
pub(crate) fn route_name(method: &Method, path: &str) -> &'static str {
    if path == "/v2" || path.starts_with("/v2/") {
        return crate::oci::route_name(method, path);
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::GET, ["tags", rest @ ..]) if !rest.is_empty() => "tag_get",
        (&Method::GET, ["namespace", _, "blobs", _]) => "blob_download",
        (&Method::DELETE, ["blobs", _]) => "blob_evict",
        (&Method::GET, ["preload", "tags", rest @ ..]) if !rest.is_empty() => "preload",
        (&Method::GET, ["x", "blacklist"]) => "blacklist",
        _ => "other",
    }
}

/// Which client-certificate roles may call each endpoint (`docs/tls.md` has the matrix):
/// evicting a blob is for operators; the rest is the pull API (pushes to an agent are
/// refused by its `/v2/` handler whoever asks).
fn allowed_roles(method: &Method, path: &str) -> Roles {
    // The route's own reading of the path: `//blobs/…` routes as `/blobs/…`.
    if *method == Method::DELETE && path.trim_start_matches('/').starts_with("blobs/") {
        Roles::OPERATORS
    } else {
        Roles::ANYONE
    }
}

/// `200 OK` when the node's actor answers within the probe timeout, else `500`.
async fn health(state: &AgentState) -> Response<Body> {
    match tokio::time::timeout(
        state.config.limits.probe_timeout,
        state.storage.node().ping(),
    )
    .await
    {
        Ok(Ok(())) => text(StatusCode::OK, "OK"),
        Ok(Err(e)) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("node: {e}")),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "node: no answer"),
    }
}

/// `200 OK` when the node answers, a build-index is ready and a tracker is healthy, all
/// checked at once; else `503` listing what failed.
async fn readiness(state: &AgentState) -> Response<Body> {
    let timeout = state.config.limits.probe_timeout;
    let node = async {
        match tokio::time::timeout(timeout, state.storage.node().ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("node: {e}")),
            Err(_) => Err("node: no answer".to_owned()),
        }
    };
    let build_index = any_ready(
        state,
        "build-index",
        state
            .config
            .build_index
            .iter()
            .map(|a| format!("{}://{a}/readiness", state.scheme))
            .collect(),
    );
    let tracker = any_ready(
        state,
        "tracker",
        state
            .config
            .trackers
            .iter()
            .map(|t| format!("{}/health", t.trim_end_matches('/')))
            .collect(),
    );
    let (node, build_index, tracker) = tokio::join!(node, build_index, tracker);
    let failures: Vec<String> = [node, build_index, tracker]
        .into_iter()
        .filter_map(Result::err)
        .collect();
    if failures.is_empty() {
        text(StatusCode::OK, "OK")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, &failures.join("\n"))
    }
}

/// `Ok` when one of `urls` answers `200` within the probe timeout.
async fn any_ready(state: &AgentState, what: &str, urls: Vec<String>) -> Result<(), String> {
    let timeout = state.config.limits.probe_timeout;
    let probes = urls.into_iter().map(|url| async move {
        let answer = tokio::time::timeout(timeout, state.probe.get(&url).send()).await;
        match answer {
            Ok(Ok(response)) if response.status() == StatusCode::OK => Ok(()),
            Ok(Ok(response)) => Err(format!("{url}: {}", response.status())),
            Ok(Err(e)) => Err(format!("{url}: {}", error_chain(&e))),
            Err(_) => Err(format!("{url}: no answer")),
        }
    });
    let results = futures::future::join_all(probes).await;
    if results.iter().any(Result::is_ok) {
        return Ok(());
    }
    let reasons: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    Err(format!("{what}: {}", reasons.join("; ")))
}

/// Go Kraken's blob download: the whole blob, streamed as it arrives (Go blocks until the
/// download ends).
async fn namespace_blob(state: &AgentState, namespace: &str, digest: &Digest) -> Response<Body> {
    let storage = &state.storage;
    let size = match storage.blob_size(namespace, digest).await {
        Ok(size) => size,
        Err(e) if e.is_not_found() => return text(StatusCode::NOT_FOUND, &error_chain(&e)),
        Err(e) => return failure(&e),
    };
    let stream = match storage.blob_response(namespace, digest, None).await {
        Ok(stream) => stream,
        Err(e) if e.is_not_found() => return text(StatusCode::NOT_FOUND, &error_chain(&e)),
        Err(e) => return failure(&e),
    };
    let mut response = Response::new(body::stream(stream));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    response
}

/// Drops a blob from the local cache (and from the swarm).
async fn delete_blob(state: &AgentState, digest: Digest) -> Response<Body> {
    let node = state.storage.node();
    let store = node.store().clone();
    if store.status(&digest) == BlobStatus::Downloading {
        return text(StatusCode::CONFLICT, &format!("{digest} is downloading"));
    }
    node.unseed(&digest);
    let deleted = tokio::task::spawn_blocking(move || store.delete(&digest)).await;
    match deleted {
        Ok(Ok(true)) => text(StatusCode::OK, ""),
        Ok(Ok(false)) => text(StatusCode::NOT_FOUND, &format!("{digest} is not cached")),
        Ok(Err(kraken_core::Error::Pinned(_))) => {
            text(StatusCode::CONFLICT, &format!("{digest} is pinned"))
        }
        Ok(Err(e)) => text(StatusCode::INTERNAL_SERVER_ERROR, &error_chain(&e)),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "delete task failed"),
    }
}

/// A `repo:tag` (or why not: a `400`'s reason) from the path segments after the endpoint's prefix: slashes as written or
/// percent-encoded (`library%2Fubuntu%3A22.04`, as Go Kraken sends them).
fn tag_name(segments: &[&str]) -> Result<TagName, String> {
    let joined = segments.join("/");
    let decoded =
        decode_segment(&joined).ok_or_else(|| "invalid percent-encoding of the tag".to_owned())?;
    decoded.parse().map_err(|e: crate::Error| e.to_string())
}

/// A digest as Go Kraken's agent takes it: `sha256:<hex>` or a bare hex.
fn blob_digest(segment: &str) -> Result<Digest, String> {
    let decoded = decode_segment(segment).unwrap_or_default();
    let full = if decoded.contains(':') {
        decoded
    } else {
        format!("sha256:{decoded}")
    };
    full.parse()
        .map_err(|e: kraken_core::DigestError| e.to_string())
}

/// With `ns_as_prefix`: `/v2/<name>/…?ns=<registry>` becomes `/v2/<registry>/<name>/…`.
fn with_ns_prefix<B>(mut request: Request<B>) -> Request<B> {
    let uri = request.uri();
    let Some(query) = uri.query() else {
        return request;
    };
    let ns = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("ns="))
        .and_then(decode_segment)
        .filter(|ns| !ns.is_empty());
    let (Some(ns), Some(rest)) = (ns, uri.path().strip_prefix("/v2/")) else {
        return request;
    };
    if rest.is_empty() || rest == "_catalog" {
        return request;
    }
    let rewritten = format!("/v2/{ns}/{rest}?{query}");
    match rewritten.parse::<Uri>() {
        Ok(uri) => *request.uri_mut() = uri,
        // An `ns` that cannot be in a path: the handler answers for the name as sent.
        Err(_) => tracing::debug!(%ns, "ns cannot prefix a path; ignored"),
    }
    request
}

fn api_error(error: &ApiError) -> Response<Body> {
    let mut response = Response::new(body::full(error.to_json()));
    *response.status_mut() = error.status();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn failure(error: &StorageError) -> Response<Body> {
    let message = error_chain(error);
    tracing::warn!(error = %message, "agent request failed");
    text(StatusCode::INTERNAL_SERVER_ERROR, &message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicting_is_for_operators_however_the_path_is_spelt() {
        for path in ["/blobs/sha256:00", "//blobs/sha256:00", "///blobs/x"] {
            assert!(
                allowed_roles(&Method::DELETE, path) == Roles::OPERATORS,
                "{path}"
            );
        }
        assert!(allowed_roles(&Method::GET, "/blobs/sha256:00") == Roles::ANYONE);
    }

    #[test]
    fn route_names_are_the_oci_apis_and_go_krakens() {
        for (method, path, route) in [
            (Method::GET, "/v2/library/app/blobs/sha256:00", "blob_get"),
            (Method::GET, "/v2/library/app/manifests/v1", "manifest_get"),
            (Method::GET, "/tags/library%2Fapp%3Av1", "tag_get"),
            (
                Method::GET,
                "/namespace/ns/blobs/sha256:00",
                "blob_download",
            ),
            (Method::DELETE, "/blobs/sha256:00", "blob_evict"),
            (Method::GET, "/preload/tags/app%3Av1", "preload"),
            (Method::GET, "/x/blacklist", "blacklist"),
            (Method::GET, "/elsewhere", "other"),
        ] {
            assert_eq!(route_name(&method, path), route, "{method} {path}");
        }
    }

    #[test]
    fn digests_and_tags_parse_as_go_kraken_sends_them() {
        let hex = "a".repeat(64);
        let digest: Digest = format!("sha256:{hex}").parse().unwrap();
        assert_eq!(blob_digest(&hex).unwrap(), digest);
        assert_eq!(blob_digest(&format!("sha256%3A{hex}")).unwrap(), digest);
        assert!(blob_digest("zz").is_err());
        assert!(blob_digest("%zz").is_err());
        let tag = tag_name(&["library%2Fubuntu%3A22.04"]).unwrap();
        assert_eq!(tag.as_str(), "library/ubuntu:22.04");
        let tag = tag_name(&["library", "ubuntu:22.04"]).unwrap();
        assert_eq!(tag.repository(), "library/ubuntu");
        assert!(tag_name(&["no-tag"]).is_err());
    }

    #[test]
    fn ns_prefixes_the_repository_of_v2_paths_only() {
        let rewrite = |uri: &str| {
            let request = Request::builder().uri(uri).body(()).unwrap();
            with_ns_prefix(request).uri().to_string()
        };
        assert_eq!(
            rewrite("/v2/library/alpine/manifests/3?ns=docker.io"),
            "/v2/docker.io/library/alpine/manifests/3?ns=docker.io"
        );
        assert_eq!(
            rewrite("/v2/a/blobs/sha256:00?x=1&ns=registry.local"),
            "/v2/registry.local/a/blobs/sha256:00?x=1&ns=registry.local"
        );
        for unchanged in [
            "/v2/a/manifests/3",
            "/v2/?ns=docker.io",
            "/v2/_catalog?ns=docker.io",
            "/v2/a/manifests/3?ns=",
            "/v2/a/manifests/3?ns=%zz",
        ] {
            assert_eq!(rewrite(unchanged), unchanged);
        }
    }
}
