//! Child processes for tests: a guard that stops (and reaps) a process when dropped, so no
//! server outlives its test, and client commands run with a deadline, their output kept for
//! the error message.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How long one client command (a push, a pull) may take before it is killed.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a server may take to become ready (the longest any test needed: dockerd).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after SIGTERM before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Runs a program so that it gets SIGTERM when the thread that started it ends.
const SETPRIV: &str = "/usr/bin/setpriv";

/// A child process that is stopped and reaped when dropped: also when the test panics.
///
/// The one kill-on-drop guard of the tests. It comes in two kinds, which differ only in how
/// they stop:
/// - [`spawn`](Self::spawn)ed servers (containerd, dockerd, CNCF Distribution, moto, nginx)
///   log to a file, and get SIGTERM, a bounded wait for a clean exit (dockerd then stops its
///   own containerd), and SIGKILL only if needed. They run under
///   `setpriv --pdeathsig TERM` when it is installed, so a test process killed outright (no
///   unwinding, e.g. a nextest timeout) still stops them, cleanly: dockerd killed with
///   SIGKILL would leave its containers' shims and its mounts under the temp dir behind. The
///   signal comes when the *thread* that spawned the server ends: start a server on the
///   thread that owns it.
/// - [`adopt`](Self::adopt)ed children (a `kraken` role the test started itself, reading its
///   output) are killed at once, as a crash would.
#[derive(Debug)]
pub struct ProcessGuard {
    name: String,
    child: Option<Child>,
    log: Option<PathBuf>,
    graceful_stop: bool,
}

impl ProcessGuard {
    /// Starts `program args…` with stdout and stderr to `log` (created or truncated).
    pub fn spawn(
        name: &str,
        program: impl AsRef<OsStr>,
        args: impl IntoIterator<Item = impl AsRef<OsStr>>,
        log: &Path,
    ) -> Result<Self> {
        let out = std::fs::File::create(log)
            .with_context(|| format!("create the log {}", log.display()))?;
        let err = out.try_clone()?;
        let mut command = if Path::new(SETPRIV).is_file() {
            let mut command = Command::new(SETPRIV);
            command
                .args(["--pdeathsig", "TERM", "--"])
                .arg(program.as_ref());
            command
        } else {
            Command::new(program.as_ref())
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
            name: name.to_owned(),
            child: Some(child),
            log: Some(log.to_owned()),
            graceful_stop: true,
        })
    }

    /// Guards a child the test started itself; dropping the guard kills it (SIGKILL).
    pub fn adopt(child: Child) -> Self {
        Self {
            name: format!("process {}", child.id()),
            child: Some(child),
            log: None,
            graceful_stop: false,
        }
    }

    /// Polls `ready` (every 50 ms, within [`READY_TIMEOUT`]) until it answers true; fails with
    /// the process's log if it exits or the time runs out.
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

    /// [`wait_ready`](Self::wait_ready) for `addr` to accept TCP connections.
    pub fn wait_listening(&mut self, addr: SocketAddr) -> Result<()> {
        self.wait_ready(|| TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok())
    }

    /// Stops the process now, as dropping the guard would.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if self.graceful_stop && matches!(child.try_wait(), Ok(None)) {
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

    /// The child, to wait for it or read its pipes; `None` once stopped.
    pub fn child(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    /// The process id; `None` once stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything the process logged so far (empty for an adopted child).
    pub fn log_text(&self) -> String {
        self.log
            .as_ref()
            .and_then(|log| std::fs::read_to_string(log).ok())
            .unwrap_or_default()
    }

    /// Sends `signal` (`INT`, `TERM`, …) with `kill` and waits (up to `timeout`) for the
    /// process to exit: its status, or an error if it did not exit in time.
    pub fn signal_and_wait(&mut self, signal: &str, timeout: Duration) -> Result<ExitStatus> {
        let pid = self.pid().context("the process is already stopped")?;
        Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .context("run kill")?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not exit within {timeout:?} of SIG{signal}",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a successful command printed.
#[derive(Debug)]
pub struct Output {
    /// Its standard output, decoded lossily.
    pub stdout: String,
    /// Its standard error, decoded lossily.
    pub stderr: String,
}

/// What a command that ran to its end printed, and how it ended.
#[derive(Debug)]
pub struct Finished {
    /// Its exit status.
    pub status: std::process::ExitStatus,
    /// Its standard output, decoded lossily.
    pub stdout: String,
    /// Its standard error, decoded lossily.
    pub stderr: String,
}

/// Runs `command` to completion within `timeout`. The error names the command line, its exit
/// status (or the timeout) and carries what it printed on stderr (and stdout).
pub fn run_with_timeout(command: &mut Command, timeout: Duration) -> Result<Output> {
    let line = command_line(command);
    let Finished {
        status,
        stdout,
        stderr,
    } = run_to_end(command, timeout)?;
    if status.success() {
        Ok(Output { stdout, stderr })
    } else {
        bail!("`{line}` failed ({status}):\n{}", both(&stdout, &stderr))
    }
}

/// Runs `command` to completion within `timeout`, whatever its exit status (for tests of
/// the status itself); an error only if it cannot start or does not finish in time.
pub fn run_to_end(command: &mut Command, timeout: Duration) -> Result<Finished> {
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
        Some(status) => Ok(Finished {
            status,
            stdout,
            stderr,
        }),
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

/// The command as a shell would show it, for messages.
pub fn command_line(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
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
