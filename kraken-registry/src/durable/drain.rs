//! The loop that works through a journal of tasks: each task when it is due, a bounded number
//! at once, retried with exponential backoff until it succeeds or cannot succeed.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, SystemTime};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::WriteBackConfig;
use super::journal::{Journal, Task};
use crate::error::{Result, error_chain};

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
    let mut running: JoinSet<(T, Result<Outcome>)> = JoinSet::new();
    let mut in_flight: Vec<T::Key> = Vec::new();
    loop {
        let now = SystemTime::now();
        let mut next_due = now + IDLE_POLL;
        for task in journal.entries() {
            let key = task.key();
            if in_flight.contains(&key) {
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
            in_flight.push(key);
            let run = attempt(task.clone());
            running.spawn(async move { (task, run.await) });
        }
        let sleep = next_due.duration_since(now).unwrap_or_default();
        tokio::select! {
            () = shutdown.cancelled() => {
                running.abort_all();
                return;
            }
            () = journal.inserted() => {}
            () = tokio::time::sleep(sleep) => {}
            Some(joined) = running.join_next(), if !running.is_empty() => {
                let Ok((task, result)) = joined else { continue };
                let key = task.key();
                in_flight.retain(|k| *k != key);
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
