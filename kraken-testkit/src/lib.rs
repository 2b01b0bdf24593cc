//! Test support shared by the kraken crates' tests, each piece in one place: the external
//! servers tests start ([`Distribution`], [`MotoServer`], [`Nginx`], [`RedisServer`], [`containerd`], [`docker`]) and the guard that
//! stops any child process on drop ([`ProcessGuard`]), the [`Skopeo`] client, image, layout
//! and manifest builders ([`oci`]), free ports, deterministic pseudo-random data, test
//! certificates ([`TestPki`]), a model directory and tree comparisons ([`write_model_tree`]), an HTTP server answering as the test says ([`TestServer`]) and a
//! counting reverse proxy ([`ForwardingProxy`]), and the
//! backend conformance suite with an in-memory faulty backend ([`backend`]).
//!
//! A dev-dependency only, never published. It builds on kraken-core, kraken-p2p (the HTTP
//! server and TLS configs) and kraken-backends, never on kraken-registry or kraken-cli. A
//! crate's own unit tests cannot use the parts whose types belong to that crate (a unit test
//! build is a different copy of the crate): those tests live in the crate's `tests/`.
//!
//! Programs a test needs are gated with [`require_program`]: a missing one fails the test
//! under `CI=true` and skips it elsewhere.
#![warn(missing_docs)]

pub mod backend;
mod cluster;
pub mod containerd;
pub mod docker;
mod exposition;
mod model_tree;
mod net;
pub mod oci;
mod pki;
mod process;
mod program;
mod proxy;
mod random;
mod server;
mod servers;
mod skopeo;

/// TLS settings of the test servers, from kraken-p2p: re-exported so that the tests of a
/// crate below kraken-p2p (kraken-backends) can configure them without depending on it.
pub use kraken_p2p::tls::{ClientAuth, ClientTlsConfig, ServerTls, ServerTlsConfig};

pub use crate::cluster::{ProcessCluster, Role, RoleProcess};
pub use crate::exposition::{Exposition, Sample};
pub use crate::model_tree::{
    assert_same_tree, file_bytes, read_tree, store_data_bytes, write_model_tree,
};
pub use crate::net::{free_addr, free_port, http_status, wait_for_port};
pub use crate::pki::TestPki;
pub use crate::process::{
    CLIENT_TIMEOUT, Finished, Output, ProcessGuard, READY_TIMEOUT, command_line, run, run_to_end,
    run_with_timeout,
};
pub use crate::program::{
    other_file_system_dir, require_package, require_packages, require_program, scratch_dir,
};
pub use crate::proxy::ForwardingProxy;
pub use crate::random::{pseudo_random_bytes, write_pseudo_random_file};
pub use crate::server::TestServer;
pub use crate::servers::{Distribution, MotoServer, Nginx, RedisServer, Request, summary};
pub use crate::skopeo::Skopeo;
/// The body of a request as [`TestServer`] handlers receive it (the services' own type).
pub use kraken_p2p::http_server::RequestBody;
