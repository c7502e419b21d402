//! The CAs a node trusts, each for the one site its certificate names.

use crate::TlsError;
use crate::inspect::{certs_from_pem, inspect};
use idmesh_types::{SiteName, TrustDomain};
use rustls_pki_types::CertificateDer;
use std::collections::BTreeMap;

/// Trusted site CAs of one trust domain, by the site each vouches for. A site may have more
/// than one (a new CA beside the old one while nodes move to it).
#[derive(Debug, Clone)]
pub struct TrustAnchors {
    trust_domain: TrustDomain,
    by_site: BTreeMap<SiteName, Vec<CertificateDer<'static>>>,
}

impl TrustAnchors {
    /// No CA yet.
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self { trust_domain, by_site: BTreeMap::new() }
    }

    /// Adds every CA of PEM `text` (`what` names its source); each must be a CA naming one
    /// site of this trust domain. Returns the sites they vouch for; on error nothing is added.
    pub fn add_pem(&mut self, what: &str, text: &str) -> Result<Vec<SiteName>, TlsError> {
        let mut added = Vec::new();
        for cert in certs_from_pem(what, text)? {
            let info = inspect(&cert)?;
            if !info.is_ca {
                return Err(TlsError::cert(what, "holds a certificate that is not a CA (basic constraints)"));
            }
            let name = info.sole_name(what, false)?;
            if name.trust_domain != self.trust_domain {
                return Err(TlsError::cert(
                    what,
                    format!(
                        "holds a CA of trust domain {}, this node is in {}",
                        name.trust_domain, self.trust_domain
                    ),
                ));
            }
            webpki::anchor_from_trusted_cert(&cert)
                .map_err(|e| TlsError::cert(what, format!("cannot be a trust anchor: {e}")))?;
            added.push((name.site.clone(), cert));
        }
        let sites = added.iter().map(|(site, _)| site.clone()).collect();
        for (site, cert) in added {
            let certs = self.by_site.entry(site).or_default();
            if !certs.contains(&cert) {
                certs.push(cert);
            }
        }
        Ok(sites)
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The CAs trusted for `site` (empty: none).
    pub fn for_site(&self, site: &SiteName) -> &[CertificateDer<'static>] {
        self.by_site.get(site).map(Vec::as_slice).unwrap_or_default()
    }

    /// The sites some CA is trusted for.
    pub fn sites(&self) -> impl Iterator<Item = &SiteName> {
        self.by_site.keys()
    }
}
