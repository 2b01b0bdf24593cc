//! `kraken devcluster --processes`: every role as its own child process, `kraken ROLE --config
//! FILE`, with the configs of [`RoleConfigs`] written under the data directory as
//! `origin-<i>.toml`, `tracker-<i>.toml`, `build-index.toml`, `proxy.toml` and
//! `agent-<i>.toml` (each role logs to the same name with `.log`). Tests restart a role they
//! killed by running the same command again.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use kraken_registry::devcluster::{ClusterShape, PortPlan, RoleConfigs};
use kraken_registry::origin::OriginClient;
use rustix::process::{Pid, Signal, kill_process};
use serde::Serialize;

use crate::process::DIE_WITH_PARENT;

/// How long every role has to answer `/health` after it is started.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the roles have to exit after SIGTERM before they get SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// One running role.
#[derive(Debug)]
struct Role {
    /// `origin-0`, `proxy`, …: the stem of its config and log files.
    name: String,
    /// Its HTTP address (an agent's registry API).
    addr: String,
    child: Child,
    /// Whether its exit was already reported.
    exited: bool,
}

/// `{"addr": …, "pid": …}` of the `--json` line.
#[derive(Debug, Serialize)]
struct RoleJson {
    addr: String,
    pid: u32,
}

impl From<&Role> for RoleJson {
    fn from(role: &Role) -> Self {
        Self {
            addr: role.addr.clone(),
            pid: role.child.id(),
        }
    }
}

/// The `--json` line.
#[derive(Debug, Serialize)]
struct ClusterJson {
    proxy: RoleJson,
    build_index: RoleJson,
    origins: Vec<RoleJson>,
    trackers: Vec<RoleJson>,
    agents: Vec<RoleJson>,
}

/// Writes every config, starts every role, waits until each answers `/health`, prints the
/// addresses, and stops them all on SIGINT or SIGTERM.
pub(super) async fn run(shape: ClusterShape, json: bool) -> anyhow::Result<()> {
    let dir = shape.data_dir.clone();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let configs = RoleConfigs::plan(&shape, PortPlan::Ephemeral)?;
    // Every config is written before any role starts: origins and trackers name each other.
    let mut planned: Vec<(String, &str, String, PathBuf)> = Vec::new();
    let mut plan = |name: String, command: &'static str, addr: String, text: String| {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        planned.push((name, command, addr, path));
        anyhow::Ok(())
    };
    for (i, origin) in configs.origins.iter().enumerate() {
        let text = toml::to_string(origin)?;
        plan(
            format!("origin-{i}"),
            "origin",
            origin.listen.to_string(),
            text,
        )?;
    }
    for (i, tracker) in configs.trackers.iter().enumerate() {
        let text = toml::to_string(tracker)?;
        plan(
            format!("tracker-{i}"),
            "tracker",
            tracker.listen.to_string(),
            text,
        )?;
    }
    let text = toml::to_string(&configs.build_index)?;
    plan(
        "build-index".into(),
        "build-index",
        configs.build_index.listen.to_string(),
        text,
    )?;
    let text = toml::to_string(&configs.proxy)?;
    plan(
        "proxy".into(),
        "proxy",
        configs.proxy.listen.to_string(),
        text,
    )?;
    for (i, agent) in configs.agents.iter().enumerate() {
        let text = toml::to_string(agent)?;
        plan(
            format!("agent-{i}"),
            "agent",
            agent.listen.to_string(),
            text,
        )?;
    }

    let mut roles = Vec::new();
    let started = start_all(&dir, planned, &mut roles);
    let result = match started {
        Ok(()) => serve(&mut roles, json).await,
        Err(e) => Err(e),
    };
    stop_all(&mut roles).await;
    result
}

/// Starts every planned role into `roles` (so that a failure part-way still stops those
/// started).
fn start_all(
    dir: &Path,
    planned: Vec<(String, &str, String, PathBuf)>,
    roles: &mut Vec<Role>,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding the kraken executable")?;
    let parent = std::process::id().to_string();
    for (name, command, addr, config) in planned {
        let log_path = dir.join(format!("{name}.log"));
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        // Spawned from this (the runtime's main) thread, which lives as long as the process:
        // the children's parent-death signal follows the thread that forked them.
        let child = Command::new(&exe)
            .arg(command)
            .arg("--config")
            .arg(&config)
            .env(DIE_WITH_PARENT, &parent)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        roles.push(Role {
            name,
            addr,
            child,
            exited: false,
        });
    }
    Ok(())
}

/// Waits for every role to answer, prints the addresses, then keeps reaping children (a test
/// may kill one) until SIGINT or SIGTERM.
async fn serve(roles: &mut [Role], json: bool) -> anyhow::Result<()> {
    wait_ready(roles).await?;
    for role in roles.iter() {
        eprintln!(
            "  {:<12} http://{}   pid {}",
            role.name,
            role.addr,
            role.child.id()
        );
    }
    eprintln!("Ctrl-C stops them all.");
    if json {
        let pick = |prefix: &str| -> Vec<RoleJson> {
            roles
                .iter()
                .filter(|r| r.name.starts_with(prefix))
                .map(RoleJson::from)
                .collect()
        };
        let one = |name: &str| -> RoleJson {
            RoleJson::from(roles.iter().find(|r| r.name == name).expect("planned"))
        };
        let line = ClusterJson {
            proxy: one("proxy"),
            build_index: one("build-index"),
            origins: pick("origin-"),
            trackers: pick("tracker-"),
            agents: pick("agent-"),
        };
        println!("{}", serde_json::to_string(&line)?);
    }
    let signal = crate::process::wait_for_signal();
    tokio::pin!(signal);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            r = &mut signal => return r,
            _ = tick.tick() => reap(roles),
        }
    }
}

/// Reaps children that exited (so a killed role is gone, not a zombie) and says so once.
fn reap(roles: &mut [Role]) {
    for role in roles.iter_mut().filter(|r| !r.exited) {
        if let Ok(Some(status)) = role.child.try_wait() {
            role.exited = true;
            eprintln!("{} exited ({status})", role.name);
        }
    }
}

/// Polls every role's `/health` until all answer; fails with the log of a role that exits.
async fn wait_ready(roles: &mut [Role]) -> anyhow::Result<()> {
    let client = OriginClient::new()?;
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut ready = vec![false; roles.len()];
    loop {
        for (role, ready) in roles.iter_mut().zip(ready.iter_mut()) {
            if *ready {
                continue;
            }
            if let Some(status) = role.child.try_wait()? {
                role.exited = true;
                anyhow::bail!(
                    "{} exited during start-up ({status}); see its .log",
                    role.name
                );
            }
            // Every role answers `GET /health` on its HTTP address.
            *ready = client
                .is_healthy(&role.addr, Duration::from_millis(500))
                .await;
        }
        if ready.iter().all(|r| *r) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let late: Vec<&str> = roles
                .iter()
                .zip(&ready)
                .filter(|(_, ready)| !**ready)
                .map(|(role, _)| role.name.as_str())
                .collect();
            anyhow::bail!("not healthy within {READY_TIMEOUT:?}: {late:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// SIGTERM to every role still running, a bounded wait, then SIGKILL.
async fn stop_all(roles: &mut [Role]) {
    reap(roles);
    for role in roles.iter().filter(|r| !r.exited) {
        if let Some(pid) = i32::try_from(role.child.id()).ok().and_then(Pid::from_raw) {
            let _ = kill_process(pid, Signal::TERM);
        }
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while roles.iter().any(|r| !r.exited) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        for role in roles.iter_mut().filter(|r| !r.exited) {
            role.exited = matches!(role.child.try_wait(), Ok(Some(_)));
        }
    }
    for role in roles.iter_mut().filter(|r| !r.exited) {
        eprintln!(
            "{} did not stop within {STOP_TIMEOUT:?}: killing it",
            role.name
        );
        let _ = role.child.kill();
        let _ = role.child.wait();
    }
}
