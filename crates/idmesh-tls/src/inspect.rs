//! Reading what a certificate says: its SPIFFE names, validity and whether it is a CA.

use crate::{PeerName, TlsError};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

/// What idmesh reads from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Every `spiffe://<td>/sites/...` URI it names that parses (see [`PeerName::parse`]).
    pub names: Vec<PeerName>,
    /// Every other URI it names (refused where a SPIFFE name is required).
    pub other_uris: Vec<String>,
    /// Start of validity, unix seconds.
    pub not_before_secs: i64,
    /// End of validity, unix seconds.
    pub not_after_secs: i64,
    /// Basic constraints say CA.
    pub is_ca: bool,
}

impl CertInfo {
    /// The one name this certificate speaks for, which must be a node's (`node == true`) or
    /// a site's (a CA).
    pub fn sole_name(&self, what: &str, node: bool) -> Result<&PeerName, TlsError> {
        let kind = if node { "node" } else { "site" };
        let matching: Vec<&PeerName> = self.names.iter().filter(|n| n.node.is_some() == node).collect();
        if matching.len() != 1 || self.names.len() != 1 || !self.other_uris.is_empty() {
            return Err(TlsError::cert(
                what,
                format!(
                    "must name exactly one {kind} as a URI spiffe://<trust-domain>/sites/<site>{} (names: {:?}, other URIs: {:?})",
                    if node { "/nodes/<id>" } else { "" },
                    self.names.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    self.other_uris
                ),
            ));
        }
        Ok(matching[0])
    }
}

/// Reads a DER certificate.
pub fn inspect(der: &[u8]) -> Result<CertInfo, TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| TlsError::cert("certificate", format!("does not parse as X.509: {e}")))?;
    let mut names = Vec::new();
    let mut other_uris = Vec::new();
    let san = cert
        .subject_alternative_name()
        .map_err(|e| TlsError::cert("certificate", format!("subject alternative names do not parse: {e}")))?;
    if let Some(san) = san {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::URI(uri) = name {
                match PeerName::parse(uri) {
                    Some(parsed) => names.push(parsed),
                    None => other_uris.push((*uri).to_owned()),
                }
            }
        }
    }
    Ok(CertInfo {
        names,
        other_uris,
        not_before_secs: cert.validity().not_before.timestamp(),
        not_after_secs: cert.validity().not_after.timestamp(),
        is_ca: cert.is_ca(),
    })
}

/// Every certificate in PEM `text` (at most [`crate::PEM_CERTS_MAX`]); `what` names the source.
pub fn certs_from_pem(what: &str, text: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    if text.len() > crate::PEM_FILE_MAX_BYTES {
        return Err(TlsError::pem(what, format!("larger than {} bytes", crate::PEM_FILE_MAX_BYTES)));
    }
    let mut certs = Vec::new();
    for cert in CertificateDer::pem_slice_iter(text.as_bytes()) {
        let cert = cert.map_err(|e| TlsError::pem(what, format!("a certificate does not parse: {e}")))?;
        if certs.len() == crate::PEM_CERTS_MAX {
            return Err(TlsError::pem(what, format!("more than {} certificates", crate::PEM_CERTS_MAX)));
        }
        certs.push(cert);
    }
    if certs.is_empty() {
        return Err(TlsError::pem(what, "holds no CERTIFICATE block"));
    }
    Ok(certs)
}
