//! Shared helpers of the integration tests: the fake HTTP server and the TLS fronts here, and
//! the external servers' helpers from `kraken_backends::testing`.
#![allow(dead_code, unused_imports, unreachable_pub)] // each test binary uses a different part

pub mod fake_http;
pub mod tls_front;

pub use kraken_backends::testing::{ServerGuard, free_port, require_program};
