//! An HTTP client of the build-index tag API: what proxies, agents and other build-indexes
//! use.

use std::sync::Arc;

use bytes::Bytes;
use kraken_core::Digest;
use kraken_p2p::tracker::api::encode_segment;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use super::store::TagRecord;
use super::tag::TagName;
use kraken_p2p::tls::ClientTls;

use crate::error::{Error, Result, error_chain};

/// Largest answer read from a build-index (a page of 1000 long names fits many times).
const MAX_ANSWER: usize = 8 << 20;

/// A client of one build-index cluster: each call goes to the first of its addresses that
/// can be reached. Cheap to clone.
///
/// ```no_run
/// # async fn example() -> kraken_registry::Result<()> {
/// use kraken_registry::build_index::{BuildIndexClient, TagName};
///
/// let client = BuildIndexClient::new(["10.0.0.1:15004", "10.0.0.2:15004"])?;
/// let tag: TagName = "library/ubuntu:22.04".parse()?;
/// if let Some(digest) = client.get_tag(&tag).await? {
///     println!("{tag} is {digest}");
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct BuildIndexClient {
    http: reqwest::Client,
    addresses: Arc<[String]>,
    /// `http` or, with TLS, `https`.
    scheme: &'static str,
}

/// Which page of a listing to read.
#[non_exhaustive]
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct PageOptions {
    /// Most names on the page; `None` lets the server choose (its `limits.max_page`).
    pub limit: Option<usize>,
    /// Where the previous page ended ([`TagPage::next`]); `None` starts at the beginning.
    pub offset: Option<String>,
}

impl PageOptions {
    /// Pages of at most `limit` names.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            limit: Some(limit),
            offset: None,
        }
    }

    /// The same options, continuing at `offset`.
    pub fn after(&self, offset: Option<String>) -> Self {
        Self {
            limit: self.limit,
            offset,
        }
    }
}

/// One page of a listing.
#[non_exhaustive]
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct TagPage {
    /// The names, ascending.
    pub names: Vec<String>,
    /// Pass this as [`PageOptions::offset`] for the next page; `None` on the last page.
    pub next: Option<String>,
}

/// Go Kraken's paginated listing answer.
#[derive(Debug, Deserialize, Serialize)]
pub(crate) struct ListResponse {
    pub(crate) size: usize,
    pub(crate) result: Vec<String>,
    pub(crate) links: Links,
}

#[derive(Debug, Deserialize, Serialize)]
pub(crate) struct Links {
    pub(crate) next: String,
    #[serde(rename = "self")]
    pub(crate) this: String,
}

/// A neighbour's page of its tag store.
#[derive(Debug, Deserialize, Serialize)]
pub(crate) struct RecordPage {
    pub(crate) records: Vec<TagRecord>,
    /// Whether the store has more records after these.
    pub(crate) more: bool,
}

/// The body of a duplicate put or delete between neighbours. Go Kraken sends only `delay`
/// (nanoseconds); a copy without a version gets the receiver's clock.
#[derive(Debug, Default, Deserialize, Serialize)]
pub(crate) struct DuplicateBody {
    #[serde(default)]
    pub(crate) version: Option<u64>,
    #[serde(default)]
    pub(crate) writer: Option<String>,
    #[serde(default)]
    pub(crate) delay: Option<u64>,
}

impl BuildIndexClient {
    /// A client of the build-indexes at `addresses` (`host:port`), tried in order, with a
    /// 5 s connect timeout and a 5 min timeout per request (a put waits for the dependency
    /// check).
    pub fn new<I>(addresses: I) -> Result<Self>
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        Self::with_tls(addresses, None)
    }

    /// As [`new`](Self::new), over HTTPS with `tls` (the pinned CA, and the certificate
    /// build-indexes ask for on writes) when given.
    pub fn with_tls<I>(addresses: I, tls: Option<&ClientTls>) -> Result<Self>
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let http = crate::http::client(tls)?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let addresses: Arc<[String]> = addresses.into_iter().map(Into::into).collect();
        if addresses.is_empty() {
            return Err(Error::Config(
                "a build-index client needs an address".into(),
            ));
        }
        Ok(Self {
            http,
            addresses,
            scheme,
        })
    }

    /// `Ok` when one of the build-indexes answers `GET /health` with `200`; else every
    /// address with what it did.
    pub(crate) async fn check_ready(&self) -> std::result::Result<(), String> {
        let mut failures = Vec::new();
        for address in self.addresses.iter() {
            let url = format!("{}://{address}/health", self.scheme);
            match self.http.get(&url).send().await {
                Ok(response) if response.status() == StatusCode::OK => return Ok(()),
                Ok(response) => failures.push(format!("{address}: {}", response.status())),
                Err(e) => failures.push(format!("{address}: {}", error_chain(&e))),
            }
        }
        Err(failures.join("; "))
    }

    /// The same client (sharing connections), for the build-index at `address` only.
    pub(crate) fn at(&self, address: &str) -> Self {
        Self {
            http: self.http.clone(),
            addresses: Arc::from([address.to_owned()]),
            scheme: self.scheme,
        }
    }

    /// The digest `tag` points at, or `None` if there is no such tag.
    pub async fn get_tag(&self, tag: &TagName) -> Result<Option<Digest>> {
        let path = format!("/tags/{}", encode_segment(tag.as_str()));
        let (address, response) = self
            .send(|http, base| http.get(format!("{base}{path}")))
            .await?;
        match response.status() {
            StatusCode::OK => {
                let body = read_body(&address, response).await?;
                let text = std::str::from_utf8(&body).unwrap_or_default().trim();
                text.parse()
                    .map(Some)
                    .map_err(|_| peer_error(&address, StatusCode::OK, "answer is not a digest"))
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(status_error(&address, response).await),
        }
    }

    /// Whether `tag` exists.
    pub async fn head_tag(&self, tag: &TagName) -> Result<bool> {
        let path = format!("/tags/{}", encode_segment(tag.as_str()));
        let (address, response) = self
            .send(|http, base| http.head(format!("{base}{path}")))
            .await?;
        match response.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            status => Err(peer_error(&address, status, "")),
        }
    }

    /// Points `tag` at `digest`, which must be in the origin cluster with everything it
    /// refers to ([`Error::MissingDependency`] otherwise). With `replicate`, the tag is also
    /// sent to the remote clusters configured for its repository.
    pub async fn put_tag(&self, tag: &TagName, digest: &Digest, replicate: bool) -> Result<()> {
        let path = format!(
            "/tags/{}/digest/{digest}?replicate={replicate}",
            encode_segment(tag.as_str())
        );
        let (address, response) = self
            .send(|http, base| http.put(format!("{base}{path}")))
            .await?;
        match response.status() {
            StatusCode::OK | StatusCode::CREATED => Ok(()),
            _ => Err(status_error(&address, response).await),
        }
    }

    /// Deletes `tag` (an extension of Go Kraken's API); `Ok(false)` if there was none.
    pub async fn delete_tag(&self, tag: &TagName) -> Result<bool> {
        self.delete_tag_with(tag, false).await
    }

    /// Deletes `tag` and, with `replicate`, queues the delete for the remote clusters whose
    /// patterns match its repository (`DELETE /tags/{tag}?replicate=true`), as
    /// [`put_tag`](Self::put_tag) does for puts; `Ok(false)` if there was none.
    pub async fn delete_tag_with(&self, tag: &TagName, replicate: bool) -> Result<bool> {
        let mut path = format!("/tags/{}", encode_segment(tag.as_str()));
        if replicate {
            path.push_str("?replicate=true");
        }
        let (address, response) = self
            .send(|http, base| http.delete(format!("{base}{path}")))
            .await?;
        match response.status() {
            StatusCode::OK | StatusCode::ACCEPTED | StatusCode::NO_CONTENT => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(status_error(&address, response).await),
        }
    }

    /// One page of the tags of `repository` (the part after `:`).
    pub async fn list_repo_tags(&self, repository: &str, options: &PageOptions) -> Result<TagPage> {
        let path = format!("/repositories/{}/tags", encode_segment(repository));
        self.list_path(&path, options).await
    }

    /// One page of the full names (`repo:tag`) of the tags that start with `prefix`.
    pub async fn list(&self, prefix: &str, options: &PageOptions) -> Result<TagPage> {
        let path = format!("/list/{}", encode_segment(prefix));
        self.list_path(&path, options).await
    }

    /// The addresses of the origin cluster behind the build-index.
    pub async fn origin(&self) -> Result<Vec<String>> {
        let (address, response) = self
            .send(|http, base| http.get(format!("{base}/origin")))
            .await?;
        if response.status() != StatusCode::OK {
            return Err(status_error(&address, response).await);
        }
        let body = read_body(&address, response).await?;
        Ok(String::from_utf8_lossy(&body)
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// The build-index's own record of `tag` (a neighbour's version check; no fan-out).
    pub(crate) async fn record(&self, tag: &str) -> Result<Option<TagRecord>> {
        self.get_json(&format!("/internal/tags/{}", encode_segment(tag)))
            .await
    }

    /// A page of the build-index's own records starting with `prefix`, after `after`.
    pub(crate) async fn records(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<RecordPage> {
        let mut path = format!(
            "/internal/list?prefix={}&limit={limit}",
            encode_segment(prefix)
        );
        if let Some(after) = after {
            path.push_str(&format!("&after={}", encode_segment(after)));
        }
        self.get_json(&path)
            .await?
            .ok_or_else(|| Error::BuildIndex {
                address: self.addresses.join(","),
                reason: "no record listing".into(),
            })
    }

    /// Gives a neighbour a version of a tag (it keeps it if newer than its own).
    pub(crate) async fn duplicate(&self, record: &TagRecord) -> Result<()> {
        let tag = encode_segment(&record.tag);
        let body = serde_json::to_vec(&DuplicateBody {
            version: Some(record.version),
            writer: Some(record.writer.clone()),
            delay: None,
        })
        .expect("serialisable");
        let (address, response) = self
            .send(|http, base| {
                let request = match &record.digest {
                    Some(digest) => http.put(format!(
                        "{base}/internal/duplicate/tags/{tag}/digest/{digest}"
                    )),
                    None => http.delete(format!("{base}/internal/duplicate/tags/{tag}")),
                };
                request.body(body.clone())
            })
            .await?;
        match response.status() {
            StatusCode::OK => Ok(()),
            _ => Err(status_error(&address, response).await),
        }
    }

    async fn list_path(&self, path: &str, options: &PageOptions) -> Result<TagPage> {
        let mut query = Vec::new();
        if let Some(limit) = options.limit {
            query.push(format!("limit={limit}"));
        }
        if let Some(offset) = &options.offset {
            query.push(format!("offset={}", encode_segment(offset)));
        }
        let page: ListResponse = self
            .get_json(&format!("{path}?{}", query.join("&")))
            .await?
            .ok_or_else(|| Error::BuildIndex {
                address: self.addresses.join(","),
                reason: "no such listing".into(),
            })?;
        Ok(TagPage {
            names: page.result,
            next: next_offset(&page.links.next),
        })
    }

    /// `GET path` decoded from JSON; `None` on `404`.
    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<Option<T>> {
        let (address, response) = self
            .send(|http, base| http.get(format!("{base}{path}")))
            .await?;
        match response.status() {
            StatusCode::OK => {
                let body = read_body(&address, response).await?;
                serde_json::from_slice(&body)
                    .map(Some)
                    .map_err(|e| peer_error(&address, StatusCode::OK, &e.to_string()))
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(status_error(&address, response).await),
        }
    }

    /// Sends the request built for each address in turn until one answers.
    async fn send(
        &self,
        build: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> Result<(String, reqwest::Response)> {
        let mut failures = Vec::new();
        for address in self.addresses.iter() {
            match build(&self.http, &format!("{}://{address}", self.scheme))
                .send()
                .await
            {
                Ok(response) => return Ok((address.clone(), response)),
                Err(e) => failures.push(format!("{address}: {e}")),
            }
        }
        Err(Error::BuildIndex {
            address: self.addresses.join(","),
            reason: failures.join("; "),
        })
    }
}

/// The `offset` of a `links.next` URL; `None` if it is empty.
fn next_offset(next: &str) -> Option<String> {
    let (_, query) = next.split_once('?')?;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("offset="))
        .and_then(kraken_p2p::tracker::api::decode_segment)
}

async fn read_body(address: &str, mut response: reqwest::Response) -> Result<Bytes> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| Error::BuildIndex {
        address: address.to_owned(),
        reason: e.to_string(),
    })? {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(peer_error(address, response.status(), "answer too large"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.into())
}

/// The error for an unexpected answer: a missing dependency is recognised, anything else
/// carries the start of the body.
async fn status_error(address: &str, response: reqwest::Response) -> Error {
    let status = response.status();
    let body = read_body(address, response).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&body);
    if let Some(digest) = text.strip_prefix("missing dependency ").and_then(|rest| {
        rest.split(':')
            .take(2)
            .collect::<Vec<_>>()
            .join(":")
            .parse()
            .ok()
    }) {
        return Error::MissingDependency(digest);
    }
    peer_error(address, status, &text)
}

fn peer_error(address: &str, status: StatusCode, what: &str) -> Error {
    let what: String = what.chars().take(200).collect();
    Error::BuildIndex {
        address: address.to_owned(),
        reason: format!("{status}: {what}"),
    }
}
