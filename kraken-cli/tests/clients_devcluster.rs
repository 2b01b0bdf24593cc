//! The end-to-end scenarios with real clients against `kraken devcluster`: pushes go to the
//! proxy, pulls to the agents (blobs over P2P from the origin and each other). The same
//! scenarios as `clients_distribution.rs`, which runs them against CNCF Distribution.

mod support;

use kraken_testkit::Skopeo;
use support::DevCluster;
use support::containerd::Containerd;
use support::docker::{Dockerd, DockerdOptions};
use support::podman::Podman;
use support::scenarios::{self, Endpoints, timed};

/// The endpoints the scenarios use: push to the proxy, pull from every agent.
fn endpoints(cluster: &DevCluster) -> Endpoints {
    let pulls: Vec<&str> = cluster.agents.iter().map(String::as_str).collect();
    Endpoints::new(&cluster.proxy, &pulls)
}

/// skopeo: a 3-layer image into the proxy and out of every agent; a multi-platform index;
/// a tag pushed again is pulled new at once.
#[test]
fn skopeo_through_proxy_and_agents() {
    if kraken_testkit::require_package("skopeo", "skopeo").is_none() {
        return;
    }
    let cluster = DevCluster::start();
    let endpoints = endpoints(&cluster);
    let skopeo = Skopeo::new();
    scenarios::skopeo_all(&endpoints, &skopeo);
}

/// containerd pulls from an agent directly and through a hosts.toml mirror entry.
#[test]
fn containerd_pulls_from_agents() {
    if !kraken_testkit::require_packages(&[
        ("skopeo", "skopeo"),
        ("containerd", "containerd"),
        ("ctr", "containerd"),
    ]) {
        return;
    }
    let cluster = DevCluster::start();
    let endpoints = endpoints(&cluster);
    let skopeo = Skopeo::new();
    let containerd = timed("containerd start", Containerd::start);
    let pushed = timed("containerd pulls", || {
        scenarios::containerd_pulls(&endpoints, &containerd, &skopeo)
    });
    if pushed.direct.runnable {
        assert_eq!(pushed.run_output.as_deref().map(str::trim), Some("ran"));
    }
}

/// The Docker engine pushes to the proxy and pulls from the agents, directly and through
/// `registry-mirrors`.
#[test]
fn docker_pushes_to_the_proxy_and_pulls_from_agents() {
    if !kraken_testkit::require_packages(&[("dockerd", "docker.io"), ("docker", "docker.io")]) {
        return;
    }
    let cluster = DevCluster::start();
    let endpoints = endpoints(&cluster);
    let options = DockerdOptions {
        registry_mirrors: vec![format!("http://{}", cluster.agents[0])],
    };
    let dockerd = timed("dockerd start", || Dockerd::start(&options));
    timed("docker push and pull", || {
        scenarios::docker_push_pull(&endpoints, &dockerd)
    });
    timed("docker pull through registry-mirrors", || {
        scenarios::docker_mirror_pull(&endpoints.push, &dockerd)
    });
}

/// podman pulls from the agents, directly and through a `registries.conf` mirror.
#[test]
fn podman_pulls_from_agents() {
    if !kraken_testkit::require_packages(&[("podman", "podman"), ("skopeo", "skopeo")]) {
        return;
    }
    let cluster = DevCluster::start();
    let endpoints = endpoints(&cluster);
    let skopeo = Skopeo::new();
    let podman = Podman::new(&[("docker.io", cluster.agents[0].as_str())]).expect("podman storage");
    timed("podman pull", || {
        scenarios::podman_pull(&endpoints, &podman, &skopeo)
    });
    timed("podman pull through a registries.conf mirror", || {
        scenarios::podman_mirror_pull(&endpoints.push, &podman, &skopeo)
    });
}
