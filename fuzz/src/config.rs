//! Configuration: every role's TOML file and the agent's CIDR lists.

use kraken_backends::BackendsConfig;
use kraken_p2p::http_server::HttpLimits;
use kraken_registry::agent::{AgentConfig, Cidr};
use kraken_registry::build_index::BuildIndexConfig;
use kraken_registry::oci::OciConfig;
use kraken_registry::origin::{ClusterConfig, OriginConfig};
use kraken_registry::proxy::ProxyConfig;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A CIDR list, one range per comma or line: each range prints to a form that parses to
/// the same range, and a bare address is in its own range.
pub fn cidr_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for item in text.split([',', '\n']) {
        let Ok(cidr) = item.parse::<Cidr>() else {
            continue;
        };
        let printed = cidr.to_string();
        assert_eq!(
            printed.parse::<Cidr>().ok(),
            Some(cidr),
            "{item:?} printed {printed:?}"
        );
        if let Ok(address) = item.trim().parse() {
            assert!(cidr.contains(address), "{item:?} excludes itself");
        }
    }
}

/// A role's TOML file (the bytes after the first, which picks the role: origin, agent,
/// proxy, build-index, backends, the tracker's origin ring and HTTP limits, the OCI
/// front-end): one that parses validates without panicking and serialises to TOML that
/// parses and serialises to the same text.
pub fn config_toml(data: &[u8]) {
    let Some((&pick, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    match pick % 8 {
        0 => round_trip::<OriginConfig>(text, |c| {
            let _ = c.validate();
        }),
        1 => round_trip::<AgentConfig>(text, |c| {
            let _ = c.validate();
        }),
        2 => round_trip::<ProxyConfig>(text, |c| {
            let _ = c.validate();
        }),
        3 => round_trip::<BuildIndexConfig>(text, |c| {
            let _ = c.validate();
        }),
        4 => round_trip::<BackendsConfig>(text, |_| ()),
        5 => round_trip::<ClusterConfig>(text, |c| {
            let _ = c.validate();
        }),
        6 => round_trip::<HttpLimits>(text, |c| {
            let _ = c.validate();
        }),
        _ => round_trip::<OciConfig>(text, |_| ()),
    }
}

fn round_trip<T: DeserializeOwned + Serialize>(text: &str, validate: impl Fn(&T)) {
    let Ok(config) = toml::from_str::<T>(text) else {
        return;
    };
    validate(&config);
    let printed = toml::to_string(&config).expect("a parsed config serialises");
    let again: T = toml::from_str(&printed).expect("a serialised config parses");
    validate(&again);
    assert_eq!(toml::to_string(&again).expect("serialises"), printed);
}
