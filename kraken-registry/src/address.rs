//! Checks of the addresses and URLs in the services' configs, so that a malformed one stops
//! the service at start with the key and value named, instead of failing every request.

use crate::error::{Error, Result};

/// Checks that `value` (the value of config key `key`) is `host:port`: a DNS name, an IPv4
/// address or a bracketed IPv6 address, and a port from 1 to 65535; no scheme, no path.
pub(crate) fn check_host_port(key: &str, value: &str) -> Result<()> {
    host_port(value)
        .map_err(|reason| Error::Config(format!("{key}: {value:?} is not host:port ({reason})")))
}

/// Checks that `value` (the value of config key `key`) is an `http://` or `https://` URL
/// with a host, and no query or fragment.
pub(crate) fn check_url(key: &str, value: &str) -> Result<()> {
    let bad = |reason: &str| Error::Config(format!("{key}: {value:?} is not a URL ({reason})"));
    let url = reqwest::Url::parse(value).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("a query or fragment has no meaning here"));
    }
    Ok(())
}

fn host_port(value: &str) -> std::result::Result<(), &'static str> {
    if value.contains("://") {
        return Err("write it without a scheme");
    }
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err("no port");
    };
    match port.parse::<u16>() {
        Ok(0) | Err(_) => return Err("the port must be a number from 1 to 65535"),
        Ok(_) => {}
    }
    if let Some(inner) = host.strip_prefix('[') {
        let ip = inner.strip_suffix(']').ok_or("unclosed `[`")?;
        return ip
            .parse::<std::net::Ipv6Addr>()
            .map(drop)
            .map_err(|_| "not an IPv6 address in brackets");
    }
    if host.is_empty() {
        return Err("no host");
    }
    if host.len() > 253
        || !host
            .split('.')
            .all(|label| valid_label(label) || label.is_empty() && host.ends_with('.'))
    {
        return Err("the host must be a DNS name or an IP address");
    }
    Ok(())
}

/// A DNS label: letters, digits, `-` and `_` (as in SRV-style names), 1 to 63 of them, not
/// starting or ending with `-`.
fn valid_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_accepts_names_and_addresses_and_refuses_the_rest() {
        for good in [
            "build-index:15004",
            "origins.cluster-a.svc.cluster.local:15002",
            "10.0.0.1:80",
            "[::1]:15002",
            "fqdn.example.:1",
        ] {
            check_host_port("k", good).unwrap();
        }
        for (bad, reason) in [
            ("http://host:15004", "scheme"),
            ("origin-1", "no port"),
            ("origin-1:", "port"),
            ("origin-1:0", "port"),
            ("origin-1:99999", "port"),
            (":15002", "no host"),
            ("host/path:1", "DNS name"),
            ("[::1:1", "unclosed"),
            ("[zz]:1", "IPv6"),
            ("a..b:1", "DNS name"),
        ] {
            let error = check_host_port("build_index", bad).unwrap_err().to_string();
            assert!(error.contains(reason), "{bad}: {error}");
            assert!(
                error.contains("build_index") && error.contains(bad),
                "{error}"
            );
        }
    }

    #[test]
    fn urls_need_an_http_scheme_and_a_host() {
        check_url("trackers", "http://tracker:15003").unwrap();
        check_url("trackers", "https://10.0.0.1:15003/").unwrap();
        for bad in [
            "tracker:15003",
            "ftp://tracker",
            "http://",
            "http://t:1/?x=1",
            "x",
        ] {
            let error = check_url("trackers", bad).unwrap_err().to_string();
            assert!(error.contains("trackers") && error.contains(bad), "{error}");
        }
    }
}
