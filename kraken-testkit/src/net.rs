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
