//! The end-to-end scenarios, each given the endpoint to push to and the endpoints to pull
//! from (today CNCF Distribution plays them all; later the devcluster's proxy and agents).
//! Every scenario pushes its own repositories, so several can share endpoints, and returns
//! what it pushed so the caller can check more (e.g. the requests an endpoint saw).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use kraken_core::Digest;

use super::containerd::{Containerd, PullVia};
use super::docker::Dockerd;
use super::podman::Podman;
use kraken_testkit::Skopeo;
use kraken_testkit::oci::{Image, ImageIndex, ImageSpec, OciLayout, check_layout};

const KIB: usize = 1024;

/// Where a scenario pushes and pulls: `HOST:PORT` of each endpoint (plain HTTP).
#[derive(Clone, Debug)]
pub struct Endpoints {
    pub push: String,
    pub pulls: Vec<String>,
    /// How long a pull endpoint may go on serving a tag's previous image after it was pushed
    /// again (a tag cache's lifetime); zero when it must be at once.
    pub tag_settle: Duration,
}

impl Endpoints {
    pub fn new(push: &str, pulls: &[&str]) -> Self {
        Self {
            push: push.to_owned(),
            pulls: pulls.iter().map(|pull| (*pull).to_owned()).collect(),
            tag_settle: Duration::ZERO,
        }
    }
}

/// Writes `spec` as `tag` in a fresh layout and pushes it with skopeo to `host/repo:tag`.
pub fn push_image(
    skopeo: &Skopeo,
    host: &str,
    repo: &str,
    tag: &str,
    spec: &ImageSpec,
) -> Result<Image> {
    let mut layout = OciLayout::create(&skopeo.scratch(&format!("src-{}", spec.seed)))?;
    let image = layout.add_image(tag, spec)?;
    skopeo.copy(
        &layout.reference(tag),
        &format!("docker://{host}/{repo}:{tag}"),
        false,
    )?;
    Ok(image)
}

/// (a) skopeo copies a three-layer image (busybox and two data layers) into the push endpoint
/// and back out of every pull endpoint into an OCI layout: same manifest digest, every blob
/// present and matching its digest.
pub fn skopeo_copy(endpoints: &Endpoints, skopeo: &Skopeo) -> Result<Image> {
    let (repo, tag) = ("e2e/skopeo", "v1");
    let image = push_image(
        skopeo,
        &endpoints.push,
        repo,
        tag,
        &ImageSpec::new(&[256 * KIB, 1024 * KIB], 1),
    )?;
    ensure!(
        image.layers.len() == 3,
        "the image has busybox and two data layers"
    );
    for (i, pull) in endpoints.pulls.iter().enumerate() {
        let out = skopeo.scratch(&format!("out-skopeo-{i}"));
        skopeo
            .copy(
                &format!("docker://{pull}/{repo}:{tag}"),
                &format!("oci:{}:{tag}", out.display()),
                false,
            )
            .with_context(|| format!("skopeo copy out of {pull}"))?;
        let check = check_layout(&out, tag)?;
        ensure!(
            check.top == image.manifest,
            "{pull} served manifest {} for {repo}:{tag}, pushed {}",
            check.top,
            image.manifest
        );
        for blob in image.blobs() {
            ensure!(
                check.blobs.contains(&blob),
                "{blob} missing from {pull}'s copy"
            );
        }
    }
    Ok(image)
}

/// What [`containerd_pulls`] pushed.
#[derive(Debug)]
pub struct ContainerdPushed {
    /// Pulled by `HOST:PORT/e2e/containerd:v1` from every pull endpoint.
    pub direct: Image,
    /// Pulled as `docker.io/library/e2e-mirror:v1` through a hosts.toml mirror on every pull
    /// endpoint.
    pub mirrored: Image,
    /// What `ctr run` of the image printed, when the image has busybox.
    pub run_output: Option<String>,
}

/// (b) containerd pulls an image from every pull endpoint directly (`--plain-http`), runs it
/// (`ctr run`), and pulls another, pushed as `library/e2e-mirror`, as
/// `docker.io/library/e2e-mirror:v1` through a `hosts.toml` mirror pointing at each pull
/// endpoint. Images are removed (`rm --sync`, content collected) between pulls, so every pull
/// fetches every blob.
pub fn containerd_pulls(
    endpoints: &Endpoints,
    containerd: &Containerd,
    skopeo: &Skopeo,
) -> Result<ContainerdPushed> {
    let spec = ImageSpec::new(&[512 * KIB], 2);
    let direct = push_image(skopeo, &endpoints.push, "e2e/containerd", "v1", &spec)?;
    let mut run_output = None;
    for pull in &endpoints.pulls {
        let reference = format!("{pull}/e2e/containerd:v1");
        containerd.pull(&reference, PullVia::PlainHttp)?;
        let digest = containerd.image_digest(&reference)?;
        ensure!(
            digest == direct.manifest,
            "containerd pulled {digest} from {pull}, pushed {}",
            direct.manifest
        );
        if direct.runnable && run_output.is_none() {
            let output = containerd.run_image(
                &reference,
                "kraken-e2e-run",
                &["/bin/busybox", "echo", "ran"],
            )?;
            ensure!(output.trim() == "ran", "ctr run printed {output:?}");
            run_output = Some(output);
        }
        remove_synchronously(containerd, &reference)?;
    }

    let spec = ImageSpec::new(&[512 * KIB], 3);
    let mirrored = push_image(skopeo, &endpoints.push, "library/e2e-mirror", "v1", &spec)?;
    let reference = "docker.io/library/e2e-mirror:v1";
    for pull in &endpoints.pulls {
        let hosts_dir = containerd.write_mirror("docker.io", pull)?;
        containerd
            .pull(reference, PullVia::HostsDir(&hosts_dir))
            .with_context(|| format!("pull through the mirror {pull}"))?;
        let digest = containerd.image_digest(reference)?;
        ensure!(
            digest == mirrored.manifest,
            "containerd pulled {digest} through {pull}, pushed {}",
            mirrored.manifest
        );
        remove_synchronously(containerd, reference)?;
    }
    Ok(ContainerdPushed {
        direct,
        mirrored,
        run_output,
    })
}

fn remove_synchronously(containerd: &Containerd, reference: &str) -> Result<()> {
    kraken_testkit::run(containerd.ctr().args(["images", "rm", "--sync", reference]))?;
    Ok(())
}

/// What [`docker_push_pull`] pushed.
#[derive(Debug)]
pub struct DockerPushed {
    /// The manifest digest `docker push` reported (Docker schema 2).
    pub manifest: Digest,
    /// The image ID (config digest).
    pub image_id: String,
}

/// (c) docker builds an image `FROM scratch` (busybox and a marker file), pushes it to the push
/// endpoint, removes it, and pulls it back from every pull endpoint: same manifest digest and
/// image ID, and it runs (`docker run --network none`).
pub fn docker_push_pull(endpoints: &Endpoints, dockerd: &Dockerd) -> Result<DockerPushed> {
    let marker = "built by kraken e2e";
    let local = "kraken-e2e-built:latest";
    let image_id = dockerd.build_busybox_image(local, marker)?;
    let pushed_ref = format!("{}/e2e/docker:v1", endpoints.push);
    dockerd.tag(local, &pushed_ref)?;
    let manifest = dockerd.push(&pushed_ref)?;
    dockerd.rmi(&[local, &pushed_ref])?;
    for pull in &endpoints.pulls {
        let reference = format!("{pull}/e2e/docker:v1");
        let digest = dockerd.pull(&reference)?;
        ensure!(
            digest == manifest,
            "docker pulled {digest} from {pull}, pushed {manifest}"
        );
        let pulled_id = dockerd.image_id(&reference)?;
        ensure!(
            pulled_id == image_id,
            "image ID {pulled_id} from {pull}, built {image_id}"
        );
        let output = dockerd.run_image(&reference, &[])?;
        ensure!(output.trim() == marker, "docker run printed {output:?}");
        dockerd.rmi(&[&reference])?;
    }
    Ok(DockerPushed { manifest, image_id })
}

/// (c, mirror) docker pushes a built image to the push endpoint as `library/e2e-docker-mirror`
/// and pulls it as the docker.io image `e2e-docker-mirror:v1`: `dockerd` must have been
/// started with the pull endpoint under test as its only `registry-mirrors` entry (no
/// internet here, so the pull can only succeed through the mirror).
pub fn docker_mirror_pull(push: &str, dockerd: &Dockerd) -> Result<DockerPushed> {
    let local = "kraken-e2e-mirrored:latest";
    let image_id = dockerd.build_busybox_image(local, "pulled through a mirror")?;
    let pushed_ref = format!("{push}/library/e2e-docker-mirror:v1");
    dockerd.tag(local, &pushed_ref)?;
    let manifest = dockerd.push(&pushed_ref)?;
    dockerd.rmi(&[local, &pushed_ref])?;
    let digest = dockerd.pull("e2e-docker-mirror:v1")?;
    ensure!(
        digest == manifest,
        "docker pulled {digest} through the mirror, pushed {manifest}"
    );
    let pulled_id = dockerd.image_id("e2e-docker-mirror:v1")?;
    ensure!(
        pulled_id == image_id,
        "image ID {pulled_id}, built {image_id}"
    );
    dockerd.rmi(&["e2e-docker-mirror:v1"])?;
    Ok(DockerPushed { manifest, image_id })
}

/// (d) a two-platform index (linux/amd64, linux/arm64) pushed with `skopeo copy --all`; every
/// pull endpoint serves the index unchanged, and `skopeo copy --all` out of it gets both
/// platforms' manifests, configs and layers.
pub fn multi_arch(endpoints: &Endpoints, skopeo: &Skopeo) -> Result<ImageIndex> {
    let (repo, tag) = ("e2e/multiarch", "v1");
    let mut layout = OciLayout::create(&skopeo.scratch("src-multiarch"))?;
    let index = layout.add_index(
        tag,
        &[
            ImageSpec::new(&[128 * KIB], 4),
            ImageSpec::new(&[128 * KIB], 5).for_architecture("arm64"),
        ],
    )?;
    skopeo.copy(
        &layout.reference(tag),
        &format!("docker://{}/{repo}:{tag}", endpoints.push),
        true,
    )?;
    for (i, pull) in endpoints.pulls.iter().enumerate() {
        let reference = format!("docker://{pull}/{repo}:{tag}");
        let served = skopeo.manifest_digest(&reference)?;
        ensure!(
            served == index.index,
            "{pull} serves {served} for the index, pushed {}",
            index.index
        );
        let out = skopeo.scratch(&format!("out-multiarch-{i}"));
        skopeo.copy(&reference, &format!("oci:{}:{tag}", out.display()), true)?;
        let check = check_layout(&out, tag)?;
        ensure!(check.top == index.index, "copied {} from {pull}", check.top);
        for image in &index.manifests {
            for blob in std::iter::once(image.manifest).chain(image.blobs()) {
                ensure!(
                    check.blobs.contains(&blob),
                    "{} blob {blob} missing from {pull}'s copy",
                    image.architecture
                );
            }
        }
    }
    Ok(index)
}

/// (e) a tag pushed, pulled from every pull endpoint, pushed again with another image: every
/// pull endpoint then serves the new image (within `tag_settle`), whole.
pub fn tag_mutation(endpoints: &Endpoints, skopeo: &Skopeo) -> Result<(Image, Image)> {
    let (repo, tag) = ("e2e/mutable", "latest");
    let first = push_image(
        skopeo,
        &endpoints.push,
        repo,
        tag,
        &ImageSpec::new(&[64 * KIB], 6),
    )?;
    for pull in &endpoints.pulls {
        let digest = skopeo.manifest_digest(&format!("docker://{pull}/{repo}:{tag}"))?;
        ensure!(
            digest == first.manifest,
            "{pull} serves {digest} before the change"
        );
    }
    let second = push_image(
        skopeo,
        &endpoints.push,
        repo,
        tag,
        &ImageSpec::new(&[64 * KIB], 7),
    )?;
    ensure!(first.manifest != second.manifest, "two different images");
    for (i, pull) in endpoints.pulls.iter().enumerate() {
        let reference = format!("docker://{pull}/{repo}:{tag}");
        let deadline = Instant::now() + endpoints.tag_settle;
        loop {
            let digest = skopeo.manifest_digest(&reference)?;
            if digest == second.manifest {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "{pull} still serves {digest} for {repo}:{tag} after it was pushed as {} \
                 (allowed {:?})",
                second.manifest,
                endpoints.tag_settle
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let out = skopeo.scratch(&format!("out-mutable-{i}"));
        skopeo.copy(&reference, &format!("oci:{}:{tag}", out.display()), false)?;
        let check = check_layout(&out, tag)?;
        ensure!(
            check.top == second.manifest,
            "copied {} from {pull}",
            check.top
        );
        for blob in second.blobs() {
            ensure!(
                check.blobs.contains(&blob),
                "{blob} missing from {pull}'s copy"
            );
        }
    }
    Ok((first, second))
}

/// (f) podman pulls an image from every pull endpoint (same manifest digest; the image is
/// removed between pulls, so each fetches every blob), and runs it.
pub fn podman_pull(endpoints: &Endpoints, podman: &Podman, skopeo: &Skopeo) -> Result<Image> {
    let image = push_image(
        skopeo,
        &endpoints.push,
        "e2e/podman",
        "v1",
        &ImageSpec::new(&[256 * KIB], 8),
    )?;
    for pull in &endpoints.pulls {
        let reference = format!("{pull}/e2e/podman:v1");
        podman.pull(&reference)?;
        let digest = podman.image_digest(&reference)?;
        ensure!(
            digest == image.manifest,
            "podman pulled {digest} from {pull}, pushed {}",
            image.manifest
        );
        if image.runnable {
            let output = podman.run_image(&reference, &["/bin/busybox", "echo", "ran"])?;
            ensure!(output.trim() == "ran", "podman run printed {output:?}");
        }
        podman.rmi(&reference)?;
    }
    Ok(image)
}

/// (f, mirror) podman pulls `docker.io/library/e2e-podman-mirror:v1`, pushed to the push
/// endpoint as `library/e2e-podman-mirror`: `podman` must have been made with the pull endpoint
/// under test as its docker.io mirror (`Podman::new(&[("docker.io", PULL)])`; no internet
/// here, so the pull can only succeed through the mirror).
pub fn podman_mirror_pull(push: &str, podman: &Podman, skopeo: &Skopeo) -> Result<Image> {
    let spec = ImageSpec::new(&[128 * KIB], 12);
    let image = push_image(skopeo, push, "library/e2e-podman-mirror", "v1", &spec)?;
    let reference = "docker.io/library/e2e-podman-mirror:v1";
    podman.pull(reference)?;
    let digest = podman.image_digest(reference)?;
    ensure!(
        digest == image.manifest,
        "podman pulled {digest} through the mirror, pushed {}",
        image.manifest
    );
    podman.rmi(reference)?;
    Ok(image)
}

/// Runs `scenario`, printing how long it took; panics with its error chain.
pub fn timed<T>(name: &str, scenario: impl FnOnce() -> Result<T>) -> T {
    let started = Instant::now();
    let result = scenario();
    println!("{name}: {:.2?}", started.elapsed());
    result.unwrap_or_else(|e| panic!("{name}: {e:?}"))
}

/// The skopeo scenarios, each [`timed`]: a 3-layer image, a multi-platform index, and a tag
/// pushed again.
pub fn skopeo_all(endpoints: &Endpoints, skopeo: &Skopeo) {
    timed("skopeo copy, 3 layers", || skopeo_copy(endpoints, skopeo));
    timed("multi-arch index", || multi_arch(endpoints, skopeo));
    timed("tag mutation", || tag_mutation(endpoints, skopeo));
}
