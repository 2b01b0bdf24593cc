//! The build-index's HTTP API on Go Kraken's paths (see `docs/build-index.md` for the
//! table). Tags appear percent-encoded in paths (`library%2Fubuntu:22.04`).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Limited};
use hyper::http::{Method, Request, Response, StatusCode, header};
use kraken_core::Digest;
use kraken_core::name::RepoName;
use kraken_p2p::http_server::{RequestBody, authorize};
use kraken_p2p::tls::{Role, Roles};
use kraken_p2p::tracker::api::{decode_segment, encode_segment};

use super::client::{DuplicateBody, Links, ListResponse};
use super::state::BuildIndexState;
use super::store::{TagRecord, next_version};
use super::tag::TagName;
use crate::error::{Error, error_chain};
use crate::http::{Body, body, text};

/// Largest request body read (only the internal duplicate calls have one).
const MAX_REQUEST_BODY: usize = 64 << 10;

/// The build-index's route names for metrics and the access log.
pub(crate) fn route_name(method: &Method, path: &str) -> &'static str {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::GET, ["origin"]) => "origin",
        (&Method::GET | &Method::HEAD, ["tags", _]) => "tag_get",
        (&Method::PUT | &Method::POST, ["tags", _]) => "tag_put",
        (&Method::DELETE, ["tags", _]) => "tag_delete",
        (&Method::PUT, ["tags", _, "digest", _]) => "tag_put",
        (&Method::GET, ["repositories", _, "tags"]) => "repository_tags",
        (&Method::POST, ["remotes", "tags", _]) => "remote_tag_replicate",
        (&Method::GET, ["list", ..]) => "list",
        (&Method::GET, ["internal", "tags", _]) => "internal_tag_get",
        (&Method::GET, ["internal", "list"]) => "internal_list",
        (&Method::PUT, ["internal", "duplicate", "tags", _, "digest", _]) => "replica_tag_put",
        (&Method::DELETE, ["internal", "duplicate", "tags", _]) => "replica_tag_delete",
        _ => "other",
    }
}

/// Handles one request.
pub(crate) async fn handle(
    state: Arc<BuildIndexState>,
    request: Request<RequestBody>,
) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let query = Query(parts.uri.query().unwrap_or_default());
    if let Err(refused) = authorize(&parts.extensions, allowed_roles(&parts.method, &segments)) {
        return text(StatusCode::FORBIDDEN, &refused.to_string());
    }
    match (&parts.method, segments.as_slice()) {
        (&Method::GET, ["health"]) => text(StatusCode::OK, "OK"),
        (&Method::GET, ["readiness"]) => {
            let backends = crate::http::backend_ready(&*state.backend);
            let origins = state.origins.check_ready();
            crate::http::readiness(vec![
                ("backends", futures::future::Either::Left(backends)),
                ("origins", futures::future::Either::Right(origins)),
            ])
            .await
        }
        (&Method::GET, ["origin"]) => text(StatusCode::OK, &state.origins.address()),
        (method, ["tags", tag]) => {
            let tag = match parse_tag(tag) {
                Ok(tag) => tag,
                Err(reason) => return text(StatusCode::BAD_REQUEST, &reason),
            };
            match *method {
                Method::GET => match state.digest(&tag).await {
                    Ok(Some(digest)) => text(StatusCode::OK, &digest.to_string()),
                    Ok(None) => tag_not_found(&tag),
                    Err(e) => error_response(&e),
                },
                Method::HEAD => match state.digest(&tag).await {
                    Ok(Some(_)) => empty(StatusCode::OK),
                    Ok(None) => empty(StatusCode::NOT_FOUND),
                    Err(e) => error_response(&e),
                },
                Method::DELETE => match replicate_param(&query) {
                    Err(reason) => text(StatusCode::BAD_REQUEST, reason),
                    Ok(replicate) => match state.delete(&tag, replicate).await {
                        Ok(true) => text(StatusCode::OK, ""),
                        Ok(false) => tag_not_found(&tag),
                        Err(e) => error_response(&e),
                    },
                },
                _ => method_not_allowed(),
            }
        }
        (&Method::PUT, ["tags", tag, "digest", digest]) => {
            let (tag, digest) = match parse_tag(tag).and_then(|t| Ok((t, parse_digest(digest)?))) {
                Ok(parsed) => parsed,
                Err(reason) => return text(StatusCode::BAD_REQUEST, &reason),
            };
            let replicate = match replicate_param(&query) {
                Ok(replicate) => replicate,
                Err(reason) => return text(StatusCode::BAD_REQUEST, reason),
            };
            match state.put(&tag, &digest, replicate).await {
                Ok(()) => text(StatusCode::OK, ""),
                Err(e) => error_response(&e),
            }
        }
        (&Method::POST, ["remotes", "tags", tag]) => {
            let tag = match parse_tag(tag) {
                Ok(tag) => tag,
                Err(reason) => return text(StatusCode::BAD_REQUEST, &reason),
            };
            match state.replicate_again(&tag).await {
                Ok(Some((digest, remotes))) => text(
                    StatusCode::OK,
                    &format!("replication of {tag} ({digest}) queued to {remotes} remotes"),
                ),
                Ok(None) => tag_not_found(&tag),
                Err(e) => error_response(&e),
            }
        }
        (&Method::GET, ["repositories", repo, "tags"]) => {
            let Some(repo) = decode_segment(repo) else {
                return text(
                    StatusCode::BAD_REQUEST,
                    "invalid percent-encoding of the repository",
                );
            };
            if RepoName::validate(&repo).is_err() {
                return text(StatusCode::BAD_REQUEST, "invalid repository name");
            }
            let prefix = format!("{repo}:");
            list(&state, &path, &query, &prefix, |name| {
                name[prefix.len()..].to_owned()
            })
            .await
        }
        (&Method::GET, ["list", rest @ ..]) => {
            let Some(prefix) = rest
                .iter()
                .map(|segment| decode_segment(segment))
                .collect::<Option<Vec<String>>>()
            else {
                return text(
                    StatusCode::BAD_REQUEST,
                    "invalid percent-encoding of the prefix",
                );
            };
            let prefix = prefix.join("/");
            list(&state, &path, &query, &prefix, str::to_owned).await
        }
        (&Method::GET, ["internal", "tags", tag]) => {
            let tag = match parse_tag(tag) {
                Ok(tag) => tag,
                Err(reason) => return text(StatusCode::BAD_REQUEST, &reason),
            };
            match state.tags.get(&tag.to_string()) {
                Some(record) => json(&record),
                None => tag_not_found(&tag),
            }
        }
        (&Method::GET, ["internal", "list"]) => {
            let prefix = query.get("prefix").unwrap_or_default();
            let after = query.get("after");
            let limit = match page_limit(&state, &query) {
                Ok(limit) => limit,
                Err(reason) => return text(StatusCode::BAD_REQUEST, &reason),
            };
            json(&state.local_records(&prefix, after.as_deref(), limit))
        }
        (&Method::PUT, ["internal", "duplicate", "tags", tag, "digest", digest]) => {
            let (tag, digest) = match parse_tag(tag).and_then(|t| Ok((t, parse_digest(digest)?))) {
                Ok(parsed) => parsed,
                Err(reason) => return text(StatusCode::BAD_REQUEST, &reason),
            };
            duplicate(&state, tag, Some(digest), body).await
        }
        (&Method::DELETE, ["internal", "duplicate", "tags", tag]) => {
            let tag = match parse_tag(tag) {
                Ok(tag) => tag,
                Err(reason) => return text(StatusCode::BAD_REQUEST, &reason),
            };
            duplicate(&state, tag, None, body).await
        }
        _ => text(StatusCode::NOT_FOUND, "no such route"),
    }
}

/// Which client-certificate roles may call each endpoint (`docs/tls.md` has the matrix).
/// Reads are open; tags are written by proxies and by build-indexes replicating from other
/// clusters; neighbours' copies come only from build-indexes.
fn allowed_roles(method: &Method, segments: &[&str]) -> Roles {
    match (method, segments) {
        (&Method::GET | &Method::HEAD, _) => Roles::ANYONE,
        (_, ["internal", "duplicate", ..]) => Roles::of(&[Role::BuildIndex]),
        (_, ["tags", ..]) => Roles::of(&[Role::Proxy, Role::BuildIndex]),
        _ => Roles::OPERATORS,
    }
}

/// `?replicate=`: absent or `false`, or `true`.
fn replicate_param(query: &Query) -> std::result::Result<bool, &'static str> {
    match query.get("replicate").as_deref() {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err("replicate must be true or false"),
    }
}

/// A neighbour's copy of a write: kept if newer than ours.
async fn duplicate(
    state: &Arc<BuildIndexState>,
    tag: TagName,
    digest: Option<Digest>,
    body: RequestBody,
) -> Response<Body> {
    let bytes = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return text(
                StatusCode::BAD_REQUEST,
                "body unreadable or larger than 64KiB",
            );
        }
    };
    let copy: DuplicateBody = if bytes.is_empty() {
        DuplicateBody::default()
    } else {
        match serde_json::from_slice(&bytes) {
            Ok(copy) => copy,
            Err(e) => return text(StatusCode::BAD_REQUEST, &format!("invalid JSON body: {e}")),
        }
    };
    if let Err((status, reason)) = check_duplicate(state, &copy) {
        return text(status, &reason);
    }
    let tag_name = tag.to_string();
    let record = TagRecord {
        version: copy
            .version
            .unwrap_or_else(|| next_version(state.tags.get(&tag_name).as_ref())),
        writer: copy.writer.unwrap_or_default(),
        tag: tag_name,
        digest,
    };
    match state.store_record(record.clone()).await {
        Ok(true) => text(StatusCode::OK, ""),
        Ok(false) => match state.tags.get(&record.tag) {
            // The same version, copied twice.
            Some(held) if held == record => text(StatusCode::OK, ""),
            held => {
                let held = held.unwrap_or(record);
                let mut response = json(&HeldVersion {
                    version: held.version,
                    writer: held.writer,
                });
                *response.status_mut() = StatusCode::CONFLICT;
                response
            }
        },
        Err(e) => error_response(&e),
    }
}

/// How far ahead of this build-index's clock a copied version may be. Versions are clock
/// readings (nanoseconds), so a neighbour is ahead only by its clock's skew; a version far
/// in the future — up to `u64::MAX`, which no later write could pass — would freeze the
/// tag.
const MAX_VERSION_AHEAD: Duration = Duration::from_secs(3600);

/// The version a build-index holds when it refuses an older copy (`409`).
#[derive(serde::Serialize)]
struct HeldVersion {
    version: u64,
    writer: String,
}

/// Refuses a copy that is not a neighbour's (its writer is not a build-index of this
/// cluster: `403`) or whose version is beyond [`MAX_VERSION_AHEAD`] (`400`). Go Kraken's
/// copies, with neither, are stamped with this build-index's clock.
fn check_duplicate(
    state: &BuildIndexState,
    copy: &DuplicateBody,
) -> Result<(), (StatusCode, String)> {
    let Some(version) = copy.version else {
        return Ok(());
    };
    let Some(writer) = copy.writer.as_deref() else {
        return Err((
            StatusCode::BAD_REQUEST,
            "a copy with a version names its writer".into(),
        ));
    };
    if writer != state.name && !state.config.neighbours.iter().any(|n| n == writer) {
        return Err((
            StatusCode::FORBIDDEN,
            format!("writer {writer:?} is not a build-index of this cluster"),
        ));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let limit = (now + MAX_VERSION_AHEAD).as_nanos();
    if u128::from(version) > limit {
        return Err((
            StatusCode::BAD_REQUEST,
            format!(
                "version {version} is more than {}s ahead of this build-index's clock",
                MAX_VERSION_AHEAD.as_secs()
            ),
        ));
    }
    Ok(())
}

/// A Go Kraken paginated listing: `{size, result, links: {next, self}}`.
async fn list(
    state: &Arc<BuildIndexState>,
    path: &str,
    query: &Query<'_>,
    prefix: &str,
    show: impl Fn(&str) -> String,
) -> Response<Body> {
    let limit = match page_limit(state, query) {
        Ok(limit) => limit,
        Err(reason) => return text(StatusCode::BAD_REQUEST, &reason),
    };
    let offset = query.get("offset").filter(|o| !o.is_empty());
    let (names, next) = state.list(prefix, offset.as_deref(), limit).await;
    let link = |offset: Option<&str>| {
        let mut link = format!("{path}?limit={limit}");
        if let Some(offset) = offset {
            link.push_str(&format!("&offset={}", encode_segment(offset)));
        }
        link
    };
    json(&ListResponse {
        size: names.len(),
        result: names.iter().map(|n| show(n)).collect(),
        links: Links {
            next: next.as_deref().map(|n| link(Some(n))).unwrap_or_default(),
            this: link(offset.as_deref()),
        },
    })
}

/// Parsers of request parts answer a reason for a `400` when the part is bad.
type Parsed<T> = Result<T, String>;

fn page_limit(state: &BuildIndexState, query: &Query<'_>) -> Parsed<usize> {
    let max = state.config.limits.max_page;
    match query.get("limit") {
        None => Ok(max),
        Some(limit) => match limit.parse::<usize>() {
            Ok(0) | Err(_) => Err("limit must be a positive integer".into()),
            Ok(limit) => Ok(limit.min(max)),
        },
    }
}

/// The query string of a request.
struct Query<'a>(&'a str);

impl Query<'_> {
    /// The decoded value of `key` (the first one), if present and well-encoded.
    fn get(&self, key: &str) -> Option<String> {
        self.0
            .split('&')
            .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| decode_segment(v))
    }
}

fn parse_tag(segment: &str) -> Parsed<TagName> {
    let decoded =
        decode_segment(segment).ok_or_else(|| "invalid percent-encoding of the tag".to_owned())?;
    decoded.parse().map_err(|e: Error| e.to_string())
}

fn parse_digest(segment: &str) -> Parsed<Digest> {
    decode_segment(segment)
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| "invalid digest: expected sha256:<64 hex digits>".to_owned())
}

fn json(value: &impl serde::Serialize) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body::full(serde_json::to_vec(value).expect("serialisable")))
        .expect("valid response parts")
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = status;
    response
}

fn tag_not_found(tag: &TagName) -> Response<Body> {
    text(StatusCode::NOT_FOUND, &format!("tag {tag} not found"))
}

fn method_not_allowed() -> Response<Body> {
    text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

fn error_response(error: &Error) -> Response<Body> {
    let status = match error {
        e if e.is_not_found() => StatusCode::NOT_FOUND,
        // The body starts with the missing digest, for clients to recognise.
        Error::MissingDependency(_) | Error::InvalidManifest { .. } | Error::InvalidTag { .. } => {
            StatusCode::BAD_REQUEST
        }
        Error::Origin { .. } | Error::Backend(_) | Error::BuildIndex { .. } => {
            StatusCode::BAD_GATEWAY
        }
        Error::Shutdown => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if status.is_server_error() {
        tracing::warn!(error = %error_chain(error), "request failed");
    }
    text(status, &error_chain(error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_names_name_the_endpoint_never_the_path() {
        for (method, path, route) in [
            (Method::GET, "/tags/library%2Fapp%3Av1", "tag_get"),
            (Method::HEAD, "/tags/app%3Av1", "tag_get"),
            (Method::PUT, "/tags/app%3Av1/digest/sha256:00", "tag_put"),
            (Method::DELETE, "/tags/app%3Av1", "tag_delete"),
            (Method::GET, "/repositories/app/tags", "repository_tags"),
            (Method::GET, "/list/library", "list"),
            (Method::GET, "/internal/tags/app%3Av1", "internal_tag_get"),
            (Method::GET, "/internal/list", "internal_list"),
            (
                Method::PUT,
                "/internal/duplicate/tags/app%3Av1/digest/sha256:00",
                "replica_tag_put",
            ),
            (
                Method::DELETE,
                "/internal/duplicate/tags/app%3Av1",
                "replica_tag_delete",
            ),
            (Method::GET, "/origin", "origin"),
            (
                Method::POST,
                "/remotes/tags/app%3Av1",
                "remote_tag_replicate",
            ),
            (Method::GET, "/elsewhere", "other"),
        ] {
            assert_eq!(route_name(&method, path), route, "{method} {path}");
        }
    }
}
