//! The end-to-end scenarios with real clients (skopeo, containerd's ctr, docker, podman),
//! run against CNCF Distribution (`docker-registry`): one instance takes the pushes, and the
//! pulls go both to it and to a second instance, a read-only pull-through cache of the first
//! (the part a kraken agent will play). The same scenarios will run against the devcluster.
//! Each test starts its own registries and daemon, so tests run in parallel.

mod support;

use std::io::Read as _;

use kraken_core::Digest;
use kraken_testkit::Skopeo;
use kraken_testkit::oci::{ImageSpec, OciLayout, check_layout};
use kraken_testkit::{Distribution, summary};
use support::containerd::Containerd;
use support::docker::{Dockerd, DockerdOptions};
use support::podman::Podman;
use support::scenarios::{self, Endpoints, timed};

/// The push registry and its pull-through cache.
struct Registries {
    origin: Distribution,
    cache: Distribution,
}

impl Registries {
    /// `None` (test skipped) when docker-registry is missing outside CI.
    fn start() -> Option<Self> {
        kraken_testkit::require_package("docker-registry", "docker-registry")?;
        let origin = Distribution::start().expect("start docker-registry");
        let cache =
            Distribution::start_pull_through(origin.host()).expect("start the pull-through cache");
        Some(Self { origin, cache })
    }

    fn endpoints(&self) -> Endpoints {
        Endpoints::new(self.origin.host(), &[self.origin.host(), self.cache.host()])
    }
}

#[test]
fn generated_images_are_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let mut layout = OciLayout::create(dir.path()).unwrap();
    let image = layout
        .add_image("v1", &ImageSpec::new(&[1000, 70_000], 9))
        .unwrap();
    let index = layout
        .add_index(
            "multi",
            &[
                ImageSpec::new(&[10], 10),
                ImageSpec::new(&[10], 11).for_architecture("arm64"),
            ],
        )
        .unwrap();

    let check = check_layout(dir.path(), "v1").unwrap();
    assert_eq!(check.top, image.manifest);
    assert_eq!(check.blobs.len(), 1 + image.blobs().len());
    assert_eq!(image.layers.len(), 2 + usize::from(image.runnable));
    // diff_ids are the digests of the gunzipped layers.
    for (layer, diff_id) in image.layers.iter().zip(&image.diff_ids) {
        let gz = std::fs::read(dir.path().join("blobs/sha256").join(layer.hex())).unwrap();
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(&Digest::sha256_of(&tar), diff_id);
    }
    let multi = check_layout(dir.path(), "multi").unwrap();
    assert_eq!(multi.top, index.index);
    assert_eq!(index.manifests.len(), 2);
    for platform_image in &index.manifests {
        assert!(multi.blobs.contains(&platform_image.manifest));
        assert!(multi.blobs.contains(&platform_image.config));
    }
    assert_eq!(index.manifests[1].architecture, "arm64");
    assert!(!index.manifests[1].runnable, "busybox is amd64 only");

    // Deterministic: the same spec gives the same digests.
    let again = tempfile::tempdir().unwrap();
    let same = OciLayout::create(again.path())
        .unwrap()
        .add_image("v1", &ImageSpec::new(&[1000, 70_000], 9))
        .unwrap();
    assert_eq!(same, image);
}

/// A failing client command is an error that names the command and carries its stderr.
#[test]
fn client_failures_carry_the_clients_stderr() {
    let Some(registries) = Registries::start() else {
        return;
    };
    if kraken_testkit::require_package("skopeo", "skopeo").is_none() {
        return;
    }
    let skopeo = Skopeo::new();
    let missing = format!("docker://{}/e2e/never-pushed:v1", registries.origin.host());
    let error = skopeo
        .manifest_digest(&missing)
        .expect_err("a tag never pushed");
    let message = format!("{error:#}");
    assert!(message.contains("skopeo"), "{message}");
    assert!(message.contains("never-pushed"), "{message}");
    assert!(message.contains("manifest unknown"), "{message}");
    println!("{message}");
}

/// (a) copy in and out, (d) a multi-platform index, (e) a tag pushed again.
#[test]
fn skopeo_copies_indexes_and_mutated_tags() {
    let Some(registries) = Registries::start() else {
        return;
    };
    if kraken_testkit::require_package("skopeo", "skopeo").is_none() {
        return;
    }
    let endpoints = registries.endpoints();
    let skopeo = Skopeo::new();
    scenarios::skopeo_all(&endpoints, &skopeo);
    println!(
        "requests to the push registry:\n{}",
        summary(&registries.origin.requests())
    );
}

/// (b) containerd pulls directly and through a hosts.toml mirror, and runs the image.
#[test]
fn containerd_pulls_directly_and_through_a_mirror() {
    let Some(registries) = Registries::start() else {
        return;
    };
    if !kraken_testkit::require_packages(&[
        ("skopeo", "skopeo"),
        ("containerd", "containerd"),
        ("ctr", "containerd"),
    ]) {
        return;
    }
    let endpoints = registries.endpoints();
    let skopeo = Skopeo::new();
    let containerd = timed("containerd start", Containerd::start);
    let pushed = timed("containerd pulls", || {
        scenarios::containerd_pulls(&endpoints, &containerd, &skopeo)
    });
    if pushed.direct.runnable {
        assert_eq!(pushed.run_output.as_deref().map(str::trim), Some("ran"));
    }
    // Through the mirror every request names the upstream: `?ns=docker.io`.
    let requests = registries.cache.requests();
    let mirrored: Vec<_> = requests
        .iter()
        .filter(|request| request.target.contains("/library/e2e-mirror/"))
        .collect();
    assert!(!mirrored.is_empty(), "{}", summary(&requests));
    for request in &mirrored {
        assert!(
            request.target.ends_with("?ns=docker.io"),
            "{} {}",
            request.method,
            request.target
        );
    }
    println!(
        "requests to the pull-through cache:\n{}",
        summary(&requests)
    );
}

/// (c) docker builds, pushes, removes and pulls back an image, directly and through
/// `registry-mirrors`.
#[test]
fn docker_pushes_and_pulls() {
    let Some(registries) = Registries::start() else {
        return;
    };
    if !kraken_testkit::require_packages(&[("dockerd", "docker.io"), ("docker", "docker.io")]) {
        return;
    }
    let endpoints = registries.endpoints();
    let options = DockerdOptions {
        registry_mirrors: vec![format!("http://{}", registries.cache.host())],
    };
    let dockerd = timed("dockerd start", || Dockerd::start(&options));
    timed("docker push and pull", || {
        scenarios::docker_push_pull(&endpoints, &dockerd)
    });
    timed("docker pull through registry-mirrors", || {
        scenarios::docker_mirror_pull(&endpoints.push, &dockerd)
    });
    let requests = registries.cache.requests();
    assert!(
        requests
            .iter()
            .any(|request| request.target.starts_with("/v2/library/e2e-docker-mirror/")),
        "the mirror saw no request for the image: {}",
        summary(&requests)
    );
    println!(
        "requests to the push registry:\n{}\nrequests to the pull-through cache:\n{}",
        summary(&registries.origin.requests()),
        summary(&requests)
    );
}

/// (f) podman pulls and runs, directly and through a `registries.conf` mirror.
#[test]
fn podman_pulls() {
    let Some(registries) = Registries::start() else {
        return;
    };
    if !kraken_testkit::require_packages(&[("podman", "podman"), ("skopeo", "skopeo")]) {
        return;
    }
    let endpoints = registries.endpoints();
    let skopeo = Skopeo::new();
    let podman = Podman::new(&[("docker.io", registries.cache.host())]).expect("podman storage");
    timed("podman pull", || {
        scenarios::podman_pull(&endpoints, &podman, &skopeo)
    });
    timed("podman pull through a registries.conf mirror", || {
        scenarios::podman_mirror_pull(&endpoints.push, &podman, &skopeo)
    });
    let requests = registries.cache.requests();
    assert!(
        requests
            .iter()
            .any(|request| request.target.starts_with("/v2/library/e2e-podman-mirror/")),
        "the mirror saw no request for the image: {}",
        summary(&requests)
    );
    println!(
        "requests to the pull-through cache:\n{}",
        summary(&requests)
    );
}
