//! A push whose whole body and length come in one request, passed on to a storage that
//! streams ([`RegistryStorage::blob_put_stream`], the proxy's) as the bytes arrive: hashed on
//! the way, with the last chunk held back until the bytes hash to the digest pushed. The
//! push is then written nowhere on this host, and its bytes move on while the client still
//! sends them.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::BodyExt;
use kraken_core::{Digest, Hasher};
use tokio::sync::mpsc;

use super::error::{ApiError, ErrorCode};
use super::name::RepoName;
use super::storage::RegistryStorage;
use super::uploads::{RequestBody, body_unreadable, length_mismatch};

/// Body frames between the reader and the storage: the memory a push holds here.
const IN_FLIGHT: usize = 8;

/// Why the client's bytes were refused, set by the reader before it ends the stream.
type Refusal = Arc<Mutex<Option<ApiError>>>;

/// Streams `body`, which must be `length` bytes hashing to `digest`, into `storage`.
pub(super) async fn put(
    storage: &dyn RegistryStorage,
    repo: &RepoName,
    digest: &Digest,
    length: u64,
    body: RequestBody,
) -> Result<(), ApiError> {
    let refused = Refusal::default();
    let (tx, rx) = mpsc::channel(IN_FLIGHT);
    let reader = tokio::spawn(read_verified(
        body,
        *digest,
        length,
        tx,
        Arc::clone(&refused),
    ));
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

/// `DIGEST_INVALID`: the bytes pushed hash to `actual`, not `expected`.
pub(super) fn digest_invalid(expected: &Digest, actual: &Digest) -> ApiError {
    ApiError::new(
        ErrorCode::DigestInvalid,
        format!("uploaded content has digest {actual}, not {expected}"),
    )
    .with_detail(
        serde_json::json!({"expected": expected.to_string(), "actual": actual.to_string()}),
    )
}

/// Reads the body into `tx`, hashing it; the frame that completes `length` bytes is sent
/// only if they hash to `digest`. A body that breaks, runs long or short, or hashes to
/// something else ends the stream with an error, its reason left in `refused`.
async fn read_verified(
    mut body: RequestBody,
    digest: Digest,
    length: u64,
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    refused: Refusal,
) {
    let mut hasher = Hasher::new();
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
            hasher.update(&data);
            if received == length {
                let actual = std::mem::replace(&mut hasher, Hasher::new()).finalize();
                if actual != digest {
                    return Err(digest_invalid(&digest, &actual));
                }
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
