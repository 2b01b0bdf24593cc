//! `kraken tracker`, `seed` and `fetch` as real processes on loopback.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kraken_core::{BlobStore, MetaInfo, PieceLengthPolicy};
use kraken_testkit::TestPki;

mod support;

use kraken_testkit::{ProcessGuard, free_addr, wait_for_port, write_pseudo_random_file};
use support::KRAKEN;

/// The URL of a tracker that is down: a port nobody listens on any more.
fn dead_tracker() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

/// A file holding the test trackers' publish token, which seeders present.
fn token_file() -> &'static str {
    static FILE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let path = dir.join("publish-token");
        std::fs::write(&path, "kraken-cli-test-token\n").unwrap();
        path.to_str().unwrap().to_owned()
    })
}

fn start_tracker() -> (ProcessGuard, String) {
    let addr = format!("127.0.0.1:{}", free_addr("127.0.0.1").port());
    let child = Command::new(KRAKEN)
        .args(["tracker", "--listen", &addr, "--announce-interval", "500ms"])
        .args(["--publish-token-file", token_file()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let tracker = ProcessGuard::adopt(child);
    wait_for_port(&addr);
    (tracker, format!("http://{addr}"))
}

/// Starts a seeder and returns it once it printed the digest.
fn start_seeder(file: &Path, tracker: &str, store: &Path, rate: &str) -> (ProcessGuard, String) {
    start_seeder_with(file, tracker, store, rate, &[])
}

/// [`start_seeder`] with `extra` arguments.
fn start_seeder_with(
    file: &Path,
    tracker: &str,
    store: &Path,
    rate: &str,
    extra: &[&str],
) -> (ProcessGuard, String) {
    let listen = format!("127.0.0.2:{}", free_addr("127.0.0.2").port());
    let mut command = Command::new(KRAKEN);
    command
        .args([
            "seed",
            file.to_str().unwrap(),
            "--tracker",
            tracker,
            "--listen",
            &listen,
        ])
        .args([
            "--rate",
            rate,
            "--announce-interval",
            "500ms",
            "--store",
            store.to_str().unwrap(),
            "--publish-token-file",
            token_file(),
        ])
        .args(extra);
    spawn_seeder(command)
}

/// Spawns a `kraken seed` command and returns it once it printed the digest.
fn spawn_seeder(mut command: Command) -> (ProcessGuard, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (ProcessGuard::adopt(child), line.trim().to_owned())
}

fn fetch_command(digest: &str, tracker: &str, host: u8, store: &Path, out: &Path) -> Command {
    fetch_command_with_timeout(digest, tracker, host, store, out, "10s")
}

fn fetch_command_with_timeout(
    digest: &str,
    tracker: &str,
    host: u8,
    store: &Path,
    out: &Path,
    metainfo_timeout: &str,
) -> Command {
    let ip = format!("127.0.0.{host}");
    let listen = format!("{ip}:{}", free_addr(&ip).port());
    let mut command = Command::new(KRAKEN);
    command
        .args([
            "fetch",
            digest,
            "--tracker",
            tracker,
            "--listen",
            &listen,
            "--json",
            "--quiet",
        ])
        .args([
            "--announce-interval",
            "500ms",
            "--metainfo-timeout",
            metainfo_timeout,
        ])
        .args([
            "--store",
            store.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
    command
}

#[test]
fn seed_and_fetch_between_processes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("blob");
    write_pseudo_random_file(&file, 3 << 20 | 777, 1);
    let (_tracker, url) = start_tracker();
    let (_seeder, digest) = start_seeder(&file, &url, &dir.path().join("seeder"), "100MB");
    let expected = std::fs::read(&file).unwrap();
    assert_eq!(
        digest,
        kraken_core::Digest::sha256_of(&expected).to_string()
    );
    let fetchers: Vec<(Child, PathBuf)> = (0..2)
        .map(|i| {
            let out = dir.path().join(format!("out{i}"));
            let child = fetch_command(
                &digest,
                &url,
                10 + i,
                &dir.path().join(format!("f{i}")),
                &out,
            )
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
            (child, out)
        })
        .collect();
    for (child, out) in fetchers {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success());
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(report["bytes"], expected.len());
        assert_eq!(std::fs::read(out).unwrap(), expected);
    }
}

#[test]
fn nodes_listing_several_trackers_in_any_order_meet_and_survive_one_being_down() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("blob");
    write_pseudo_random_file(&file, 1 << 20, 1);
    let (_first, first) = start_tracker();
    let (_second, second) = start_tracker();
    let dead = dead_tracker();
    let seeder_list = format!("{first},{second},{dead}");
    let fetcher_list = format!("{dead},{second},{first}");
    let (_seeder, digest) = start_seeder(&file, &seeder_list, &dir.path().join("seeder"), "100MB");
    let out = dir.path().join("out");
    let output = fetch_command(&digest, &fetcher_list, 30, &dir.path().join("f"), &out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(std::fs::read(out).unwrap(), std::fs::read(&file).unwrap());
}

#[test]
fn fetch_fails_clearly_for_an_unknown_blob() {
    let dir = tempfile::tempdir().unwrap();
    let (_tracker, url) = start_tracker();
    let digest = kraken_core::Digest::sha256_of(b"nobody has this").to_string();
    let out = dir.path().join("out");
    let output = fetch_command_with_timeout(&digest, &url, 20, &dir.path().join("s"), &out, "1s")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "not found: {stderr}");
    assert!(stderr.contains("no metainfo"), "{stderr}");
    assert!(!out.exists());
}

/// On a terminal (a pseudo-terminal from `script`), `kraken fetch` draws a progress bar with
/// bytes, rate, ETA and peers.
#[test]
fn fetch_on_a_terminal_draws_a_progress_bar() {
    let Some(script) = kraken_testkit::require_package("script", "bsdutils") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("blob");
    write_pseudo_random_file(&file, 4 << 20, 5);
    let (_tracker, url) = start_tracker();
    // Slow enough (4 MiB at 2 MB/s) that the bar is drawn several times.
    let (_seeder, digest) = start_seeder(&file, &url, &dir.path().join("seeder"), "2MB");
    let out = dir.path().join("out");
    let line = format!(
        "{KRAKEN} fetch {digest} --tracker {url} --listen 127.0.0.24:0 --store {} --out {}",
        dir.path().join("f").display(),
        out.display()
    );
    let typescript = dir.path().join("typescript");
    let mut command = Command::new(script);
    command
        .args(["-qec", &line])
        .arg(&typescript)
        .env("TERM", "xterm");
    kraken_testkit::run_with_timeout(&mut command, Duration::from_secs(60)).unwrap();
    let screen = std::fs::read_to_string(&typescript).unwrap();
    assert!(
        screen.contains("MiB/4.00 MiB"),
        "no byte counts: {screen:?}"
    );
    assert!(screen.contains("B/s ETA "), "no rate or ETA: {screen:?}");
    assert!(screen.contains("1 peer(s)"), "no peer count: {screen:?}");
    assert!(screen.contains("fetched sha256:"), "no summary: {screen:?}");
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&file).unwrap());
}

#[test]
fn fetch_from_an_unreachable_tracker_exits_with_the_unreachable_status() {
    let dir = tempfile::tempdir().unwrap();
    let dead = dead_tracker();
    let digest = kraken_core::Digest::sha256_of(b"anything").to_string();
    let out = dir.path().join("out");
    let output = fetch_command_with_timeout(&digest, &dead, 21, &dir.path().join("s"), &out, "1s")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(5), "unreachable: {stderr}");
    assert!(stderr.contains(&dead), "{stderr}");
}

#[test]
fn fetch_off_a_terminal_prints_one_summary_line_and_ctrl_c_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("blob");
    write_pseudo_random_file(&file, 2 << 20, 3);
    let (_tracker, url) = start_tracker();
    let (_seeder, digest) = start_seeder(&file, &url, &dir.path().join("seeder"), "100MB");
    let out = dir.path().join("out");
    let output = Command::new(KRAKEN)
        .args([
            "fetch",
            &digest,
            "--tracker",
            &url,
            "--listen",
            "127.0.0.22:0",
        ])
        .args(["--store", dir.path().join("f").to_str().unwrap()])
        .args(["--out", out.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // stderr is a pipe: no bar, no per-second lines, one summary.
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.contains(" INFO ")).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    let summary = lines[0];
    assert!(
        summary.starts_with(&format!("fetched {digest} (2097152 bytes)")),
        "{summary}"
    );
    assert!(summary.contains("MiB/s from 1 peer(s)"), "{summary}");
    assert!(
        !stderr.contains('\r') && !stderr.contains("\x1b["),
        "{stderr:?}"
    );

    // Interrupted while waiting for metainfo nobody publishes: status 130.
    let listen = free_addr("127.0.0.23");
    let unknown = kraken_core::Digest::sha256_of(b"never published").to_string();
    let child = Command::new(KRAKEN)
        .args([
            "fetch",
            &unknown,
            "--tracker",
            &url,
            "--metainfo-timeout",
            "10m",
        ])
        .args(["--listen", &listen.to_string()])
        .args(["--store", dir.path().join("g").to_str().unwrap()])
        .args(["--out", dir.path().join("never").to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut fetch = ProcessGuard::adopt(child);
    // Its peer listener is up once the node started, after the signals are caught.
    fetch.wait_listening(listen).unwrap();
    let status = fetch
        .signal_and_wait("INT", Duration::from_secs(30))
        .unwrap();
    assert_eq!(status.code(), Some(130));
}

#[test]
fn a_killed_fetch_resumes_without_refetching_verified_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("blob");
    write_pseudo_random_file(&file, 24 << 20, 1);
    let (_tracker, url) = start_tracker();
    // Slow enough that the fetch is surely killed half-way.
    let (_seeder, digest) = start_seeder(&file, &url, &dir.path().join("seeder"), "6MB");
    let store = dir.path().join("fetcher");
    let out = dir.path().join("out");
    let meta = MetaInfo::from_file(&file, &PieceLengthPolicy::default()).unwrap();
    let mut first = ProcessGuard::adopt(
        fetch_command(&digest, &url, 30, &store, &out)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Wait until some pieces are verified on disk, then kill -9.
    let deadline = Instant::now() + Duration::from_secs(30);
    let bitfield_dir = store.join("download");
    loop {
        assert!(Instant::now() < deadline, "the fetch made no progress");
        let have = std::fs::read_dir(&bitfield_dir).is_ok() && pieces_on_disk(&store, &meta) >= 4;
        if have {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let child = first.child().expect("running");
    child.kill().unwrap();
    child.wait().unwrap();

    let have = pieces_on_disk(&store, &meta);
    assert!(
        have < meta.piece_count(),
        "the fetch finished before it was killed"
    );
    let missing_bytes: u64 = meta
        .pieces()
        .filter(|&i| !verified_bitfield(&store, &meta).get(i.get()))
        .map(|i| meta.piece_len(i))
        .sum();

    let output = fetch_command(&digest, &url, 30, &store, &out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        report["received_total"], missing_bytes,
        "a verified piece was fetched again"
    );
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&file).unwrap());
}

/// The pieces a killed fetch left verified in its store (re-hashed on open, like a resume).
fn verified_bitfield(store: &Path, meta: &MetaInfo) -> kraken_core::Bitfield {
    let store = BlobStore::open(store).unwrap();
    store.begin_download(meta).unwrap().bitfield()
}

fn pieces_on_disk(store: &Path, meta: &MetaInfo) -> u32 {
    // Opening the store while the fetch runs is safe: it only reads the bitfield here.
    let bitfield = store
        .join("download/sha256")
        .join(&meta.digest().hex()[..2])
        .join(meta.digest().hex())
        .join("bitfield");
    std::fs::read(bitfield)
        .ok()
        .and_then(|bytes| kraken_core::Bitfield::from_bytes(meta.piece_count(), &bytes).ok())
        .map_or(0, |b| b.count_ones())
}

#[test]
fn seed_and_fetch_through_a_tracker_that_demands_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path().join("pki"));
    let path = |name: &str| pki.path(name).to_str().unwrap().to_owned();
    let addr = format!("127.0.0.1:{}", free_addr("127.0.0.1").port());
    let config = dir.path().join("tracker.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{addr}\"\nannounce_interval = \"500ms\"\n\n[tls]\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\nclient_auth = \"writes\"\n",
            path("server.pem"),
            path("server.key"),
            path("ca.pem"),
        ),
    )
    .unwrap();
    let _tracker = ProcessGuard::adopt(
        Command::new(KRAKEN)
            .args(["tracker", "--config", config.to_str().unwrap()])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(&addr);
    let url = format!("https://{addr}");
    let certified = [
        "--tls-ca".to_owned(),
        path("ca.pem"),
        "--tls-cert".to_owned(),
        path("client.pem"),
        "--tls-key".to_owned(),
        path("client.key"),
    ];
    let certified: Vec<&str> = certified.iter().map(String::as_str).collect();

    let file = dir.path().join("blob");
    write_pseudo_random_file(&file, 1 << 20, 1);
    let (_seeder, digest) =
        start_seeder_with(&file, &url, &dir.path().join("seeder"), "100MB", &certified);
    assert!(
        digest.starts_with("sha256:"),
        "the seeder failed: {digest:?}"
    );

    let out = dir.path().join("out");
    let fetched = fetch_command(&digest, &url, 10, &dir.path().join("f"), &out)
        .args(&certified)
        .output()
        .unwrap();
    assert!(
        fetched.status.success(),
        "{}",
        String::from_utf8_lossy(&fetched.stderr)
    );
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&file).unwrap());

    // Without a certificate the fetcher may read metainfo but not announce (a POST): the
    // tracker's 403 fails the download at once.
    let anonymous = fetch_command(
        &digest,
        &url,
        11,
        &dir.path().join("g"),
        &dir.path().join("out2"),
    )
    .args(["--tls-ca", &path("ca.pem")])
    .output()
    .unwrap();
    assert!(!anonymous.status.success());
    let stderr = String::from_utf8_lossy(&anonymous.stderr);
    assert!(stderr.contains("TrackerRefused"), "{stderr}");
}

/// What a new user does with a model directory: `kraken seed DIR` prints one digest, and
/// three `kraken fetch DIGEST --out DIR` recreate the tree byte for byte. Neither side keeps
/// a copy of the files in its store.
#[test]
fn seed_a_directory_and_fetch_it_into_three_directories() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    kraken_testkit::write_model_tree(&model, 2 << 20);
    let (_tracker, url) = start_tracker();
    let seeder_store = dir.path().join("seeder");
    let (_seeder, digest) = start_seeder(&model, &url, &seeder_store, "100MB");
    assert!(
        digest.starts_with("sha256:"),
        "the seeder failed: {digest:?}"
    );
    let fetchers: Vec<(Child, PathBuf, PathBuf)> = (0..3)
        .map(|i| {
            let out = dir.path().join(format!("out{i}"));
            let store = dir.path().join(format!("f{i}"));
            let child = fetch_command(&digest, &url, 10 + i, &store, &out)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (child, out, store)
        })
        .collect();
    let tree = kraken_testkit::read_tree(&model);
    let total: u64 = tree.values().map(|(bytes, _)| bytes.len() as u64).sum();
    let listing_len = kraken_testkit::store_data_bytes(&seeder_store);
    assert!(listing_len > 0 && listing_len < 4096, "{listing_len}");
    for (child, out, store) in fetchers {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(report["bytes"], total);
        kraken_testkit::assert_same_tree(&model, &out);
        assert_eq!(kraken_testkit::store_data_bytes(&store), listing_len);
    }
    assert_eq!(kraken_testkit::store_data_bytes(&seeder_store), listing_len);
}

/// `kraken fetch --out` without `--store`, as a new user runs it: the blob is downloaded
/// beside `--out` and renamed into place, so the process writes its bytes once, and nothing
/// stays behind — neither beside `--out` nor under the temporary directory. A second fetch
/// to the same place works too, and a fetch into `/dev/null` leaves no copy in the store.
#[test]
fn fetch_without_a_store_writes_the_blob_once_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("blob");
    let length: usize = 12 << 20;
    write_pseudo_random_file(&file, length, 7);
    let length = length as u64;
    let (_tracker, url) = start_tracker();
    let (_seeder, digest) = start_seeder(&file, &url, &dir.path().join("seeder"), "200MB");
    let tmp = dir.path().join("tmp");
    let outs = dir.path().join("outs");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::create_dir_all(&outs).unwrap();
    let out = outs.join("blob.bin");
    let fetch = |out: &Path, host: u8| {
        let listen = format!(
            "127.0.0.{host}:{}",
            free_addr(&format!("127.0.0.{host}")).port()
        );
        let output = kraken_testkit::run(
            Command::new(KRAKEN)
                .args(["fetch", &digest, "--tracker", &url, "--listen", &listen])
                .args(["--json", "--quiet", "--announce-interval", "500ms"])
                .args(["--metainfo-timeout", "10s", "--out"])
                .arg(out)
                .env("TMPDIR", &tmp),
        )
        .unwrap();
        serde_json::from_str::<serde_json::Value>(&output.stdout).unwrap()
    };
    let expected = std::fs::read(&file).unwrap();
    for round in 0..2 {
        let report = fetch(&out, 40 + round);
        assert_eq!(std::fs::read(&out).unwrap(), expected, "round {round}");
        let names: Vec<_> = std::fs::read_dir(&outs)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["blob.bin"], "left beside --out in round {round}");
        let left = kraken_testkit::file_bytes(&tmp);
        assert!(
            left < 64 << 10,
            "{left} bytes left in TMPDIR in round {round}"
        );
        // Linux counts the pages a process dirties; a file system that does not (tmpfs)
        // reports 0, and then this check says nothing.
        if let Some(written) = report["write_bytes"].as_u64() {
            assert!(
                written < length + (length / 4),
                "{written} bytes written for a blob of {length} in round {round}"
            );
        }
    }
    let report = fetch(Path::new("/dev/null"), 42);
    assert_eq!(report["bytes"], length);
    let left = kraken_testkit::file_bytes(&tmp);
    assert!(
        left < 64 << 10,
        "{left} bytes left in TMPDIR after a fetch to /dev/null"
    );
}

/// The per-address stores under the temporary directory are swept by every start of
/// another: a partial download idle for over a day goes, and with it the empty store.
#[test]
fn a_default_store_start_sweeps_other_idle_stores() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    let stale = tmp.join("kraken").join("127.0.0.99_4000");
    let file = dir.path().join("blob");
    write_pseudo_random_file(&file, 1 << 20, 3);
    let meta = MetaInfo::from_file(&file, &PieceLengthPolicy::default()).unwrap();
    {
        let store = BlobStore::open(&stale).unwrap();
        store.begin_download(&meta).unwrap();
    }
    let data = stale
        .join("download/sha256")
        .join(&meta.digest().hex()[..2])
        .join(meta.digest().hex())
        .join("data");
    let two_days_ago = std::time::SystemTime::now() - Duration::from_secs(48 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&data)
        .unwrap()
        .set_modified(two_days_ago)
        .unwrap();
    assert!(kraken_testkit::file_bytes(&stale) >= 1 << 20);
    // A seeder without --store opens its own store there, sweeping the others.
    let (_tracker, url) = start_tracker();
    let listen = format!("127.0.0.2:{}", free_addr("127.0.0.2").port());
    let mut command = Command::new(KRAKEN);
    command
        .arg("seed")
        .arg(&file)
        .args(["--tracker", &url, "--listen", &listen])
        .args(["--publish-token-file", token_file()])
        .env("TMPDIR", &tmp);
    let (_seeder, digest) = spawn_seeder(command);
    assert_eq!(digest, meta.digest().to_string());
    assert!(!stale.exists(), "the idle store was not swept");
    // The seeder's own store holds metainfo only: the file is seeded in place.
    assert!(kraken_testkit::file_bytes(&tmp) < 64 << 10);
}
