//! Certificates made at run time for tests: a CA, a server certificate for loopback, a client
//! certificate (one without a role, and one per [`Role`]), and a client certificate from a CA
//! nobody trusts.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};

use kraken_p2p::tls::{ClientAuth, ClientTlsConfig, PeerTlsConfig, Role, ServerTlsConfig};

/// PEM files under a directory: `ca.pem`; `server.pem`/`server.key` for `localhost`,
/// `127.0.0.1` and the rest of 127.0.0.0/8 that tests use (127.0.0.1–127.0.0.9);
/// `client.pem`/`client.key` signed by the CA, naming no role; `role-<role>.pem`/`.key` for each
/// [`Role`], naming it (`URI:kraken:role:<role>`); `peer-<i>.pem`/`.key` for peer links, one per
/// node (a peer id is bound to its certificate); `rogue.pem`/`rogue.key` signed by another CA.
#[derive(Debug)]
pub struct TestPki {
    dir: PathBuf,
}

impl TestPki {
    /// Peer certificates made by [`create`](Self::create): `peer-0` … `peer-<PEERS - 1>`.
    pub const PEERS: usize = 8;

    /// Makes the files under `dir` (created if missing).
    ///
    /// # Panics
    /// If the directory cannot be written or a certificate cannot be made: test set-up only.
    pub fn create(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).expect("create the PKI directory");
        let ca = ca("Kraken test CA");
        write(&dir, "ca.pem", &ca.pem());
        let mut server_names = vec!["localhost".to_owned()];
        server_names.extend((1..10).map(|i| format!("127.0.0.{i}")));
        leaf(&dir, "server", server_names, None, &ca);
        leaf(&dir, "client", vec!["kraken-client".to_owned()], None, &ca);
        for role in Role::ALL {
            let name = format!("role-{role}");
            leaf(&dir, &name, vec![format!("kraken-{role}")], Some(role), &ca);
        }
        for i in 0..Self::PEERS {
            leaf(
                &dir,
                &format!("peer-{i}"),
                vec![format!("kraken-peer-{i}")],
                None,
                &ca,
            );
        }
        leaf(
            &dir,
            "rogue",
            vec!["kraken-client".to_owned()],
            None,
            &self::ca("Rogue CA"),
        );
        Self { dir }
    }

    /// Path of `name` (`ca.pem`, `server.key`, …) in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A server serving `server.pem`, demanding `client.pem`'s CA for `auth`.
    pub fn server(&self, auth: ClientAuth) -> ServerTlsConfig {
        let config = ServerTlsConfig::new(self.path("server.pem"), self.path("server.key"));
        match auth {
            ClientAuth::None => config,
            auth => config.with_client_auth(self.path("ca.pem"), auth),
        }
    }

    /// A client trusting the CA, without a certificate.
    pub fn anonymous_client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new(self.path("ca.pem"))
    }

    /// A client trusting the CA and presenting `client.pem`.
    pub fn client(&self) -> ClientTlsConfig {
        self.anonymous_client()
            .with_identity(self.path("client.pem"), self.path("client.key"))
    }

    /// A client trusting the CA and presenting `role-<role>.pem`, whose certificate names
    /// `role`.
    pub fn client_with_role(&self, role: Role) -> ClientTlsConfig {
        self.anonymous_client().with_identity(
            self.path(&format!("role-{role}.pem")),
            self.path(&format!("role-{role}.key")),
        )
    }

    /// Peer TLS for node `i` (below [`PEERS`](Self::PEERS)): `peer-<i>.pem`, trusting the CA; plain
    /// inbound connections allowed unless `require`.
    pub fn peer(&self, i: usize, require: bool) -> PeerTlsConfig {
        assert!(
            i < Self::PEERS,
            "TestPki makes {} peer certificates",
            Self::PEERS
        );
        PeerTlsConfig::new(
            self.path(&format!("peer-{i}.pem")),
            self.path(&format!("peer-{i}.key")),
            self.path("ca.pem"),
        )
        .require(require)
    }

    /// A client trusting the CA and presenting `rogue.pem`, which the CA did not sign.
    pub fn rogue_client(&self) -> ClientTlsConfig {
        self.anonymous_client()
            .with_identity(self.path("rogue.pem"), self.path("rogue.key"))
    }
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA")
}

fn leaf(
    dir: &Path,
    name: &str,
    names: Vec<String>,
    role: Option<Role>,
    ca: &CertifiedIssuer<'_, KeyPair>,
) {
    let key = KeyPair::generate().expect("leaf key");
    let mut params = CertificateParams::new(names).expect("leaf parameters");
    if let Some(role) = role {
        let uri = role.uri().try_into().expect("an ASCII URI");
        params.subject_alt_names.push(SanType::URI(uri));
    }
    let cert = params.signed_by(&key, ca).expect("leaf certificate");
    write(dir, &format!("{name}.pem"), &cert.pem());
    write(dir, &format!("{name}.key"), &key.serialize_pem());
}

fn write(dir: &Path, name: &str, contents: &str) {
    std::fs::write(dir.join(name), contents).expect("write a PEM file");
}
