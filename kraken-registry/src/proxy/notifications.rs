//! `POST /registry/notifications`: the sink of CNCF Distribution's notifications (and
//! Harbor's, which sends the same envelope), so that an upstream registry's pushes preheat
//! the cluster. Each `push` event of a manifest (Docker schema 2 or OCI, image or index) warms
//! the origins for it and everything it refers to, in the background; every other event is
//! ignored. The answer is `200` as soon as the envelope is read: Distribution retries an
//! endpoint that fails and blocks its queue meanwhile.
//!
//! The envelope (`application/vnd.docker.distribution.events.v1+json`):
//!
//! ```json
//! {"events": [{"id": "…", "timestamp": "…", "action": "push",
//!              "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
//!                         "digest": "sha256:…", "size": 1234, "length": 1234,
//!                         "repository": "team/app", "url": "http://…", "tag": "v1"},
//!              "request": {…}, "actor": {…}, "source": {…}}]}
//! ```

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use hyper::http::{Response, StatusCode};
use kraken_core::Digest;
use kraken_core::name::RepoName;
use kraken_p2p::http_server::RequestBody;
use serde::{Deserialize, Serialize};

use super::prefetch::{Prefetcher, read_body, refused};
use crate::error::{Error, error_chain};
use crate::http::{Body, json};
use crate::oci::manifest::ManifestKind;

/// Manifests one envelope may ask to warm; the rest are ignored (and counted in the answer).
const MAX_MANIFESTS_PER_ENVELOPE: usize = 256;
/// Reads of a pushed manifest that the origins do not have yet: Distribution may notify
/// before the manifest is readable through its API (distribution/distribution#2625), so
/// the read is retried, 100 ms after the first and doubling, as Go Kraken does.
const MANIFEST_ATTEMPTS: u32 = 4;

#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(default)]
    events: Vec<Event>,
}

#[derive(Debug, Deserialize)]
struct Event {
    #[serde(default)]
    action: String,
    #[serde(default)]
    target: Target,
}

#[derive(Debug, Default, Deserialize)]
struct Target {
    #[serde(default, rename = "mediaType")]
    media_type: String,
    #[serde(default)]
    digest: String,
    #[serde(default)]
    repository: String,
}

/// What the sink did with an envelope.
#[derive(Debug, Serialize)]
struct Accepted {
    events: usize,
    warming: usize,
    ignored: usize,
}

/// Handles `POST /registry/notifications`.
pub(crate) async fn handle(prefetcher: &Arc<Prefetcher>, body: RequestBody) -> Response<Body> {
    let max =
        usize::try_from(prefetcher.config().max_notification_size.bytes()).unwrap_or(usize::MAX);
    let bytes = match read_body(body, max).await {
        Ok(bytes) => bytes,
        Err(refusal) => return refusal,
    };
    let envelope: Envelope = match serde_json::from_slice(&bytes) {
        Ok(envelope) => envelope,
        Err(e) => {
            return refused(
                StatusCode::BAD_REQUEST,
                "",
                format!("the body must be a notification envelope {{\"events\": […]}}: {e}"),
            );
        }
    };
    let events = envelope.events.len();
    let mut wanted = BTreeSet::new();
    for event in envelope.events {
        if let Some(manifest) = pushed_manifest(&event) {
            wanted.insert(manifest);
        }
    }
    let warming: Vec<(String, Digest)> = wanted
        .into_iter()
        .take(MAX_MANIFESTS_PER_ENVELOPE)
        .collect();
    let answer = Accepted {
        events,
        warming: warming.len(),
        ignored: events - warming.len(),
    };
    for (repository, digest) in warming {
        tracing::info!(%repository, %digest, "notification: warming the origins for a pushed manifest");
        let task = Arc::clone(prefetcher);
        prefetcher.spawn(async move {
            match plan_when_readable(&task, &repository, &digest).await {
                Ok(plan) => task.warm_in_background(plan),
                Err(e) => {
                    tracing::warn!(%repository, %digest, error = %error_chain(&e), "notification: could not read the pushed manifest");
                }
            }
        });
    }
    json(StatusCode::OK, &answer)
}

/// The repository and digest of a `push` of a manifest; `None` for any other event or one
/// whose names do not parse.
fn pushed_manifest(event: &Event) -> Option<(String, Digest)> {
    if event.action != "push" {
        return None;
    }
    let target = &event.target;
    ManifestKind::from_media_type(&target.media_type)?;
    RepoName::validate(&target.repository).ok()?;
    let digest = target.digest.parse().ok()?;
    Some((target.repository.clone(), digest))
}

/// The plan of the image `digest`, retrying while the origins cannot find the manifest.
async fn plan_when_readable(
    prefetcher: &Prefetcher,
    repository: &str,
    digest: &Digest,
) -> crate::Result<super::prefetch::Plan> {
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match prefetcher.plan(repository, digest).await {
            Err(Error::MissingDependency(missing))
                if missing == *digest && attempt < MANIFEST_ATTEMPTS =>
            {
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(action: &str, media_type: &str, repository: &str, digest: &str) -> Event {
        Event {
            action: action.into(),
            target: Target {
                media_type: media_type.into(),
                digest: digest.into(),
                repository: repository.into(),
            },
        }
    }

    #[test]
    fn only_pushes_of_manifests_are_taken() {
        let d = Digest::sha256_of(b"m").to_string();
        let oci = "application/vnd.oci.image.manifest.v1+json";
        assert!(pushed_manifest(&event("push", oci, "team/app", &d)).is_some());
        for media_type in [
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
            "application/vnd.oci.image.index.v1+json",
        ] {
            assert!(pushed_manifest(&event("push", media_type, "a", &d)).is_some());
        }
        for ignored in [
            event("pull", oci, "team/app", &d),
            event("delete", oci, "team/app", &d),
            event("push", "application/octet-stream", "team/app", &d),
            event(
                "push",
                "application/vnd.oci.image.layer.v1.tar+gzip",
                "team/app",
                &d,
            ),
            event("push", oci, "Team/App", &d),
            event("push", oci, "team/app", "md5:00"),
        ] {
            assert!(pushed_manifest(&ignored).is_none(), "{ignored:?}");
        }
    }
}
