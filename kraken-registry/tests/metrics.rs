//! A service's metrics on its own port and on the separate `[metrics] listen` one: the same
//! registry on both, `/metrics` answered outside the proxy's authentication, nothing else on
//! the metrics listener, and that listener gone once the service stops.

use kraken_p2p::metrics::MetricsConfig;
use kraken_registry::origin::MembersConfig;
use kraken_registry::proxy::{BuildIndexTarget, Proxy, ProxyConfig, UserConfig};
use kraken_testkit::{Exposition, free_addr};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_serves_its_metrics_on_its_port_and_on_the_metrics_listener() {
    kraken_backends::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let metrics_addr = free_addr("127.0.0.1");
    let mut config = ProxyConfig::new(free_addr("127.0.0.1"), dir.path().join("proxy"));
    // Nothing listens there: neither is needed to refuse an unauthenticated push.
    config.origins.members = MembersConfig::Static(vec![free_addr("127.0.0.1").to_string()]);
    config.build_index = BuildIndexTarget::new([free_addr("127.0.0.1").to_string()]);
    config.auth.users = vec![UserConfig::new("ci", bcrypt::hash("s3cret", 4).unwrap())];
    let mut metrics = MetricsConfig::default();
    metrics.listen = Some(metrics_addr);
    config.metrics = metrics;
    let proxy = Proxy::spawn(config).await.unwrap();
    let service = proxy.local_addr().to_string();
    let http = reqwest::Client::new();

    let refused = http
        .post(format!("http://{service}/v2/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401, "a push without credentials");

    for addr in [service.clone(), metrics_addr.to_string()] {
        let scraped = Exposition::scrape(&http, &addr).await;
        assert_eq!(
            scraped.sum(
                "kraken_http_requests_total",
                &[
                    ("role", "proxy"),
                    ("route", "upload_start"),
                    ("method", "POST"),
                    ("status", "401")
                ]
            ),
            1.0,
            "{addr} serves the proxy's registry"
        );
    }
    let elsewhere = http
        .get(format!("http://{metrics_addr}/v2/"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        elsewhere.status(),
        404,
        "the metrics listener serves metrics only"
    );
    assert!(
        proxy
            .metrics()
            .encode()
            .contains("kraken_http_requests_total{role=\"proxy\",route=\"upload_start\"")
    );

    proxy.shutdown().await;
    assert!(
        std::net::TcpStream::connect(metrics_addr).is_err(),
        "the metrics listener stops with the proxy"
    );
}
