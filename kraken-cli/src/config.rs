//! Loading the TOML config files of `kraken origin`, `kraken build-index`, `kraken proxy` and
//! `kraken tracker`.

use std::path::Path;

use anyhow::Context as _;
use serde::de::DeserializeOwned;

/// Reads and parses a TOML file; unknown keys are errors (the config types deny them).
pub(crate) fn load<T: DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
}
