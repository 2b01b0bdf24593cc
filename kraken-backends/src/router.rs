//! Routing namespaces to backends by an ordered list of regular expressions.

use std::sync::Arc;

use async_trait::async_trait;
use regex_lite::Regex;

use crate::backend::{Backend, BlobInfo, ByteRange, ByteStream, ListOptions, ListPage, UploadBody};
use crate::config::BackendsConfig;
use crate::error::{Error, Result};
use crate::metrics::{BackendMetrics, MetricsBackend};
use crate::retry::RetryBackend;
use crate::throttle::ThrottleBackend;

/// Sends each operation to the backend of the first route whose pattern matches the whole
/// namespace, as Go Kraken's backend manager does. A namespace no route matches fails with
/// [`Error::NoRoute`].
///
/// The router is itself a [`Backend`], so callers need not know that there are several.
#[derive(Debug, Default)]
pub struct Router {
    routes: Vec<Route>,
}

#[derive(Debug)]
struct Route {
    pattern: Regex,
    source: String,
    backend: Arc<dyn Backend>,
    metrics: Option<Arc<BackendMetrics>>,
}

impl Router {
    /// A router without routes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds every route of `config`, each backend wrapped, from the inside out, in its
    /// throttle (if limited), its retries and a [`MetricsBackend`] labelled with the pattern.
    pub fn from_config(config: &BackendsConfig) -> Result<Self> {
        let mut router = Self::new();
        for route in &config.routes {
            let mut backend = route.backend.build()?;
            let throttle = &route.throttle;
            if throttle.ingress_per_second.is_some() || throttle.egress_per_second.is_some() {
                backend = Arc::new(ThrottleBackend::new(backend, throttle));
            }
            backend = Arc::new(RetryBackend::new(backend, route.retry.clone()));
            let timed = MetricsBackend::new(backend, route.namespace.clone());
            let metrics = timed.metrics();
            router.push(&route.namespace, Arc::new(timed), Some(metrics))?;
        }
        Ok(router)
    }

    /// Adds a route after the existing ones.
    pub fn with_route(
        mut self,
        namespace_pattern: &str,
        backend: Arc<dyn Backend>,
    ) -> Result<Self> {
        self.push(namespace_pattern, backend, None)?;
        Ok(self)
    }

    /// The backend serving `namespace`.
    pub fn backend_for(&self, namespace: &str) -> Result<&Arc<dyn Backend>> {
        self.routes
            .iter()
            .find(|route| route.pattern.is_match(namespace))
            .map(|route| &route.backend)
            .ok_or_else(|| Error::NoRoute {
                namespace: namespace.to_owned(),
            })
    }

    /// The counters of each route built by [`Router::from_config`], by pattern.
    pub fn metrics(&self) -> Vec<(&str, Arc<BackendMetrics>)> {
        self.routes
            .iter()
            .filter_map(|route| Some((route.source.as_str(), Arc::clone(route.metrics.as_ref()?))))
            .collect()
    }

    fn push(
        &mut self,
        namespace_pattern: &str,
        backend: Arc<dyn Backend>,
        metrics: Option<Arc<BackendMetrics>>,
    ) -> Result<()> {
        let pattern = Regex::new(&format!("^(?:{namespace_pattern})$"))
            .map_err(|e| Error::Config(format!("namespace pattern {namespace_pattern:?}: {e}")))?;
        self.routes.push(Route {
            pattern,
            source: namespace_pattern.to_owned(),
            backend,
            metrics,
        });
        Ok(())
    }
}

#[async_trait]
impl Backend for Router {
    async fn stat(&self, namespace: &str, name: &str) -> Result<BlobInfo> {
        self.backend_for(namespace)?.stat(namespace, name).await
    }

    async fn download(
        &self,
        namespace: &str,
        name: &str,
        range: Option<ByteRange>,
    ) -> Result<ByteStream> {
        self.backend_for(namespace)?
            .download(namespace, name, range)
            .await
    }

    async fn upload(&self, namespace: &str, name: &str, body: UploadBody) -> Result<()> {
        self.backend_for(namespace)?
            .upload(namespace, name, body)
            .await
    }

    async fn list(&self, namespace: &str, prefix: &str, options: &ListOptions) -> Result<ListPage> {
        self.backend_for(namespace)?
            .list(namespace, prefix, options)
            .await
    }

    async fn delete(&self, namespace: &str, name: &str) -> Result<()> {
        self.backend_for(namespace)?.delete(namespace, name).await
    }

    /// Checks every route's backend at once; the error names each failing route's pattern.
    async fn check_ready(&self) -> Result<()> {
        let checks = self.routes.iter().map(|route| async move {
            route
                .backend
                .check_ready()
                .await
                .map_err(|e| format!("{:?}: {}", route.source, kraken_core::error_chain(&e)))
        });
        let failures: Vec<String> = futures::future::join_all(checks)
            .await
            .into_iter()
            .filter_map(Result::err)
            .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Error::NotReady(failures.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackendConfig, RouteConfig};
    use crate::fs::FsConfig;
    use crate::metrics::Operation;

    #[tokio::test]
    async fn routes_from_config_are_timed() {
        let dir = tempfile::tempdir().unwrap();
        let config = BackendsConfig::new(vec![RouteConfig::new(
            ".*",
            BackendConfig::Fs(FsConfig::new(dir.path())),
        )]);
        let router = Router::from_config(&config).unwrap();
        router
            .upload("ns", "a", UploadBody::from_bytes("x"))
            .await
            .unwrap();
        router.stat("ns", "missing").await.unwrap_err();
        let metrics = router.metrics();
        assert_eq!(metrics.len(), 1);
        assert_eq!(metrics[0].0, ".*");
        assert_eq!(metrics[0].1.stats(Operation::Upload).calls, 1);
        assert_eq!(metrics[0].1.stats(Operation::Stat).not_found, 1);
    }
}
