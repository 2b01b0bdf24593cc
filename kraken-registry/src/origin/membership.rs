//! The ring of origins: who the members are (a static list or DNS), which of them are
//! healthy (active checks of `GET /health`), and which own a blob.

use std::sync::Arc;

use kraken_core::{Digest, Ring};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::client::OriginClient;
use super::config::{ClusterConfig, MembersConfig};
use super::health::HealthTable;
use crate::error::{Error, Result};

/// One view of the ring: every listed member and the healthy ones placed by rendezvous
/// hashing. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RingView {
    listed: Arc<Vec<String>>,
    healthy: Arc<Ring>,
    replicas: usize,
}

impl RingView {
    /// The owners of `digest`, best first: the first `replicas` healthy members by
    /// rendezvous hashing (fewer when fewer are healthy). With no healthy member at all,
    /// the listed members are used, so that a lookup still has somewhere to go.
    pub fn owners(&self, digest: &Digest) -> Vec<String> {
        let names = |ring: &Ring| -> Vec<String> {
            ring.locations(digest, self.replicas)
                .into_iter()
                .map(|m| m.name().to_owned())
                .collect()
        };
        if self.healthy.is_empty() {
            let all = Ring::with_members(self.listed.iter().cloned()).unwrap_or_default();
            return names(&all);
        }
        names(&self.healthy)
    }

    /// Every member in the configuration (or DNS answer), healthy or not.
    pub fn listed(&self) -> &[String] {
        &self.listed
    }

    /// The healthy members.
    pub fn healthy(&self) -> Vec<String> {
        self.healthy
            .members()
            .iter()
            .map(|m| m.name().to_owned())
            .collect()
    }
}

/// Keeps a [`RingView`] current: re-resolves members and health-checks them every
/// [`ClusterConfig::refresh_interval`], and publishes a new view when the healthy set
/// changes. `self_name`, if given, is always healthy and never checked.
#[derive(Debug)]
pub struct Membership {
    view: watch::Receiver<RingView>,
}

impl Membership {
    /// Resolves the members once and starts the refresh loop on `tasks`, which stops with
    /// `shutdown`.
    pub async fn start(
        config: ClusterConfig,
        self_name: Option<String>,
        client: OriginClient,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Self> {
        config.validate()?;
        let mut listed = resolve(&config.members).await?;
        if let Some(me) = &self_name
            && !listed.contains(me)
        {
            // An origin always counts itself (a single origin needs no member list).
            listed.push(me.clone());
        }
        let mut table = HealthTable::new(config.fails, config.passes);
        let first = build_view(&listed, &table, config.replicas);
        let (sender, view) = watch::channel(first);
        tasks.spawn(async move {
            let mut ticker = tokio::time::interval(config.refresh_interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                let mut now_listed = match resolve(&config.members).await {
                    Ok(members) => members,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not resolve ring members; keeping the last list");
                        listed.clone()
                    }
                };
                if let Some(me) = &self_name
                    && !now_listed.contains(me)
                {
                    now_listed.push(me.clone());
                }
                table.retain(&now_listed);
                let checks = now_listed
                    .iter()
                    .filter(|m| Some(*m) != self_name.as_ref())
                    .map(|member| {
                        let client = client.clone();
                        let timeout = config.health_timeout;
                        async move { (member.clone(), client.is_healthy(member, timeout).await) }
                    });
                let results = futures::future::join_all(checks).await;
                let mut changed = now_listed != listed;
                for (member, passed) in results {
                    if table.record(&member, passed) {
                        tracing::info!(%member, healthy = passed, "ring member health changed");
                        changed = true;
                    }
                }
                listed = now_listed;
                if changed {
                    sender.send_replace(build_view(&listed, &table, config.replicas));
                }
            }
        });
        Ok(Self { view })
    }

    /// The current view.
    pub fn view(&self) -> RingView {
        self.view.borrow().clone()
    }

    /// A receiver that sees every new view (for repair on membership change).
    pub fn subscribe(&self) -> watch::Receiver<RingView> {
        self.view.clone()
    }
}

fn build_view(listed: &[String], table: &HealthTable, replicas: usize) -> RingView {
    let healthy = listed.iter().filter(|m| table.is_healthy(m)).cloned();
    RingView {
        listed: Arc::new(listed.to_vec()),
        healthy: Arc::new(Ring::with_members(healthy).unwrap_or_default()),
        replicas: replicas.max(1),
    }
}

async fn resolve(members: &MembersConfig) -> Result<Vec<String>> {
    match members {
        MembersConfig::Static(list) => Ok(list.clone()),
        MembersConfig::Dns(name) => {
            let addrs = tokio::net::lookup_host(name.as_str())
                .await
                .map_err(|e| Error::Config(format!("cluster DNS name {name:?}: {e}")))?;
            let mut members: Vec<String> = addrs.map(|a| a.to_string()).collect();
            members.sort();
            members.dedup();
            Ok(members)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_the_healthy_top_replicas() {
        let listed: Vec<String> = (1..=4).map(|i| format!("127.0.0.{i}:1")).collect();
        let mut table = HealthTable::new(1, 1);
        let digest = Digest::sha256_of(b"blob");
        let all = build_view(&listed, &table, 3).owners(&digest);
        assert_eq!(all.len(), 3);
        // The best owner fails: the other two stay, and the fourth member steps in.
        table.record(&all[0], false);
        let after = build_view(&listed, &table, 3).owners(&digest);
        assert_eq!(after.len(), 3);
        assert!(!after.contains(&all[0]));
        assert_eq!(&after[..2], &all[1..]);
        // Replicas are capped at the healthy members; with none, the listed ones answer.
        for member in &listed {
            table.record(member, false);
        }
        assert_eq!(build_view(&listed, &table, 3).owners(&digest), all);
        assert_eq!(
            build_view(&listed[..2], &HealthTable::new(1, 1), 3)
                .owners(&digest)
                .len(),
            2
        );
    }

    #[tokio::test]
    async fn dns_members_resolve_with_their_port() {
        let members = resolve(&MembersConfig::Dns("localhost:15002".into()))
            .await
            .unwrap();
        assert!(
            members.iter().any(|m| m == "127.0.0.1:15002"),
            "{members:?}"
        );
    }
}
