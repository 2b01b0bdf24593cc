//! The container image and the compose cluster, as a user runs them: the `kraken` image is
//! built from the binary under test with `deploy/build-local-image.sh` (the runtime stage of
//! `deploy/Dockerfile`, without pulling a base image), `deploy/compose.yaml` starts the whole
//! cluster (tracker, three origins, build-index, proxy, two agents, with the example configs of
//! `deploy/config/`) under docker-compose on a private Docker engine, and an image pushed to the
//! proxy container is pulled from both agent containers with the same digest.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kraken_testkit::{free_port, http_status, require_packages, run, run_with_timeout};
use support::KRAKEN;
use support::docker::{Dockerd, DockerdOptions};

/// How long the cluster may take from `up` to every published port answering.
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How long `up` or `down` may take.
const COMPOSE_TIMEOUT: Duration = Duration::from_secs(120);

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// A compose project on a private Docker engine, brought down (containers, network, volumes)
/// when dropped, also when the test fails.
struct ComposeCluster<'a> {
    dockerd: &'a Dockerd,
    compose: PathBuf,
    project: String,
    env: Vec<(&'static str, String)>,
}

impl<'a> ComposeCluster<'a> {
    fn up(
        dockerd: &'a Dockerd,
        compose: PathBuf,
        env: Vec<(&'static str, String)>,
    ) -> Result<Self> {
        let cluster = Self {
            dockerd,
            compose,
            project: format!("kraken-e2e-{}", std::process::id()),
            env,
        };
        // The guard exists before `up`: a half-started project is brought down too.
        cluster.run(&["up", "--detach", "--no-build"])?;
        Ok(cluster)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = self.dockerd.client_command("docker-compose");
        command
            .arg("--project-name")
            .arg(&self.project)
            .arg("--file")
            .arg(&self.compose)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    fn run(&self, args: &[&str]) -> Result<String> {
        let output = run_with_timeout(&mut self.command(args), COMPOSE_TIMEOUT)?;
        Ok(output.stdout)
    }

    /// Every container's log, for failure messages.
    fn logs(&self) -> String {
        self.run(&["logs", "--no-color", "--tail", "60"])
            .unwrap_or_else(|e| format!("(no logs: {e:#})"))
    }
}

impl Drop for ComposeCluster<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.run(&["down", "--volumes", "--timeout", "5"]) {
            eprintln!("docker-compose down failed: {e:#}");
        }
    }
}

/// Polls `GET path` on `addr` until it answers 200, within `deadline`.
fn wait_for_ok(addr: SocketAddr, path: &str, deadline: Instant) -> Result<()> {
    let mut last = String::new();
    while Instant::now() < deadline {
        match http_status(addr, path, Duration::from_secs(2)) {
            Ok(200) => return Ok(()),
            Ok(status) => last = format!("status {status}"),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!("http://{addr}{path} did not answer 200 within {START_TIMEOUT:?} (last: {last})")
}

#[test]
fn compose_cluster_moves_an_image_from_the_proxy_to_both_agents() {
    if !require_packages(&[
        ("dockerd", "docker.io"),
        ("docker", "docker.io"),
        ("docker-compose", "docker-compose"),
        ("ldd", "libc-bin"),
        ("ip", "iproute2"),
    ]) {
        return;
    }
    let dockerd = Dockerd::start(&DockerdOptions::default()).expect("start dockerd");

    // The image, from the binary under test.
    let image = "kraken-e2e/kraken:test";
    let script = deploy_dir().join("build-local-image.sh");
    run_with_timeout(
        dockerd.client_command(&script).args([KRAKEN, image]),
        COMPOSE_TIMEOUT,
    )
    .expect("build the image with deploy/build-local-image.sh");
    let config = image_config(&dockerd, image).expect("inspect the image");
    assert_eq!(config["User"], "10001:10001", "runs as the kraken user");
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/usr/local/bin/kraken"])
    );
    for port in [
        "15000/tcp",
        "15002/tcp",
        "15003/tcp",
        "15004/tcp",
        "16000/tcp",
    ] {
        assert!(
            config["ExposedPorts"].get(port).is_some(),
            "exposes {port}: {config}"
        );
    }

    clear_stale_bridges(&deploy_dir().join("compose.yaml")).expect("check the compose subnet");
    let proxy_port = free_port();
    let agent_ports = [free_port(), free_port()];
    let cluster = ComposeCluster::up(
        &dockerd,
        deploy_dir().join("compose.yaml"),
        vec![
            ("KRAKEN_IMAGE", image.to_owned()),
            ("PROXY_PORT", proxy_port.to_string()),
            ("AGENT_0_PORT", agent_ports[0].to_string()),
            ("AGENT_1_PORT", agent_ports[1].to_string()),
        ],
    )
    .expect("docker-compose up");
    if let Err(e) = push_and_pull(&dockerd, proxy_port, agent_ports) {
        panic!("{e:#}\n\ncontainer logs:\n{}", cluster.logs());
    }
}

/// Waits for the proxy and agents, pushes a two-layer image to the proxy and pulls it from
/// each agent; the digests and the image's content must match.
fn push_and_pull(dockerd: &Dockerd, proxy_port: u16, agent_ports: [u16; 2]) -> Result<()> {
    let local = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + START_TIMEOUT;
    wait_for_ok(local(proxy_port), "/v2/", deadline).context("the proxy container")?;
    for port in agent_ports {
        wait_for_ok(local(port), "/readiness", deadline).context("an agent container")?;
    }

    let marker = format!(
        "pushed through the compose cluster by {}",
        std::process::id()
    );
    let image_id = dockerd.build_busybox_image("kraken-e2e/app:v1", &marker)?;
    let pushed_ref = format!("127.0.0.1:{proxy_port}/e2e/app:v1");
    dockerd.tag("kraken-e2e/app:v1", &pushed_ref)?;
    let pushed = dockerd
        .push(&pushed_ref)
        .context("docker push to the proxy")?;
    // Only the pulls may bring the image back.
    dockerd.rmi(&["kraken-e2e/app:v1", &pushed_ref])?;

    for port in agent_ports {
        let pulled_ref = format!("127.0.0.1:{port}/e2e/app:v1");
        let pulled = dockerd
            .pull(&pulled_ref)
            .with_context(|| format!("docker pull from the agent on port {port}"))?;
        if pulled != pushed {
            bail!("pulled {pulled} from {pulled_ref}, pushed {pushed}");
        }
        let pulled_id = dockerd.image_id(&pulled_ref)?;
        if pulled_id != image_id {
            bail!("image ID {pulled_id} pulled, {image_id} pushed");
        }
        let printed = dockerd.run_image(&pulled_ref, &[])?;
        if printed != marker {
            bail!("the pulled image printed {printed:?}, not {marker:?}");
        }
        dockerd.rmi(&[&pulled_ref])?;
    }
    Ok(())
}

/// `docker image inspect`'s `.Config` of `image`.
fn image_config(dockerd: &Dockerd, image: &str) -> Result<serde_json::Value> {
    let output = run_with_timeout(
        dockerd
            .docker()
            .args(["image", "inspect", "--format", "{{json .Config}}", image]),
        COMPOSE_TIMEOUT,
    )?;
    Ok(serde_json::from_str(output.stdout.trim())?)
}

/// The compose network's subnet is fixed (the configs name its addresses), and a bridge holding
/// it on the host makes the cluster unreachable. Removes such bridges that a Docker engine left
/// behind when it was killed (`br-…` with no interface attached); fails, saying why, when one is
/// in use (another compose cluster of this file running).
fn clear_stale_bridges(compose: &Path) -> Result<()> {
    let text = std::fs::read_to_string(compose)?;
    let subnet = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("- subnet: "))
        .context("no subnet in the compose file")?;
    let prefix = subnet
        .strip_suffix("0/24")
        .with_context(|| format!("subnet {subnet} is not a /24"))?;
    let links: Vec<serde_json::Value> = serde_json::from_str(
        &run(Command::new("ip").args(["-json", "-4", "addr", "show"]))?.stdout,
    )?;
    for link in links {
        let name = link["ifname"].as_str().unwrap_or_default();
        let on_subnet = link["addr_info"].as_array().is_some_and(|addrs| {
            addrs
                .iter()
                .any(|a| a["local"].as_str().is_some_and(|ip| ip.starts_with(prefix)))
        });
        if !on_subnet {
            continue;
        }
        let attached = std::fs::read_dir(format!("/sys/class/net/{name}/brif"))
            .map(|ports| ports.count())
            .unwrap_or(usize::MAX);
        if !(name.starts_with("br-") && attached == 0) {
            bail!(
                "{name} on this host has an address in {subnet}, the subnet of \
                 deploy/compose.yaml: stop whatever uses it (another compose cluster?)"
            );
        }
        run(Command::new("ip").args(["link", "delete", name]))?;
        eprintln!("removed {name}, a bridge on {subnet} left by a Docker engine that was killed");
    }
    Ok(())
}
