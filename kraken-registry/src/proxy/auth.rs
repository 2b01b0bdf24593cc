//! Who may push: basic auth against bcrypt password hashes, static bearer tokens, and
//! per-user repository rules.
//!
//! Each request is one of three kinds: the `/v2/` ping, a read (`GET`/`HEAD`), or a write
//! (anything else). Writes always need credentials; reads need them unless
//! [`AuthConfig::anonymous_reads`]; the ping needs them too, because Docker and
//! containers/image (skopeo, podman) only send credentials to a registry whose ping
//! answered `401` with a challenge. Refusals are `401 UNAUTHORIZED` with
//! `WWW-Authenticate: Basic realm="…"`; a user outside its [`AccessRule`]s gets
//! `403 DENIED`. How passwords are checked without slowing the data path (dedicated threads,
//! caches, a per-address failure limit answering `429`/`503`) is in [`super::password`].
//!
//! [`AccessRule`]: super::config::AccessRule

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use base64::Engine as _;
use hyper::http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use kraken_core::Digest;

use super::access::RepositoryAccess;
use super::config::{AuthConfig, UserConfig};
use super::password::{Passwords, Verdict};
use crate::error::{Error, Result};
use crate::http::Body;
use crate::http::body;
use crate::oci::{ApiError, ErrorCode};

/// Longest `Authorization` header considered.
const MAX_AUTHORIZATION: usize = 4096;

/// Who a request's credentials say it is.
#[derive(Debug, Eq, PartialEq)]
pub(crate) enum Principal {
    /// No credentials needed (an anonymous read).
    Anonymous,
    /// A bearer token (sent as such, or as a basic-auth password).
    Token,
    /// A user whose password checked.
    User(String),
}

/// Checks requests against the configured credentials.
#[derive(Debug)]
pub(crate) struct Authenticator {
    passwords: Passwords,
    /// Lowercase hex SHA-256 of each token.
    tokens: Vec<String>,
    anonymous_reads: bool,
    challenge: HeaderValue,
    access: RepositoryAccess,
}

impl Authenticator {
    /// The authenticator for `config`, with the users of its htpasswd file; `None` when
    /// no credentials are configured (everything is open).
    pub(crate) fn load(config: &AuthConfig) -> Result<Option<Self>> {
        let mut users: HashMap<String, String> = config
            .users
            .iter()
            .map(|u| (u.name.clone(), u.bcrypt.clone()))
            .collect();
        if let Some(path) = &config.htpasswd {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::Config(format!("auth.htpasswd {}: {e}", path.display())))?;
            for user in parse_htpasswd(&text)? {
                users.insert(user.name, user.bcrypt);
            }
        }
        if users.is_empty() && config.tokens_sha256.is_empty() {
            return Ok(None);
        }
        let challenge = HeaderValue::try_from(format!("Basic realm=\"{}\"", config.realm))
            .map_err(|_| Error::Config("auth.realm is not a valid header value".into()))?;
        Ok(Some(Self {
            passwords: Passwords::new(users, config),
            tokens: config
                .tokens_sha256
                .iter()
                .map(|t| t.to_ascii_lowercase())
                .collect(),
            anonymous_reads: config.anonymous_reads,
            challenge,
            access: RepositoryAccess::new(&config.access)?,
        }))
    }

    /// Who the request is from, if it may go on; the `401` (or `429`/`503` while password
    /// checks are limited or saturated) to answer otherwise. `client` is the address the
    /// failure limit counts against.
    pub(crate) async fn check(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        client: Option<IpAddr>,
    ) -> std::result::Result<Principal, Box<Response<Body>>> {
        let ping = matches!(path, "/v2" | "/v2/");
        let read = matches!(*method, Method::GET | Method::HEAD);
        if read && !ping && self.anonymous_reads {
            return Ok(Principal::Anonymous);
        }
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(Box::new(self.refusal("authentication required")));
        };
        match self.principal(value, client).await {
            Ok(Some(principal)) => Ok(principal),
            Ok(None) => Err(Box::new(self.refusal("invalid credentials"))),
            Err(verdict) => Err(Box::new(retry_later(verdict))),
        }
    }

    /// `Ok` if `principal` may make a `method` request to `path`; the `403` otherwise.
    pub(crate) fn authorize(
        &self,
        principal: &Principal,
        method: &Method,
        path: &str,
        query: Option<&str>,
    ) -> std::result::Result<(), Box<Response<Body>>> {
        let Principal::User(user) = principal else {
            return Ok(());
        };
        self.access
            .check(user, method, path, query)
            .map_err(|reason| Box::new(api_error(&ApiError::new(ErrorCode::Denied, reason))))
    }

    /// The principal the `Authorization` value names: `None` for bad credentials, the
    /// verdict for a check that was not made.
    async fn principal(
        &self,
        value: &HeaderValue,
        client: Option<IpAddr>,
    ) -> std::result::Result<Option<Principal>, Verdict> {
        if value.len() > MAX_AUTHORIZATION {
            return Ok(None);
        }
        let Ok(value) = value.to_str() else {
            return Ok(None);
        };
        let (name, password) = match parse_authorization(value) {
            Some(Credentials::Bearer(token)) => {
                return Ok(self.is_token(token).then_some(Principal::Token));
            }
            Some(Credentials::Basic { name, password }) => (name, password),
            None => return Ok(None),
        };
        // A token works as the password of any user name (`docker login -u token`).
        if self.is_token(&password) {
            return Ok(Some(Principal::Token));
        }
        match self.passwords.check(&name, &password, client).await {
            Verdict::Valid => Ok(Some(Principal::User(name))),
            Verdict::Invalid => Ok(None),
            verdict @ (Verdict::Limited(_) | Verdict::Busy) => Err(verdict),
        }
    }

    fn is_token(&self, token: &str) -> bool {
        if token.is_empty() {
            return false;
        }
        let hash = Digest::sha256_of(token.as_bytes()).hex();
        // Comparing hashes: the time taken says nothing about the token.
        self.tokens.contains(&hash)
    }

    fn refusal(&self, message: &str) -> Response<Body> {
        let mut response = api_error(&ApiError::new(ErrorCode::Unauthorized, message));
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, self.challenge.clone());
        response
    }
}

/// `429 TOOMANYREQUESTS` for a limited client, `503` while the hashing threads are
/// saturated; both with `Retry-After`.
fn retry_later(verdict: Verdict) -> Response<Body> {
    let (status, after, message) = match verdict {
        Verdict::Limited(after) => (
            StatusCode::TOO_MANY_REQUESTS,
            after,
            "too many failed password checks from this address",
        ),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(1),
            "password checks are saturated",
        ),
    };
    let mut response = api_error(&ApiError::new(ErrorCode::TooManyRequests, message));
    *response.status_mut() = status;
    let seconds = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    response
}

fn api_error(error: &ApiError) -> Response<Body> {
    let mut response = Response::new(body::full(error.to_json()));
    *response.status_mut() = error.status();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    response
}

/// What an `Authorization` header offers.
#[derive(Debug, Eq, PartialEq)]
pub(crate) enum Credentials<'a> {
    /// `Bearer <token>`.
    Bearer(&'a str),
    /// `Basic <base64 of name:password>`.
    Basic { name: String, password: String },
}

/// Parses an `Authorization` header value; `None` for another scheme or undecodable basic
/// credentials.
pub(crate) fn parse_authorization(value: &str) -> Option<Credentials<'_>> {
    let (scheme, credentials) = value.trim().split_once(' ').unwrap_or((value, ""));
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(Credentials::Bearer(credentials));
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    base64::engine::general_purpose::STANDARD
        .decode(credentials)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| {
            let (name, password) = text.split_once(':')?;
            Some(Credentials::Basic {
                name: name.to_owned(),
                password: password.to_owned(),
            })
        })
}

/// The users of an htpasswd file: `name:hash` lines; blank lines and `#` comments skipped.
pub(crate) fn parse_htpasswd(text: &str) -> Result<Vec<UserConfig>> {
    let mut users = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, hash) = line.split_once(':').ok_or_else(|| {
            Error::Config(format!("auth.htpasswd line {}: not name:hash", number + 1))
        })?;
        let user = UserConfig::new(name, hash);
        user.validate()
            .map_err(|e| Error::Config(format!("auth.htpasswd line {}: {e}", number + 1)))?;
        users.push(user);
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A check from a loopback client.
    async fn check(
        auth: &Authenticator,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> std::result::Result<Principal, Box<Response<Body>>> {
        let client = Some(IpAddr::from([127, 0, 0, 1]));
        auth.check(method, path, headers, client).await
    }

    fn basic(name: &str, password: &str) -> HeaderMap {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{name}:{password}"));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::try_from(format!("Basic {encoded}")).unwrap(),
        );
        headers
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::try_from(format!("Bearer {token}")).unwrap(),
        );
        headers
    }

    #[tokio::test]
    async fn writes_need_a_password_or_token_and_reads_are_open_when_configured() {
        let dir = tempfile::tempdir().unwrap();
        let htpasswd = dir.path().join("htpasswd");
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        std::fs::write(&htpasswd, format!("# users\n\nci:{hash}\n")).unwrap();
        let mut config = AuthConfig {
            htpasswd: Some(htpasswd.clone()),
            tokens_sha256: vec![Digest::sha256_of(b"tok").hex().to_ascii_uppercase()],
            ..AuthConfig::default()
        };
        let auth = Authenticator::load(&config).unwrap().unwrap();
        let put = Method::PUT;
        let path = "/v2/a/manifests/x";

        let refused = check(&auth, &put, path, &HeaderMap::new())
            .await
            .unwrap_err();
        assert_eq!(refused.status(), 401);
        assert_eq!(
            refused.headers()[header::WWW_AUTHENTICATE],
            "Basic realm=\"kraken\""
        );
        assert!(
            check(&auth, &put, path, &basic("ci", "s3cret"))
                .await
                .is_ok()
        );
        // Cached now, and still right.
        assert!(
            check(&auth, &put, path, &basic("ci", "s3cret"))
                .await
                .is_ok()
        );
        assert!(
            check(&auth, &put, path, &basic("ci", "wrong"))
                .await
                .is_err()
        );
        assert!(
            check(&auth, &put, path, &basic("nobody", "s3cret"))
                .await
                .is_err()
        );
        assert!(check(&auth, &put, path, &bearer("tok")).await.is_ok());
        assert!(
            check(&auth, &put, path, &basic("anyone", "tok"))
                .await
                .is_ok()
        );
        assert!(check(&auth, &put, path, &bearer("")).await.is_err());
        let mut garbage = HeaderMap::new();
        garbage.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert!(check(&auth, &put, path, &garbage).await.is_err());

        // Reads are open, the ping is not.
        assert!(
            check(&auth, &Method::GET, path, &HeaderMap::new())
                .await
                .is_ok()
        );
        assert!(
            check(&auth, &Method::GET, "/v2/", &HeaderMap::new())
                .await
                .is_err()
        );
        assert!(
            check(&auth, &Method::GET, "/v2/", &bearer("tok"))
                .await
                .is_ok()
        );
        config.anonymous_reads = false;
        let closed = Authenticator::load(&config).unwrap().unwrap();
        assert!(
            check(&closed, &Method::GET, path, &HeaderMap::new())
                .await
                .is_err()
        );

        assert!(
            Authenticator::load(&AuthConfig::default())
                .unwrap()
                .is_none()
        );
        std::fs::write(&htpasswd, "ci:plaintext\n").unwrap();
        assert!(Authenticator::load(&config).is_err());
    }
}
