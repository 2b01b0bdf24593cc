//! Fault points for crash and full-disk tests (**test-only**; never set in production).
//!
//! `KRAKEN_FAULT=<point>` in a service's environment, read once at the first check, arms
//! one point:
//!
//! | point | effect |
//! |---|---|
//! | `after-install` | the origin aborts once an uploaded blob is cached, before its write-back record is written |
//! | `after-queue` | the origin aborts once the write-back record is on disk, before the client hears `201` |
//! | `journal-full` | every journal append writes half its record, then fails with `ENOSPC` |
//!
//! An abort is `std::process::abort`: no destructor, flush or shutdown runs, as after a
//! `SIGKILL`. The checks are compiled in always (one string comparison) so that the binary
//! under test is the binary shipped.

use std::sync::OnceLock;

/// The environment variable that arms a fault point.
pub(crate) const FAULT_VAR: &str = "KRAKEN_FAULT";

/// A place where a fault can be injected.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Fault {
    /// After an upload's blob is installed, before its write-back record.
    AfterInstall,
    /// After the write-back record, before `201`.
    AfterQueue,
    /// Journal appends fail as on a full disk.
    JournalFull,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Self::AfterInstall => "after-install",
            Self::AfterQueue => "after-queue",
            Self::JournalFull => "journal-full",
        }
    }
}

/// Whether `fault` is armed.
pub(crate) fn armed(fault: Fault) -> bool {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    #[cfg(test)]
    if THREAD_FAULT.with(|f| f.get()) == Some(fault) {
        return true;
    }
    ARMED
        .get_or_init(|| std::env::var(FAULT_VAR).ok())
        .as_deref()
        == Some(fault.name())
}

/// Aborts the process if `fault` is armed.
pub(crate) fn crash_point(fault: Fault) {
    if armed(fault) {
        eprintln!("{FAULT_VAR}={}: aborting the process", fault.name());
        std::process::abort();
    }
}

#[cfg(test)]
thread_local! {
    /// A fault armed for the current thread only (unit tests).
    static THREAD_FAULT: std::cell::Cell<Option<Fault>> = const { std::cell::Cell::new(None) };
}

/// Arms `fault` on this thread until the guard drops (unit tests).
#[cfg(test)]
pub(crate) fn arm_on_this_thread(fault: Fault) -> impl Drop {
    struct Disarm;
    impl Drop for Disarm {
        fn drop(&mut self) {
            THREAD_FAULT.with(|f| f.set(None));
        }
    }
    THREAD_FAULT.with(|f| f.set(Some(fault)));
    Disarm
}
