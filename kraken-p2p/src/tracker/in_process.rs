//! [`TrackerService`] as a [`Tracker`]: nodes in the same process as their tracker talk to
//! it directly, with no listener, socket or HTTP client.
//!
//! Each call is handed to the service's own request handler in memory, so an in-process
//! tracker answers as the HTTP one does (same validation, same bounds, same handout
//! policy), and an embedder needs no port for it. In-process callers are the embedder's
//! own nodes: they may publish metainfo without a token, and their declared addresses are
//! believed (there is no socket to check them against).

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, StatusCode};
use kraken_core::{Digest, InfoHash, MetaInfo};

use super::api::{AnnounceRequest, AnnounceResponse};
use super::client::{announce_path, metainfo_path, status_error};
use super::{Tracker, TrackerService};
use crate::error::{Error, Result};

impl TrackerService {
    async fn call(&self, method: Method, path: &str, body: Bytes) -> Result<(StatusCode, Bytes)> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .body(Full::new(body))
            .map_err(|_| Error::Internal("in-process tracker request"))?;
        // The embedder's own nodes may publish, as an origin may.
        request.extensions_mut().insert(super::auth::InProcess);
        let response = self.handle(request).await;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|_| Error::Internal("in-process tracker response"))?
            .to_bytes();
        Ok((status, body))
    }
}

#[async_trait]
impl Tracker for TrackerService {
    async fn announce(
        &self,
        info_hash: InfoHash,
        request: AnnounceRequest,
    ) -> Result<AnnounceResponse> {
        let body =
            serde_json::to_vec(&request).map_err(|_| Error::Internal("announce serialisation"))?;
        let (status, body) = self
            .call(Method::POST, &announce_path(&info_hash), body.into())
            .await?;
        if status != StatusCode::OK {
            return Err(status_error(status, &body));
        }
        serde_json::from_slice(&body).map_err(|_| Error::Internal("in-process announce answer"))
    }

    async fn metainfo(&self, namespace: &str, digest: &Digest) -> Result<Option<MetaInfo>> {
        let path = metainfo_path(namespace, digest, false);
        let (status, body) = self.call(Method::GET, &path, Bytes::new()).await?;
        match status {
            StatusCode::OK => Ok(Some(MetaInfo::decode(&body)?)),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(status_error(status, &body)),
        }
    }

    async fn publish_metainfo(&self, namespace: &str, meta: &MetaInfo) -> Result<()> {
        let path = metainfo_path(namespace, meta.digest(), false);
        let (status, body) = self.call(Method::POST, &path, meta.encode().into()).await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(status_error(status, &body))
        }
    }
}
