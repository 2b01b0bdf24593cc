//! TLS for the HTTP services and their clients (rustls, ring).
//!
//! Go Kraken puts nginx in front of every service for TLS and client certificates; here they
//! are native. A listener is given a [`ServerTlsConfig`] (certificate chain, key, and
//! optionally a CA whose client certificates it accepts, and for which requests it demands
//! one); a client is given a [`ClientTlsConfig`] (the CA it pins, and optionally its own
//! certificate). Both are plain paths to PEM files so they sit in the services' TOML configs:
//!
//! ```toml
//! [tls]
//! cert = "/etc/kraken/tls/origin.pem"
//! key = "/etc/kraken/tls/origin.key"
//! client_ca = "/etc/kraken/tls/ca.pem"
//! client_auth = "writes"        # "none" | "writes" | "all"
//! require_roles = false         # true: a client certificate must name its role
//!
//! [client_tls]
//! ca = "/etc/kraken/tls/ca.pem"
//! cert = "/etc/kraken/tls/client.pem"
//! key = "/etc/kraken/tls/client.key"
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use serde::{Deserialize, Serialize};

pub use self::peer::{PEER_ALPN, PeerTls, PeerTlsConfig, peer_id_of};
pub use self::role::{Role, Roles, UnknownRole};

mod peer;
mod role;

/// Which requests must come with a client certificate that chains to
/// [`ServerTlsConfig::client_ca`].
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// None: client certificates are not asked for.
    None,
    /// Requests that change state (every method but `GET`, `HEAD` and `OPTIONS`); reads are
    /// open. What Go Kraken's nginx configuration does for origins and build-indexes.
    #[default]
    Writes,
    /// Every request: a client without a valid certificate fails the handshake.
    All,
}

/// A listener's TLS settings: paths to PEM files.
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// The server's certificate chain, leaf first. Required.
    pub cert: PathBuf,
    /// The server's private key (PKCS#8, PKCS#1 or SEC1). Required.
    pub key: PathBuf,
    /// CA certificates that client certificates must chain to. Default: none (no client
    /// certificates are asked for, whatever `client_auth` says).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Which requests need a client certificate when `client_ca` is set. Default: `writes`.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Whether a client certificate must name its [`Role`] (a `kraken:role:<role>` URI).
    /// When false, a certificate naming none counts as [`Role::Operator`], as every
    /// certificate did before roles. Default: false.
    #[serde(default)]
    pub require_roles: bool,
}

impl ServerTlsConfig {
    /// Settings serving `cert` and `key`, asking for no client certificate.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            cert: cert.into(),
            key: key.into(),
            client_ca: None,
            client_auth: ClientAuth::default(),
            require_roles: false,
        }
    }

    /// Demands certificates chaining to `ca` from clients, for the requests `auth` names.
    pub fn with_client_auth(mut self, ca: impl Into<PathBuf>, auth: ClientAuth) -> Self {
        self.client_ca = Some(ca.into());
        self.client_auth = auth;
        self
    }

    /// Sets [`require_roles`](Self::require_roles).
    pub fn require_roles(mut self, require: bool) -> Self {
        self.require_roles = require;
        self
    }

    /// Reads the files and builds the acceptor.
    pub fn load(&self) -> Result<ServerTls, TlsError> {
        let chain = read_certs(&self.cert)?;
        let key = read_key(&self.key)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::new(&self.cert, e))?;
        let auth = match (&self.client_ca, self.client_auth) {
            (Some(ca), auth @ (ClientAuth::Writes | ClientAuth::All)) => {
                let roots = Arc::new(read_roots(ca)?);
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
                // With `Writes` a client without a certificate still connects; the HTTP layer
                // refuses its writes.
                let verifier = match auth {
                    ClientAuth::Writes => verifier.allow_unauthenticated(),
                    _ => verifier,
                };
                let verifier = verifier.build().map_err(|e| TlsError::new(ca, e))?;
                (builder.with_client_cert_verifier(verifier), auth)
            }
            _ => (builder.with_no_client_auth(), ClientAuth::None),
        };
        let (builder, client_auth) = auth;
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::new(&self.key, e))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            client_auth,
            require_roles: self.require_roles,
        })
    }
}

/// A loaded server TLS configuration. Cheap to clone.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: tokio_rustls::TlsAcceptor,
    client_auth: ClientAuth,
    require_roles: bool,
}

impl ServerTls {
    /// The handshake half, for listeners.
    pub fn acceptor(&self) -> &tokio_rustls::TlsAcceptor {
        &self.acceptor
    }

    /// Which requests need a client certificate ([`ClientAuth::None`] when no client CA is
    /// configured).
    pub fn client_auth(&self) -> ClientAuth {
        self.client_auth
    }

    /// The role of a client that presented `chain` (verified by the handshake, leaf first):
    /// the one its leaf names, else [`Role::Operator`] unless roles are required. `None`
    /// without a certificate or without a usable role.
    pub fn client_role(&self, chain: Option<&[CertificateDer<'_>]>) -> Option<Role> {
        let leaf = chain?.first()?;
        role::named_role(leaf).effective(self.require_roles)
    }
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("client_auth", &self.client_auth)
            .field("require_roles", &self.require_roles)
            .finish_non_exhaustive()
    }
}

/// A client's TLS settings: the CA it trusts (pinned: nothing else is trusted) and its own
/// certificate for servers that ask for one.
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsConfig {
    /// CA certificates that servers' certificates must chain to. Required: there is no
    /// fallback to system roots, so a cluster trusts exactly its own CA.
    pub ca: PathBuf,
    /// This client's certificate chain, presented to servers that ask. Default: none.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// The key of `cert`. Required with `cert`.
    #[serde(default)]
    pub key: Option<PathBuf>,
}

impl ClientTlsConfig {
    /// Settings trusting exactly the CA certificates in `ca`, with no client certificate.
    pub fn new(ca: impl Into<PathBuf>) -> Self {
        Self {
            ca: ca.into(),
            cert: None,
            key: None,
        }
    }

    /// Presents `cert` (signed with `key`) to servers that ask for a client certificate.
    pub fn with_identity(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.cert = Some(cert.into());
        self.key = Some(key.into());
        self
    }

    /// Reads the files and builds the client configuration.
    pub fn load(&self) -> Result<ClientTls, TlsError> {
        ClientTls::load(Some(&self.ca), self.cert.as_deref(), self.key.as_deref())
    }
}

/// A loaded client TLS configuration. Cheap to clone.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
}

impl ClientTls {
    /// Reads `ca` (PEM certificates, at least one; they become the only trusted roots) and
    /// `cert` + `key` (a PEM certificate chain and its key; both or neither). Without `ca`
    /// the system's roots are trusted, as the platform verifies them (what reqwest does by
    /// default): for clients of services outside the cluster, such as cloud storage.
    ///
    /// Every client TLS setting of the workspace is loaded here, so `ca`, `cert` and `key`
    /// mean the same in `[client_tls]` and in the backends' configs.
    pub fn load(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::new(ca.unwrap_or(Path::new("-")), e))?;
        let builder = match ca {
            Some(ca) => builder.with_root_certificates(read_roots(ca)?),
            None => {
                use rustls_platform_verifier::BuilderVerifierExt as _;
                builder
                    .with_platform_verifier()
                    .map_err(|e| TlsError::new(Path::new("system roots"), e))?
            }
        };
        let config = match (cert, key) {
            (Some(cert), Some(key)) => {
                let chain = parse_certs(CLIENT_CERTIFICATE, cert, &read_file(cert)?)?;
                // The key's problems are the certificate pair's: name the certificate.
                let key_bytes = read_file(key)?;
                let private = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| {
                    TlsError::labelled(
                        CLIENT_CERTIFICATE,
                        cert,
                        format!("key {}: {e}", key.display()),
                    )
                })?;
                builder
                    .with_client_auth_cert(chain, private)
                    .map_err(|e| TlsError::labelled(CLIENT_CERTIFICATE, cert, e))?
            }
            (None, None) => builder.with_no_client_auth(),
            (Some(path), None) | (None, Some(path)) => {
                return Err(TlsError::new(
                    path,
                    "a client certificate needs both `cert` and `key`",
                ));
            }
        };
        Ok(Self {
            config: Arc::new(config),
        })
    }

    /// The rustls configuration, for HTTP clients (`reqwest`'s `tls_backend_preconfigured`).
    pub fn config(&self) -> &Arc<rustls::ClientConfig> {
        &self.config
    }
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls").finish_non_exhaustive()
    }
}

/// A TLS file could not be read or used.
#[derive(Debug, thiserror::Error)]
#[error("{label} {}: {reason}", path.display())]
pub struct TlsError {
    /// What the file is: "TLS file" (could not be read), "CA file", "client certificate".
    label: &'static str,
    path: PathBuf,
    reason: String,
}

/// Label of errors in a file that was read but holds no usable CA certificates.
const CA_FILE: &str = "CA file";
/// Label of errors in a client certificate or its key.
const CLIENT_CERTIFICATE: &str = "client certificate";

impl TlsError {
    fn new(path: &Path, reason: impl fmt::Display) -> Self {
        Self::labelled("TLS file", path, reason)
    }

    fn labelled(label: &'static str, path: &Path, reason: impl fmt::Display) -> Self {
        Self {
            label,
            path: path.to_owned(),
            reason: reason.to_string(),
        }
    }

    /// The file at fault.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::new(path, e))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    parse_certs("TLS file", path, &read_file(path)?)
}

fn parse_certs(
    label: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::labelled(label, path, e))?;
    if certs.is_empty() {
        return Err(TlsError::labelled(label, path, "no PEM certificate in it"));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(&read_file(path)?).map_err(|e| TlsError::new(path, e))
}

fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in parse_certs(CA_FILE, path, &read_file(path)?)? {
        roots
            .add(cert)
            .map_err(|e| TlsError::labelled(CA_FILE, path, e))?;
    }
    Ok(roots)
}
