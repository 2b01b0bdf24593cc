//! What an operator meets, with the real `kraken` binary: JSON and plain-text logs, settings
//! from the environment and a secrets file, `kraken config check|defaults`, start-up errors
//! that name the address or directory at fault, `/readiness` that follows dependencies, the
//! agent's advertised peer address, and `--version`.

mod support;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kraken_testkit::{ProcessGuard, free_addr, run_to_end};
use support::KRAKEN;

const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `kraken args…` with `env` to its end; its status code, stdout and stderr.
fn kraken(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut command = Command::new(KRAKEN);
    command.args(args).env_remove("KRAKEN_LOG_FORMAT");
    for (name, value) in env {
        command.env(name, value);
    }
    let done = run_to_end(&mut command, RUN_TIMEOUT).unwrap();
    (done.status.code(), done.stdout, done.stderr)
}

/// `GET path` on `addr` over HTTP/1.1: the status code and body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

/// Starts `kraken devcluster` on free ports with `log_args`, stderr to `log`; waits for the
/// addresses it prints on stdout.
fn devcluster(dir: &Path, log_args: &[&str], log: &Path) -> (ProcessGuard, serde_json::Value) {
    let mut child = Command::new(KRAKEN)
        .args(["devcluster", "--ephemeral-ports", "--json", "--data-dir"])
        .arg(dir)
        .args(log_args)
        .env_remove("KRAKEN_LOG_FORMAT")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let guard = ProcessGuard::adopt(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(RUN_TIMEOUT)
        .expect("the devcluster printed its addresses");
    let addrs = serde_json::from_str(&line).unwrap_or_else(|e| {
        panic!(
            "{e}: {line:?}\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        )
    });
    (guard, addrs)
}

/// Sends SIGINT and waits (bounded) for the process to exit.
fn interrupt(guard: &mut ProcessGuard) {
    guard.signal_and_wait("INT", RUN_TIMEOUT).unwrap();
}

#[test]
fn json_logs_are_json_lines_and_text_logs_carry_no_colour_off_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    // The option after the subcommand (global), and readiness of the proxy while it runs.
    let log = dir.path().join("json.log");
    let (mut cluster, addrs) = devcluster(&dir.path().join("a"), &["--log-format", "json"], &log);
    let proxy: SocketAddr = addrs["proxy"].as_str().unwrap().parse().unwrap();
    let deadline = Instant::now() + RUN_TIMEOUT;
    loop {
        let (status, body) = get(proxy, "/readiness");
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "proxy never ready: {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    interrupt(&mut cluster);
    let text = std::fs::read_to_string(&log).unwrap();
    let mut spans = 0;
    let mut lines = 0;
    for line in text.lines() {
        let event: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
        for field in ["timestamp", "level", "target"] {
            assert!(event[field].is_string(), "no {field}: {line}");
        }
        assert!(event["fields"]["message"].is_string(), "no message: {line}");
        spans += usize::from(event["spans"].is_array());
        lines += 1;
    }
    assert!(lines >= 5, "too few lines:\n{text}");
    assert!(spans > 0, "no event carries its spans:\n{text}");
    assert!(
        text.contains("Ctrl-C stops it."),
        "the operator's messages are JSON too"
    );

    // Text, chosen by the environment; stderr is a file, so no ANSI escapes.
    let log = dir.path().join("text.log");
    let mut child = Command::new(KRAKEN)
        .args(["devcluster", "--ephemeral-ports", "--json", "--data-dir"])
        .arg(dir.path().join("b"))
        .env("KRAKEN_LOG_FORMAT", "text")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let mut cluster = ProcessGuard::adopt(child);
    interrupt(&mut cluster);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(" INFO "), "no log lines:\n{text}");
    assert!(!text.contains("\x1b["), "ANSI escapes in a file:\n{text:?}");
}

#[test]
fn version_names_the_commit_and_its_date() {
    let (code, stdout, _) = kraken(&["--version"], &[]);
    assert_eq!(code, Some(0));
    let line = stdout.trim();
    let (name, rest) = line.split_once(' ').unwrap();
    assert_eq!(name, "kraken");
    let (version, build) = rest.split_once(' ').unwrap();
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    let inner = build
        .strip_prefix('(')
        .and_then(|b| b.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{line}"));
    let (commit, date) = inner.split_once(' ').unwrap();
    assert!(
        commit == "unknown" || commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit()),
        "{line}"
    );
    assert!(
        date == "unknown" || date.len() == 10 && date.as_bytes()[4] == b'-',
        "{line}"
    );
}

#[test]
fn config_defaults_of_every_role_load_back_and_check_refuses_bad_values() {
    let dir = tempfile::tempdir().unwrap();
    for role in ["tracker", "origin", "build-index", "proxy", "agent"] {
        let (code, stdout, stderr) = kraken(&["config", "defaults", role], &[]);
        assert_eq!(code, Some(0), "{role}: {stderr}");
        let table: toml::Table = stdout.parse().unwrap_or_else(|e| panic!("{role}: {e}"));
        assert!(table.contains_key("listen"), "{role}: {stdout}");
        assert!(table.contains_key("http"), "{role}: {stdout}");
        let path = dir.path().join(format!("{role}.toml"));
        std::fs::write(&path, &stdout).unwrap();
        let (code, _, stderr) = kraken(&["config", "check", role, path.to_str().unwrap()], &[]);
        assert_eq!(code, Some(0), "{role}: the defaults do not check: {stderr}");
    }
    // A URL where host:port belongs, an origin member without a port, an unknown key, a
    // malformed environment value: each refused, naming the key and the value.
    /// A role, the environment it is checked with, the words its error must contain.
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: [Case; 4] = [
        (
            "agent",
            &[("KRAKEN_AGENT__BUILD_INDEX", r#"["http://host:15004"]"#)],
            &["build_index", "http://host:15004"],
        ),
        (
            "proxy",
            &[(
                "KRAKEN_PROXY__ORIGINS__MEMBERS",
                r#"{ static = ["origin-1"] }"#,
            )],
            &["members", "origin-1", "no port"],
        ),
        (
            "agent",
            &[("KRAKEN_AGENT__P2P__BOGUS", "1")],
            &["bogus", "KRAKEN_AGENT__P2P__BOGUS"],
        ),
        (
            "agent",
            &[("KRAKEN_AGENT__P2P__DIAL_TIMEOUT", "soon")],
            &["dial_timeout", "KRAKEN_AGENT__P2P__DIAL_TIMEOUT"],
        ),
    ];
    for (role, env, words) in cases {
        let path = dir.path().join(format!("{role}.toml"));
        let (code, _, stderr) = kraken(&["config", "check", role, path.to_str().unwrap()], env);
        assert_eq!(code, Some(1), "{env:?} was accepted");
        for word in words {
            assert!(stderr.contains(word), "{env:?}: {word} not in {stderr}");
        }
    }
    let (code, _, stderr) = kraken(&["config", "check", "agent", "/nonexistent.toml"], &[]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("/nonexistent.toml"), "{stderr}");
}

#[test]
fn environment_and_secrets_file_layer_over_the_config_of_a_running_role() {
    let dir = tempfile::tempdir().unwrap();
    let in_file = free_addr("127.0.0.1");
    let from_env = free_addr("127.0.0.1");
    // The file's build-index is malformed; the secrets file fixes it, the environment moves
    // the listener.
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{in_file}\"\ndata_dir = \"{}\"\n[build_index]\naddresses = [\"http://wrong\"]\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let secrets = dir.path().join("secrets.toml");
    std::fs::write(
        &secrets,
        "[build_index]\naddresses = [\"127.0.0.1:9\"]\n[auth]\nanonymous_reads = true\n",
    )
    .unwrap();
    let child = Command::new(KRAKEN)
        .args(["proxy", "--config", config.to_str().unwrap()])
        .env("KRAKEN_SECRETS", &secrets)
        .env("KRAKEN_PROXY__LISTEN", from_env.to_string())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut proxy = ProcessGuard::adopt(child);
    proxy.wait_listening(from_env).unwrap();
    assert!(
        TcpStream::connect(in_file).is_err(),
        "the environment did not win over the file"
    );
    // Its dependencies are down (no origin, nothing on port 9): not ready, saying why.
    let (status, body) = get(from_env, "/readiness");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("origins") && body.contains("build-index"),
        "{body}"
    );
    assert_eq!(get(from_env, "/health").0, 200);
}

#[test]
fn start_up_errors_name_the_busy_address_and_the_bad_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let free = free_addr("127.0.0.1").to_string();
    let agent_env = |listen: &str, peer: &str, data: &str| {
        vec![
            ("KRAKEN_AGENT__LISTEN", listen.to_owned()),
            ("KRAKEN_AGENT__PEER_LISTEN", peer.to_owned()),
            ("KRAKEN_AGENT__DATA_DIR", data.to_owned()),
            (
                "KRAKEN_AGENT__TRACKERS",
                r#"["http://127.0.0.1:9"]"#.to_owned(),
            ),
            ("KRAKEN_AGENT__BUILD_INDEX", r#"["127.0.0.1:9"]"#.to_owned()),
        ]
    };
    let run = |role: &str, env: &[(&str, String)]| {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (code, _, stderr) = kraken(&[role], &env);
        assert_eq!(code, Some(1), "{role} {env:?} started: {stderr}");
        stderr
    };
    // The agent's two listeners: the registry port and the peer port.
    let stderr = run("agent", &agent_env(&busy_addr, "127.0.0.1:0", data));
    assert!(
        stderr.contains(&format!("agent registry listener on {busy_addr}")),
        "{stderr}"
    );
    let stderr = run("agent", &agent_env(&free, &busy_addr, data));
    assert!(
        stderr.contains(&format!("P2P node on {busy_addr}")),
        "{stderr}"
    );
    let stderr = run(
        "origin",
        &[
            ("KRAKEN_ORIGIN__LISTEN", busy_addr.clone()),
            ("KRAKEN_ORIGIN__DATA_DIR", data.to_owned()),
        ],
    );
    assert!(
        stderr.contains(&format!("origin listener on {busy_addr}")),
        "{stderr}"
    );
    // A data directory that cannot be made (under a regular file).
    let file = dir.path().join("file");
    std::fs::write(&file, b"").unwrap();
    let bad = file.join("data");
    let bad = bad.to_str().unwrap();
    for (role, prefix) in [
        ("build-index", "KRAKEN_BUILD_INDEX__"),
        ("proxy", "KRAKEN_PROXY__"),
    ] {
        let env = [
            (format!("{prefix}LISTEN"), free.clone()),
            (format!("{prefix}DATA_DIR"), bad.to_owned()),
            (
                format!("{prefix}BUILD_INDEX__ADDRESSES"),
                r#"["127.0.0.1:9"]"#.to_owned(),
            ),
        ];
        // The build-index has no build_index key: only the proxy gets the third.
        let env: Vec<(&str, String)> = env
            .iter()
            .filter(|(k, _)| role == "proxy" || !k.ends_with("ADDRESSES"))
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        let stderr = run(role, &env);
        assert!(
            stderr.contains(&format!("data directory {bad}")),
            "{role}: {stderr}"
        );
    }
    drop(busy);
}

#[test]
fn an_agent_on_a_wildcard_peer_listener_advertises_the_given_peer_ip() {
    let dir = tempfile::tempdir().unwrap();
    let listen = free_addr("127.0.0.1");
    let log = dir.path().join("agent.log");
    let env = [
        ("KRAKEN_AGENT__LISTEN", listen.to_string()),
        ("KRAKEN_AGENT__PEER_LISTEN", "0.0.0.0:0".to_owned()),
        (
            "KRAKEN_AGENT__DATA_DIR",
            dir.path().join("data").display().to_string(),
        ),
        (
            "KRAKEN_AGENT__TRACKERS",
            r#"["http://127.0.0.1:9"]"#.to_owned(),
        ),
        ("KRAKEN_AGENT__BUILD_INDEX", r#"["127.0.0.1:9"]"#.to_owned()),
        ("KRAKEN_PEER_IP", "127.0.0.7".to_owned()),
    ];
    let child = Command::new(KRAKEN)
        .arg("agent")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env_remove("KRAKEN_LOG_FORMAT")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut agent = ProcessGuard::adopt(child);
    agent
        .wait_ready(|| {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("peers on")
        })
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let peer = text
        .lines()
        .find_map(|l| l.split("peers on ").nth(1))
        .unwrap();
    let peer: SocketAddr = peer.trim().parse().unwrap();
    assert_eq!(peer.ip().to_string(), "127.0.0.7", "{text}");
    assert_ne!(peer.port(), 0, "the bound port is advertised: {text}");
    // The agent is not ready: its tracker and build-index are down, and it says so.
    let (status, body) = get(listen, "/readiness");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("tracker") && body.contains("build-index"),
        "{body}"
    );
}

/// The build script itself, compiled and run outside any git checkout, as in a build from a
/// source tarball: it names the commit `unknown` (or what the packager says) and succeeds.
#[test]
fn the_build_script_works_outside_a_git_checkout() {
    let dir = tempfile::tempdir().unwrap();
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir(dir.path().join("src")).unwrap();
    for file in ["build.rs", "src/build_info.rs"] {
        std::fs::copy(crate_dir.join(file), dir.path().join(file)).unwrap();
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let script = dir.path().join("build-script");
    let mut compile = Command::new(rustc);
    compile
        .args(["--edition", "2024", "-o"])
        .arg(&script)
        .arg(dir.path().join("build.rs"));
    kraken_testkit::run_with_timeout(&mut compile, RUN_TIMEOUT).unwrap();
    let run = |env: &[(&str, &str)]| {
        let mut command = Command::new(&script);
        command
            .env("CARGO_MANIFEST_DIR", dir.path())
            .env("GIT_CEILING_DIRECTORIES", dir.path().parent().unwrap())
            .env_remove("KRAKEN_BUILD_COMMIT")
            .env_remove("KRAKEN_BUILD_DATE")
            .envs(env.iter().copied());
        kraken_testkit::run_with_timeout(&mut command, RUN_TIMEOUT)
            .unwrap()
            .stdout
    };
    let out = run(&[]);
    assert!(
        out.contains("cargo:rustc-env=KRAKEN_BUILD_COMMIT=unknown"),
        "{out}"
    );
    assert!(
        out.contains("cargo:rustc-env=KRAKEN_BUILD_DATE=unknown"),
        "{out}"
    );
    let out = run(&[
        ("KRAKEN_BUILD_COMMIT", "abc1234"),
        ("KRAKEN_BUILD_DATE", "2026-12-06"),
    ]);
    assert!(
        out.contains("cargo:rustc-env=KRAKEN_BUILD_COMMIT=abc1234"),
        "{out}"
    );
}
