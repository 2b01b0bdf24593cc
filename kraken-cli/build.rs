//! Stamps the binary with the commit and date it was built from, for `kraken --version`.

include!("src/build_info.rs");

fn main() {
    let dir = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    // A build from a tarball (no `.git`) may still be told its commit, by a packager or an
    // image build that knows it.
    println!("cargo:rerun-if-env-changed=KRAKEN_BUILD_COMMIT");
    println!("cargo:rerun-if-env-changed=KRAKEN_BUILD_DATE");
    let mut info = describe(&dir);
    if let Ok(commit) = std::env::var("KRAKEN_BUILD_COMMIT") {
        info.commit = commit;
    }
    if let Ok(date) = std::env::var("KRAKEN_BUILD_DATE") {
        info.date = date;
    }
    // Rebuild when HEAD moves: HEAD itself (a checkout) and the refs (a commit on the branch).
    for file in &info.watch {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    println!("cargo:rustc-env=KRAKEN_BUILD_COMMIT={}", info.commit);
    println!("cargo:rustc-env=KRAKEN_BUILD_DATE={}", info.date);
}
