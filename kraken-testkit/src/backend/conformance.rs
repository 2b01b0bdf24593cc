//! The conformance suite: what every writable backend must do, as plain async functions that
//! panic with a message on the first violation. Run them all with [`run_suite`].

use bytes::Bytes;
use futures::StreamExt;
use kraken_core::{Digest, Hasher};

use kraken_backends::{
    Backend, ByteRange, ByteStream, Error, ListOptions, UploadBody, collect_bytes,
};

use crate::pseudo_random_bytes;

/// Size of the blob [`large_blob_streams`] moves: large enough that holding it in memory
/// would show in the process's peak memory.
pub const LARGE_BLOB_SIZE: u64 = 64 * 1024 * 1024;
/// Namespace the suite uses; path-based backends ignore it.
const NAMESPACE: &str = "conformance";
/// Largest small blob the suite reads back into memory.
const SMALL_LIMIT: usize = 1024 * 1024;
/// Chunk size of the generated large blob.
const GENERATED_CHUNK: usize = 1024 * 1024;

/// What the backend under test supports beyond the required operations.
#[non_exhaustive]
#[derive(Clone, Copy, Debug)]
pub struct SuiteOptions {
    /// Whether [`Backend::list`] works. When `false` the suite checks that it answers
    /// [`Error::Unsupported`] and skips the listing checks, saying so.
    pub list: bool,
}

impl Default for SuiteOptions {
    fn default() -> Self {
        Self { list: true }
    }
}

impl SuiteOptions {
    /// Options for a backend that cannot list.
    pub fn without_list() -> Self {
        Self { list: false }
    }
}

/// Runs every check except [`large_blob_streams`], which callers run as a test of its own
/// (it measures the process's peak memory).
pub async fn run_suite(backend: &dyn Backend, options: SuiteOptions) {
    round_trip(backend).await;
    ranged_reads(backend).await;
    missing_blobs_are_not_found(backend).await;
    overwrite_replaces_blob(backend).await;
    list_paginates_with_prefix(backend, options).await;
    delete_removes_blobs(backend).await;
    invalid_names_are_rejected(backend).await;
}

/// Upload, then download and stat give back the same bytes and size; the empty blob too.
pub async fn round_trip(backend: &dyn Backend) {
    for (name, content) in [
        ("round-trip/hello", Bytes::from_static(b"hello, backend")),
        ("round-trip/empty", Bytes::new()),
    ] {
        backend
            .upload(NAMESPACE, name, UploadBody::from_bytes(content.clone()))
            .await
            .unwrap_or_else(|e| panic!("upload {name}: {e:?}"));
        assert_eq!(read(backend, name, None).await, content, "download {name}");
        let info = backend.stat(NAMESPACE, name).await.expect("stat");
        assert_eq!(info.size, content.len() as u64, "stat size of {name}");
    }
}

/// Ranges from the start, the middle and the end; a length past the end is cut; an offset
/// at or past the end is [`Error::RangeNotSatisfiable`].
pub async fn ranged_reads(backend: &dyn Backend) {
    let content: Bytes = (0..1000u32)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    let name = "ranges/blob";
    backend
        .upload(NAMESPACE, name, UploadBody::from_bytes(content.clone()))
        .await
        .expect("upload");
    for (range, expected) in [
        (ByteRange::new(0, 10).unwrap(), &content[..10]),
        (ByteRange::new(500, 100).unwrap(), &content[500..600]),
        (ByteRange::new(990, 10).unwrap(), &content[990..]),
        (ByteRange::new(990, 100).unwrap(), &content[990..]),
        (ByteRange::from_offset(995), &content[995..]),
        (ByteRange::from_offset(0), &content[..]),
    ] {
        assert_eq!(
            read(backend, name, Some(range)).await,
            expected,
            "{range:?}"
        );
    }
    for offset in [1000, 5000] {
        match backend
            .download(NAMESPACE, name, Some(ByteRange::new(offset, 10).unwrap()))
            .await
        {
            Err(Error::RangeNotSatisfiable { .. }) => {}
            other => panic!("range from {offset} of 1000 bytes: {:?}", other.map(|_| ())),
        }
    }
}

/// Stat, download and delete of a blob that was never uploaded answer not-found.
pub async fn missing_blobs_are_not_found(backend: &dyn Backend) {
    let name = "missing/never-uploaded";
    let stat = backend.stat(NAMESPACE, name).await;
    assert!(
        matches!(&stat, Err(e) if e.is_not_found()),
        "stat: {stat:?}"
    );
    let download = backend.download(NAMESPACE, name, None).await.map(|_| ());
    assert!(
        matches!(&download, Err(e) if e.is_not_found()),
        "download: {download:?}"
    );
    let delete = backend.delete(NAMESPACE, name).await;
    assert!(
        matches!(&delete, Err(e) if e.is_not_found()),
        "delete: {delete:?}"
    );
}

/// A second upload under the same name replaces the first, size included.
pub async fn overwrite_replaces_blob(backend: &dyn Backend) {
    let name = "overwrite/blob";
    for content in ["a longer first version", "short"] {
        backend
            .upload(NAMESPACE, name, UploadBody::from_bytes(content))
            .await
            .expect("upload");
        assert_eq!(read(backend, name, None).await, content.as_bytes());
        let size = backend.stat(NAMESPACE, name).await.expect("stat").size;
        assert_eq!(size, content.len() as u64);
    }
}

/// Listing walks several pages to the end and honours the prefix.
pub async fn list_paginates_with_prefix(backend: &dyn Backend, options: SuiteOptions) {
    let probe = backend
        .list(NAMESPACE, "list/", &ListOptions::with_limit(1))
        .await;
    if !options.list {
        assert!(
            matches!(probe, Err(Error::Unsupported { .. })),
            "a backend declared without list must answer Unsupported: {probe:?}"
        );
        println!("conformance: skipping the listing checks, the backend cannot list");
        return;
    }
    probe.expect("list of an empty prefix");
    let mut expected: Vec<String> = (0..7).map(|i| format!("list/a/{i:02}")).collect();
    expected.extend(["list/b/x".to_owned(), "list/b/y/z".to_owned()]);
    for name in expected
        .iter()
        .chain(["listless".to_owned(), "lis".to_owned()].iter())
    {
        backend
            .upload(NAMESPACE, name, UploadBody::from_bytes(name.clone()))
            .await
            .expect("upload");
    }
    assert_eq!(list_all(backend, "list/", 3).await, expected);
    assert_eq!(list_all(backend, "list/a/0", 2).await, expected[..7]);
    assert_eq!(list_all(backend, "list/b", 100).await, expected[7..]);
    assert_eq!(list_all(backend, "list/c", 5).await, Vec::<String>::new());
}

/// Deleting a blob makes it not-found; deleting it again is not-found too.
pub async fn delete_removes_blobs(backend: &dyn Backend) {
    let name = "delete/blob";
    backend
        .upload(NAMESPACE, name, UploadBody::from_bytes("doomed"))
        .await
        .expect("upload");
    backend.delete(NAMESPACE, name).await.expect("delete");
    let stat = backend.stat(NAMESPACE, name).await;
    assert!(
        matches!(&stat, Err(e) if e.is_not_found()),
        "stat after delete: {stat:?}"
    );
    let again = backend.delete(NAMESPACE, name).await;
    assert!(
        matches!(&again, Err(e) if e.is_not_found()),
        "second delete: {again:?}"
    );
}

/// Names that would leave the backend's root are refused before any request.
pub async fn invalid_names_are_rejected(backend: &dyn Backend) {
    for name in ["../escape", "a/../../escape", "/absolute", "a//b", ""] {
        let upload = backend
            .upload(NAMESPACE, name, UploadBody::from_bytes("x"))
            .await;
        assert!(
            matches!(upload, Err(Error::InvalidName { .. })),
            "upload {name:?}: {upload:?}"
        );
        let stat = backend.stat(NAMESPACE, name).await;
        assert!(
            matches!(stat, Err(Error::InvalidName { .. })),
            "stat {name:?}: {stat:?}"
        );
    }
}

/// An upload whose body fails after `size` good bytes returns that error, and the backend
/// holds nothing under the name afterwards.
pub async fn a_failing_body_stores_nothing(backend: &dyn Backend, size: u64) {
    let name = "broken";
    let (good, _) = generated_blob(size);
    let failing = good.chain(futures::stream::once(async {
        Err(kraken_backends::Error::Io(std::io::Error::other(
            "source broke",
        )))
    }));
    let result = backend
        .upload(
            NAMESPACE,
            name,
            UploadBody::from_stream(failing.boxed(), None),
        )
        .await;
    assert!(
        matches!(&result, Err(kraken_backends::Error::Io(e)) if e.to_string() == "source broke"),
        "{result:?}"
    );
    assert!(
        backend
            .stat(NAMESPACE, name)
            .await
            .unwrap_err()
            .is_not_found()
    );
}

/// A blob of `size` bytes goes up from a generator stream of unknown length and comes back
/// in chunks, checked by digest, and neither direction holds it whole: under nextest (one
/// process per test) the process's peak memory must grow by less than half the blob.
pub async fn large_blob_streams(backend: &dyn Backend, size: u64) {
    let name = "large/blob";
    let memory = PeakMemory::start();
    let (stream, expected) = generated_blob(size);
    backend
        .upload(NAMESPACE, name, UploadBody::from_stream(stream, None))
        .await
        .expect("upload of the large blob");
    assert_eq!(
        backend.stat(NAMESPACE, name).await.expect("stat").size,
        size
    );

    let mut download = backend
        .download(NAMESPACE, name, None)
        .await
        .expect("download");
    let (mut hasher, mut received, mut chunks, mut largest) = (Hasher::new(), 0u64, 0u64, 0);
    while let Some(chunk) = download.next().await {
        let chunk = chunk.expect("download chunk");
        hasher.update(&chunk);
        received += chunk.len() as u64;
        chunks += 1;
        largest = largest.max(chunk.len());
    }
    assert_eq!(received, size, "downloaded size");
    assert_eq!(hasher.finalize(), expected, "downloaded digest");
    assert!(
        chunks > 1,
        "the download came as one chunk: it was buffered"
    );
    assert!(
        (largest as u64) < size / 4,
        "a {largest}-byte chunk: buffered"
    );
    memory.assert_grew_less_than(size / 2);
    backend.delete(NAMESPACE, name).await.expect("delete");
}

/// A deterministic pseudo-random stream of `size` bytes in 1 MiB chunks, generated as it is
/// read, and the digest it will have.
pub fn generated_blob(size: u64) -> (ByteStream, Digest) {
    // Seeded by the chunk index: no two chunks alike.
    let chunk_at =
        |index: u64, length: usize| -> Bytes { pseudo_random_bytes(length, index).into() };
    let lengths = move |index: u64| {
        let start = index * GENERATED_CHUNK as u64;
        (start < size).then(|| (size - start).min(GENERATED_CHUNK as u64) as usize)
    };
    let mut hasher = Hasher::new();
    let mut index = 0;
    while let Some(length) = lengths(index) {
        hasher.update(&chunk_at(index, length));
        index += 1;
    }
    let stream = futures::stream::iter((0..).map_while(lengths).enumerate())
        .map(move |(index, length)| Ok(chunk_at(index as u64, length)))
        .boxed();
    (stream, hasher.finalize())
}

async fn read(backend: &dyn Backend, name: &str, range: Option<ByteRange>) -> Bytes {
    let stream = backend
        .download(NAMESPACE, name, range)
        .await
        .unwrap_or_else(|e| panic!("download {name} {range:?}: {e:?}"));
    collect_bytes(stream, SMALL_LIMIT)
        .await
        .unwrap_or_else(|e| panic!("read {name} {range:?}: {e:?}"))
}

async fn list_all(backend: &dyn Backend, prefix: &str, page_size: usize) -> Vec<String> {
    let options = ListOptions::with_limit(page_size);
    let mut names = Vec::new();
    let mut token = None;
    // Bounded: a backend that keeps returning tokens fails instead of looping forever.
    for _ in 0..100 {
        let page = backend
            .list(NAMESPACE, prefix, &options.after(token))
            .await
            .unwrap_or_else(|e| panic!("list {prefix:?}: {e:?}"));
        assert!(page.names.len() <= page_size, "page larger than the limit");
        names.extend(page.names);
        token = page.continuation_token;
        if token.is_none() {
            return names;
        }
    }
    panic!("list {prefix:?} did not end after 100 pages");
}

/// The process's peak resident memory (`VmHWM`), reset at the start. Meaningful only when the
/// test has the process to itself, as under nextest; elsewhere it reports and checks nothing.
struct PeakMemory {
    baseline_kib: Option<u64>,
}

impl PeakMemory {
    fn start() -> Self {
        let alone = std::env::var_os("NEXTEST").is_some();
        // Writing 5 to clear_refs resets VmHWM to the current resident size (Linux >= 4.0).
        let reset = alone && std::fs::write("/proc/self/clear_refs", "5").is_ok();
        let baseline_kib = if reset { peak_kib() } else { None };
        if baseline_kib.is_none() {
            println!("conformance: peak memory not checked (needs Linux and nextest)");
        }
        Self { baseline_kib }
    }

    fn assert_grew_less_than(&self, bytes: u64) {
        let (Some(baseline), Some(peak)) = (self.baseline_kib, peak_kib()) else {
            return;
        };
        let grown = peak.saturating_sub(baseline) * 1024;
        println!("conformance: peak memory grew by {} KiB", grown / 1024);
        assert!(
            grown < bytes,
            "peak memory grew by {grown} bytes: the blob was buffered"
        );
    }
}

fn peak_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
