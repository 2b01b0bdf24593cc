//! What the end-to-end tests need to push and pull with real container clients: test images
//! written as OCI layouts ([`image`]), a CNCF Distribution registry ([`distribution`]), the
//! clients and their daemons, each started privately in a temp dir and stopped on drop
//! ([`skopeo`], [`containerd`], [`docker`], [`podman`]), and the scenarios themselves,
//! parameterised by the endpoints they push to and pull from ([`scenarios`]).
//!
//! A test file uses it with `mod support;` (which brings [`common`] along). Programs are gated with [`require`]: a missing one
//! fails the test under `CI=true` and skips it elsewhere.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different part

/// The helpers every CLI test shares (the `kraken` binary, processes killed on drop, ports),
/// so a test file needs only `mod support;`.
#[path = "../common/mod.rs"]
pub mod common;
pub mod containerd;
pub mod distribution;
pub mod docker;
pub mod image;
pub mod podman;
pub mod process;
pub mod scenarios;
pub mod skopeo;

use std::path::PathBuf;

/// The path of `program`, from Debian package `package`. When missing: panics under
/// `CI=true` ("install it with: apt-get install PACKAGE (scripts/install-test-deps does)"),
/// otherwise prints why the test is skipped and returns `None`.
pub fn require(program: &str, package: &str) -> Option<PathBuf> {
    kraken_backends::testing::require_program(program, &format!("apt-get install {package}"))
}

/// Whether every `(program, package)` is installed; see [`require`]. Reports every missing one.
pub fn require_all(programs: &[(&str, &str)]) -> bool {
    let missing = programs
        .iter()
        .filter(|(program, package)| require(program, package).is_none())
        .count();
    missing == 0
}

/// A private scratch directory under the system temp dir, with a short path (unix sockets
/// live in these: their paths must stay under 108 bytes).
pub fn scratch_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("kraken-e2e-{prefix}-"))
        .tempdir_in("/tmp")
        .expect("create a scratch dir under /tmp")
}
