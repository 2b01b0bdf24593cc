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
//! The price: on a host whose cores are busy all the time, background work waits until they
//! are not. What it delays is already safe (an acknowledged blob is durable on the origin
//! before its write-back starts).

/// Runs `work` on a new thread named `name` in the idle scheduling class and returns at
/// once. An error only if the thread could not be started; `work` reports its own outcome
/// (through a channel, say).
pub fn spawn_background(name: &str, work: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            lower_priority();
            work();
        })?;
    Ok(())
}

/// Moves the calling thread to the idle scheduling class (on Linux, where the class is per
/// thread). Failing (a sandbox that forbids it) only costs the speed of the pulls meanwhile,
/// so it is logged, not returned. Nice 19 instead was no help: the work then spread into
/// the next pull (docs/benchmarks.md).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        #[allow(unsafe_code, reason = "sched_setscheduler, which rustix lacks")]
        // SAFETY: `param` is a valid `sched_param` that outlives the call; pid 0 is the
        // calling thread.
        let result = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        if result != 0 {
            let error = std::io::Error::last_os_error();
            tracing::debug!(%error, "could not move a background thread to SCHED_IDLE");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn background_work_runs_in_the_idle_class_and_leaves_the_caller_alone() {
        let policy = || {
            #[allow(unsafe_code, reason = "sched_getscheduler, which rustix lacks")]
            // SAFETY: no arguments but pid 0, the calling thread.
            unsafe {
                libc::sched_getscheduler(0)
            }
        };
        let before = policy();
        let (tx, rx) = std::sync::mpsc::channel();
        spawn_background("test-background", move || tx.send(policy()).unwrap()).unwrap();
        assert_eq!(rx.recv().unwrap(), libc::SCHED_IDLE);
        assert_eq!(policy(), before, "the caller's thread keeps its class");
        assert_ne!(before, libc::SCHED_IDLE);
    }
}
