//! A Redis server (`redis-server`, Debian package `redis-server`) on a loopback port, for the
//! tracker's shared peer store.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::{ProcessGuard, free_port, require_package};

/// A running `redis-server` on 127.0.0.1 without persistence; stopped on drop. A test can
/// stop it and start it again on the same port (an outage).
#[derive(Debug)]
pub struct RedisServer {
    program: PathBuf,
    addr: SocketAddr,
    log: PathBuf,
    server: ProcessGuard,
}

impl RedisServer {
    /// Starts `redis-server`, logging to `log`. `None` when the program is missing outside
    /// CI (see [`require_package`]).
    pub fn start(log: &Path) -> Option<Self> {
        let program = require_package("redis-server", "redis-server")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let server = spawn(&program, addr, log);
        Some(Self {
            program,
            addr,
            log: log.to_owned(),
            server,
        })
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Stops the server (its data goes with it: nothing is persisted).
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.server.stop();
        self.server = spawn(&self.program, self.addr, &self.log);
    }
}

fn spawn(program: &Path, addr: SocketAddr, log: &Path) -> ProcessGuard {
    let port = addr.port().to_string();
    let mut server = ProcessGuard::spawn(
        "redis-server",
        program,
        [
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ],
        log,
    )
    .expect("start redis-server");
    server.wait_listening(addr).expect("redis-server listens");
    server
}
