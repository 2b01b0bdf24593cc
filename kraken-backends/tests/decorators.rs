//! The decorators (router, retry, metrics, throttle) over an in-memory backend whose calls
//! can fail or take time.

use std::sync::Arc;
use std::time::Duration;

use kraken_backends::{
    Backend, Error, MetricsBackend, Operation, OperationStats, RetryBackend, RetryConfig, Router,
    ThrottleBackend, ThrottleConfig, TokenBucket, UploadBody, collect_bytes,
};
use kraken_core::ByteSize;
use kraken_testkit::backend::FaultyBackend;
use tokio::time::Instant;

// Router (router.rs).

#[tokio::test]
async fn the_first_matching_route_wins_and_patterns_are_anchored() {
    let library = Arc::new(FaultyBackend::default());
    let rest = Arc::new(FaultyBackend::default());
    let router = Router::new()
        .with_route("library/.*", library.clone())
        .unwrap()
        .with_route(".*", rest.clone())
        .unwrap();
    router
        .upload("library/ubuntu", "a", UploadBody::from_bytes("1"))
        .await
        .unwrap();
    // "library/" appears, but not at the start: the pattern is anchored.
    router
        .upload("mirror/library/x", "b", UploadBody::from_bytes("2"))
        .await
        .unwrap();
    assert!(library.uploaded("a").is_some() && library.uploaded("b").is_none());
    assert!(rest.uploaded("b").is_some() && rest.uploaded("a").is_none());
}

#[tokio::test]
async fn unrouted_namespaces_and_bad_patterns_are_errors() {
    let router = Router::new()
        .with_route("only", Arc::new(FaultyBackend::default()))
        .unwrap();
    let error = router.stat("other", "x").await.unwrap_err();
    assert!(matches!(error, Error::NoRoute { .. }), "{error:?}");
    let bad = Router::new().with_route("(", Arc::new(FaultyBackend::default()));
    assert!(matches!(bad, Err(Error::Config(_))));
}

// RetryBackend (retry.rs).

fn config(max_attempts: u32) -> RetryConfig {
    let mut config = RetryConfig::default();
    config.max_attempts = max_attempts;
    config
}

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_until_success() {
    let faulty = Arc::new(FaultyBackend::failing_first(0));
    faulty
        .upload("ns", "a", UploadBody::from_bytes("abc"))
        .await
        .unwrap();
    faulty.fail_next(2);
    let backend = RetryBackend::new(faulty.clone(), config(4));
    assert_eq!(backend.stat("ns", "a").await.unwrap().size, 3);
    assert_eq!(faulty.calls(), 1 + 3);
}

#[tokio::test(start_paused = true)]
async fn attempts_are_bounded_and_the_last_error_returned() {
    let faulty = Arc::new(FaultyBackend::failing_first(10));
    let backend = RetryBackend::new(faulty.clone(), config(3));
    let started = tokio::time::Instant::now();
    let error = backend.stat("ns", "a").await.unwrap_err();
    assert!(error.is_transient());
    assert_eq!(faulty.calls(), 3);
    // Two backoffs, each at most 100ms then 200ms.
    assert!(started.elapsed() <= Duration::from_millis(300));
}

#[tokio::test(start_paused = true)]
async fn not_found_is_never_retried() {
    let faulty = Arc::new(FaultyBackend::failing_first(0));
    let backend = RetryBackend::new(faulty.clone(), config(5));
    let error = backend.stat("ns", "missing").await.unwrap_err();
    assert!(error.is_not_found());
    assert_eq!(faulty.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn uploads_are_retried_only_when_the_body_replays() {
    let faulty = Arc::new(FaultyBackend::failing_first(1));
    let backend = RetryBackend::new(faulty.clone(), config(3));
    backend
        .upload("ns", "a", UploadBody::from_bytes("abc"))
        .await
        .unwrap();
    assert_eq!(faulty.calls(), 2);
    assert_eq!(faulty.uploaded("a").as_deref(), Some(&b"abc"[..]));

    let faulty = Arc::new(FaultyBackend::failing_first(1));
    let backend = RetryBackend::new(faulty.clone(), config(3));
    let once = futures::stream::once(async { Ok(bytes::Bytes::from_static(b"abc")) });
    let body = UploadBody::from_stream(Box::pin(once), Some(3));
    let error = backend.upload("ns", "a", body).await.unwrap_err();
    assert!(matches!(error, Error::Transport(_)));
    assert_eq!(faulty.calls(), 1);
}

// MetricsBackend (metrics.rs).

#[tokio::test(start_paused = true)]
async fn counts_successes_misses_failures_and_bytes() {
    let faulty = Arc::new(FaultyBackend::failing_first(0));
    let backend = MetricsBackend::new(faulty.clone(), "test");
    backend
        .upload("ns", "a", UploadBody::from_bytes("hello"))
        .await
        .unwrap();
    let stream = backend.download("ns", "a", None).await.unwrap();
    collect_bytes(stream, 100).await.unwrap();
    assert!(
        backend
            .stat("ns", "missing")
            .await
            .unwrap_err()
            .is_not_found()
    );
    faulty.fail_next(1);
    backend.stat("ns", "a").await.unwrap_err();
    backend.stat("ns", "a").await.unwrap();

    let metrics = backend.metrics();
    let stat = metrics.stats(Operation::Stat);
    assert_eq!((stat.calls, stat.not_found, stat.failures), (3, 1, 1));
    assert_eq!(metrics.stats(Operation::Upload).bytes, 5);
    assert_eq!(metrics.stats(Operation::Download).bytes, 5);
    assert_eq!(metrics.stats(Operation::Download).calls, 1);
    assert_eq!(metrics.stats(Operation::Delete), OperationStats::default());
    assert_eq!(metrics.snapshot().len(), Operation::ALL.len());
}

#[tokio::test(start_paused = true)]
async fn durations_are_measured() {
    let faulty = Arc::new(FaultyBackend::failing_first(0));
    faulty.delay_each_call(Duration::from_millis(250));
    let backend = MetricsBackend::new(faulty, "test");
    backend.stat("ns", "x").await.unwrap_err();
    backend.stat("ns", "x").await.unwrap_err();
    let stat = backend.metrics().stats(Operation::Stat);
    assert_eq!(stat.total_duration, Duration::from_millis(500));
    assert_eq!(stat.max_duration, Duration::from_millis(250));
}

// ThrottleBackend (throttle.rs).

const MIB: u64 = 1024 * 1024;

#[tokio::test(start_paused = true)]
async fn a_blob_ten_times_the_burst_takes_nine_seconds_beyond_it() {
    let store = Arc::new(FaultyBackend::failing_first(0));
    store
        .upload(
            "ns",
            "big",
            UploadBody::from_bytes(vec![7u8; 10 * MIB as usize]),
        )
        .await
        .unwrap();
    let mut config = ThrottleConfig::default();
    config.ingress_per_second = Some(ByteSize(MIB));
    config.egress_per_second = None;
    let throttled = ThrottleBackend::new(store, &config);
    let started = Instant::now();
    let stream = throttled.download("ns", "big", None).await.unwrap();
    let body = collect_bytes(stream, 11 * MIB as usize).await.unwrap();
    assert_eq!(body.len() as u64, 10 * MIB);
    // One second of budget is in the bucket at the start; the other nine are waited for.
    let elapsed = started.elapsed().as_secs_f64();
    assert!((8.9..9.2).contains(&elapsed), "took {elapsed}s");
}

#[tokio::test(start_paused = true)]
async fn uploads_share_a_bucket_across_backends() {
    let bucket = Arc::new(TokenBucket::new(MIB));
    let first = ThrottleBackend::with_buckets(
        Arc::new(FaultyBackend::failing_first(0)),
        None,
        Some(bucket.clone()),
    );
    let second = ThrottleBackend::with_buckets(
        Arc::new(FaultyBackend::failing_first(0)),
        None,
        Some(bucket),
    );
    let started = Instant::now();
    let body = || UploadBody::from_bytes(vec![1u8; 2 * MIB as usize]);
    let (a, b) = tokio::join!(
        first.upload("ns", "a", body()),
        second.upload("ns", "b", body())
    );
    a.unwrap();
    b.unwrap();
    // 4 MiB at 1 MiB/s with 1 MiB of burst.
    let elapsed = started.elapsed().as_secs_f64();
    assert!((2.9..3.2).contains(&elapsed), "took {elapsed}s");
}

#[tokio::test(start_paused = true)]
async fn an_unthrottled_direction_does_not_wait() {
    let store = Arc::new(FaultyBackend::failing_first(0));
    let throttled = ThrottleBackend::new(store, &ThrottleConfig::default());
    let started = Instant::now();
    throttled
        .upload(
            "ns",
            "a",
            UploadBody::from_bytes(vec![0u8; 4 * MIB as usize]),
        )
        .await
        .unwrap();
    assert_eq!(started.elapsed(), Duration::ZERO);
}
