//! Finding the external programs (and file systems) a test needs, and skipping the test when
//! one is missing.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// The path of `program`, searched in `PATH` and the sbin directories. When missing: panics
/// under `CI=true` (the test must not pass silently there: "install it with: INSTALL_HINT
/// (scripts/install-test-deps does)"), otherwise prints why the test is skipped and returns
/// `None`.
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

/// [`require_program`] for a `program` from Debian package `package`.
pub fn require_package(program: &str, package: &str) -> Option<PathBuf> {
    require_program(program, &format!("apt-get install {package}"))
}

/// Whether every `(program, package)` is installed; see [`require_package`]. Reports every
/// missing one, not only the first.
pub fn require_packages(programs: &[(&str, &str)]) -> bool {
    let missing = programs
        .iter()
        .filter(|(program, package)| require_package(program, package).is_none())
        .count();
    missing == 0
}

/// A fresh directory on another file system than `than`'s: under `/dev/shm`, a tmpfs on
/// Linux (CI's machines and containers have one), for tests of what crossing file systems
/// costs. When there is none: panics under `CI=true`, otherwise prints why the test is
/// skipped and returns `None`.
pub fn other_file_system_dir(than: &Path) -> Option<tempfile::TempDir> {
    let device = |path: &Path| std::fs::metadata(path).map(|m| m.dev()).ok();
    let shm = Path::new("/dev/shm");
    if device(shm).is_some_and(|shm| Some(shm) != device(than)) {
        return Some(tempfile::tempdir_in(shm).expect("create a directory under /dev/shm"));
    }
    let message = format!(
        "no file system other than {}'s: mount a tmpfs at /dev/shm",
        than.display()
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{message}");
    }
    println!("SKIPPED: {message}");
    None
}

/// A private scratch directory under `/tmp`, with a short path: unix sockets (containerd's,
/// dockerd's) live in these, and their paths must stay under 108 bytes.
pub fn scratch_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("kraken-e2e-{prefix}-"))
        .tempdir_in("/tmp")
        .expect("create a scratch dir under /tmp")
}
