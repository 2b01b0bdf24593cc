//! The listener's limits against real clients on loopback: each test plays a client that
//! misbehaves in one way and checks both that it is cut off and that a well-behaved request
//! on the same listener is still served.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

/// Limits short enough for tests; anything not named keeps its default.
fn short_limits() -> HttpLimits {
    HttpLimits {
        header_read_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(1500),
        body_stall_timeout: Duration::from_millis(300),
        write_stall_timeout: Duration::from_millis(300),
        ..HttpLimits::default()
    }
}

type TestBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// Serves: `/slow` answers after 1 s; `/echo` answers with the length of the body it read,
/// or `timed out` if the body stalled; `/huge` streams 1 GiB (setting `dropped` when the
/// listener drops it); anything else answers `ok`.
async fn start(limits: HttpLimits, dropped: Arc<AtomicBool>) -> (SocketAddr, CancellationToken) {
    start_with(ServeConfig::new("test").limits(limits), dropped).await
}

/// [`start`] with the listener's whole `config`.
async fn start_with(
    config: ServeConfig,
    dropped: Arc<AtomicBool>,
) -> (SocketAddr, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let handler = move |request: Request<RequestBody>| {
        let dropped = Arc::clone(&dropped);
        let sized = request.uri().path() == "/sized";
        async move {
            let body: TestBody = match request.uri().path() {
                "/slow" => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    text("slow but served")
                }
                "/echo" => match request.into_body().collect().await {
                    Ok(body) => text(format!("read {}", body.to_bytes().len())),
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => text("timed out"),
                    Err(e) => text(format!("error {e}")),
                },
                "/big" => Full::new(Bytes::from(vec![7u8; 8 << 20]))
                    .map_err(|never| match never {})
                    .boxed(),
                // 8 × 1 MiB under a declared length from a stream that does not know it has
                // ended (as a node's stream of a blob still arriving may not).
                "/sized" => StreamBody::new(futures::StreamExt::chain(
                    futures::stream::iter((0..8).map(|_| {
                        Ok::<_, std::io::Error>(Frame::data(Bytes::from(vec![7u8; 1 << 20])))
                    })),
                    futures::stream::pending(),
                ))
                .boxed(),
                "/huge" => {
                    let guard = DropFlag(dropped);
                    let chunks = futures::stream::iter((0..1024).map(move |_| {
                        let _keep = &guard;
                        Ok::<_, std::io::Error>(Frame::data(Bytes::from(vec![7u8; 1 << 20])))
                    }));
                    StreamBody::new(chunks).boxed()
                }
                _ => text("ok"),
            };
            let mut response = Response::new(body);
            if sized {
                response
                    .headers_mut()
                    .insert(hyper::header::CONTENT_LENGTH, (8u32 << 20).into());
            }
            response
        }
    };
    tokio::spawn(serve(
        listener,
        config,
        handler,
        shutdown.clone(),
        TaskTracker::new(),
    ));
    (addr, shutdown)
}

fn text(s: impl Into<String>) -> TestBody {
    Full::new(Bytes::from(s.into()))
        .map_err(|never| match never {})
        .boxed()
}

struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Sends `request` and reads until the server closes the connection or `within` passes;
/// returns what was read and whether the server closed it.
async fn exchange(stream: &mut TcpStream, request: &[u8], within: Duration) -> (String, bool) {
    stream.write_all(request).await.unwrap();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&seen).into_owned(), false),
            Ok(Ok(0) | Err(_)) => return (String::from_utf8_lossy(&seen).into_owned(), true),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// One well-behaved request on a new connection.
async fn get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let (answer, closed) = exchange(&mut stream, request.as_bytes(), Duration::from_secs(5)).await;
    assert!(
        closed,
        "a Connection: close request is closed after its answer"
    );
    answer
}

#[tokio::test]
async fn half_sent_headers_are_cut_off_and_others_are_served() {
    let (addr, _shutdown) = start(short_limits(), Arc::default()).await;
    let mut slowloris = Vec::new();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slowloris.push(stream);
    }
    let start = Instant::now();
    for stream in &mut slowloris {
        // A byte now and then does not keep a head alive: its clock started at its first.
        let (_, closed) = exchange(stream, b"X-A: b\r\n", Duration::from_secs(3)).await;
        assert!(closed, "a half-sent head must be closed");
    }
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(get(addr, "/").await.ends_with("ok"));

    // A connection that never sends anything is closed as well.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let (_, closed) = exchange(&mut silent, b"", Duration::from_secs(3)).await;
    assert!(closed, "a silent connection must be closed");
}

#[tokio::test]
async fn keep_alive_connections_wait_for_the_idle_timeout_not_the_header_timeout() {
    let (addr, _shutdown) = start(short_limits(), Arc::default()).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let (answer, closed) = exchange(&mut stream, request, Duration::from_millis(200)).await;
    assert!(answer.ends_with("ok") && !closed, "{answer:?}");
    // Idle for longer than the header timeout (300 ms), shorter than the idle one (1.5 s).
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (answer, closed) = exchange(&mut stream, request, Duration::from_millis(200)).await;
    assert!(answer.ends_with("ok") && !closed, "{answer:?}");
    // Then idle past it: closed.
    let (_, closed) = exchange(&mut stream, b"", Duration::from_secs(3)).await;
    assert!(
        closed,
        "an idle connection must be closed after the idle timeout"
    );
}

#[tokio::test]
async fn a_slow_handler_is_not_a_slow_client() {
    let (addr, _shutdown) = start(short_limits(), Arc::default()).await;
    // The handler takes 1 s, longer than every client timeout here.
    assert!(get(addr, "/slow").await.ends_with("slow but served"));
}

#[tokio::test]
async fn a_stalled_request_body_ends_with_a_timeout() {
    let (addr, _shutdown) = start(short_limits(), Arc::default()).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789";
    let (answer, _) = exchange(&mut stream, request, Duration::from_secs(3)).await;
    assert!(answer.ends_with("timed out"), "{answer:?}");

    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nConnection: close\r\n\r\n0123456789";
    let (answer, _) = exchange(&mut stream, request, Duration::from_secs(3)).await;
    assert!(answer.ends_with("read 10"), "{answer:?}");
}

#[tokio::test]
async fn a_client_that_stops_reading_loses_its_response() {
    let dropped = Arc::new(AtomicBool::new(false));
    let (addr, _shutdown) = start(short_limits(), Arc::clone(&dropped)).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /huge HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Never read: once the socket buffers are full, the write stalls.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dropped.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "the stalled response was never dropped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(get(addr, "/").await.ends_with("ok"));
}

#[tokio::test]
async fn connections_are_capped_per_client_and_per_listener() {
    let mut limits = short_limits();
    limits.max_connections_per_client = 2;
    let (addr, _shutdown) = start(limits, Arc::default()).await;
    let _a = TcpStream::connect(addr).await.unwrap();
    let _b = TcpStream::connect(addr).await.unwrap();
    // Let the listener admit both before the third arrives.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = TcpStream::connect(addr).await.unwrap();
    let (answer, closed) = exchange(&mut third, b"", Duration::from_secs(2)).await;
    assert!(closed && answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    // Another address has its own allowance.
    let mut other = connect_from("127.0.0.2:0", addr).await;
    let (answer, _) = exchange(
        &mut other,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(answer.ends_with("ok"), "{answer:?}");

    let mut limits = short_limits();
    limits.max_connections = 1;
    limits.header_read_timeout = Duration::from_secs(5);
    let (addr, _shutdown) = start(limits, Arc::default()).await;
    let holder = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut waiting = TcpStream::connect(addr).await.unwrap();
    let request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (answer, _) = exchange(&mut waiting, request, Duration::from_millis(500)).await;
    assert!(
        answer.is_empty(),
        "served past the connection limit: {answer:?}"
    );
    drop(holder);
    let (answer, _) = exchange(&mut waiting, b"", Duration::from_secs(3)).await;
    assert!(answer.ends_with("ok"), "{answer:?}");
}

#[tokio::test]
async fn oversized_heads_are_refused() {
    let mut limits = short_limits();
    limits.max_header_size = kraken_core::ByteSize(8 << 10);
    let (addr, _shutdown) = start(limits, Arc::default()).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(16 << 10)
    );
    let (answer, closed) = exchange(&mut stream, request.as_bytes(), Duration::from_secs(3)).await;
    assert!(closed && answer.starts_with("HTTP/1.1 431"), "{answer:?}");
}

/// A connection from `local`: another host on loopback.
async fn connect_from(local: &str, to: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(local.parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

#[test]
fn only_writes_need_a_certificate_under_writes() {
    for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
        assert!(!needs_certificate(ClientAuth::Writes, &method), "{method}");
    }
    for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        assert!(needs_certificate(ClientAuth::Writes, &method), "{method}");
        assert!(!needs_certificate(ClientAuth::None, &method), "{method}");
        assert!(!needs_certificate(ClientAuth::All, &method), "{method}");
    }
}

/// A client that reads a long response slowly but steadily is not cut off by the idle
/// timeout: hyper lets go of the body when it takes the last frame, long before the bytes
/// have drained to the client.
#[tokio::test]
async fn a_slow_steady_reader_gets_its_whole_response() {
    // The write-stall clock cannot tell a slow reader from a stopped one until the kernel's
    // send buffer frees a third of itself: give it room, to time the idle clock alone.
    let limits = HttpLimits {
        write_stall_timeout: Duration::from_secs(10),
        ..short_limits()
    };
    let (addr, _shutdown) = start(limits, Arc::default()).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 << 10).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream
        .write_all(b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut total = 0usize;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        // A small receive buffer read every 30 ms (about 2 MiB/s): the 8 MiB answer is more
        // than the kernel's buffers hold, and what hyper still holds takes longer than the
        // 1.5 s idle timeout to drain.
        tokio::time::sleep(Duration::from_millis(30)).await;
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => total += n,
            Ok(Err(e)) => panic!("read failed after {total} bytes: {e}"),
            Err(_) => panic!("stalled after {total} bytes"),
        }
    }
    assert!(total > 8 << 20, "cut off after {total} bytes");
    assert!(started.elapsed() > Duration::from_millis(1500));
}

/// The access log and request metrics (feature `metrics` for the registry).
#[cfg(feature = "metrics")]
mod access {
    use super::*;

    /// A log capture for the current thread: what a `fmt` subscriber wrote, without colours.
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        /// Captures this thread's events at `debug` and above until the guard drops.
        fn install() -> (Self, tracing::subscriber::DefaultGuard) {
            let captured = Self::default();
            let writer = captured.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_max_level(tracing::Level::DEBUG)
                .with_writer(move || writer.clone())
                .finish();
            (captured, tracing::subscriber::set_default(subscriber))
        }

        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    /// [`start`]'s handler (`/big` is 8 MiB, named `big`) with `access_log` and `metrics`.
    async fn start_counted(
        access_log: AccessLog,
        metrics: Option<crate::metrics::Metrics>,
    ) -> (SocketAddr, CancellationToken) {
        let routes: RouteNames = |_, path| if path == "/big" { "big" } else { "other" };
        let mut config = ServeConfig::new("test")
            .limits(HttpLimits {
                access_log,
                ..HttpLimits::default()
            })
            .routes(routes);
        config.metrics = metrics;
        start_with(config, Arc::default()).await
    }

    #[tokio::test]
    async fn every_request_is_logged_and_counted_by_route_name() {
        let (captured, _guard) = Captured::install();
        let metrics = crate::metrics::Metrics::new();
        let (addr, shutdown) = start_counted(AccessLog::Info, Some(metrics.clone())).await;

        let answer = get(addr, "/big").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:.40}");
        get(addr, "/elsewhere/sha256:00").await;
        let scraped = get(addr, "/metrics").await;
        assert!(
            scraped.contains("content-type: text/plain; version=0.0.4"),
            "{scraped}"
        );
        let text = metrics.encode();
        for line in [
            "kraken_http_requests_total{role=\"test\",route=\"big\",method=\"GET\",status=\"200\"} 1",
            "kraken_http_requests_total{role=\"test\",route=\"other\",method=\"GET\",status=\"200\"} 1",
            "kraken_http_requests_total{role=\"test\",route=\"metrics\",method=\"GET\",status=\"200\"} 1",
            "kraken_http_response_bytes_total{role=\"test\",route=\"big\",method=\"GET\"} 8388608",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        assert!(!text.contains("sha256"), "no raw path in a label:\n{text}");

        let log = captured.text();
        let big = log
            .lines()
            .find(|l| l.contains("kraken_p2p::access") && l.contains("big"))
            .unwrap_or_else(|| panic!("no access line for /big in\n{log}"));
        assert!(big.contains(" INFO "), "{big}");
        for field in [
            "method=GET",
            "status=200",
            "bytes=8388608",
            "complete=true",
            "client=127.0.0.1:",
        ] {
            assert!(big.contains(field), "{field} not in {big}");
        }
        assert!(big.contains("duration_ms="), "{big}");
        assert_eq!(
            log.lines()
                .filter(|l| l.contains("kraken_p2p::access"))
                .count(),
            3,
            "one line per request:\n{log}"
        );
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_streamed_body_sent_in_full_is_logged_complete() {
        let (captured, _guard) = Captured::install();
        let (addr, shutdown) = start_counted(AccessLog::Info, None).await;
        // Kept alive, as curl and container runtimes ask: hyper then stops polling the body
        // once the declared 8 MiB are out, so its end is never seen; the log must still say
        // the client got all of it.
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = b"GET /sized HTTP/1.1\r\nHost: x\r\n\r\n";
        let (answer, _) = exchange(&mut stream, request, Duration::from_secs(1)).await;
        assert!(answer.ends_with(&"\u{7}".repeat(16)), "{answer:.60}");
        let log = captured.text();
        let line = log
            .lines()
            .find(|l| l.contains("kraken_p2p::access"))
            .unwrap_or_else(|| panic!("no access line in\n{log}"));
        for field in ["bytes=8388608", "complete=true"] {
            assert!(line.contains(field), "{field} not in {line}");
        }
        shutdown.cancel();
    }

    #[tokio::test]
    async fn the_access_log_can_be_debug_or_off_and_metrics_are_optional() {
        let (captured, _guard) = Captured::install();
        let (quiet, stop_quiet) = start_counted(AccessLog::Off, None).await;
        let answer = get(quiet, "/metrics").await;
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"),
            "without metrics /metrics is the handler's: {answer}"
        );
        assert!(
            !captured.text().contains("kraken_p2p::access"),
            "{}",
            captured.text()
        );
        let (debug, stop_debug) = start_counted(AccessLog::Debug, None).await;
        get(debug, "/x").await;
        let log = captured.text();
        let line = log
            .lines()
            .find(|l| l.contains("kraken_p2p::access"))
            .unwrap_or_else(|| panic!("no access line in\n{log}"));
        assert!(line.contains("DEBUG"), "{line}");
        stop_quiet.cancel();
        stop_debug.cancel();
    }
}
