//! The HTTP client of the S3, GCS and Azure backends: `object_store`'s own reqwest client
//! cannot pin a CA (it only adds roots to the system's) nor present a client certificate, so
//! the backends hand `object_store` this connector, which builds the reqwest client itself
//! with the TLS settings every other backend uses ([`ClientTls`]).

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use object_store::ClientConfigKey;
use object_store::ClientOptions;
use object_store::client::{HttpClient, HttpConnector};
use rand::seq::SliceRandom;

use crate::client::ClientTls;

/// The `User-Agent` when the options set none (`object_store`'s own client sends
/// `object_store/<version>`).
const USER_AGENT: &str = concat!("kraken-backends/", env!("CARGO_PKG_VERSION"));

/// Makes `object_store`'s HTTP clients: reqwest clients configured from the
/// [`ClientOptions`] `object_store` passes (it passes variants of the backend's options, e.g.
/// plain HTTP and a 1 s connect timeout for instance metadata endpoints), plus [`ClientTls`].
///
/// It applies the options as `object_store`'s own client does (`allow_http`, the timeouts,
/// user agent, default headers, connection pool, HTTP/1-only or HTTP/2 settings, address
/// shuffling; response decompression off, since it would break `Content-Length`), except
/// for TLS, which is [`ClientTls`]'s alone: root certificates and `disable_system_certificates`
/// in the options are not used. Proxy settings, invalid certificates and custom DNS resolvers,
/// which the backends never set, are refused rather than ignored.
///
/// The pinned CA and the client certificate apply to every client `object_store` makes for
/// the store, including the ones that fetch credentials over HTTPS (STS, OAuth token
/// endpoints): with `ca`, those endpoints must chain to it too.
#[derive(Debug)]
pub(crate) struct CloudConnector {
    tls: ClientTls,
}

impl CloudConnector {
    pub(crate) fn new(tls: ClientTls) -> Self {
        Self { tls }
    }

    fn client(&self, options: &ClientOptions) -> Result<reqwest::Client, String> {
        for key in [
            ClientConfigKey::ProxyUrl,
            ClientConfigKey::ProxyCaCertificate,
        ] {
            if options.get_config_value(&key).is_some() {
                return Err(format!("option {} is not supported", key.as_ref()));
            }
        }
        if flag(options, ClientConfigKey::AllowInvalidCertificates)? {
            return Err("invalid certificates cannot be allowed".into());
        }
        if options.dns_resolver().is_some() {
            return Err("custom DNS resolvers are not supported".into());
        }

        let user_agent = options
            .get_config_value(&ClientConfigKey::UserAgent)
            .unwrap_or_else(|| USER_AGENT.to_owned());
        let mut builder = reqwest::Client::builder()
            .user_agent(user_agent)
            .https_only(!flag(options, ClientConfigKey::AllowHttp)?)
            // As object_store: compression would break the `Content-Length` of objects.
            .no_gzip()
            .no_brotli()
            .no_zstd()
            .no_deflate();
        if let Some(headers) = options.get_default_headers() {
            builder = builder.default_headers(headers.clone());
        }
        if let Some(timeout) = duration(options, ClientConfigKey::Timeout)? {
            builder = builder.timeout(timeout);
        }
        if let Some(timeout) = duration(options, ClientConfigKey::ConnectTimeout)? {
            builder = builder.connect_timeout(timeout);
        }
        if let Some(timeout) = duration(options, ClientConfigKey::ReadTimeout)? {
            builder = builder.read_timeout(timeout);
        }
        if let Some(timeout) = duration(options, ClientConfigKey::PoolIdleTimeout)? {
            builder = builder.pool_idle_timeout(timeout);
        }
        if let Some(max) = number(options, ClientConfigKey::PoolMaxIdlePerHost)? {
            builder = builder.pool_max_idle_per_host(max);
        }
        if let Some(interval) = duration(options, ClientConfigKey::Http2KeepAliveInterval)? {
            builder = builder.http2_keep_alive_interval(interval);
        }
        if let Some(timeout) = duration(options, ClientConfigKey::Http2KeepAliveTimeout)? {
            builder = builder.http2_keep_alive_timeout(timeout);
        }
        if flag(options, ClientConfigKey::Http2KeepAliveWhileIdle)? {
            builder = builder.http2_keep_alive_while_idle(true);
        }
        if let Some(size) = number(options, ClientConfigKey::Http2MaxFrameSize)? {
            builder = builder.http2_max_frame_size(Some(size));
        }
        if flag(options, ClientConfigKey::Http1Only)? {
            builder = builder.http1_only();
        }
        if flag(options, ClientConfigKey::Http2Only)? {
            builder = builder.http2_prior_knowledge();
        }
        if flag(options, ClientConfigKey::RandomizeAddresses)? {
            builder = builder.dns_resolver(ShuffleResolver);
        }
        self.tls
            .apply(builder)
            .build()
            .map_err(|e| format!("cannot build HTTP client: {e}"))
    }
}

impl HttpConnector for CloudConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let client = self
            .client(options)
            .map_err(|message| object_store::Error::Generic {
                store: "HTTP client",
                source: message.into(),
            })?;
        // object_store implements its HTTP service for reqwest's client.
        Ok(HttpClient::new(client))
    }
}

/// A boolean option, spelled as `object_store` accepts it.
fn flag(options: &ClientOptions, key: ClientConfigKey) -> Result<bool, String> {
    let Some(value) = options.get_config_value(&key) else {
        return Ok(false);
    };
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" | "y" => Ok(true),
        "0" | "false" | "off" | "no" | "n" => Ok(false),
        _ => Err(format!(
            "option {}: {value:?} is not a boolean",
            key.as_ref()
        )),
    }
}

/// A duration option (`object_store` formats them as humantime does).
fn duration(options: &ClientOptions, key: ClientConfigKey) -> Result<Option<Duration>, String> {
    options
        .get_config_value(&key)
        .map(|value| {
            humantime::parse_duration(&value)
                .map_err(|e| format!("option {}: {value:?}: {e}", key.as_ref()))
        })
        .transpose()
}

/// A numeric option.
fn number<T: std::str::FromStr>(
    options: &ClientOptions,
    key: ClientConfigKey,
) -> Result<Option<T>, String> {
    options
        .get_config_value(&key)
        .map(|value| {
            value
                .parse()
                .map_err(|_| format!("option {}: {value:?} is not a number", key.as_ref()))
        })
        .transpose()
}

/// Resolves names with the system's resolver and shuffles the addresses, as `object_store`'s
/// client does by default (`randomize_addresses`), to spread connections over the servers
/// behind a name.
#[derive(Debug)]
struct ShuffleResolver;

impl reqwest::dns::Resolve for ShuffleResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let mut addrs = tokio::task::spawn_blocking(move || {
                (host.as_str(), 0)
                    .to_socket_addrs()
                    .map(Iterator::collect::<Vec<SocketAddr>>)
            })
            .await??;
            addrs.shuffle(&mut rand::rng());
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_options_object_store_varies_are_applied() {
        crate::client::install_crypto_provider();
        let connector = CloudConnector::new(ClientTls::default());
        let options = ClientOptions::new()
            .with_allow_http(true)
            .with_connect_timeout(Duration::from_secs(1))
            .with_timeout_disabled();
        assert!(connector.client(&options).is_ok());
        assert!(connector.connect(&options).is_ok());
        // Deferred values (from configuration strings) are parsed too.
        let spelled = options
            .clone()
            .with_config(ClientConfigKey::AllowHttp, "yes")
            .with_config(ClientConfigKey::ReadTimeout, "1m 30s");
        assert!(connector.client(&spelled).is_ok());
        let bad = options
            .clone()
            .with_config(ClientConfigKey::ConnectTimeout, "soon");
        let error = connector.client(&bad).unwrap_err();
        assert!(error.contains("soon"), "{error}");
    }

    #[test]
    fn options_it_cannot_honour_are_refused() {
        crate::client::install_crypto_provider();
        let connector = CloudConnector::new(ClientTls::default());
        let proxied = ClientOptions::new().with_proxy_url("http://proxy.invalid:3128");
        let error = connector.client(&proxied).unwrap_err();
        assert!(error.contains("proxy_url"), "{error}");
        let insecure = ClientOptions::new().with_allow_invalid_certificates(true);
        assert!(connector.client(&insecure).is_err());
        assert!(connector.connect(&insecure).is_err());
    }
}
