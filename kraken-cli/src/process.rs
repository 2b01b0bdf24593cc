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

/// Bytes this process caused to be written to storage (Linux `write_bytes` in
/// `/proc/self/io`, counted as pages are dirtied), if known.
pub(crate) fn write_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    let line = io.lines().find(|l| l.starts_with("write_bytes:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The variable through which `kraken devcluster --processes` asks a child to die with it: its
/// value is the parent's pid.
pub(crate) const DIE_WITH_PARENT: &str = "KRAKEN_DIE_WITH_PARENT";

/// In a child of `kraken devcluster --processes` (see [`DIE_WITH_PARENT`]), asks the kernel to
/// SIGKILL this process when the parent dies (`PR_SET_PDEATHSIG`), so that no role outlives a
/// devcluster killed outright. Set here, after `exec`, rather than between `fork` and `exec`:
/// that would need `unsafe`. A parent that died before this call is noticed by its pid.
pub(crate) fn die_with_parent() -> anyhow::Result<()> {
    let Some(parent) = std::env::var_os(DIE_WITH_PARENT) else {
        return Ok(());
    };
    let parent: i32 = parent
        .to_str()
        .and_then(|pid| pid.parse().ok())
        .with_context(|| format!("{DIE_WITH_PARENT} is not a pid"))?;
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .context("PR_SET_PDEATHSIG")?;
    let still_there =
        rustix::process::getppid().is_some_and(|pid| pid.as_raw_nonzero().get() == parent);
    anyhow::ensure!(
        still_there,
        "the devcluster that started this process is gone"
    );
    Ok(())
}
