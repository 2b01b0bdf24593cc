//! Helpers shared by the CLI tests: the binary, free ports, processes killed on drop.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different part

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const KRAKEN: &str = env!("CARGO_BIN_EXE_kraken");

/// Kills the process when dropped, so a failing test leaves nothing running.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port(host: &str) -> u16 {
    TcpListener::bind((host, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_for_port(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{addr} never came up");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `kraken ROLE --config FILE` with `config` written to `dir/ROLE.toml`, and waits until
/// it listens on `listen`.
pub fn start_role(role: &str, config: &str, dir: &Path, listen: &str) -> Process {
    let path = dir.join(format!("{role}.toml"));
    std::fs::write(&path, config).unwrap();
    let child = Command::new(KRAKEN)
        .args([role, "--config", path.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(listen);
    Process(child)
}
