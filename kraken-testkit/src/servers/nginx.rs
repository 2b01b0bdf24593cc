//! nginx serving a scratch directory with WebDAV `PUT` and `DELETE`: a plain HTTP blob server.

use std::net::SocketAddr;

use crate::{ProcessGuard, free_port, require_package};

/// A running nginx, one process in the foreground with everything under its own temporary
/// directory; stopped on drop.
#[derive(Debug)]
pub struct Nginx {
    url: String,
    _server: ProcessGuard,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts one serving `/blobs/`, or `None` (the test skips) when nginx is not installed
    /// and `CI` is not `true` (then it panics with the install hint).
    pub fn start() -> Option<Self> {
        let program = require_package("nginx", "nginx")?;
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("data")).expect("create the data dir");
        std::fs::create_dir_all(root.join("tmp")).expect("create the tmp dir");
        let port = free_port();
        let d = root.display();
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
        std::fs::write(root.join("nginx.conf"), config).expect("write nginx.conf");
        let args = [
            "-p".into(),
            root.to_owned(),
            "-e".into(),
            root.join("error.log"),
            "-c".into(),
            root.join("nginx.conf"),
        ];
        let mut server = ProcessGuard::spawn("nginx", program, &args, &root.join("stdout.log"))
            .expect("start nginx");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        server.wait_listening(addr).expect("nginx listens");
        Some(Self {
            url: format!("http://{addr}/blobs/"),
            _server: server,
            _dir: dir,
        })
    }

    /// `http://127.0.0.1:PORT/blobs/`, the base URL of the blobs.
    pub fn url(&self) -> &str {
        &self.url
    }
}
