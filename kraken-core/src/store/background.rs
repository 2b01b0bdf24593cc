//! Disk work that must not slow serving: re-reading and re-hashing a blob for an origin's
//! write-back or its integrity scrub, and a backend's copy of it.
//!
//! Such work runs on a thread of its own in the kernel's idle scheduling class
//! (`SCHED_IDLE`): it gets a core only when nothing else on the host wants it, and any
//! other thread that wakes takes the core back at once. A write-back hashes and copies the
//! whole blob again right after the push that brought it, which is when the first pulls of
//! it come: on the 2-core devcluster, that write-back at normal priority slowed the cold
//! pull through the first agent by about a tenth, and at nice 19 it still spread into the
//! second agent's pull (docs/benchmarks.md).
//!
//! The idle class is not a strict one: its threads weigh 3 against a normal thread's 1024,
//! so on a host whose cores are all busy, the work crawls. A 256 MiB write-back took 72 s
//! beside two busy loops and 199 s beside four on the devcluster, against 1 s at normal
//! priority, and what it delays is a blob's copy in the backend. So the idle class is only
//! for a while: work still running after [`BACKGROUND_IDLE_FOR`] goes back to the normal
//! class (a watchdog thread moves it), which needs `CAP_SYS_NICE` or an `RLIMIT_NICE` of 20
//! (the kernel lets a thread leave the idle class only then). Without either it stays idle,
//! and the watchdog logs a warning the first time.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long background work keeps to the idle class: a 1 GiB write-back on an idle host
/// takes about 1.5 s, and the pulls it must not slow come in the first seconds after a push.
pub const BACKGROUND_IDLE_FOR: Duration = Duration::from_secs(10);

/// Runs `work` on a new thread named `name` in the idle scheduling class, for at most
/// [`BACKGROUND_IDLE_FOR`], and returns at once. An error only if the thread could not be
/// started; `work` reports its own outcome (through a channel, say).
pub fn spawn_background(name: &str, work: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    spawn_background_for(name, BACKGROUND_IDLE_FOR, work)
}

/// [`spawn_background`] with the idle class kept for `idle_for`.
fn spawn_background_for(
    name: &str,
    idle_for: Duration,
    work: impl FnOnce() + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            #[cfg(target_os = "linux")]
            let _watched = lower_priority().map(|thread| watchdog().watch(thread, idle_for));
            #[cfg(not(target_os = "linux"))]
            let _ = idle_for;
            work();
        })?;
    Ok(())
}

/// Moves the calling thread to the idle scheduling class (on Linux, where the class is per
/// thread); its thread id if it moved. Failing (a sandbox that forbids it) only costs the
/// speed of the pulls meanwhile, so it is logged, not returned. Nice 19 instead was no help:
/// the work then spread into the next pull (docs/benchmarks.md).
#[cfg(target_os = "linux")]
fn lower_priority() -> Option<libc::pid_t> {
    if set_policy(0, libc::SCHED_IDLE) {
        #[allow(unsafe_code, reason = "gettid, which std lacks")]
        // SAFETY: no arguments; always succeeds.
        let thread = unsafe { libc::gettid() };
        return Some(thread);
    }
    let error = std::io::Error::last_os_error();
    tracing::debug!(%error, "could not move a background thread to SCHED_IDLE");
    None
}

/// Sets the scheduling policy of `thread` (0: the caller); whether it took.
#[cfg(target_os = "linux")]
fn set_policy(thread: libc::pid_t, policy: libc::c_int) -> bool {
    let param = libc::sched_param { sched_priority: 0 };
    #[allow(unsafe_code, reason = "sched_setscheduler, which rustix lacks")]
    // SAFETY: `param` is a valid `sched_param` that outlives the call.
    let result = unsafe { libc::sched_setscheduler(thread, policy, &param) };
    result == 0
}

#[cfg(target_os = "linux")]
/// Background threads in the idle class, each with the instant it leaves it.
#[derive(Default)]
struct Watchdog {
    watched: Mutex<Watched>,
    changed: Condvar,
}

#[cfg(target_os = "linux")]
#[derive(Default)]
struct Watched {
    /// By registration: the thread and when it leaves the idle class.
    threads: HashMap<u64, (libc::pid_t, Instant)>,
    next: u64,
}

#[cfg(target_os = "linux")]
/// Ends the watch of a thread's work when dropped, before the thread ends: under the lock
/// the watchdog raises threads with, so it never raises a thread whose id was reused.
struct Unwatch {
    watchdog: &'static Watchdog,
    registration: u64,
}

#[cfg(target_os = "linux")]
impl Drop for Unwatch {
    fn drop(&mut self) {
        self.watchdog.lock().threads.remove(&self.registration);
    }
}

#[cfg(target_os = "linux")]
/// The one watchdog thread, started with the first background work. It is created by a
/// thread in the normal class (a thread in the idle class would hand its class down).
fn watchdog() -> &'static Watchdog {
    static WATCHDOG: OnceLock<&'static Watchdog> = OnceLock::new();
    WATCHDOG.get_or_init(|| {
        let watchdog: &'static Watchdog = Box::leak(Box::default());
        let started = std::thread::Builder::new()
            .name("kraken-background-watchdog".into())
            .spawn(move || watchdog.run());
        if let Err(error) = started {
            tracing::warn!(%error, "no background watchdog: background work stays in SCHED_IDLE");
        }
        watchdog
    })
}

#[cfg(target_os = "linux")]
impl Watchdog {
    fn watch(&'static self, thread: libc::pid_t, idle_for: Duration) -> Unwatch {
        let mut watched = self.lock();
        let registration = watched.next;
        watched.next += 1;
        watched
            .threads
            .insert(registration, (thread, Instant::now() + idle_for));
        self.changed.notify_one();
        Unwatch {
            watchdog: self,
            registration,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Watched> {
        self.watched.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves each watched thread past its time back to the normal class, for ever.
    fn run(&self) {
        let mut warned = false;
        let mut watched = self.lock();
        loop {
            let now = Instant::now();
            watched.threads.retain(|_, &mut (thread, until)| {
                if until > now {
                    return true;
                }
                if !set_policy(thread, libc::SCHED_OTHER) && !warned {
                    warned = true;
                    let error = std::io::Error::last_os_error();
                    tracing::warn!(%error, "background work stays in SCHED_IDLE past its time: leaving it needs CAP_SYS_NICE or RLIMIT_NICE 20, and on a busy host it crawls");
                }
                false
            });
            let next = watched.threads.values().map(|&(_, until)| until).min();
            watched = match next {
                Some(until) => {
                    let wait = until.saturating_duration_since(Instant::now());
                    self.changed
                        .wait_timeout(watched, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self
                    .changed
                    .wait(watched)
                    .unwrap_or_else(|e| e.into_inner()),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's scheduling policy.
    #[cfg(target_os = "linux")]
    fn policy() -> libc::c_int {
        #[allow(unsafe_code, reason = "sched_getscheduler, which rustix lacks")]
        // SAFETY: no arguments but pid 0, the calling thread.
        unsafe {
            libc::sched_getscheduler(0)
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn background_work_runs_in_the_idle_class_and_leaves_the_caller_alone() {
        let before = policy();
        let (tx, rx) = std::sync::mpsc::channel();
        spawn_background("test-background", move || tx.send(policy()).unwrap()).unwrap();
        assert_eq!(rx.recv().unwrap(), libc::SCHED_IDLE);
        assert_eq!(policy(), before, "the caller's thread keeps its class");
        assert_ne!(before, libc::SCHED_IDLE);
    }

    /// Whether this process may move a thread out of the idle class (probed on a thread of
    /// its own, which it leaves in the idle class if not).
    #[cfg(target_os = "linux")]
    fn may_leave_the_idle_class() -> bool {
        std::thread::spawn(|| set_policy(0, libc::SCHED_IDLE) && set_policy(0, libc::SCHED_OTHER))
            .join()
            .unwrap()
    }

    /// Needs the right to leave the idle class: root (as in CI), `CAP_SYS_NICE` or
    /// `RLIMIT_NICE` 20; skipped without it, except under `CI=true`.
    #[cfg(target_os = "linux")]
    #[test]
    fn background_work_still_running_after_its_idle_time_goes_back_to_the_normal_class() {
        if !may_leave_the_idle_class() {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "this test needs CAP_SYS_NICE (root) or RLIMIT_NICE 20 (`ulimit -e 20`)"
            );
            eprintln!("skipped: no CAP_SYS_NICE nor RLIMIT_NICE 20 to leave SCHED_IDLE");
            return;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        spawn_background_for("test-background", Duration::from_millis(100), move || {
            let start = Instant::now();
            let first = policy();
            while policy() == libc::SCHED_IDLE && start.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(10));
            }
            tx.send((first, policy(), start.elapsed())).unwrap();
        })
        .unwrap();
        let (first, last, after) = rx.recv().unwrap();
        assert_eq!(first, libc::SCHED_IDLE);
        assert_eq!(last, libc::SCHED_OTHER, "still idle after {after:?}");
        assert!(after >= Duration::from_millis(90), "raised after {after:?}");
    }
}
