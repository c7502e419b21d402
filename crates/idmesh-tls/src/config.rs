//! rustls configurations: the peer port (mutual TLS 1.3), the public port (server TLS, client
//! certificates optional) and clients of the public port.

use crate::verify::{Expect, PeerVerifier, SharedRules};
use crate::{NodeIdentity, TlsError};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::sync::Arc;

/// gRPC runs over HTTP/2; TLS clients such as grpcio insist on ALPN saying so.
const ALPN_H2: &[u8] = b"h2";

/// Installs ring as the process's rustls provider (rustls panics at first use if none is
/// chosen and the build could pick more than one). Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = ring_provider().install_default();
}

/// rustls's ring provider, X25519 first. rustls 0.23.48 deprecates the ring provider for
/// lacking post-quantum key exchange; the provider that has it (aws-lc-rs) needs cmake and a
/// C toolchain to build, which a fresh machine with only Rust does not have. Revisit when
/// ring gains ML-KEM. Its default order puts P-384 first, whose ECDH in ring is generic
/// bignum code: measured, it was most of a handshake's CPU (`benches/handshake.rs`).
#[allow(deprecated)]
fn ring_provider() -> CryptoProvider {
    use rustls::crypto::ring::kx_group::{SECP256R1, SECP384R1, X25519};
    CryptoProvider {
        kx_groups: vec![X25519, SECP256R1, SECP384R1],
        ..rustls::crypto::ring::default_provider()
    }
}

/// The installed provider, or ring.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default().cloned().unwrap_or_else(|| Arc::new(ring_provider()))
}

fn config_error(e: rustls::Error) -> TlsError {
    TlsError::Config(e.to_string())
}

/// The peer port: TLS 1.3 only, a client certificate required and checked by [`PeerVerifier`].
pub fn peer_server_config(
    identity: Arc<NodeIdentity>,
    rules: SharedRules,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let verifier = PeerVerifier::new(rules, Expect::Anyone, provider.signature_verification_algorithms);
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(identity);
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// Dialling a peer: TLS 1.3, this node's certificate, the peer checked against `expect`.
pub fn peer_client_config(
    identity: Arc<NodeIdentity>,
    rules: SharedRules,
    expect: Expect,
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let verifier = PeerVerifier::new(rules, expect, provider.signature_verification_algorithms);
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(identity);
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// Whether the public port asks clients for a certificate.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// Server authentication only (the default).
    None,
    /// A client may present a certificate of one of these CAs; one that does must pass.
    Optional(Arc<RootCertStore>),
    /// Every client must present a certificate of one of these CAs.
    Required(Arc<RootCertStore>),
}

/// The public port: TLS 1.2 or 1.3 with the node's certificate.
pub fn public_server_config(
    identity: Arc<NodeIdentity>,
    clients: ClientAuth,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(config_error)?;
    let builder = match clients {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Optional(roots) | ClientAuth::Required(roots) if roots.is_empty() => {
            return Err(TlsError::Config("the client CA list is empty".into()));
        }
        ClientAuth::Optional(roots) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?,
        ),
        ClientAuth::Required(roots) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?,
        ),
    };
    let mut config = builder.with_cert_resolver(identity);
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// A client of the public port trusting the CAs in PEM `ca_pem`, presenting `client` (chain
/// and key PEM) if given. The server's name is checked as usual (DNS name or IP address).
pub fn client_config(ca_pem: &str, client: Option<(&str, &str)>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in crate::inspect::certs_from_pem("CA file", ca_pem)? {
        roots.add(cert).map_err(|e| TlsError::cert("CA file", e.to_string()))?;
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some((cert_pem, key_pem)) => {
            let chain = crate::inspect::certs_from_pem("client certificate", cert_pem)?;
            let key = <rustls_pki_types::PrivateKeyDer as rustls_pki_types::pem::PemObject>::from_pem_slice(
                key_pem.as_bytes(),
            )
            .map_err(|e| TlsError::pem("client key", format!("does not parse: {e}")))?;
            builder.with_client_auth_cert(chain, key).map_err(config_error)?
        }
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}
