//! Client commands run with a deadline and their output kept for the error message, and
//! daemons that are stopped (SIGTERM, then SIGKILL) and reaped when dropped.

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How long one client command (a push, a pull) may take before it is killed.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a daemon may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a daemon may take to exit after SIGTERM before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// What a successful command printed.
#[derive(Debug)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` to completion within `timeout`. The error names the command line, its exit
/// status (or the timeout) and carries what it printed on stderr (and stdout).
pub fn run_with_timeout(command: &mut Command, timeout: Duration) -> Result<Output> {
    let line = command_line(command);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().with_context(|| format!("start `{line}`"))?;
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().context("wait for a client")? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    match status {
        Some(status) if status.success() => Ok(Output { stdout, stderr }),
        Some(status) => bail!("`{line}` failed ({status}):\n{}", both(&stdout, &stderr)),
        None => bail!(
            "`{line}` did not finish within {timeout:?}:\n{}",
            both(&stdout, &stderr)
        ),
    }
}

/// [`run_with_timeout`] with [`CLIENT_TIMEOUT`].
pub fn run(command: &mut Command) -> Result<Output> {
    run_with_timeout(command, CLIENT_TIMEOUT)
}

fn reader<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut text);
        }
        String::from_utf8_lossy(&text).into_owned()
    })
}

fn both(stdout: &str, stderr: &str) -> String {
    let mut text = format!("stderr: {}", stderr.trim_end());
    if !stdout.trim().is_empty() {
        let _ = write!(text, "\nstdout: {}", stdout.trim_end());
    }
    text
}

/// The command as a shell would show it, for messages.
pub fn command_line(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A long-running daemon (containerd, dockerd) with its output in a log file. Dropping it sends
/// SIGTERM, waits a bounded time for a clean exit (dockerd then stops its own containerd),
/// sends SIGKILL if needed, and reaps it: also when the test panics. Started under
/// `setpriv --pdeathsig TERM` when available, so a test process killed outright (no unwinding,
/// e.g. a nextest timeout) still stops its daemons, cleanly: dockerd killed with SIGKILL would
/// leave its containers' shims and its mounts under the temp dir behind. The signal comes when
/// the *thread* that spawned the daemon ends: start a daemon on the thread that owns it.
#[derive(Debug)]
pub struct Daemon {
    name: &'static str,
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Starts `program args…` with stdout and stderr to `log`.
    pub fn spawn(name: &'static str, program: &Path, args: &[&str], log: &Path) -> Result<Self> {
        let out = std::fs::File::create(log).context("create the daemon log")?;
        let err = out.try_clone()?;
        let setpriv = Path::new("/usr/bin/setpriv");
        let mut command = if setpriv.is_file() {
            let mut command = Command::new(setpriv);
            command.args(["--pdeathsig", "TERM", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let line = command_line(&command);
        let child = command
            .spawn()
            .with_context(|| format!("start {name}: `{line}`"))?;
        Ok(Self {
            name,
            child: Some(child),
            log: log.to_owned(),
        })
    }

    /// Polls `ready` (every 50 ms, within [`READY_TIMEOUT`]) until it answers true; fails with
    /// the daemon's log if it exits or the time runs out.
    pub fn wait_ready(&mut self, mut ready: impl FnMut() -> bool) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if ready() {
                return Ok(());
            }
            if let Some(status) = self.exit_status() {
                bail!("{} exited with {status}:\n{}", self.name, self.log_text());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} was not ready within {READY_TIMEOUT:?}:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Everything the daemon logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The daemon's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the daemon now (as dropping it would).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + STOP_TIMEOUT;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}
