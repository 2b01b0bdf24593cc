//! `POST /remotes/tags/{tag}` on the build-index: replication of an existing tag to the
//! remote clusters, queued again on request (Go Kraken's endpoint), for a tag that was put
//! without replication or whose remote lost it.

mod support;

use std::time::Duration;

use kraken_core::Digest;
use kraken_registry::build_index::{BuildIndexClient, TagName};
use reqwest::StatusCode;
use support::{TwoClusters, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_is_replicated_again_on_request_and_an_unknown_one_is_404() {
    let dir = tempfile::tempdir().unwrap();
    let TwoClusters {
        here,
        there,
        local,
        remote,
    } = TwoClusters::start(dir.path()).await;
    let local_client = BuildIndexClient::new([local.local_addr().to_string()]).unwrap();
    let remote_client = BuildIndexClient::new([remote.local_addr().to_string()]).unwrap();

    // A tag put without replication: nothing is queued.
    let data = b"a blob tagged directly".to_vec();
    let digest = support::upload(&here, "library/app", &data).await;
    let tag = TagName::new("library/app", "late").unwrap();
    local_client.put_tag(&tag, &digest, false).await.unwrap();
    assert_eq!(local.pending_replications(), 0);

    let http = reqwest::Client::new();
    let post = |tag: &str| {
        http.post(format!(
            "http://{}/remotes/tags/{}",
            local.local_addr(),
            tag.replace('/', "%2F")
        ))
        .send()
    };
    let response = post(tag.as_str()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    assert!(
        text.contains(&digest.to_string()) && text.contains("1 remotes"),
        "{text}"
    );
    eventually(
        Duration::from_secs(20),
        "the remote has the tag",
        || async { remote_client.get_tag(&tag).await.unwrap() == Some(digest) },
    )
    .await;
    assert!(
        matches!(
            there.store().status(&digest),
            kraken_core::BlobStatus::Cached { .. }
        ),
        "the blob reached the remote origin"
    );

    // Unknown tags are 404; bad names 400; a repository no remote takes queues nothing.
    let response = post("library/app:missing").await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = post("Not A Tag").await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let other = TagName::new("private/app", "1").unwrap();
    let other_digest: Digest = support::upload(&here, "private/app", b"private").await;
    local_client
        .put_tag(&other, &other_digest, false)
        .await
        .unwrap();
    let response = post(other.as_str()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.unwrap().contains("0 remotes"));

    local.shutdown().await;
    remote.shutdown().await;
    here.shutdown().await;
    there.shutdown().await;
}
