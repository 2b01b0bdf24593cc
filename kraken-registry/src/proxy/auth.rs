//! Who may push: basic auth against bcrypt password hashes, and static bearer tokens.
//!
//! Each request is one of three kinds: the `/v2/` ping, a read (`GET`/`HEAD`), or a write
//! (anything else). Writes always need credentials; reads need them unless
//! [`AuthConfig::anonymous_reads`]; the ping needs them too, because Docker and
//! containers/image (skopeo, podman) only send credentials to a registry whose ping
//! answered `401` with a challenge. Refusals are `401 UNAUTHORIZED` with
//! `WWW-Authenticate: Basic realm="…"`.
//!
//! bcrypt is slow on purpose (tens of milliseconds a check), and clients send credentials
//! with every request of a push, so a successful check is remembered for [`CACHE_TTL`] by
//! the SHA-256 of the user name and password (never the password itself); failures are not
//! remembered.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use hyper::http::{HeaderMap, HeaderValue, Method, Response, header};
use kraken_core::Digest;

use super::config::{AuthConfig, UserConfig};
use crate::error::{Error, Result};
use crate::http::Body;
use crate::http::body;
use crate::oci::{ApiError, ErrorCode};

/// How long a verified password is trusted without running bcrypt again.
pub(crate) const CACHE_TTL: Duration = Duration::from_secs(300);
/// Most verified passwords remembered; the cache is emptied when full.
const CACHE_CAPACITY: usize = 4096;
/// Longest `Authorization` header considered.
const MAX_AUTHORIZATION: usize = 4096;

/// Checks requests against the configured credentials.
#[derive(Debug)]
pub(crate) struct Authenticator {
    /// User name → bcrypt hash.
    users: HashMap<String, String>,
    /// Lowercase hex SHA-256 of each token.
    tokens: Vec<String>,
    anonymous_reads: bool,
    challenge: HeaderValue,
    /// SHA-256 of `name \0 password` → when it was verified.
    verified: Mutex<HashMap<Digest, Instant>>,
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
            users,
            tokens: config
                .tokens_sha256
                .iter()
                .map(|t| t.to_ascii_lowercase())
                .collect(),
            anonymous_reads: config.anonymous_reads,
            challenge,
            verified: Mutex::new(HashMap::new()),
        }))
    }

    /// `Ok` if the request may go on; the `401` to answer otherwise.
    pub(crate) async fn check(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> std::result::Result<(), Box<Response<Body>>> {
        let ping = matches!(path, "/v2" | "/v2/");
        let read = matches!(*method, Method::GET | Method::HEAD);
        if read && !ping && self.anonymous_reads {
            return Ok(());
        }
        match headers.get(header::AUTHORIZATION) {
            Some(value) if self.accepts(value).await => Ok(()),
            Some(_) => Err(Box::new(self.refusal("invalid credentials"))),
            None => Err(Box::new(self.refusal("authentication required"))),
        }
    }

    async fn accepts(&self, value: &HeaderValue) -> bool {
        if value.len() > MAX_AUTHORIZATION {
            return false;
        }
        let Ok(value) = value.to_str() else {
            return false;
        };
        let (name, password) = match parse_authorization(value) {
            Some(Credentials::Bearer(token)) => return self.is_token(token),
            Some(Credentials::Basic { name, password }) => (name, password),
            None => return false,
        };
        // A token works as the password of any user name (`docker login -u token`).
        if self.is_token(&password) {
            return true;
        }
        self.is_password(name, password).await
    }

    fn is_token(&self, token: &str) -> bool {
        if token.is_empty() {
            return false;
        }
        let hash = Digest::sha256_of(token.as_bytes()).hex();
        // Comparing hashes: the time taken says nothing about the token.
        self.tokens.contains(&hash)
    }

    async fn is_password(&self, name: String, password: String) -> bool {
        let Some(hash) = self.users.get(&name).cloned() else {
            return false;
        };
        let key = Digest::sha256_of(format!("{name}\0{password}").as_bytes());
        let now = Instant::now();
        if self
            .lock()
            .get(&key)
            .is_some_and(|at| now.saturating_duration_since(*at) < CACHE_TTL)
        {
            return true;
        }
        let verified =
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        if verified {
            let mut cache = self.lock();
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(key, now);
        }
        verified
    }

    fn refusal(&self, message: &str) -> Response<Body> {
        let error = ApiError::new(ErrorCode::Unauthorized, message);
        let mut response = Response::new(body::full(error.to_json()));
        *response.status_mut() = error.status();
        let headers = response.headers_mut();
        headers.insert(header::WWW_AUTHENTICATE, self.challenge.clone());
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Instant>> {
        // A cache: a panic while holding it cannot leave it inconsistent.
        self.verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
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

        let refused = auth.check(&put, path, &HeaderMap::new()).await.unwrap_err();
        assert_eq!(refused.status(), 401);
        assert_eq!(
            refused.headers()[header::WWW_AUTHENTICATE],
            "Basic realm=\"kraken\""
        );
        assert!(auth.check(&put, path, &basic("ci", "s3cret")).await.is_ok());
        // Cached now, and still right.
        assert!(auth.check(&put, path, &basic("ci", "s3cret")).await.is_ok());
        assert!(auth.check(&put, path, &basic("ci", "wrong")).await.is_err());
        assert!(
            auth.check(&put, path, &basic("nobody", "s3cret"))
                .await
                .is_err()
        );
        assert!(auth.check(&put, path, &bearer("tok")).await.is_ok());
        assert!(
            auth.check(&put, path, &basic("anyone", "tok"))
                .await
                .is_ok()
        );
        assert!(auth.check(&put, path, &bearer("")).await.is_err());
        let mut garbage = HeaderMap::new();
        garbage.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert!(auth.check(&put, path, &garbage).await.is_err());

        // Reads are open, the ping is not.
        assert!(
            auth.check(&Method::GET, path, &HeaderMap::new())
                .await
                .is_ok()
        );
        assert!(
            auth.check(&Method::GET, "/v2/", &HeaderMap::new())
                .await
                .is_err()
        );
        assert!(
            auth.check(&Method::GET, "/v2/", &bearer("tok"))
                .await
                .is_ok()
        );
        config.anonymous_reads = false;
        let closed = Authenticator::load(&config).unwrap().unwrap();
        assert!(
            closed
                .check(&Method::GET, path, &HeaderMap::new())
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
