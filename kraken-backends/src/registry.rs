//! A read-only backend on any OCI / Docker registry, through the `/v2/` distribution API.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use kraken_core::name::{RepoName, Tag};
use kraken_core::{Digest, Hasher};
use reqwest::header::{ACCEPT, LOCATION, RANGE, WWW_AUTHENTICATE};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::backend::{
    Backend, BlobInfo, ByteRange, ByteStream, ListOptions, ListPage, UploadBody, checked,
    collect_bytes,
};
use crate::client::{
    HttpClientConfig, body_stream, content_length, parse_base_url, send, size_if_unannounced,
    status_error, transport_error, unsatisfiable, url_with_path,
};
use crate::error::{Error, Result};
use crate::listing::DEFAULT_PAGE_SIZE;

/// Manifest media types a tag may resolve to.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";
/// Redirects followed per request (registries redirect blobs to their storage).
const MAX_REDIRECTS: usize = 3;
/// Largest manifest, token or tag list read into memory.
const MAX_DOCUMENT: usize = 4 * 1024 * 1024;
/// Token lifetime when the token server does not say (the distribution spec's default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// Configuration of a [`RegistryBackend`].
///
/// ```toml
/// type = "registry"
/// address = "https://registry.example.com"
/// username = "kraken"     # optional: basic auth, or credentials for the token server
/// password = "secret"     # optional
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Base URL of the registry (`http://` or `https://`). Required.
    pub address: String,
    /// User for basic auth and for the bearer-token server. Default: anonymous.
    #[serde(default)]
    pub username: Option<String>,
    /// Password. Default: none.
    #[serde(default)]
    pub password: Option<String>,
    /// Timeouts. Default: see [`HttpClientConfig`].
    #[serde(default)]
    pub client: HttpClientConfig,
}

impl RegistryConfig {
    /// Anonymous access to the registry at `address`.
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            username: None,
            password: None,
            client: HttpClientConfig::default(),
        }
    }
}

/// Reads blobs and tags from a registry. The namespace is the repository; a name that is a
/// digest (`sha256:…`) is a blob (or, failing that, a manifest by digest), any other name is
/// a tag, whose content is the digest it points to as text, as Go Kraken's `registry_tag`
/// backend returns it. Listing lists tags. Uploads and deletes are
/// [`Error::Unsupported`].
///
/// Authentication follows the registry's `WWW-Authenticate` challenge: basic auth with the
/// configured credentials, or a bearer token fetched from the named realm (with those
/// credentials, if any) and cached per repository until it expires. Full blob downloads are
/// checked against their digest as they stream.
#[derive(Debug)]
pub struct RegistryBackend {
    base: Url,
    credentials: Option<(String, Option<String>)>,
    client: reqwest::Client,
    auth: Mutex<AuthState>,
}

#[derive(Debug, Default)]
struct AuthState {
    /// The registry asked for basic auth once: send it with every request.
    basic: bool,
    /// Bearer tokens by scope.
    tokens: HashMap<String, CachedToken>,
}

#[derive(Clone, Debug)]
struct CachedToken {
    token: String,
    expires: Instant,
}

/// What a blob name refers to.
enum Reference {
    Digest(Digest),
    Tag(String),
    /// `repo:tag`, the name a build-index gives a tag: the repository comes from the name,
    /// not the namespace (Go Kraken's `registry_tag` backend reads tags this way).
    RepositoryTag(String, String),
}

#[derive(Deserialize)]
struct TokenReply {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct TagList {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

impl RegistryBackend {
    /// A backend for the registry in `config`; sends no request yet.
    pub fn new(config: RegistryConfig) -> Result<Self> {
        let base = parse_base_url("registry", &config.address)?;
        Ok(Self {
            base,
            credentials: config.username.map(|user| (user, config.password)),
            client: config.client.build()?,
            auth: Mutex::default(),
        })
    }

    /// The digest `tag` of `repository` points to.
    pub async fn resolve_tag(&self, repository: &str, tag: &str) -> Result<Digest> {
        let url = self.url(repository, &["manifests", tag])?;
        let response = self
            .send(
                Method::HEAD,
                url.clone(),
                repository,
                &[(ACCEPT, MANIFEST_TYPES)],
            )
            .await?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Err(Error::not_found(repository, tag)),
            _ => return Err(status_error("HEAD", &response)),
        }
        if let Some(digest) = response
            .headers()
            .get("docker-content-digest")
            .and_then(|value| value.to_str().ok())
        {
            return Digest::from_str(digest)
                .map_err(|_| Error::InvalidResponse(format!("Docker-Content-Digest {digest:?}")));
        }
        // No digest header: the digest of a manifest is that of its bytes.
        let response = self
            .send(Method::GET, url, repository, &[(ACCEPT, MANIFEST_TYPES)])
            .await?;
        if response.status() != StatusCode::OK {
            return Err(status_error("GET", &response));
        }
        let manifest = read_document(response).await?;
        Ok(Digest::sha256_of(&manifest))
    }

    fn url(&self, repository: &str, rest: &[&str]) -> Result<Url> {
        check_repository(repository)?;
        let segments = ["v2"].into_iter().chain(repository.split('/'));
        Ok(url_with_path(
            &self.base,
            segments.chain(rest.iter().copied()),
        ))
    }

    /// Sends a request with whatever authorization is known, answers one auth challenge,
    /// and follows redirects (without credentials: they point at blob storage).
    async fn send(
        &self,
        method: Method,
        url: Url,
        repository: &str,
        headers: &[(reqwest::header::HeaderName, &str)],
    ) -> Result<Response> {
        let scope = format!("repository:{repository}:pull");
        let build = |auth: Option<Authorization>| {
            let mut request = self.client.request(method.clone(), url.clone());
            for (name, value) in headers {
                request = request.header(name, *value);
            }
            self.authorize(request, auth)
        };
        let mut response = send(build(self.known_authorization(&scope))).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            let challenge = response
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|value| value.to_str().ok())
                .map(Challenge::parse);
            let authorization = match challenge {
                Some(Challenge::Bearer {
                    realm,
                    service,
                    scope: asked,
                }) => {
                    let scope = asked.unwrap_or(scope);
                    Some(Authorization::Bearer(
                        self.fetch_token(&realm, service.as_deref(), &scope).await?,
                    ))
                }
                Some(Challenge::Basic) if self.credentials.is_some() => {
                    self.lock_auth().basic = true;
                    Some(Authorization::Basic)
                }
                _ => None,
            };
            if authorization.is_some() {
                response = send(build(authorization)).await?;
            }
        }
        for _ in 0..MAX_REDIRECTS {
            if !response.status().is_redirection() {
                return Ok(response);
            }
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|value| value.to_str().ok())
                .and_then(|location| response.url().join(location).ok())
                .ok_or_else(|| {
                    Error::InvalidResponse("redirect without a valid Location".into())
                })?;
            let mut request = self.client.request(method.clone(), location);
            for (name, value) in headers {
                request = request.header(name, *value);
            }
            response = send(request).await?;
        }
        Err(Error::InvalidResponse("too many redirects".into()))
    }

    fn authorize(&self, request: RequestBuilder, auth: Option<Authorization>) -> RequestBuilder {
        match (auth, &self.credentials) {
            (Some(Authorization::Bearer(token)), _) => request.bearer_auth(token),
            (Some(Authorization::Basic), Some((user, password))) => {
                request.basic_auth(user, password.as_ref())
            }
            _ => request,
        }
    }

    /// A cached, unexpired token for `scope`, or basic auth if the registry asked for it.
    fn known_authorization(&self, scope: &str) -> Option<Authorization> {
        let auth = self.lock_auth();
        if let Some(cached) = auth
            .tokens
            .get(scope)
            .filter(|t| t.expires > Instant::now())
        {
            return Some(Authorization::Bearer(cached.token.clone()));
        }
        auth.basic.then_some(Authorization::Basic)
    }

    async fn fetch_token(&self, realm: &str, service: Option<&str>, scope: &str) -> Result<String> {
        let mut url = Url::parse(realm)
            .map_err(|_| Error::InvalidResponse(format!("token realm {realm:?} is not a URL")))?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            query.append_pair("scope", scope);
        }
        let mut request = self.client.get(url);
        if let Some((user, password)) = &self.credentials {
            request = request.basic_auth(user, password.as_ref());
        }
        let response = send(request).await?;
        if response.status() != StatusCode::OK {
            return Err(status_error("GET", &response));
        }
        let requested = Instant::now();
        let reply: TokenReply = serde_json::from_slice(&read_document(response).await?)
            .map_err(|e| Error::InvalidResponse(format!("token response: {e}")))?;
        let token = reply
            .token
            .or(reply.access_token)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| Error::InvalidResponse("token response without a token".into()))?;
        let lifetime = reply
            .expires_in
            .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs);
        // Renew a little early, so a token does not expire between cache and registry.
        let expires = requested + lifetime.mul_f64(0.9);
        self.lock_auth().tokens.insert(
            scope.to_owned(),
            CachedToken {
                token: token.clone(),
                expires,
            },
        );
        Ok(token)
    }

    fn lock_auth(&self) -> std::sync::MutexGuard<'_, AuthState> {
        // A plain cache: still consistent after a panic elsewhere.
        self.auth
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// GET or HEAD of a blob, falling back to the manifest of the same digest.
    async fn blob_or_manifest(
        &self,
        method: Method,
        repository: &str,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> Result<Response> {
        let digest_text = digest.to_string();
        let range_header = range.map(|range| range.http_header());
        let mut headers = vec![(ACCEPT, MANIFEST_TYPES)];
        if let Some(value) = &range_header {
            headers.push((RANGE, value.as_str()));
        }
        let blob = self.url(repository, &["blobs", &digest_text])?;
        let response = self
            .send(method.clone(), blob, repository, &headers)
            .await?;
        if response.status() != StatusCode::NOT_FOUND {
            return Ok(response);
        }
        let manifest = self.url(repository, &["manifests", &digest_text])?;
        self.send(method, manifest, repository, &headers).await
    }
}

impl RegistryBackend {
    /// A tag's content as a backend sees it: its digest as text (`range` of it).
    async fn tag_content(
        &self,
        repository: &str,
        tag: &str,
        range: Option<ByteRange>,
    ) -> Result<ByteStream> {
        let text = Bytes::from(self.resolve_tag(repository, tag).await?.to_string());
        let text = match range {
            Some(range) => {
                let length = range.clamp_to(text.len() as u64)?;
                let start = range.offset() as usize;
                text.slice(start..start + length as usize)
            }
            None => text,
        };
        Ok(futures::stream::once(async move { Ok(text) }).boxed())
    }
}

#[async_trait]
impl Backend for RegistryBackend {
    async fn stat(&self, namespace: &str, name: &str) -> Result<BlobInfo> {
        match Reference::parse(name)? {
            Reference::Tag(tag) => {
                let digest = self.resolve_tag(namespace, &tag).await?;
                Ok(BlobInfo::new(digest.to_string().len() as u64))
            }
            Reference::RepositoryTag(repository, tag) => {
                let digest = self.resolve_tag(&repository, &tag).await?;
                Ok(BlobInfo::new(digest.to_string().len() as u64))
            }
            Reference::Digest(digest) => {
                let response = self
                    .blob_or_manifest(Method::HEAD, namespace, &digest, None)
                    .await?;
                match response.status() {
                    StatusCode::OK => content_length(response.headers())
                        .map(BlobInfo::new)
                        .ok_or_else(|| {
                            Error::InvalidResponse("HEAD without Content-Length".into())
                        }),
                    StatusCode::NOT_FOUND => Err(Error::not_found(namespace, name)),
                    _ => Err(status_error("HEAD", &response)),
                }
            }
        }
    }

    async fn download(
        &self,
        namespace: &str,
        name: &str,
        range: Option<ByteRange>,
    ) -> Result<ByteStream> {
        let digest = match Reference::parse(name)? {
            Reference::Digest(digest) => digest,
            Reference::Tag(tag) => return self.tag_content(namespace, &tag, range).await,
            Reference::RepositoryTag(repository, tag) => {
                return self.tag_content(&repository, &tag, range).await;
            }
        };
        let response = self
            .blob_or_manifest(Method::GET, namespace, &digest, range)
            .await?;
        match response.status() {
            StatusCode::OK | StatusCode::PARTIAL_CONTENT => {}
            StatusCode::NOT_FOUND => return Err(Error::not_found(namespace, name)),
            StatusCode::RANGE_NOT_SATISFIABLE => {
                return Err(unsatisfiable(range, response.headers()));
            }
            _ => return Err(status_error("GET", &response)),
        }
        let size = if size_if_unannounced(&response) {
            Some(self.stat(namespace, name).await?.size)
        } else {
            None
        };
        let stream = body_stream(response, range, size)?;
        Ok(match range {
            Some(_) => stream,
            None => verify_digest(stream, digest),
        })
    }

    async fn upload(&self, _namespace: &str, _name: &str, _body: UploadBody) -> Result<()> {
        Err(Error::Unsupported {
            backend: "registry",
            operation: "upload",
        })
    }

    async fn list(&self, namespace: &str, prefix: &str, options: &ListOptions) -> Result<ListPage> {
        let limit = options.page_size(DEFAULT_PAGE_SIZE);
        let mut url = self.url(namespace, &["tags", "list"])?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("n", &limit.to_string());
            if let Some(last) = &options.continuation_token {
                query.append_pair("last", last);
            }
        }
        let response = self.send(Method::GET, url, namespace, &[]).await?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(ListPage::default()),
            _ => return Err(status_error("GET", &response)),
        }
        // Registries that paginate say so in a `Link: <…>; rel="next"` header; others (CNCF
        // Distribution 2.8) ignore `n` and `last` and send every tag, paginated here.
        let server_has_more = response
            .headers()
            .get_all(reqwest::header::LINK)
            .iter()
            .any(|link| {
                link.to_str()
                    .is_ok_and(|link| link.contains("rel=\"next\""))
            });
        let list: TagList = serde_json::from_slice(&read_document(response).await?)
            .map_err(|e| Error::InvalidResponse(format!("tag list: {e}")))?;
        let mut tags = list.tags.unwrap_or_default();
        if let Some(last) = &options.continuation_token {
            tags.retain(|tag| tag > last);
        }
        tags.sort_unstable();
        let more = server_has_more || tags.len() > limit;
        tags.truncate(limit);
        let token = more.then(|| tags.last().cloned()).flatten();
        tags.retain(|tag| tag.starts_with(prefix));
        Ok(ListPage::new(tags, token))
    }

    async fn delete(&self, _namespace: &str, _name: &str) -> Result<()> {
        Err(Error::Unsupported {
            backend: "registry",
            operation: "delete",
        })
    }
}

impl Reference {
    fn parse(name: &str) -> Result<Self> {
        if let Some((repository, tag)) = name.rsplit_once(':')
            && !repository.starts_with("sha256")
            && check_repository(repository).is_ok()
        {
            return match Self::parse(tag)? {
                Self::Tag(tag) => Ok(Self::RepositoryTag(repository.to_owned(), tag)),
                _ => Err(Error::InvalidName {
                    name: name.to_owned(),
                    reason: "not repository:tag",
                }),
            };
        }
        if name.contains(':') {
            return Digest::from_str(name)
                .map(Self::Digest)
                .map_err(|_| Error::InvalidName {
                    name: name.to_owned(),
                    reason: "neither a digest (sha256:<64 hex>) nor a tag",
                });
        }
        match Tag::validate(name) {
            Ok(()) => Ok(Self::Tag(name.to_owned())),
            Err(_) => Err(Error::InvalidName {
                name: name.to_owned(),
                reason: "not a valid tag",
            }),
        }
    }
}

/// Rejects repository names outside the distribution spec's grammar, which also keeps them
/// from changing the URL's path.
fn check_repository(repository: &str) -> Result<()> {
    RepoName::validate(repository).map_err(|_| Error::InvalidName {
        name: repository.to_owned(),
        reason: "not a valid repository name",
    })
}

/// Authorization to send with a request.
enum Authorization {
    Bearer(String),
    Basic,
}

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, Eq, PartialEq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    Other,
}

impl Challenge {
    fn parse(header: &str) -> Self {
        let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Self::Basic;
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Self::Other;
        }
        let params = parse_auth_params(params);
        match params.get("realm") {
            Some(realm) => Self::Bearer {
                realm: realm.clone(),
                service: params.get("service").cloned(),
                scope: params.get("scope").cloned(),
            },
            None => Self::Other,
        }
    }
}

/// `key="value", key=value` pairs; quoted values may contain commas and `\"`.
fn parse_auth_params(input: &str) -> HashMap<String, String> {
    let mut params = HashMap::new();
    let mut chars = input.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace() || *c == ',').is_some() {}
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
        if chars.next_if_eq(&'=').is_none() {
            return params;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => value.extend(chars.next()),
                    c => value.push(c),
                }
            }
        } else {
            value.extend(std::iter::from_fn(|| chars.next_if(|c| *c != ',')));
        }
        params.insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
}

/// `stream`, failing at the end if its bytes do not hash to `digest`.
fn verify_digest(stream: ByteStream, digest: Digest) -> ByteStream {
    let mut hasher = Some(Hasher::new());
    checked(stream, move |chunk| {
        match (chunk, hasher.as_mut()) {
            (Some(chunk), Some(hasher)) => hasher.update(chunk),
            (None, Some(_)) => {
                let actual = hasher.take().map(Hasher::finalize);
                if actual != Some(digest) {
                    return Err(Error::InvalidResponse(format!(
                        "content of {digest} hashes to something else"
                    )));
                }
            }
            (_, None) => {}
        }
        Ok(())
    })
}

async fn read_document(response: Response) -> Result<Bytes> {
    let stream = response.bytes_stream().map_err(transport_error).boxed();
    collect_bytes(stream, MAX_DOCUMENT).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_are_parsed_with_quoted_commas() {
        let header = r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#;
        assert_eq!(
            Challenge::parse(header),
            Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull,push".into()),
            }
        );
        assert_eq!(Challenge::parse(r#"Basic realm="x""#), Challenge::Basic);
        assert_eq!(Challenge::parse("Bearer service=x"), Challenge::Other);
        assert_eq!(Challenge::parse(""), Challenge::Other);
    }

    #[test]
    fn names_are_digests_or_tags_and_repositories_are_checked() {
        assert!(matches!(Reference::parse("latest"), Ok(Reference::Tag(_))));
        let digest = format!("sha256:{}", "a".repeat(64));
        assert!(matches!(
            Reference::parse(&digest),
            Ok(Reference::Digest(_))
        ));
        for bad in ["", "-x", "a/b", "sha256:zz", &"t".repeat(129)] {
            assert!(Reference::parse(bad).is_err(), "{bad:?}");
        }
        assert!(check_repository("library/ubuntu").is_ok());
        for bad in ["", "../x", "a//b", "A", "a/.."] {
            assert!(check_repository(bad).is_err(), "{bad:?}");
        }
    }
}
