//! The example configs under `deploy/config/` (the ones `deploy/compose.yaml` and the
//! container-cluster test run) parse with each role's own loader and pass its checks, so a key
//! renamed or removed in a config type fails here rather than in a user's deployment.

use std::path::{Path, PathBuf};

use crate::config::{Role, Sources};

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config")
}

/// The role a file is for: its name up to an instance suffix (`origin-1.toml` → `origin`).
fn role_of(path: &Path) -> String {
    let stem = path.file_stem().unwrap().to_str().unwrap();
    match stem.rsplit_once('-') {
        Some((role, instance)) if instance.parse::<u32>().is_ok() => role.to_owned(),
        _ => stem.to_owned(),
    }
}

/// Loads `path` as `role`'s config the way `kraken config check` does, validation included.
fn check(role: &str, path: &Path) -> anyhow::Result<()> {
    let role = <Role as clap::ValueEnum>::from_str(role, true)
        .map_err(|e| anyhow::anyhow!("no role named {role:?}: {e}"))?;
    let sources = Sources {
        config: Some(path.to_owned()),
        secrets: None,
    };
    crate::config::command::check(role, &sources)
}

#[test]
fn every_example_config_loads_with_its_roles_loader() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(config_dir())
        .expect("deploy/config exists")
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files
            .iter()
            .all(|f| f.extension().is_some_and(|e| e == "toml")),
        "only TOML configs belong in deploy/config: {files:?}"
    );
    let mut roles: Vec<String> = Vec::new();
    for file in &files {
        let role = role_of(file);
        if let Err(e) = check(&role, file) {
            panic!("{}: {e:#}", file.display());
        }
        roles.push(role);
    }
    roles.dedup();
    assert_eq!(
        roles,
        ["agent", "build-index", "origin", "proxy", "tracker"],
        "one example per role"
    );
}

/// The check can fail: a key the loader does not know is refused, as a renamed key would be.
#[test]
fn a_renamed_key_fails_the_check() {
    let dir = tempfile::tempdir().unwrap();
    for file in [
        "origin-0.toml",
        "agent-0.toml",
        "proxy.toml",
        "build-index.toml",
        "tracker.toml",
    ] {
        let text = std::fs::read_to_string(config_dir().join(file)).unwrap();
        let renamed = text.replacen("\nlisten = ", "\nlisten_address = ", 1);
        assert_ne!(renamed, text, "{file} sets `listen`");
        let path = dir.path().join(file);
        std::fs::write(&path, renamed).unwrap();
        let error = check(&role_of(&path), &path).expect_err(file);
        assert!(
            format!("{error:#}").contains("listen_address"),
            "{file}: {error:#}"
        );
    }
}

/// Every example is one that `deploy/compose.yaml` mounts, and every config it mounts is here.
#[test]
fn the_compose_cluster_mounts_every_example_config() {
    let compose = std::fs::read_to_string(config_dir().join("../compose.yaml")).unwrap();
    let mut mounted: Vec<&str> = compose
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- ./config/"))
        .map(|mount| mount.split(':').next().unwrap())
        .collect();
    mounted.sort_unstable();
    let mut examples: Vec<String> = std::fs::read_dir(config_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    examples.sort();
    assert_eq!(mounted, examples);
}
