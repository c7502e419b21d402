//! A node's own certificate and key, swappable while it serves (rotation).

use crate::inspect::{certs_from_pem, inspect};
use crate::{PeerName, TlsError};
use rustls::sign::CertifiedKey;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject as _;
use std::sync::{Arc, RwLock};

/// The certificate a node presents, both as a server and as a client. [`NodeIdentity::replace`]
/// swaps it; handshakes after that use the new one, connections already open keep theirs.
#[derive(Debug)]
pub struct NodeIdentity {
    name: PeerName,
    current: RwLock<Arc<CertifiedKey>>,
    not_after_secs: std::sync::atomic::AtomicI64,
}

/// Loads a chain and key; the leaf must name exactly one node.
fn load(cert_pem: &str, key_pem: &str) -> Result<(PeerName, i64, Arc<CertifiedKey>), TlsError> {
    let chain = certs_from_pem("node certificate", cert_pem)?;
    let info = inspect(&chain[0])?;
    let name = info.sole_name("node certificate", true)?.clone();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| TlsError::pem("node key", format!("does not parse as a PEM private key: {e}")))?;
    let signing = crate::config::provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::pem("node key", format!("is not a usable signing key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| TlsError::cert("node key", format!("is not the key of the node certificate: {e}")))?;
    Ok((name, info.not_after_secs, Arc::new(certified)))
}

impl NodeIdentity {
    /// The identity of PEM `cert_pem` (leaf first, then its CA) and `key_pem`.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let (name, not_after_secs, certified) = load(cert_pem, key_pem)?;
        Ok(Self { name, current: RwLock::new(certified), not_after_secs: not_after_secs.into() })
    }

    /// Who this identity names.
    pub fn name(&self) -> &PeerName {
        &self.name
    }

    /// When the current certificate expires (unix seconds).
    pub fn not_after_secs(&self) -> i64 {
        self.not_after_secs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Swaps in a new certificate and key, which must name the same node.
    pub fn replace(&self, cert_pem: &str, key_pem: &str) -> Result<(), TlsError> {
        let (name, not_after_secs, certified) = load(cert_pem, key_pem)?;
        if name != self.name {
            return Err(TlsError::cert(
                "node certificate",
                format!("names {name}, this node is {}", self.name),
            ));
        }
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = certified;
        self.not_after_secs.store(not_after_secs, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl rustls::server::ResolvesServerCert for NodeIdentity {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl rustls::client::ResolvesClientCert for NodeIdentity {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
