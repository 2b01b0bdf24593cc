//! Loopback addresses for servers a test starts.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// How long [`wait_for_port`] waits.
const PORT_TIMEOUT: Duration = Duration::from_secs(10);

/// An address on `ip` (a loopback address such as `127.0.0.2`) whose port was free a moment
/// ago.
pub fn free_addr(ip: &str) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).expect("bind an ephemeral port");
    listener.local_addr().expect("local address")
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    free_addr("127.0.0.1").port()
}

/// Waits (up to 10 s) until `addr` accepts TCP connections; panics if it never does.
pub fn wait_for_port(addr: &str) {
    let deadline = Instant::now() + PORT_TIMEOUT;
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{addr} never came up");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The status code of `GET path` on `addr` over plain HTTP/1.1, each step bounded by
/// `timeout`; an error when nothing answers or the answer is no HTTP status line. For polling a
/// server's `/health` or `/readiness` without an HTTP client runtime.
pub fn http_status(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<u16> {
    use std::io::{Error, Read, Write};
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    // The status line fits in the first bytes; the rest of the response is not needed.
    let mut head = [0_u8; 64];
    let mut len = 0;
    while len < head.len() {
        let n = stream.read(&mut head[len..])?;
        if n == 0 {
            break;
        }
        len += n;
        if head[..len].contains(&b'\n') {
            break;
        }
    }
    let line = String::from_utf8_lossy(&head[..len]);
    line.strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| Error::other(format!("not an HTTP status line: {line:?}")))
}
