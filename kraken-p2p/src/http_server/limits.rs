//! The bounds every listener puts on its clients: `[http]` in each role's configuration.

use std::time::Duration;

use kraken_core::ByteSize;
use serde::{Deserialize, Serialize};

/// What one client may cost a listener: time, header bytes and connections. `[http]` in the
/// configuration of every role (origin, tracker, build-index, proxy, agent).
///
/// A slow or silent client holds only its own connection, and only for as long as these
/// allow: a connection that sends no request head, a request body that stops arriving, or a
/// client that stops reading its response is closed.
///
/// ```toml
/// [http]
/// header_read_timeout = "10s"
/// idle_timeout = "60s"
/// body_stall_timeout = "30s"
/// write_stall_timeout = "30s"
/// tls_handshake_timeout = "10s"
/// max_header_size = "64KiB"
/// max_headers = 100
/// max_connections = 4096
/// max_connections_per_client = 256
/// access_log = "info"
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Eq, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpLimits {
    /// Time a request head (request line and headers) may take from its first byte, and a
    /// new connection to deliver its first head. Default: 10s.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Time a keep-alive connection may wait for its next request. Default: 60s.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Time a request body may send nothing while the service waits for it. Default: 30s.
    #[serde(with = "humantime_serde")]
    pub body_stall_timeout: Duration,
    /// Time a client may read nothing while a response waits to be sent to it. Default: 30s.
    #[serde(with = "humantime_serde")]
    pub write_stall_timeout: Duration,
    /// Time a client has to complete the TLS handshake. Default: 10s.
    #[serde(with = "humantime_serde")]
    pub tls_handshake_timeout: Duration,
    /// Largest request head; a larger one is answered `431`. Default: 64KiB.
    pub max_header_size: ByteSize,
    /// Most header fields in one request; more are answered `431`. Default: 100.
    pub max_headers: usize,
    /// Most connections served at once; further clients wait in the kernel's accept queue
    /// until one closes. Default: 4096.
    pub max_connections: usize,
    /// Most connections served at once from one IP address; further ones are closed at once
    /// (plain HTTP: after a `503`). `0`: no per-client limit. Default: 256.
    pub max_connections_per_client: usize,
    /// The level of the access log: one line per answered request (method, route, status,
    /// body bytes, duration, client) under the target `kraken_p2p::access`, at `info`, at
    /// `debug`, or `off`. Default: info.
    pub access_log: AccessLog,
}

/// The level of the access log ([`HttpLimits::access_log`]).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, Deserialize, Eq, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLog {
    /// One `info` event per request.
    #[default]
    Info,
    /// One `debug` event per request.
    Debug,
    /// No access log.
    Off,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_stall_timeout: Duration::from_secs(30),
            write_stall_timeout: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(10),
            max_header_size: ByteSize(64 << 10),
            max_headers: 100,
            max_connections: 4096,
            max_connections_per_client: 256,
            access_log: AccessLog::Info,
        }
    }
}

impl HttpLimits {
    /// Checks the values that cannot work: zero timeouts or connection limits, and a header
    /// size below hyper's smallest read buffer (8KiB).
    pub fn validate(&self) -> Result<(), String> {
        let timeouts = [
            ("header_read_timeout", self.header_read_timeout),
            ("idle_timeout", self.idle_timeout),
            ("body_stall_timeout", self.body_stall_timeout),
            ("write_stall_timeout", self.write_stall_timeout),
            ("tls_handshake_timeout", self.tls_handshake_timeout),
        ];
        if let Some((name, _)) = timeouts.iter().find(|(_, t)| t.is_zero()) {
            return Err(format!("http.{name} must be longer than zero"));
        }
        if self.max_header_size.bytes() < 8 << 10 {
            return Err("http.max_header_size must be at least 8KiB".into());
        }
        if self.max_headers == 0 || self.max_connections == 0 {
            return Err("http.max_headers and http.max_connections must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_table_is_the_default_and_bad_values_are_refused() {
        let doc = include_str!("limits.rs");
        let start = doc.find("/// [http]\n").expect("the example") + "/// [http]\n".len();
        let table: String = doc[start..]
            .lines()
            .take_while(|l| *l != "/// ```")
            .map(|l| format!("{}\n", l.trim_start_matches("/// ")))
            .collect();
        let parsed: HttpLimits = toml::from_str(&table).unwrap();
        assert_eq!(parsed, HttpLimits::default());
        parsed.validate().unwrap();

        assert!(toml::from_str::<HttpLimits>("header_timeout = \"1s\"").is_err());
        let zero = HttpLimits {
            idle_timeout: Duration::ZERO,
            ..HttpLimits::default()
        };
        assert!(zero.validate().is_err());
        let small = HttpLimits {
            max_header_size: ByteSize(4096),
            ..HttpLimits::default()
        };
        assert!(small.validate().is_err());
    }
}
