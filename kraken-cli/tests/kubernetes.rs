//! The Helm chart (`deploy/helm/kraken`) and the plain manifests (`deploy/kubernetes`): the
//! chart renders and lints with Helm's own engine (through `helm-python-sdk`: the `helm` binary
//! is not packaged for Debian), every rendered object — with the default values and with every
//! option on — and every object `kubectl kustomize deploy/kubernetes` renders is valid against
//! the Kubernetes schemas (`kubernetes-validate --strict`), the plain manifests are the chart's
//! rendering, the objects are the ones the chart promises (agent DaemonSet with a hostPort and
//! probes, origin StatefulSet behind a headless Service, the publish token's Secret mounted into
//! the tracker and the origins only, …), and the configs in the ConfigMap load with each role's
//! loader once a pod's values are filled in.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use kraken_registry::agent::AgentConfig;
use kraken_registry::build_index::BuildIndexConfig;
use kraken_registry::origin::OriginConfig;
use kraken_registry::proxy::ProxyConfig;
use kraken_testkit::{free_addr, require_program, run};
use serde_json::Value;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Whether the tools are installed: python3 with `helm_python` (PyPI `helm-python-sdk`),
/// `kubernetes-validate` (PyPI) and kubectl. Missing ones fail the test under `CI=true`.
fn tools_installed() -> bool {
    let python = require_program("python3", "apt-get install python3").is_some();
    let validate =
        require_program("kubernetes-validate", "pip install kubernetes-validate").is_some();
    let kubectl = require_program(
        "kubectl",
        "kubectl from the Kubernetes project's packages (not in Debian)",
    )
    .is_some();
    let helm = python
        && Command::new("python3")
            .args(["-c", "import helm_python, yaml"])
            .output()
            .is_ok_and(|o| o.status.success());
    if python && !helm {
        let message =
            "python module helm_python not found; install it with: pip install helm-python-sdk";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{message} (scripts/install-test-deps does)");
        }
        println!("SKIPPED: {message}");
    }
    python && validate && kubectl && helm
}

/// `deploy/helm/render.py --lint` with `values` (JSON): the chart's objects as YAML.
fn render(values: &Value) -> String {
    render_with(values, &[])
}

/// `render` with more flags of render.py (`--manifests`).
fn render_with(values: &Value, flags: &[&str]) -> String {
    run(Command::new(deploy_dir().join("helm/render.py"))
        .arg("--lint")
        .args(flags)
        .arg("--values")
        .arg(values.to_string()))
    .expect("render the chart")
    .stdout
}

/// Where the tracker and the origins read the publish token, the Secret's mount.
const PUBLISH_TOKEN_FILE: &str = "/etc/kraken-secret/publish-token";

/// YAML documents as JSON values (PyYAML, which kubernetes-validate brings).
fn objects(yaml: &str, dir: &Path) -> Vec<Value> {
    let file = dir.join("objects.yaml");
    std::fs::write(&file, yaml).unwrap();
    let output = run(Command::new("python3")
        .arg("-c")
        .arg(
            "import json, sys, yaml\n\
         docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]\n\
         print(json.dumps(docs))",
        )
        .arg(&file))
    .expect("parse the rendered YAML");
    serde_json::from_str(&output.stdout).unwrap()
}

/// Runs `kubernetes-validate --strict` on `yaml`; panics with its report on any error, and on
/// any warning but the missing schema of a ServiceMonitor (a CRD, not in the bundled schemas).
fn validate(yaml: &str, dir: &Path, what: &str) {
    let file = dir.join(format!("{what}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    let output = Command::new("kubernetes-validate")
        .args(["--strict", "--quiet"])
        .arg(&file)
        .output()
        .expect("run kubernetes-validate");
    let report = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    let unexpected: Vec<&str> = report
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !l.contains("Couldn't find schema for kind ServiceMonitor"))
        .collect();
    assert!(
        output.status.success() && unexpected.is_empty(),
        "{what}: kubernetes-validate found problems:\n{report}"
    );
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} among the rendered objects"))
}

fn container<'a>(workload: &'a Value, name: &str) -> &'a Value {
    workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

#[test]
fn chart_and_manifests_render_and_every_object_is_schema_valid() {
    if !tools_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();

    let defaults = render(&serde_json::json!({}));
    validate(&defaults, dir.path(), "defaults");
    let all_on = render(&serde_json::json!({
        "metrics": {"serviceMonitor": {"enabled": true}},
        "agent": {"storage": {"hostPath": "/var/cache/kraken-agent"}, "egressRate": "100MiB"},
        "buildIndex": {"replicas": 2},
        "proxy": {"service": {"type": "LoadBalancer"}},
        "imagePullSecrets": [{"name": "registry"}],
    }));
    validate(&all_on, dir.path(), "all-options");

    // The plain manifests are the chart's rendering for manifests (no Secret: the operator
    // makes `kraken-publish-token`), and kustomize renders them valid.
    let manifests = render_with(&serde_json::json!({}), &["--manifests"]);
    let checked_in = std::fs::read_to_string(deploy_dir().join("kubernetes/kraken.yaml")).unwrap();
    assert!(
        checked_in.trim_end() == manifests.trim_end(),
        "deploy/kubernetes/kraken.yaml differs from the chart's rendering: regenerate it with \
         deploy/helm/render.py --manifests > deploy/kubernetes/kraken.yaml"
    );
    let kustomized = run(Command::new("kubectl")
        .arg("kustomize")
        .arg(deploy_dir().join("kubernetes")))
    .expect("kubectl kustomize deploy/kubernetes")
    .stdout;
    validate(&kustomized, dir.path(), "kustomize");
    let kustomized = objects(&kustomized, dir.path());
    assert_eq!(kustomized.len(), objects(&manifests, dir.path()).len());
    assert!(
        !kustomized.iter().any(|o| o["kind"] == "Secret"),
        "the plain manifests hold no token"
    );
    let plain_tracker = find(&kustomized, "Deployment", "kraken-tracker");
    assert_eq!(
        token_secret_of(plain_tracker),
        "kraken-publish-token",
        "the Secret deploy/kubernetes/kustomization.yaml tells the operator to make"
    );
    assert!(
        kustomized
            .iter()
            .all(|o| o["metadata"]["namespace"] == "kraken")
    );

    let objects_default = objects(&defaults, dir.path());
    // The agent: a DaemonSet on every node, its registry port on the host, probed.
    let agent = find(&objects_default, "DaemonSet", "kraken-agent");
    let agent_container = container(agent, "agent");
    let http = &agent_container["ports"][0];
    assert_eq!(
        (http["containerPort"].as_u64(), http["hostPort"].as_u64()),
        (Some(16000), Some(16000))
    );
    assert_eq!(
        agent_container["livenessProbe"]["httpGet"]["path"],
        "/health"
    );
    assert_eq!(
        agent_container["readinessProbe"]["httpGet"]["path"],
        "/readiness"
    );
    let data = |workload: &Value| -> Value {
        workload["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "data")
            .cloned()
            .unwrap()
    };
    assert!(
        data(agent)["emptyDir"].is_object(),
        "the agent's cache is an emptyDir by default"
    );
    // Origins: a StatefulSet named by a headless Service (stable per-pod DNS names).
    let origin = find(&objects_default, "StatefulSet", "kraken-origin");
    assert_eq!(origin["spec"]["serviceName"], "kraken-origin");
    assert_eq!(origin["spec"]["replicas"], 3);
    assert_eq!(
        find(&objects_default, "Service", "kraken-origin")["spec"]["clusterIP"],
        "None"
    );
    // The publish token: a Secret of the release, mounted into the tracker and the origins
    // (and nowhere else), where their configs read it.
    let secret = find(&objects_default, "Secret", "kraken-publish-token");
    let generated = secret["data"]["publish-token"].as_str().unwrap();
    assert!(generated.len() >= 32, "a generated token: {generated}");
    let tracker = find(&objects_default, "Deployment", "kraken-tracker");
    for (workload, name) in [(tracker, "tracker"), (origin, "origin")] {
        assert_eq!(token_secret_of(workload), "kraken-publish-token");
        let mounted = container(workload, name)["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| {
                m["name"] == "publish-token"
                    && PUBLISH_TOKEN_FILE.starts_with(m["mountPath"].as_str().unwrap())
            });
        assert!(mounted, "the {name} mounts the publish token");
    }
    for workload in [
        find(&objects_default, "DaemonSet", "kraken-agent"),
        find(&objects_default, "Deployment", "kraken-proxy"),
        find(&objects_default, "StatefulSet", "kraken-build-index"),
    ] {
        let volumes = workload["spec"]["template"]["spec"]["volumes"].to_string();
        assert!(
            !volumes.contains("publish-token"),
            "only the tracker and the origins hold the token: {volumes}"
        );
    }
    // A token given in the values is the Secret's; an existing Secret is used, not made.
    let given = objects(
        &render(&serde_json::json!({"publishToken": {"value": "given-token"}})),
        dir.path(),
    );
    assert_eq!(
        find(&given, "Secret", "kraken-publish-token")["data"]["publish-token"],
        "Z2l2ZW4tdG9rZW4=",
        "base64 of given-token"
    );
    let own = objects(
        &render(&serde_json::json!({"publishToken": {"existingSecret": "my-token"}})),
        dir.path(),
    );
    assert!(!own.iter().any(|o| o["kind"] == "Secret"));
    assert_eq!(
        token_secret_of(find(&own, "StatefulSet", "kraken-origin")),
        "my-token"
    );
    find(&objects_default, "StatefulSet", "kraken-build-index");
    find(&objects_default, "Deployment", "kraken-tracker");
    find(&objects_default, "Deployment", "kraken-proxy");
    assert!(
        !objects_default
            .iter()
            .any(|o| o["kind"] == "ServiceMonitor"),
        "the ServiceMonitor is off by default"
    );

    let objects_all = objects(&all_on, dir.path());
    let monitor = find(&objects_all, "ServiceMonitor", "kraken");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    let agent = find(&objects_all, "DaemonSet", "kraken-agent");
    assert_eq!(data(agent)["hostPath"]["path"], "/var/cache/kraken-agent");
}

/// The Secret a workload's `publish-token` volume comes from.
fn token_secret_of(workload: &Value) -> String {
    workload["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "publish-token")
        .and_then(|v| v["secret"]["secretName"].as_str())
        .unwrap_or_else(|| panic!("no publish-token Secret volume in {workload}"))
        .to_owned()
}

#[test]
fn the_chart_configs_load_with_the_roles_loaders() {
    if !tools_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let objects = objects(
        &render(&serde_json::json!({"buildIndex": {"replicas": 2}})),
        dir.path(),
    );
    let configs = &find(&objects, "ConfigMap", "kraken-config")["data"];
    // What the render-config init container does for a pod.
    let for_pod = |key: &str, pod: &str| -> String {
        configs[key]
            .as_str()
            .unwrap_or_else(|| panic!("no {key} in the ConfigMap"))
            .replace("${POD_IP}", "10.1.2.3")
            .replace("${POD_NAME}", pod)
    };

    let origin: OriginConfig = toml::from_str(&for_pod("origin.toml", "kraken-origin-1")).unwrap();
    origin.validate().unwrap();
    assert_eq!(
        origin.tracker_publish_token_file.as_deref(),
        Some(Path::new(PUBLISH_TOKEN_FILE)),
        "the origin presents the tracker's publish token"
    );
    assert_eq!(
        origin.self_name(),
        "kraken-origin-1.kraken-origin.kraken.svc.cluster.local:15002"
    );
    let build_index: BuildIndexConfig =
        toml::from_str(&for_pod("build-index.toml", "kraken-build-index-0")).unwrap();
    build_index.validate().unwrap();
    assert!(build_index.neighbours.contains(&build_index.self_name()));
    assert_eq!(build_index.neighbours.len(), 2);
    let proxy: ProxyConfig = toml::from_str(&for_pod("proxy.toml", "kraken-proxy-x")).unwrap();
    proxy.validate().unwrap();
    let agent: AgentConfig = toml::from_str(&for_pod("agent.toml", "kraken-agent-x")).unwrap();
    agent.validate().unwrap();
    assert_eq!(
        agent.peer_advertise,
        Some("10.1.2.3:16001".parse().unwrap())
    );

    // The tracker's loader lives in the binary: start it on the rendered config (on a free
    // loopback port instead of every interface, with the token in a file here instead of the
    // Secret's mount) and see it listen.
    let listen = free_addr("127.0.0.1");
    let token = dir.path().join("publish-token");
    std::fs::write(&token, "a-token\n").unwrap();
    let tracker = for_pod("tracker.toml", "kraken-tracker-x")
        .replace(
            "listen = \"0.0.0.0:15003\"",
            &format!("listen = \"{listen}\""),
        )
        .replace(
            &format!("publish_token_file = \"{PUBLISH_TOKEN_FILE}\""),
            &format!("publish_token_file = {:?}", token.display().to_string()),
        );
    assert!(
        tracker.contains(&listen.to_string()),
        "the tracker config sets listen"
    );
    assert!(
        tracker.contains(&token.display().to_string()),
        "the tracker config sets publish_token_file = {PUBLISH_TOKEN_FILE:?}: {tracker}"
    );
    let _tracker = support::start_role("tracker", &tracker, dir.path(), &listen.to_string());
}
