//! This process: the async runtime every server command runs on, the signals that stop it,
//! and its peak memory for the reports of `kraken sim` and `kraken fetch`.

use anyhow::Context as _;

/// The multi-threaded tokio runtime of every long-running command.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        // Piece I/O and hashing are CPU-bound: more threads than this only add per-thread
        // allocator caches (resident memory) without adding throughput.
        .max_blocking_threads(8)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Returns on Ctrl-C (SIGINT) or SIGTERM, the signals that stop a server command cleanly.
pub(crate) async fn wait_for_signal() -> anyhow::Result<()> {
    Signals::install()?.recv().await;
    Ok(())
}

/// SIGINT and SIGTERM, caught from [`install`](Self::install) on: a command that must not
/// die of a signal in its first moments (`kraken fetch`, whose status then says
/// "interrupted") installs them before it starts anything.
#[derive(Debug)]
pub(crate) struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    pub(crate) fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("catching SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("catching SIGTERM")?,
        })
    }

    /// Returns when either signal arrives.
    pub(crate) async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Peak resident set size of this process, from `/proc/self/status` (Linux `VmHWM`).
pub(crate) fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
