//! A cluster of real processes for fault tests: `kraken devcluster --processes --json`, its
//! one line parsed, and roles killed (SIGKILL, by pid) and restarted (the same `kraken ROLE
//! --config FILE` the devcluster ran, from the config it wrote under its data directory).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::net::http_status;
use crate::process::ProcessGuard;

/// How long a killed role may take to disappear (its parent reaps it every 200 ms).
const DEATH_TIMEOUT: Duration = Duration::from_secs(10);

/// A role of the cluster.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Role {
    /// The proxy (there is one).
    Proxy,
    /// The build-index (there is one).
    BuildIndex,
    /// Origin *i*.
    Origin(usize),
    /// Tracker *i*.
    Tracker(usize),
    /// Agent *i*.
    Agent(usize),
}

impl Role {
    /// The stem of the role's config file under the data directory, as the devcluster names
    /// it, and the `kraken` subcommand that runs it.
    fn files(self) -> (String, &'static str) {
        match self {
            Self::Proxy => ("proxy".into(), "proxy"),
            Self::BuildIndex => ("build-index".into(), "build-index"),
            Self::Origin(i) => (format!("origin-{i}"), "origin"),
            Self::Tracker(i) => (format!("tracker-{i}"), "tracker"),
            Self::Agent(i) => (format!("agent-{i}"), "agent"),
        }
    }
}

/// One role's HTTP address (an agent's registry API) and process id.
#[derive(Clone, Debug)]
pub struct RoleProcess {
    /// Where its HTTP API listens.
    pub addr: SocketAddr,
    /// Its process id (a restarted role's new one).
    pub pid: u32,
}

/// `kraken devcluster --processes` run by a test; stopped (and every role with it) on drop.
#[derive(Debug)]
pub struct ProcessCluster {
    devcluster: ProcessGuard,
    kraken: PathBuf,
    dir: PathBuf,
    /// The proxy (push here).
    pub proxy: RoleProcess,
    /// The build-index.
    pub build_index: RoleProcess,
    /// The origins.
    pub origins: Vec<RoleProcess>,
    /// The trackers.
    pub trackers: Vec<RoleProcess>,
    /// The agents (pull here).
    pub agents: Vec<RoleProcess>,
    /// Roles this test restarted: children of the test, not of the devcluster.
    restarted: Vec<ProcessGuard>,
}

impl ProcessCluster {
    /// Runs `kraken devcluster --processes --json` (`kraken` is the binary) with `origins`,
    /// `trackers` and `agents`, its data and configs in `dir`, and returns once every role
    /// answers.
    pub fn start(
        kraken: &Path,
        dir: &Path,
        origins: usize,
        trackers: usize,
        agents: usize,
    ) -> Result<Self> {
        Self::start_with(kraken, dir, origins, trackers, agents, &[])
    }

    /// [`start`](Self::start) with more `kraken devcluster` flags (`--redis URL`, say).
    pub fn start_with(
        kraken: &Path,
        dir: &Path,
        origins: usize,
        trackers: usize,
        agents: usize,
        flags: &[&str],
    ) -> Result<Self> {
        let log = dir.join("devcluster.log");
        let data = dir.join("cluster");
        let counts = [origins, trackers, agents].map(|n| n.to_string());
        let mut devcluster = ProcessGuard::spawn(
            "kraken devcluster --processes",
            kraken,
            [
                "devcluster".as_ref(),
                "--processes".as_ref(),
                "--json".as_ref(),
                "--origins".as_ref(),
                counts[0].as_ref(),
                "--trackers".as_ref(),
                counts[1].as_ref(),
                "--agents".as_ref(),
                counts[2].as_ref(),
                "--data-dir".as_ref(),
                data.as_os_str(),
            ]
            .into_iter()
            .chain(flags.iter().map(|flag| flag.as_ref())),
            &log,
        )?;
        // stdout and stderr share the log: the JSON line is the one that opens with `{`.
        let json_line = || {
            std::fs::read_to_string(&log).ok().and_then(|text| {
                text.lines()
                    .find(|line| line.starts_with("{\"proxy\""))
                    .map(str::to_owned)
            })
        };
        devcluster.wait_ready(|| json_line().is_some())?;
        let line = json_line().context("the JSON line")?;
        let value: Value = serde_json::from_str(&line).context("parsing the JSON line")?;
        let role = |v: &Value| -> Result<RoleProcess> {
            Ok(RoleProcess {
                addr: v["addr"]
                    .as_str()
                    .context("addr")?
                    .parse()
                    .context("addr")?,
                pid: v["pid"]
                    .as_u64()
                    .and_then(|pid| u32::try_from(pid).ok())
                    .context("pid")?,
            })
        };
        let list = |key: &str| -> Result<Vec<RoleProcess>> {
            value[key]
                .as_array()
                .with_context(|| format!("{key} is no list"))?
                .iter()
                .map(role)
                .collect()
        };
        Ok(Self {
            proxy: role(&value["proxy"])?,
            build_index: role(&value["build_index"])?,
            origins: list("origins")?,
            trackers: list("trackers")?,
            agents: list("agents")?,
            devcluster,
            kraken: kraken.to_owned(),
            dir: data,
            restarted: Vec::new(),
        })
    }

    /// The role's address and pid.
    pub fn role(&self, role: Role) -> &RoleProcess {
        match role {
            Role::Proxy => &self.proxy,
            Role::BuildIndex => &self.build_index,
            Role::Origin(i) => &self.origins[i],
            Role::Tracker(i) => &self.trackers[i],
            Role::Agent(i) => &self.agents[i],
        }
    }

    fn role_mut(&mut self, role: Role) -> &mut RoleProcess {
        match role {
            Role::Proxy => &mut self.proxy,
            Role::BuildIndex => &mut self.build_index,
            Role::Origin(i) => &mut self.origins[i],
            Role::Tracker(i) => &mut self.trackers[i],
            Role::Agent(i) => &mut self.agents[i],
        }
    }

    /// The directory of every role's data, config (`origin-0.toml`, …) and log.
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// SIGKILLs the role and returns once its process is gone.
    pub fn kill(&mut self, role: Role) -> Result<()> {
        let pid = self.role(role).pid;
        let status = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .stderr(Stdio::null())
            .status()
            .context("running kill")?;
        if !status.success() {
            bail!("{role:?} (pid {pid}) is not running");
        }
        // A restarted role is this test's child: reap it here.
        for guard in &mut self.restarted {
            if guard.pid() == Some(pid) {
                guard.stop();
            }
        }
        let deadline = Instant::now() + DEATH_TIMEOUT;
        while Path::new(&format!("/proc/{pid}")).exists() {
            if Instant::now() >= deadline {
                bail!("{role:?} (pid {pid}) still exists {DEATH_TIMEOUT:?} after SIGKILL");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Starts the role again from the config the devcluster wrote (kill it first), and
    /// returns once it answers `/health`.
    pub fn restart(&mut self, role: Role) -> Result<()> {
        let (stem, command) = role.files();
        let config = self.dir.join(format!("{stem}.toml"));
        let log = self
            .dir
            .join(format!("{stem}.restart{}.log", self.restarted.len()));
        let mut guard = ProcessGuard::spawn(
            &stem,
            &self.kraken,
            [command.as_ref(), "--config".as_ref(), config.as_os_str()],
            &log,
        )?;
        let addr = self.role(role).addr;
        guard.wait_ready(|| {
            http_status(addr, "/health", Duration::from_millis(500)).ok() == Some(200)
        })?;
        self.role_mut(role).pid = guard.pid().context("the restarted role")?;
        self.restarted.push(guard);
        Ok(())
    }

    /// The devcluster's own log (its table, and which roles exited).
    pub fn log_text(&self) -> String {
        self.devcluster.log_text()
    }

    /// The log of a role as the devcluster started it.
    pub fn role_log(&self, role: Role) -> String {
        let (stem, _) = role.files();
        std::fs::read_to_string(self.dir.join(format!("{stem}.log"))).unwrap_or_default()
    }
}
