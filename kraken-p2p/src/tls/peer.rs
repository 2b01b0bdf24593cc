//! TLS between peers: both ends present a certificate signed by the cluster's CA, and a
//! peer's id is bound to its certificate.
//!
//! A peer's id is the first 20 bytes of the SHA-256 of its leaf certificate (DER). A node
//! with peer TLS takes that id as its own, and a handshake whose claimed id is not the one
//! its connection's certificate binds is refused: a peer cannot pass itself off as another,
//! origins included. Peers are dialed by address, so the certificate's names are not
//! checked against it (the chain to the CA is); the id binding is what says who answered.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use kraken_core::{Digest, PeerId};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use serde::{Deserialize, Serialize};

use super::{TlsError, read_certs, read_key, read_roots};

/// The ALPN protocol peer links speak: a peer port is never mistaken for an HTTP one.
pub const PEER_ALPN: &[u8] = b"kraken-p2p/1";

/// A node's peer TLS settings (`[p2p.tls]` in the agent's and origin's configs).
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PeerTlsConfig {
    /// This node's certificate chain, leaf first, signed by `ca`. Each node needs its own:
    /// the node's peer id is derived from it. Required.
    pub cert: PathBuf,
    /// The key of `cert` (PKCS#8, PKCS#1 or SEC1). Required.
    pub key: PathBuf,
    /// The cluster's CA: peers' certificates must chain to it. Required.
    pub ca: PathBuf,
    /// Whether inbound connections must speak TLS. When false, plain connections are still
    /// accepted (their peer ids are taken on trust, as without TLS), so a cluster can move
    /// to TLS node by node; outbound connections always use TLS. Default: false.
    #[serde(default)]
    pub require: bool,
}

impl PeerTlsConfig {
    /// Settings presenting `cert` (with `key`) and trusting peers whose certificates chain
    /// to `ca`; plain inbound connections stay allowed.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>, ca: impl Into<PathBuf>) -> Self {
        Self {
            cert: cert.into(),
            key: key.into(),
            ca: ca.into(),
            require: false,
        }
    }

    /// Sets [`require`](Self::require).
    pub fn require(mut self, require: bool) -> Self {
        self.require = require;
        self
    }

    /// Reads the files and builds both sides of the handshake.
    pub fn load(&self) -> Result<PeerTls, TlsError> {
        let chain = read_certs(&self.cert)?;
        let key = read_key(&self.key)?;
        let roots = Arc::new(read_roots(&self.ca)?);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
                .build()
                .map_err(|e| TlsError::new(&self.ca, e))?;
        let mut server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::new(&self.cert, e))?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| TlsError::new(&self.key, e))?;
        server.alpn_protocols = vec![PEER_ALPN.to_vec()];
        let server_verifier =
            WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
                .build()
                .map_err(|e| TlsError::new(&self.ca, e))?;
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::new(&self.cert, e))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnly(server_verifier)))
            .with_client_auth_cert(chain.clone(), key)
            .map_err(|e| TlsError::new(&self.key, e))?;
        client.alpn_protocols = vec![PEER_ALPN.to_vec()];
        Ok(PeerTls {
            server: Arc::new(server),
            client: Arc::new(client),
            local_id: peer_id_of(&chain[0]),
            require: self.require,
        })
    }
}

/// Loaded peer TLS settings. Cheap to clone.
#[derive(Clone)]
pub struct PeerTls {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    local_id: PeerId,
    require: bool,
}

impl PeerTls {
    /// The accepting side.
    pub fn server_config(&self) -> &Arc<rustls::ServerConfig> {
        &self.server
    }

    /// The dialing side.
    pub fn client_config(&self) -> &Arc<rustls::ClientConfig> {
        &self.client
    }

    /// This node's peer id: the one its certificate binds.
    pub fn local_peer_id(&self) -> PeerId {
        self.local_id
    }

    /// Whether plain inbound connections are refused.
    pub fn required(&self) -> bool {
        self.require
    }
}

impl fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerTls")
            .field("local_id", &self.local_id)
            .field("require", &self.require)
            .finish_non_exhaustive()
    }
}

/// The peer id a certificate binds: the first 20 bytes of the SHA-256 of its DER.
pub fn peer_id_of(cert: &CertificateDer<'_>) -> PeerId {
    let digest = Digest::sha256_of(cert.as_ref());
    let mut id = [0; 20];
    id.copy_from_slice(&digest.as_bytes()[..20]);
    PeerId::from_bytes(id)
}

/// Verifies a peer's chain to the CA and its signatures, but not its names: peers are
/// dialed by address, and who answered is decided by the id its certificate binds.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The chain is checked before the name, so a name error means the chain is good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
