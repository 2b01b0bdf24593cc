//! Loading the settings of every server role, the same way for all: the TOML config file,
//! then a secrets file merged over it, then `KRAKEN_<ROLE>__<PATH>` environment variables,
//! deserialised once into the role's config type (unknown keys are errors). See
//! docs/configuration.md.

pub(crate) mod command;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A server role, as `kraken config` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Role {
    /// `kraken tracker`.
    Tracker,
    /// `kraken origin`.
    Origin,
    /// `kraken build-index`.
    BuildIndex,
    /// `kraken proxy`.
    Proxy,
    /// `kraken agent`.
    Agent,
}

impl Role {
    /// The prefix of the role's environment overrides, `KRAKEN_BUILD_INDEX__` say.
    pub(crate) fn env_prefix(self) -> &'static str {
        match self {
            Self::Tracker => "KRAKEN_TRACKER__",
            Self::Origin => "KRAKEN_ORIGIN__",
            Self::BuildIndex => "KRAKEN_BUILD_INDEX__",
            Self::Proxy => "KRAKEN_PROXY__",
            Self::Agent => "KRAKEN_AGENT__",
        }
    }
}

/// Where a server role's settings come from, lowest precedence first: `--config`, then
/// `--secrets`, then the environment.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Sources {
    /// The TOML config file (see `docs/<role>.md`, and `kraken config defaults <role>` for
    /// every key). Optional when the environment sets the required keys.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// A TOML file merged over the config file, key by key (tables merge, other values
    /// replace): passwords, tokens and keys kept apart from the rest, in a Kubernetes
    /// Secret say.
    #[arg(long, value_name = "FILE", env = "KRAKEN_SECRETS")]
    pub(crate) secrets: Option<PathBuf>,
}

/// Loads `role`'s settings from `sources` and this process's environment.
pub(crate) fn load<T: DeserializeOwned + Serialize>(
    role: Role,
    sources: &Sources,
    defaults: &T,
) -> anyhow::Result<T> {
    load_from(
        role,
        sources,
        defaults,
        toml::Table::new(),
        std::env::vars_os(),
    )
}

/// As [`load`], over `base` (what the command line said, under the file) and `env`.
pub(crate) fn load_from<T: DeserializeOwned + Serialize>(
    role: Role,
    sources: &Sources,
    defaults: &T,
    base: toml::Table,
    env: impl IntoIterator<Item = (OsString, OsString)>,
) -> anyhow::Result<T> {
    let mut doc = base;
    let mut origin = Vec::new();
    if let Some(path) = &sources.config {
        merge(&mut doc, read_table(path)?);
        origin.push(format!("config file {}", path.display()));
    }
    if let Some(path) = &sources.secrets {
        merge(&mut doc, read_table(path)?);
        origin.push(format!("secrets file {}", path.display()));
    }
    // Types of the keys, from the defaults: a bare value for a string key stays a string.
    let shape = toml::Table::try_from(defaults).context("the built-in defaults")?;
    let mut overrides = Vec::new();
    for (name, value) in env {
        let Some(name) = name.to_str() else { continue };
        let Some(path) = name.strip_prefix(role.env_prefix()) else {
            continue;
        };
        let Some(value) = value.to_str() else {
            bail!("environment variable {name} is not UTF-8");
        };
        overrides.push((name.to_owned(), path.to_owned(), value.to_owned()));
    }
    overrides.sort();
    for (name, path, value) in &overrides {
        apply_override(&mut doc, &shape, path, value)
            .with_context(|| format!("environment variable {name}"))?;
    }
    if !overrides.is_empty() {
        let names: Vec<&str> = overrides.iter().map(|(n, _, _)| n.as_str()).collect();
        origin.push(format!("environment ({})", names.join(", ")));
    }
    let from = if origin.is_empty() {
        "the defaults (no --config, no KRAKEN_ environment)".to_owned()
    } else {
        origin.join(" + ")
    };
    // Through text, so that serde's errors are the TOML parser's (key and value named).
    let text = toml::to_string(&doc).context("re-encoding the merged settings")?;
    toml::from_str(&text).with_context(|| format!("settings from {from}"))
}

/// A TOML file as a table; errors name the file.
fn read_table(path: &Path) -> anyhow::Result<toml::Table> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    text.parse::<toml::Table>()
        .with_context(|| format!("config file {}", path.display()))
}

/// Merges `over` into `into`: tables key by key, anything else replaced.
fn merge(into: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (into.get_mut(&key), value) {
            (Some(toml::Value::Table(existing)), toml::Value::Table(table)) => {
                merge(existing, table);
            }
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

/// Sets the key at `path` (`P2P__INGRESS_RATE`: segments split on `__`, lower-cased; a
/// number indexes an array) to `raw`, read as a TOML value (`8080`, `true`, `["a", "b"]`,
/// `{ dns = "origins:15002" }`) unless the key is a string by default or `raw` is not TOML,
/// in which case it is the string itself (`3s`, `0.0.0.0:16000`, `/var/lib/kraken`).
fn apply_override(
    doc: &mut toml::Table,
    shape: &toml::Table,
    path: &str,
    raw: &str,
) -> anyhow::Result<()> {
    let segments: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
    if segments.iter().any(String::is_empty) {
        bail!("empty key segment in {path:?} (segments are separated by `__`)");
    }
    let string_key = matches!(lookup(shape, &segments), Some(toml::Value::String(_)));
    let value = if string_key {
        toml::Value::String(raw.to_owned())
    } else {
        parse_value(raw).unwrap_or_else(|| toml::Value::String(raw.to_owned()))
    };
    let (last, parents) = segments.split_last().expect("at least one segment");
    let mut here = Slot::Table(doc);
    for (i, segment) in parents.iter().enumerate() {
        here = here.child(segment, &segments[i + 1])?;
    }
    here.set(last, value)
}

/// `raw` as a TOML value, if it is one.
fn parse_value(raw: &str) -> Option<toml::Value> {
    let mut table = format!("v = {raw}").parse::<toml::Table>().ok()?;
    table.remove("v")
}

/// The default value at `segments`, if the defaults have one.
fn lookup<'a>(table: &'a toml::Table, segments: &[String]) -> Option<&'a toml::Value> {
    let (first, rest) = segments.split_first()?;
    let mut value = table.get(first)?;
    for segment in rest {
        value = match value {
            toml::Value::Table(t) => t.get(segment)?,
            toml::Value::Array(a) => a.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(value)
}

/// A place in the document being overridden: a table, or an array indexed by number.
enum Slot<'a> {
    Table(&'a mut toml::Table),
    Array(&'a mut Vec<toml::Value>),
}

impl<'a> Slot<'a> {
    /// The table or array at `segment`, created when missing: an array when the `next`
    /// segment is an index, else a table.
    fn child(self, segment: &str, next: &str) -> anyhow::Result<Self> {
        let empty = || {
            if next.parse::<usize>().is_ok() {
                toml::Value::Array(Vec::new())
            } else {
                toml::Value::Table(toml::Table::new())
            }
        };
        let value = match self {
            Slot::Table(table) => table.entry(segment.to_owned()).or_insert_with(empty),
            Slot::Array(array) => {
                let index = index(segment, array.len())?;
                if index == array.len() {
                    array.push(empty());
                }
                &mut array[index]
            }
        };
        match value {
            toml::Value::Table(table) => Ok(Slot::Table(table)),
            toml::Value::Array(array) => Ok(Slot::Array(array)),
            other => bail!("`{segment}` is a {}, not a table", other.type_str()),
        }
    }

    fn set(self, segment: &str, value: toml::Value) -> anyhow::Result<()> {
        match self {
            Slot::Table(table) => {
                table.insert(segment.to_owned(), value);
            }
            Slot::Array(array) => {
                let index = index(segment, array.len())?;
                if index == array.len() {
                    array.push(value);
                } else {
                    array[index] = value;
                }
            }
        }
        Ok(())
    }
}

/// An array index from a path segment: an existing element, or the next one.
fn index(segment: &str, len: usize) -> anyhow::Result<usize> {
    match segment.parse::<usize>() {
        Ok(i) if i <= len => Ok(i),
        Ok(i) => bail!("index {i} is past the end of an array of {len}"),
        Err(_) => bail!("`{segment}` is not an array index"),
    }
}

/// Every key of `value` (the role's defaults, with `required` keys given example values) as
/// TOML: keys that are unset by default are listed, commented out, as `# key = <unset>`.
pub(crate) fn render_defaults<T: Serialize>(
    value: &T,
    required: &[&str],
) -> anyhow::Result<String> {
    let json = serde_json::to_value(value).context("encoding the defaults")?;
    let serde_json::Value::Object(map) = json else {
        bail!("the defaults are not a table");
    };
    let mut out = String::new();
    render_table(&mut out, &[], &map, required)?;
    Ok(out)
}

fn render_table(
    out: &mut String,
    path: &[&str],
    map: &serde_json::Map<String, serde_json::Value>,
    required: &[&str],
) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let mut tables = Vec::new();
    for (key, value) in map {
        let full = path
            .iter()
            .copied()
            .chain([key.as_str()])
            .collect::<Vec<_>>()
            .join(".");
        match value {
            serde_json::Value::Null => writeln!(out, "# {key} = <unset>")?,
            serde_json::Value::Object(inner) if !is_enum_like(inner) => {
                tables.push((key, inner));
            }
            other => {
                let toml_value =
                    toml::Value::try_from(other).with_context(|| format!("encoding {full}"))?;
                let note = if required.contains(&full.as_str()) {
                    "  # required: an example"
                } else {
                    ""
                };
                writeln!(out, "{key} = {toml_value}{note}")?;
            }
        }
    }
    for (key, inner) in tables {
        let mut sub: Vec<&str> = path.to_vec();
        sub.push(key);
        writeln!(out, "\n[{}]", sub.join("."))?;
        render_table(out, &sub, inner, required)?;
    }
    Ok(())
}

/// An externally tagged enum (`{ static = [...] }`) reads better inline than as a table. A
/// one-key table whose key is unset (`[metrics] listen`) is a table: TOML has no null.
fn is_enum_like(map: &serde_json::Map<String, serde_json::Value>) -> bool {
    map.len() == 1 && !map.values().any(|v| v.is_object() || v.is_null())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, Serialize)]
    #[serde(deny_unknown_fields)]
    struct Example {
        listen: String,
        port: u16,
        name: String,
        #[serde(default)]
        flag: bool,
        #[serde(default)]
        list: Vec<String>,
        #[serde(default)]
        nested: Nested,
        #[serde(default)]
        routes: Vec<Nested>,
    }

    #[derive(Debug, Default, serde::Deserialize, Serialize)]
    #[serde(default, deny_unknown_fields)]
    struct Nested {
        rate: Option<u64>,
        timeout: String,
    }

    fn defaults() -> Example {
        Example {
            listen: "0.0.0.0:1".into(),
            port: 1,
            name: "n".into(),
            flag: false,
            list: vec![],
            nested: Nested::default(),
            routes: vec![],
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    #[test]
    fn file_then_secrets_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("c.toml");
        std::fs::write(
            &config,
            "listen = \"1.2.3.4:5\"\nport = 1\nname = \"file\"\n[nested]\ntimeout = \"1s\"\n",
        )
        .unwrap();
        let secrets = dir.path().join("s.toml");
        std::fs::write(&secrets, "name = \"secret\"\n[nested]\nrate = 7\n").unwrap();
        let sources = Sources {
            config: Some(config),
            secrets: Some(secrets),
        };
        let loaded: Example = load_from(
            Role::Agent,
            &sources,
            &defaults(),
            toml::Table::new(),
            env(&[
                ("KRAKEN_AGENT__PORT", "8080"),
                ("KRAKEN_AGENT__FLAG", "true"),
                ("KRAKEN_AGENT__LIST", r#"["a", "b"]"#),
                ("KRAKEN_AGENT__NESTED__TIMEOUT", "3s"),
                ("KRAKEN_AGENT__ROUTES__0__TIMEOUT", "5s"),
                ("KRAKEN_AGENT__ROUTES__0__RATE", "9"),
                // Another role's and unrelated variables are not read.
                ("KRAKEN_PROXY__BOGUS", "1"),
                ("KRAKEN_LOG_FORMAT", "json"),
            ]),
        )
        .unwrap();
        assert_eq!(loaded.listen, "1.2.3.4:5");
        assert_eq!(loaded.port, 8080);
        assert_eq!(
            loaded.name, "secret",
            "the secrets file wins over the config"
        );
        assert!(loaded.flag);
        assert_eq!(loaded.list, ["a", "b"]);
        assert_eq!(loaded.nested.timeout, "3s");
        assert_eq!(loaded.nested.rate, Some(7), "tables merge key by key");
        assert_eq!(loaded.routes[0].timeout, "5s");
        assert_eq!(loaded.routes[0].rate, Some(9));
    }

    #[test]
    fn string_keys_stay_strings_and_errors_name_the_variable() {
        let sources = Sources {
            config: None,
            secrets: None,
        };
        let load = |pairs: &[(&str, &str)]| {
            load_from::<Example>(
                Role::Origin,
                &sources,
                &defaults(),
                toml::Table::new(),
                env(pairs),
            )
        };
        let base = [
            ("KRAKEN_ORIGIN__LISTEN", "0.0.0.0:15002"),
            ("KRAKEN_ORIGIN__PORT", "2"),
        ];
        // `name` is a string: `123` and `true` are not read as a number or a bool.
        let mut pairs = base.to_vec();
        pairs.push(("KRAKEN_ORIGIN__NAME", "123"));
        assert_eq!(load(&pairs).unwrap().name, "123");
        let mut pairs = base.to_vec();
        pairs.push(("KRAKEN_ORIGIN__NAME", "x"));
        pairs.push(("KRAKEN_ORIGIN__BOGUS", "1"));
        let error = format!("{:#}", load(&pairs).unwrap_err());
        assert!(error.contains("bogus"), "{error}");
        assert!(error.contains("KRAKEN_ORIGIN__BOGUS"), "{error}");
        let mut pairs = base.to_vec();
        pairs.push(("KRAKEN_ORIGIN__PORT__X", "1"));
        let error = format!("{:#}", load(&pairs).unwrap_err());
        assert!(error.contains("KRAKEN_ORIGIN__PORT__X"), "{error}");
        // A missing required key is named.
        let error = format!("{:#}", load(&base[..1]).unwrap_err());
        assert!(error.contains("port"), "{error}");
    }

    #[test]
    fn defaults_render_as_toml_that_loads_back() {
        let text = render_defaults(&defaults(), &["listen"]).unwrap();
        assert!(text.contains("# rate = <unset>"), "{text}");
        assert!(text.contains("[nested]"), "{text}");
        assert!(text.contains("# required"), "{text}");
        let back: Example = toml::from_str(&text).unwrap();
        assert_eq!(back.listen, "0.0.0.0:1");
    }
}
