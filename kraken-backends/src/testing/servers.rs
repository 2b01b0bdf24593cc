//! External servers for tests: finding the program, a free port, and a child process that is
//! killed when the test ends. Integration tests of several crates start the same servers.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// The path of `program`, searched in `PATH` and the sbin directories. When missing: panics
/// under `CI=true` (the test must not pass silently there), otherwise prints why the test is
/// skipped and returns `None`.
pub fn require_program(program: &str, install_hint: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(program);
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    let message = format!("{program} not found; install it with: {install_hint}");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{message} (scripts/install-test-deps does)");
    }
    println!("SKIPPED: {message}");
    None
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// A child process killed (and reaped) when dropped, so no server outlives its test.
#[derive(Debug)]
pub struct ServerGuard {
    name: &'static str,
    child: Child,
    log: Option<PathBuf>,
}

impl ServerGuard {
    /// Starts `command` with output to `log` and waits until `addr` accepts connections.
    pub fn start(name: &'static str, mut command: Command, addr: SocketAddr, log: &Path) -> Self {
        let out = std::fs::File::create(log).expect("create server log");
        let err = out.try_clone().expect("clone log handle");
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let mut guard = Self {
            name,
            child,
            log: Some(log.to_owned()),
        };
        guard.wait_until_listening(addr);
        guard
    }

    fn wait_until_listening(&mut self, addr: SocketAddr) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited with {status}: {}", self.name, self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{} did not listen on {addr} in time: {}",
            self.name,
            self.log_text()
        );
    }

    fn log_text(&self) -> String {
        self.log
            .as_ref()
            .and_then(|log| std::fs::read_to_string(log).ok())
            .unwrap_or_default()
    }
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
