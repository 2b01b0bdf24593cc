//! What every part of a running build-index shares, and the tag operations: a fresh read,
//! a put, a delete, a listing.
//!
//! Consistency: the tag store of each build-index holds the newest version of each tag it
//! knows (a [`TagRecord`], ordered by `(version, writer)`). A write stamps a version later
//! than every version reachable in the cluster, stores it (`fsync`), queues the backend
//! write (`fsync`), and copies it to every neighbour before it is acknowledged. A read asks
//! every neighbour for its version and answers with the newest (repairing its own copy), so
//! a neighbour that missed the write (it was down) still reads the write. Only when no
//! build-index knows a tag is the backend read.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use kraken_backends::Backend;
use kraken_core::Digest;
use regex_lite::Regex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::client::{BuildIndexClient, RecordPage};
use super::config::BuildIndexConfig;
use super::store::{ReplicationTask, TagRecord, WriteBackTask, next_version};
use super::tag::TagName;
use crate::durable::Journal;
use crate::error::{Error, Result, error_chain};
use crate::origin::OriginCluster;

/// Largest tag value read from a backend (`sha256:` and 64 hex digits, with room for a
/// newline).
const MAX_BACKEND_VALUE: usize = 1024;
/// Most rounds of asking every build-index for records to fill one page of a listing.
const LIST_ROUNDS: usize = 8;

#[derive(Debug)]
pub(crate) struct BuildIndexState {
    pub(crate) config: BuildIndexConfig,
    pub(crate) name: String,
    pub(crate) tags: Journal<TagRecord>,
    pub(crate) write_backs: Journal<WriteBackTask>,
    pub(crate) replications: Journal<ReplicationTask>,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) origins: OriginCluster,
    /// A client of each neighbour.
    pub(crate) neighbours: Vec<BuildIndexClient>,
    /// Remote build-indexes and the repositories replicated to each.
    pub(crate) remotes: Vec<(String, Vec<Regex>)>,
    /// A client for remote build-indexes (re-targeted per remote).
    pub(crate) peers: BuildIndexClient,
    pub(crate) tasks: TaskTracker,
    pub(crate) shutdown: CancellationToken,
    /// The registry the build-index's listeners serve at `/metrics`.
    pub(crate) metrics: kraken_p2p::metrics::Metrics,
}

impl BuildIndexState {
    /// The newest version of `tag` in the cluster (a tombstone if it was deleted), or the
    /// backend's value if no build-index knows the tag, or `None`.
    pub(crate) async fn resolve(self: &Arc<Self>, tag: &TagName) -> Result<Option<TagRecord>> {
        let newest = self.newest_in_cluster(tag).await;
        if newest.is_some() {
            return Ok(newest);
        }
        let Some(digest) = self.read_backend(tag).await? else {
            return Ok(None);
        };
        // Version 0: any write made through the cluster wins over it.
        let record = TagRecord {
            tag: tag.to_string(),
            digest: Some(digest),
            version: 0,
            writer: String::new(),
        };
        self.store_record(record.clone()).await?;
        Ok(Some(record))
    }

    /// The digest `tag` points at now.
    pub(crate) async fn digest(self: &Arc<Self>, tag: &TagName) -> Result<Option<Digest>> {
        Ok(self.resolve(tag).await?.and_then(|r| r.digest))
    }

    /// Points `tag` at `digest` once the origin cluster has every blob it needs, and, with
    /// `replicate`, queues its replication to the matching remotes.
    pub(crate) async fn put(
        self: &Arc<Self>,
        tag: &TagName,
        digest: &Digest,
        replicate: bool,
    ) -> Result<()> {
        let limits = &self.config.limits;
        self.origins
            .dependencies(
                tag.repository(),
                digest,
                limits.max_manifest_size.bytes(),
                limits.max_manifests,
            )
            .await?;
        self.write(tag, Some(*digest)).await?;
        if replicate {
            self.queue_replication(tag, Some(*digest)).await?;
        }
        Ok(())
    }

    /// Deletes `tag`; `false` if it did not exist. With `replicate`, queues the delete for
    /// the matching remotes as a put's replication is queued.
    pub(crate) async fn delete(self: &Arc<Self>, tag: &TagName, replicate: bool) -> Result<bool> {
        if self.digest(tag).await?.is_none() {
            return Ok(false);
        }
        self.write(tag, None).await?;
        if replicate {
            self.queue_replication(tag, None).await?;
        }
        Ok(true)
    }

    /// Stores a new version of `tag`, queues its write-back and copies it to the neighbours.
    async fn write(self: &Arc<Self>, tag: &TagName, digest: Option<Digest>) -> Result<()> {
        let seen = self.newest_in_cluster(tag).await;
        let record = TagRecord {
            tag: tag.to_string(),
            digest,
            version: next_version(seen.as_ref()),
            writer: self.name.clone(),
        };
        let task = WriteBackTask {
            tag: record.tag.clone(),
            version: record.version,
        };
        let this_record = record.clone();
        self.blocking(move |state| {
            state.tags.insert(this_record)?;
            state.write_backs.insert(task)?;
            Ok(())
        })
        .await?;
        let copies = self.neighbours.iter().map(|neighbour| {
            let record = &record;
            async move {
                let copy = tokio::time::timeout(
                    self.config.limits.neighbour_timeout,
                    neighbour.duplicate(record),
                )
                .await;
                match copy {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(tag = %record.tag, error = %error_chain(&e), "could not copy a tag to a neighbour; its reads still find it here"),
                    Err(_) => tracing::warn!(tag = %record.tag, "copying a tag to a neighbour timed out; its reads still find it here"),
                }
            }
        });
        futures::future::join_all(copies).await;
        Ok(())
    }

    /// Keeps `record` if it is newer than the local one (a neighbour's copy, a read repair).
    pub(crate) async fn store_record(self: &Arc<Self>, record: TagRecord) -> Result<bool> {
        self.blocking(move |state| state.tags.insert(record)).await
    }

    /// Queues the replication of `tag`, as it points now, to the matching remotes again
    /// (`POST /remotes/tags/{tag}`): its digest and how many remotes, or `None` if the tag
    /// does not exist. A remote that already has the tag at that digest finishes the task at
    /// once.
    pub(crate) async fn replicate_again(
        self: &Arc<Self>,
        tag: &TagName,
    ) -> Result<Option<(Digest, usize)>> {
        let Some(digest) = self.digest(tag).await? else {
            return Ok(None);
        };
        let remotes = self.queue_replication(tag, Some(digest)).await?;
        Ok(Some((digest, remotes)))
    }

    /// Queues `tag` → `digest` (`None`: its delete) for every remote whose patterns match
    /// its repository, replacing a queued task of the same tag and remote; how many.
    async fn queue_replication(
        self: &Arc<Self>,
        tag: &TagName,
        digest: Option<Digest>,
    ) -> Result<usize> {
        let tasks: Vec<ReplicationTask> = self
            .remotes
            .iter()
            .filter(|(_, patterns)| patterns.iter().any(|p| p.is_match(tag.repository())))
            .map(|(remote, _)| ReplicationTask {
                remote: remote.clone(),
                tag: tag.to_string(),
                digest,
                not_before: SystemTime::now(),
            })
            .collect();
        let count = tasks.len();
        if tasks.is_empty() {
            return Ok(0);
        }
        self.blocking(move |state| {
            for task in tasks {
                state.replications.insert(task)?;
            }
            Ok(())
        })
        .await?;
        Ok(count)
    }

    /// The newest record of `tag` here and at every neighbour that answers in time; a newer
    /// one from a neighbour replaces the local copy.
    pub(crate) async fn newest_in_cluster(self: &Arc<Self>, tag: &TagName) -> Option<TagRecord> {
        let local = self.tags.get(&tag.to_string());
        let timeout = self.config.limits.neighbour_timeout;
        let asks = self.neighbours.iter().map(|neighbour| async move {
            match tokio::time::timeout(timeout, neighbour.record(tag.as_str())).await {
                Ok(Ok(record)) => record,
                Ok(Err(e)) => {
                    tracing::debug!(error = %error_chain(&e), "a neighbour's version check failed");
                    None
                }
                Err(_) => None,
            }
        });
        let remote = futures::future::join_all(asks).await;
        let newest = remote
            .into_iter()
            .flatten()
            .filter(|r| r.tag == tag.as_str())
            .fold(None::<TagRecord>, |best, r| match best {
                Some(b) if !r.is_newer_than(&b) => Some(b),
                _ => Some(r),
            });
        match (local, newest) {
            (Some(local), Some(remote)) if remote.is_newer_than(&local) => {
                if let Err(e) = self.store_record(remote.clone()).await {
                    tracing::warn!(error = %error_chain(&e), "could not repair a stale tag");
                }
                Some(remote)
            }
            (None, Some(remote)) => {
                if let Err(e) = self.store_record(remote.clone()).await {
                    tracing::warn!(error = %error_chain(&e), "could not keep a neighbour's tag");
                }
                Some(remote)
            }
            (local, _) => local,
        }
    }

    async fn read_backend(self: &Arc<Self>, tag: &TagName) -> Result<Option<Digest>> {
        let name = tag.as_str();
        let stream = match self.backend.download(name, name, None).await {
            Ok(stream) => stream,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(kraken_backends::Error::NoRoute { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let bytes = kraken_backends::collect_bytes(stream, MAX_BACKEND_VALUE).await?;
        let text = std::str::from_utf8(&bytes).unwrap_or_default().trim();
        match text.parse() {
            Ok(digest) => Ok(Some(digest)),
            Err(_) => {
                tracing::warn!(tag = name, "the backend's value of a tag is not a digest");
                Ok(None)
            }
        }
    }

    /// Up to `limit` live tags starting with `prefix`, after `after`, merged from this
    /// build-index and its neighbours (newest record of each tag wins), and where the next
    /// page starts (`None` at the end). Deleted tags are skipped without shortening the page.
    pub(crate) async fn list(
        self: &Arc<Self>,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<String>, Option<String>) {
        let mut names = Vec::new();
        let mut after = after.map(str::to_owned);
        // Bounded: a listing full of tombstones returns a short page with a next link.
        for _ in 0..LIST_ROUNDS {
            let (more, next) = self
                .list_round(prefix, after.as_deref(), limit - names.len())
                .await;
            names.extend(more);
            after = next;
            if names.len() == limit || after.is_none() {
                break;
            }
        }
        (names, after)
    }

    async fn list_round(
        self: &Arc<Self>,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<String>, Option<String>) {
        let timeout = self.config.limits.neighbour_timeout;
        let asks = self.neighbours.iter().map(|neighbour| async move {
            match tokio::time::timeout(timeout, neighbour.records(prefix, after, limit)).await {
                Ok(Ok(page)) => Some(page),
                _ => None,
            }
        });
        let mut pages = futures::future::join_all(asks).await;
        pages.push(Some(self.local_records(prefix, after, limit)));
        merge_pages(pages.into_iter().flatten(), prefix, after, limit)
    }

    /// A page of this build-index's own records (tombstones included).
    pub(crate) fn local_records(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> RecordPage {
        self.tags.scan(|tags| {
            let start = match after {
                Some(after) if after >= prefix => std::ops::Bound::Excluded(after.to_owned()),
                _ => std::ops::Bound::Included(prefix.to_owned()),
            };
            let mut matching = tags
                .range((start, std::ops::Bound::Unbounded))
                .take_while(|(name, _)| name.starts_with(prefix))
                .map(|(_, record)| record);
            let records: Vec<TagRecord> = matching.by_ref().take(limit).cloned().collect();
            let more = matching.next().is_some();
            RecordPage { records, more }
        })
    }

    /// Runs `f` on the blocking pool (journal writes `fsync`).
    async fn blocking<R: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Self) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(|_| Error::Internal("tag store task failed"))?
    }
}

/// Merges pages of records from several build-indexes (see [`BuildIndexState::list`]): a
/// name is certain once every source that stopped early has passed it.
fn merge_pages(
    pages: impl Iterator<Item = RecordPage>,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> (Vec<String>, Option<String>) {
    let mut newest: BTreeMap<String, TagRecord> = BTreeMap::new();
    // The highest name known to be complete: the least last name of a cut-off page.
    let mut certain_until: Option<String> = None;
    for page in pages {
        if page.more
            && let Some(last) = page.records.last()
            && certain_until.as_ref().is_none_or(|c| last.tag < *c)
        {
            certain_until = Some(last.tag.clone());
        }
        for record in page.records {
            if !record.tag.starts_with(prefix) || after.is_some_and(|a| record.tag.as_str() <= a) {
                continue;
            }
            match newest.get(&record.tag) {
                Some(existing) if !record.is_newer_than(existing) => {}
                _ => {
                    newest.insert(record.tag.clone(), record);
                }
            }
        }
    }
    let mut names = Vec::new();
    for (name, record) in &newest {
        if certain_until.as_ref().is_some_and(|c| name > c) {
            break;
        }
        if record.digest.is_some() {
            if names.len() == limit {
                let last: &String = names.last().expect("limit is at least 1");
                return (names.clone(), Some(last.clone()));
            }
            names.push(name.clone());
        }
    }
    let next = certain_until;
    (names, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(tag: &str, version: u64, live: bool) -> TagRecord {
        TagRecord {
            tag: tag.into(),
            digest: live.then(|| Digest::sha256_of(tag.as_bytes())),
            version,
            writer: "w".into(),
        }
    }

    #[test]
    fn merged_pages_take_the_newest_records_and_stop_where_a_source_stopped() {
        let here = RecordPage {
            records: vec![
                record("a:1", 1, true),
                record("a:2", 2, true),
                record("a:3", 1, true),
            ],
            more: true,
        };
        let neighbour = RecordPage {
            records: vec![record("a:2", 3, false), record("a:4", 1, true)],
            more: false,
        };
        let (names, next) = merge_pages([here, neighbour].into_iter(), "a:", None, 3);
        // a:2 was deleted later at the neighbour; a:4 lies past what `here` covered.
        assert_eq!(names, ["a:1", "a:3"]);
        assert_eq!(next.as_deref(), Some("a:3"));

        let full = RecordPage {
            records: vec![
                record("b:1", 1, true),
                record("b:2", 1, true),
                record("b:3", 1, true),
            ],
            more: false,
        };
        let (names, next) = merge_pages([full].into_iter(), "b:", Some("b:1"), 1);
        assert_eq!(
            (names, next.as_deref()),
            (vec!["b:2".to_owned()], Some("b:2"))
        );
    }
}
