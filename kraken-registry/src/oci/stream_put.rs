//! A push whose whole body and length come in one request, passed on to a storage that
//! streams ([`RegistryStorage::blob_put_stream`], the proxy's) as the bytes arrive. The
//! push is then written nowhere on this host, and its bytes move on while the client still
//! sends them.
//!
//! The bytes are counted here, not hashed: the storage verifies the digest before it stores
//! or acknowledges anything (the proxy's origin hashes the upload as it writes it, and its
//! commit refuses bytes that hash to another digest), so each host that handles a push
//! hashes it once. Hashing it here too would double the push's largest cost on the proxy
//! for no added safety. A body that breaks off, or runs long or short of its length, ends
//! the stream in an error, so the storage never completes it.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::BodyExt;
use kraken_core::Digest;
use tokio::sync::mpsc;

use super::error::ApiError;
use super::name::RepoName;
use super::storage::RegistryStorage;
use super::uploads::{RequestBody, body_unreadable, length_mismatch};

/// Body frames between the reader and the storage: the memory a push holds here.
const IN_FLIGHT: usize = 8;

/// Why the client's bytes were refused, set by the reader before it ends the stream.
type Refusal = Arc<Mutex<Option<ApiError>>>;

/// Streams `body`, which must be `length` bytes hashing to `digest`, into `storage`, which
/// checks the digest (`DIGEST_INVALID` when the bytes hash to something else).
pub(super) async fn put(
    storage: &dyn RegistryStorage,
    repo: &RepoName,
    digest: &Digest,
    length: u64,
    body: RequestBody,
) -> Result<(), ApiError> {
    let refused = Refusal::default();
    let (tx, rx) = mpsc::channel(IN_FLIGHT);
    let reader = tokio::spawn(read_counted(body, length, tx, Arc::clone(&refused)));
    let chunks = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let stored = storage
        .blob_put_stream(repo, digest, length, Box::pin(chunks))
        .await;
    // A storage that had the blob already stops early; the rest of the body is not read.
    reader.abort();
    // The client's bytes are at fault before the storage is.
    let refusal = refused
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    match refusal {
        Some(e) => Err(e),
        None => stored.map_err(ApiError::from),
    }
}

/// Reads the body into `tx`, counting it. A body that breaks, or runs long or short of
/// `length`, ends the stream with an error, its reason left in `refused`; the bytes past
/// `length` are never sent.
async fn read_counted(
    mut body: RequestBody,
    length: u64,
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    refused: Refusal,
) {
    let mut received = 0u64;
    let outcome = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(body_unreadable)?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            received += data.len() as u64;
            if received > length {
                return Err(length_mismatch());
            }
            if tx.send(Ok(data)).await.is_err() {
                return Ok(()); // the storage stopped reading: its answer says why
            }
        }
        if received == length {
            Ok(())
        } else {
            Err(length_mismatch())
        }
    }
    .await;
    if let Err(e) = outcome {
        let reason = e.to_string();
        *refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e);
        let _ = tx.send(Err(std::io::Error::other(reason))).await;
    }
}
