//! Durable state shared by the services: a keyed journal that survives crashes
//! ([`Journal`]), and a loop that drains a journal of tasks with retries ([`drain`]).
//!
//! The origin's write-back queue, the build-index's tag store, its tag write-back queue and
//! its replication queue are all journals; the three queues are drained by [`drain`].

mod config;
mod drain;
pub(crate) mod journal;

pub use self::config::WriteBackConfig;

pub(crate) use self::drain::{Outcome, drain};
pub(crate) use self::journal::{Entry, Journal, Task, create_dir_all_synced, unix_ms};
