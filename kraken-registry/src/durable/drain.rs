//! The loop that works through a journal of tasks: each task when it is due, a bounded number
//! at once, retried with exponential backoff until it succeeds or cannot succeed.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::{Duration, SystemTime};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::WriteBackConfig;
use super::journal::{Journal, Task};
use crate::error::{Error, Result, error_chain};

/// Longest sleep between looks at the journal when nothing wakes the loop.
const IDLE_POLL: Duration = Duration::from_secs(30);

/// What one successful attempt achieved.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The task is done.
    Done,
    /// The task cannot succeed (nowhere to send it, its data is gone): it is dropped.
    Dropped(String),
}

/// Retry bookkeeping of one task, in memory (a restart retries at once).
#[derive(Clone, Copy, Debug)]
struct Retry {
    failures: u32,
    next: SystemTime,
}

/// Runs the tasks of `journal` with `attempt` until `shutdown`: a task whose attempt fails
/// is retried after `config.initial_backoff`, doubling up to `config.max_backoff`; a task
/// done or dropped is removed from the journal (unless a newer task replaced it meanwhile)
/// and handed to `finished`. `what` names the queue in logs.
pub(crate) async fn drain<T, A, F>(
    what: &'static str,
    journal: &Journal<T>,
    config: &WriteBackConfig,
    shutdown: &CancellationToken,
    attempt: A,
    finished: impl Fn(&T),
) where
    T: Task,
    A: Fn(T) -> F,
    F: Future<Output = Result<Outcome>> + Send + 'static,
{
    let limit = config.concurrency.max(1);
    let mut retries: BTreeMap<T::Key, Retry> = BTreeMap::new();
    let mut running: JoinSet<Result<Outcome>> = JoinSet::new();
    // The task each attempt runs, by the attempt's id: a panicking attempt returns nothing
    // but its id, and its task must still be retried (or its key would stay busy forever).
    let mut in_flight: HashMap<tokio::task::Id, T> = HashMap::new();
    loop {
        let now = SystemTime::now();
        let mut next_due = now + IDLE_POLL;
        for task in journal.entries() {
            let key = task.key();
            if in_flight.values().any(|t| t.key() == key) {
                continue;
            }
            let due = retries
                .get(&key)
                .map_or(task.not_before(), |r| r.next.max(task.not_before()));
            if due > now {
                next_due = next_due.min(due);
                continue;
            }
            if in_flight.len() >= limit {
                break;
            }
            let run = attempt(task.clone());
            let id = running.spawn(run).id();
            in_flight.insert(id, task);
        }
        let sleep = next_due.duration_since(now).unwrap_or_default();
        tokio::select! {
            () = shutdown.cancelled() => {
                running.abort_all();
                return;
            }
            () = journal.inserted() => {}
            () = tokio::time::sleep(sleep) => {}
            Some(joined) = running.join_next_with_id(), if !running.is_empty() => {
                let (id, result) = match joined {
                    Ok((id, result)) => (id, result),
                    Err(e) => (e.id(), Err(Error::Internal("the task panicked"))),
                };
                let Some(task) = in_flight.remove(&id) else { continue };
                let key = task.key();
                let done = match result {
                    Ok(Outcome::Done) => {
                        tracing::debug!(queue = what, ?key, "task done");
                        true
                    }
                    Ok(Outcome::Dropped(reason)) => {
                        tracing::error!(queue = what, ?key, %reason, "task dropped");
                        true
                    }
                    Err(e) => {
                        let retry = retries.entry(key.clone()).or_insert(Retry {
                            failures: 0,
                            next: SystemTime::now(),
                        });
                        retry.failures += 1;
                        let backoff = config
                            .initial_backoff
                            .saturating_mul(1 << (retry.failures - 1).min(20))
                            .min(config.max_backoff);
                        retry.next = SystemTime::now() + backoff;
                        tracing::warn!(queue = what, ?key, failures = retry.failures, ?backoff, error = %error_chain(&e), "task failed; will retry");
                        false
                    }
                };
                if done {
                    retries.remove(&key);
                    if let Err(e) = journal.complete(&task) {
                        tracing::error!(queue = what, ?key, error = %error_chain(&e), "could not record a finished task");
                    }
                    finished(&task);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::UNIX_EPOCH;

    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::durable::Entry;

    #[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
    struct Job {
        name: String,
    }

    impl Entry for Job {
        type Key = String;

        fn key(&self) -> String {
            self.name.clone()
        }
    }

    impl Task for Job {
        fn not_before(&self) -> SystemTime {
            UNIX_EPOCH
        }
    }

    #[tokio::test]
    async fn a_panicking_attempt_is_retried_like_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Arc::new(Journal::open(dir.path(), "j").unwrap());
        journal.insert(Job { name: "a".into() }).unwrap();
        let config = WriteBackConfig {
            initial_backoff: Duration::from_millis(10),
            ..WriteBackConfig::default()
        };
        let attempts = Arc::new(AtomicUsize::new(0));
        let shutdown = CancellationToken::new();
        let drained = {
            let (journal, attempts, shutdown) = (
                Arc::clone(&journal),
                Arc::clone(&attempts),
                shutdown.clone(),
            );
            tokio::spawn(async move {
                drain(
                    "test",
                    &journal,
                    &config,
                    &shutdown,
                    |_job| {
                        let attempts = Arc::clone(&attempts);
                        async move {
                            if attempts.fetch_add(1, Ordering::SeqCst) == 0 {
                                panic!("first attempt panics");
                            }
                            Ok(Outcome::Done)
                        }
                    },
                    |_| {},
                )
                .await;
            })
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while journal.contains(&"a".to_owned()) {
            assert!(tokio::time::Instant::now() < deadline, "the task is wedged");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
        shutdown.cancel();
        drained.await.unwrap();
    }
}
