//! `kraken devcluster` as a real process on Go Kraken's default ports: it prints what runs
//! where, the proxy and the agents answer `/v2/`, every listener answers `/metrics`, and Ctrl-C (SIGINT) stops it with status 0
//! and frees its ports, even while a client keeps idle connections open.

mod support;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kraken_testkit::ProcessGuard;
use support::KRAKEN;

/// Go Kraken's devcluster ports for two agents: (component, port) for every listener,
/// peer ports included, since any one of them taken stops the devcluster from starting.
const DEFAULT_PORTS: [(&str, u16); 9] = [
    ("proxy", 15000),
    ("origin P2P", 15001),
    ("origin", 15002),
    ("tracker", 15003),
    ("build-index", 15004),
    ("agent 0", 16000),
    ("agent 0 P2P", 16001),
    ("agent 1", 17000),
    ("agent 1 P2P", 17001),
];
/// Every HTTP listener of the default devcluster: (component, address).
const HTTP_LISTENERS: [(&str, &str); 6] = [
    ("proxy", "127.0.0.1:15000"),
    ("origin", "127.0.0.1:15002"),
    ("tracker", "127.0.0.1:15003"),
    ("build-index", "127.0.0.1:15004"),
    ("agent 0", "127.0.0.1:16000"),
    ("agent 1", "127.0.0.1:17000"),
];
/// The line the devcluster prints after its table, once everything listens.
const READY_LINE: &str = "Ctrl-C stops it.";
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devcluster_on_default_ports_serves_and_stops_cleanly_on_ctrl_c() {
    for (component, port) in DEFAULT_PORTS {
        if let Err(e) = TcpListener::bind(("127.0.0.1", port)) {
            panic!(
                "port {port} ({component}) is busy before the test starts ({e}): this test \
                 needs Go Kraken's devcluster ports 15000-15004, 16000-16001 and 17000-17001 free"
            );
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(KRAKEN)
        .arg("devcluster")
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kraken devcluster");
    let pid = child.id();
    let mut lines = stderr_lines(child.stderr.take().unwrap());
    let mut process = ProcessGuard::adopt(child);

    let printed = read_until_ready(&mut lines, &mut process).await;
    for (component, addr) in HTTP_LISTENERS {
        assert!(
            printed.lines().any(|line| {
                let line = line.trim_start();
                line.starts_with(component) && line.contains(addr)
            }),
            "the table names no {component} at {addr}:\n{printed}"
        );
    }

    // One client for every request: its connections stay open, idle, while the devcluster
    // stops, as a docker daemon's would; shutdown must not wait for them to close.
    kraken_backends::install_crypto_provider();
    let http = reqwest::Client::new();
    for addr in ["127.0.0.1:15000", "127.0.0.1:16000"] {
        let response = http
            .get(format!("http://{addr}/v2/"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET /v2/ on {addr}: {e}"));
        assert_eq!(
            response.status(),
            reqwest::StatusCode::OK,
            "GET /v2/ on {addr}"
        );
        response.bytes().await.unwrap();
    }
    // Every listener serves its role's Prometheus metrics.
    for (component, addr) in HTTP_LISTENERS {
        let metrics = kraken_testkit::Exposition::scrape(&http, addr).await;
        assert!(
            metrics.has("kraken_http_requests_total"),
            "{component} at {addr} has no kraken_http_requests_total"
        );
    }

    let sent = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -INT {pid} failed: {sent}");
    let deadline = Instant::now() + EXIT_TIMEOUT;
    let status = loop {
        if let Some(status) = process.child().expect("running").try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the devcluster did not exit within {EXIT_TIMEOUT:?} of SIGINT"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        status.code(),
        Some(0),
        "devcluster exit status after SIGINT"
    );
    drop(http);
    for (component, port) in DEFAULT_PORTS {
        if let Err(e) = TcpListener::bind(("127.0.0.1", port)) {
            panic!("port {port} ({component}) is still taken after the devcluster exited: {e}");
        }
    }
}

/// Forwards each line of `stderr` to a channel from a thread, which keeps draining it to the
/// end so that the process never blocks on a full pipe.
fn stderr_lines(stderr: std::process::ChildStderr) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (send, receive) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = send.send(line);
        }
    });
    receive
}

/// Everything printed up to [`READY_LINE`]; fails if the process exits or the time runs out
/// first, with what it printed.
async fn read_until_ready(
    lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    process: &mut ProcessGuard,
) -> String {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    let mut printed = String::new();
    loop {
        match tokio::time::timeout_at(deadline, lines.recv()).await {
            Ok(Some(line)) if line == READY_LINE => return printed,
            Ok(Some(line)) => {
                printed.push_str(&line);
                printed.push('\n');
            }
            Ok(None) => {
                let status = process.child().expect("running").wait().unwrap();
                panic!("the devcluster exited ({status}) before it was ready:\n{printed}");
            }
            Err(_) => panic!("the devcluster was not ready within {READY_TIMEOUT:?}:\n{printed}"),
        }
    }
}
