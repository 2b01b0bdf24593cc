//! A backend on HDFS through its WebHDFS REST API.
//!
//! Tested against an in-test server that speaks the protocol as the Hadoop documentation
//! describes it (redirects to a "datanode" included), not against a real HDFS cluster: none
//! can be installed where the tests run.

use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use reqwest::header::LOCATION;
use reqwest::{Method, Response, StatusCode, Url};
use serde::{Deserialize, Serialize};

use crate::backend::{
    Backend, BlobInfo, ByteRange, ByteStream, ListOptions, ListPage, UploadBody, collect_bytes,
    exact_length,
};
use crate::client::{
    HttpClientConfig, parse_base_url, send, status_error, transport_error, url_with_path,
};
use crate::error::{Error, Result};
use crate::layout::{NameLayout, UPLOAD_DIR, join_root, temp_upload_path};
use crate::listing::paginate_paths;

/// Redirects followed per request (WebHDFS sends one, namenode to datanode).
const MAX_REDIRECTS: usize = 3;
/// Largest JSON answer read (a LISTSTATUS of a large directory).
const MAX_JSON: usize = 64 * 1024 * 1024;
/// Deepest directory nesting a listing descends into.
const MAX_LIST_DEPTH: usize = 64;
/// Most LISTSTATUS requests one listing sends.
const MAX_LIST_REQUESTS: usize = 100_000;

/// Configuration of a [`WebHdfsBackend`].
///
/// ```toml
/// type = "webhdfs"
/// namenodes = ["http://nn1:9870", "http://nn2:9870"]
/// user = "kraken"          # default: none (no user.name parameter)
/// root = "/kraken/blobs"   # default "/kraken"
/// layout = "identity"      # default
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebHdfsConfig {
    /// Base URLs of the namenodes' HTTP servers, tried in order when one cannot be reached
    /// (HA failover). Required, at least one.
    pub namenodes: Vec<String>,
    /// Sent as `user.name` (simple authentication). Default: none.
    #[serde(default)]
    pub user: Option<String>,
    /// Absolute HDFS directory holding the blobs. Default: `/kraken`.
    #[serde(default = "default_root")]
    pub root: String,
    /// How names map to paths below the root. Default: `identity`.
    #[serde(default)]
    pub layout: NameLayout,
    /// Timeouts. Default: see [`HttpClientConfig`].
    #[serde(default)]
    pub client: HttpClientConfig,
}

fn default_root() -> String {
    "/kraken".to_owned()
}

impl WebHdfsConfig {
    /// Blobs under `/kraken` on the cluster of these namenodes.
    pub fn new(namenodes: Vec<String>) -> Self {
        Self {
            namenodes,
            user: None,
            root: default_root(),
            layout: NameLayout::default(),
            client: HttpClientConfig::default(),
        }
    }
}

/// Blobs as HDFS files, through WebHDFS: `GETFILESTATUS`, `OPEN` with offset and length,
/// `CREATE` in two steps (the namenode redirects to a datanode, which takes the body) into
/// an upload directory followed by `RENAME` into place, recursive `LISTSTATUS`, `DELETE`.
#[derive(Debug)]
pub struct WebHdfsBackend {
    namenodes: Vec<Url>,
    /// Index of the namenode that answered last: tried first next time.
    active: AtomicUsize,
    user: Option<String>,
    root: String,
    layout: NameLayout,
    client: reqwest::Client,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct FileStatusReply {
    file_status: FileStatus,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListStatusReply {
    file_statuses: FileStatuses,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct FileStatuses {
    file_status: Vec<FileStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileStatus {
    #[serde(default)]
    path_suffix: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    length: u64,
}

#[derive(Deserialize)]
struct BooleanReply {
    boolean: bool,
}

impl WebHdfsBackend {
    /// A backend for the cluster in `config`; sends no request yet.
    pub fn new(config: WebHdfsConfig) -> Result<Self> {
        if config.namenodes.is_empty() {
            return Err(Error::Config(
                "webhdfs backend: `namenodes` is empty".into(),
            ));
        }
        let namenodes = config
            .namenodes
            .iter()
            .map(|namenode| parse_base_url("webhdfs", namenode))
            .collect::<Result<_>>()?;
        let root = config.root.trim_matches('/').to_owned();
        if !root.is_empty() {
            NameLayout::Identity.path(&root).map_err(|_| {
                Error::Config(format!(
                    "webhdfs backend: root {:?} is not a plain path",
                    config.root
                ))
            })?;
        }
        Ok(Self {
            namenodes,
            active: AtomicUsize::new(0),
            user: config.user,
            root,
            layout: config.layout,
            client: config.client.build()?,
        })
    }

    /// Path below the root (no leading `/`) of `name`.
    fn relative_path(&self, name: &str) -> Result<String> {
        self.layout.path_outside_uploads(name)
    }

    /// Absolute HDFS path of a path below the root.
    fn absolute(&self, relative: &str) -> String {
        format!("/{}", join_root(&self.root, relative))
    }

    fn url(&self, namenode: &Url, relative: &str, op: &str, params: &[(&str, &str)]) -> Url {
        let path = join_root(&self.root, relative);
        let mut url = url_with_path(
            namenode,
            ["webhdfs", "v1"].into_iter().chain(path.split('/')),
        );
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("op", op);
            if let Some(user) = &self.user {
                query.append_pair("user.name", user);
            }
            for (key, value) in params {
                query.append_pair(key, value);
            }
        }
        url
    }

    /// Sends a body-less request to the namenodes, starting with the one that answered last
    /// and moving on when one cannot be reached. Redirects are returned, not followed.
    async fn namenode(
        &self,
        method: Method,
        relative: &str,
        op: &str,
        params: &[(&str, &str)],
    ) -> Result<Response> {
        let first = self.active.load(Ordering::Relaxed);
        let mut last_error = Error::Internal("no namenode was tried");
        for attempt in 0..self.namenodes.len() {
            let index = (first + attempt) % self.namenodes.len();
            let url = self.url(&self.namenodes[index], relative, op, params);
            match send(self.client.request(method.clone(), url)).await {
                Ok(response) => {
                    self.active.store(index, Ordering::Relaxed);
                    return Ok(response);
                }
                Err(error) => {
                    tracing::debug!(namenode = %self.namenodes[index], "namenode unreachable");
                    last_error = error;
                }
            }
        }
        Err(last_error)
    }

    async fn follow_redirects(&self, method: Method, mut response: Response) -> Result<Response> {
        for _ in 0..MAX_REDIRECTS {
            if !response.status().is_redirection() {
                return Ok(response);
            }
            let target = redirect_target(&response)?;
            response = send(self.client.request(method.clone(), target)).await?;
        }
        Err(Error::InvalidResponse("too many redirects".into()))
    }

    async fn file_status(&self, namespace: &str, name: &str, relative: &str) -> Result<u64> {
        let response = self
            .namenode(Method::GET, relative, "GETFILESTATUS", &[])
            .await?;
        match response.status() {
            StatusCode::OK => {
                let reply: FileStatusReply = read_json(response).await?;
                if reply.file_status.kind != "FILE" {
                    return Err(Error::not_found(namespace, name));
                }
                Ok(reply.file_status.length)
            }
            StatusCode::NOT_FOUND => Err(Error::not_found(namespace, name)),
            _ => Err(status_error("GET", &response)),
        }
    }

    /// Sends an operation that answers `{"boolean": …}`.
    async fn boolean_op(
        &self,
        method: Method,
        relative: &str,
        op: &str,
        params: &[(&str, &str)],
    ) -> Result<bool> {
        let response = self.namenode(method, relative, op, params).await?;
        if response.status() != StatusCode::OK {
            return Err(status_error("PUT", &response));
        }
        Ok(read_json::<BooleanReply>(response).await?.boolean)
    }

    /// Relative paths of the files below `dir`, depth first, with bounded requests.
    async fn walk(&self, dir: &str) -> Result<Vec<String>> {
        let mut files = Vec::new();
        let mut pending = vec![(dir.trim_end_matches('/').to_owned(), 0usize)];
        let mut requests = 0;
        while let Some((directory, depth)) = pending.pop() {
            requests += 1;
            if requests > MAX_LIST_REQUESTS {
                return Err(Error::InvalidResponse(
                    "listing needs too many requests".into(),
                ));
            }
            let response = self
                .namenode(Method::GET, &directory, "LISTSTATUS", &[])
                .await?;
            match response.status() {
                StatusCode::OK => {}
                StatusCode::NOT_FOUND => continue,
                _ => return Err(status_error("GET", &response)),
            }
            let reply: ListStatusReply = read_json(response).await?;
            for entry in reply.file_statuses.file_status {
                // A name that is not one plain segment would make the walk leave its directory.
                if matches!(entry.path_suffix.as_str(), "" | "." | "..")
                    || entry.path_suffix.contains('/')
                {
                    return Err(Error::InvalidResponse(format!(
                        "LISTSTATUS entry {:?}",
                        entry.path_suffix
                    )));
                }
                let child = join_root(&directory, &entry.path_suffix);
                match entry.kind.as_str() {
                    "FILE" => files.push(child),
                    "DIRECTORY" if depth < MAX_LIST_DEPTH && child != UPLOAD_DIR => {
                        pending.push((child, depth + 1));
                    }
                    _ => {}
                }
            }
        }
        Ok(files)
    }
}

#[async_trait]
impl Backend for WebHdfsBackend {
    async fn stat(&self, namespace: &str, name: &str) -> Result<BlobInfo> {
        let relative = self.relative_path(name)?;
        Ok(BlobInfo::new(
            self.file_status(namespace, name, &relative).await?,
        ))
    }

    async fn download(
        &self,
        namespace: &str,
        name: &str,
        range: Option<ByteRange>,
    ) -> Result<ByteStream> {
        let relative = self.relative_path(name)?;
        // The size first: it tells a missing blob and a range past the end from failures
        // (HDFS answers both with a generic error), and bounds the body.
        let size = self.file_status(namespace, name, &relative).await?;
        let (offset, length) = match range {
            Some(range) => (range.offset(), range.clamp_to(size)?),
            None => (0, size),
        };
        let (offset_param, length_param) = (offset.to_string(), length.to_string());
        let params = [
            ("offset", offset_param.as_str()),
            ("length", length_param.as_str()),
        ];
        let redirect = self
            .namenode(Method::GET, &relative, "OPEN", &params)
            .await?;
        let response = self.follow_redirects(Method::GET, redirect).await?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Err(Error::not_found(namespace, name)),
            _ => return Err(status_error("GET", &response)),
        }
        let stream = futures::TryStreamExt::map_err(response.bytes_stream(), transport_error);
        Ok(exact_length(Box::pin(stream), length, "WebHDFS OPEN body"))
    }

    async fn upload(&self, _namespace: &str, name: &str, body: UploadBody) -> Result<()> {
        let relative = self.relative_path(name)?;
        let temp = temp_upload_path();
        // Step one: the namenode names the datanode that takes the bytes.
        let response = self
            .namenode(Method::PUT, &temp, "CREATE", &[("overwrite", "true")])
            .await?;
        let datanode = redirect_target(&response)?;
        // Step two: the body goes to the datanode.
        let mut request = self.client.put(datanode);
        if let Some(size) = body.size() {
            request = request.header(reqwest::header::CONTENT_LENGTH, size);
        }
        let response = send(request.body(reqwest::Body::wrap_stream(body.into_stream()))).await?;
        if response.status() != StatusCode::CREATED && response.status() != StatusCode::OK {
            return Err(status_error("PUT", &response));
        }
        // Into place: HDFS's RENAME does not replace, so an older blob is deleted first.
        // Readers see the old blob, briefly none, then the new one; never a partial one.
        let parent = relative.rsplit_once('/').map_or("", |(parent, _)| parent);
        if !parent.is_empty() && !self.boolean_op(Method::PUT, parent, "MKDIRS", &[]).await? {
            return Err(Error::InvalidResponse(format!("MKDIRS {parent} failed")));
        }
        self.boolean_op(Method::DELETE, &relative, "DELETE", &[])
            .await?;
        let destination = self.absolute(&relative);
        let renamed = self
            .boolean_op(
                Method::PUT,
                &temp,
                "RENAME",
                &[("destination", &destination)],
            )
            .await?;
        if !renamed {
            // Best effort: a leftover is never listed.
            let _ = self.boolean_op(Method::DELETE, &temp, "DELETE", &[]).await;
            return Err(Error::InvalidResponse(format!(
                "RENAME to {destination} failed"
            )));
        }
        Ok(())
    }

    async fn list(
        &self,
        _namespace: &str,
        prefix: &str,
        options: &ListOptions,
    ) -> Result<ListPage> {
        let dir = self.layout.list_dir(prefix);
        let paths = self.walk(&dir).await?;
        Ok(paginate_paths(self.layout, &paths, prefix, options))
    }

    async fn delete(&self, namespace: &str, name: &str) -> Result<()> {
        let relative = self.relative_path(name)?;
        self.file_status(namespace, name, &relative).await?;
        if self
            .boolean_op(Method::DELETE, &relative, "DELETE", &[])
            .await?
        {
            Ok(())
        } else {
            Err(Error::not_found(namespace, name))
        }
    }
}

fn redirect_target(response: &Response) -> Result<Url> {
    if !response.status().is_redirection() {
        return Err(Error::InvalidResponse(format!(
            "expected a redirect to a datanode, got HTTP {}",
            response.status()
        )));
    }
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| Error::InvalidResponse("redirect without Location".into()))?;
    response
        .url()
        .join(location)
        .map_err(|_| Error::InvalidResponse(format!("redirect to invalid URL {location:?}")))
}

async fn read_json<T: serde::de::DeserializeOwned>(response: Response) -> Result<T> {
    let stream = futures::TryStreamExt::map_err(response.bytes_stream(), transport_error);
    let body = collect_bytes(Box::pin(stream), MAX_JSON).await?;
    serde_json::from_slice(&body).map_err(|e| Error::InvalidResponse(format!("WebHDFS JSON: {e}")))
}
