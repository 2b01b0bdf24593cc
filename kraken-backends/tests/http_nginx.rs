//! The HTTP backend against a real nginx with WebDAV PUT/DELETE, started by the test.

mod support;

use std::net::SocketAddr;
use std::process::Command;

use kraken_backends::testing::{self, SuiteOptions};
use kraken_backends::{Backend, ByteRange, Error, HttpBackend, HttpConfig};
use support::ServerGuard;

/// An nginx serving a temporary directory, killed on drop.
struct Nginx {
    url: String,
    _server: ServerGuard,
    _dir: tempfile::TempDir,
}

fn start_nginx() -> Option<Nginx> {
    let program = support::require_program("nginx", "apt-get install nginx")?;
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    std::fs::create_dir_all(root.join("data")).unwrap();
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    let port = support::free_port();
    let d = root.display();
    // One process, in the foreground, everything under the temp dir.
    let config = format!(
        "daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    client_max_body_size 0;
    server {{
        listen 127.0.0.1:{port};
        root {d}/data;
        location / {{
            dav_methods PUT DELETE;
            create_full_put_path on;
            dav_access user:rw;
        }}
    }}
}}
"
    );
    std::fs::write(root.join("nginx.conf"), config).unwrap();
    let mut command = Command::new(program);
    command
        .arg("-p")
        .arg(root)
        .arg("-e")
        .arg(root.join("error.log"))
        .arg("-c")
        .arg(root.join("nginx.conf"));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let server = ServerGuard::start("nginx", command, addr, &root.join("stdout.log"));
    Some(Nginx {
        url: format!("http://{addr}/blobs/"),
        _server: server,
        _dir: dir,
    })
}

fn backend(nginx: &Nginx) -> HttpBackend {
    HttpBackend::new(HttpConfig::new(&nginx.url)).expect("http backend")
}

#[tokio::test]
async fn conformance() {
    let Some(nginx) = start_nginx() else { return };
    // Plain HTTP has no listing: the suite checks the backend says so and skips that part.
    testing::run_suite(&backend(&nginx), SuiteOptions::without_list()).await;
}

#[tokio::test]
async fn large_blob_streams() {
    let Some(nginx) = start_nginx() else { return };
    testing::large_blob_streams(&backend(&nginx), testing::LARGE_BLOB_SIZE).await;
}

#[tokio::test]
async fn a_server_that_ignores_range_is_an_error() {
    use support::fake_http::{FakeServer, response};
    // Answers every GET with the whole body and 200, as a server without range support does.
    let server = FakeServer::start(|_| async { response(200, &[], "0123456789") }).await;
    let backend = HttpBackend::new(HttpConfig::new(server.url())).unwrap();
    let result = backend
        .download("ns", "blob", Some(ByteRange::new(2, 3).unwrap()))
        .await;
    assert!(
        matches!(result, Err(Error::InvalidResponse(_))),
        "{:?}",
        result.map(|_| ())
    );
}

#[tokio::test]
async fn a_body_longer_than_announced_is_an_error() {
    use support::fake_http::{FakeServer, response};
    // Claims 4 bytes of range, sends 10.
    let server = FakeServer::start(|_| async {
        response(206, &[("content-range", "bytes 0-3/10")], "0123456789")
    })
    .await;
    let backend = HttpBackend::new(HttpConfig::new(server.url())).unwrap();
    let result = match backend
        .download("ns", "blob", Some(ByteRange::new(0, 4).unwrap()))
        .await
    {
        Ok(stream) => kraken_backends::collect_bytes(stream, 100)
            .await
            .map(|_| ()),
        Err(error) => Err(error),
    };
    assert!(result.is_err(), "an oversized body was accepted");
}
