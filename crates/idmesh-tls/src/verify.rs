//! Who may connect to a node's peer port, and whom a node accepts when it dials.

use crate::inspect::inspect;
use crate::{PeerName, TrustAnchors};
use idmesh_types::{NodeId, SiteName};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

/// What a node knows when it checks a peer: the CAs it trusts, its own site, and the nodes
/// removed from that site. The node updates it as membership and the trust bundle change.
#[derive(Debug, Clone)]
pub struct PeerRules {
    /// Trusted CAs by site.
    pub anchors: TrustAnchors,
    /// This node's site.
    pub own_site: SiteName,
    /// Nodes that were members of this site and are no longer: refused even with a valid
    /// certificate.
    pub removed: BTreeSet<NodeId>,
}

/// Rules shared between a node and its TLS configurations.
pub type SharedRules = Arc<RwLock<PeerRules>>;

/// Whom a dialling node means to reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Any node the rules accept (the accepting side).
    Anyone,
    /// Member `node` of this node's own site.
    Member(NodeId),
    /// Some node of `site` (a link to another site).
    SiteNode(SiteName),
}

/// Checks a peer's certificate chain and SPIFFE node id (see the crate docs).
#[derive(Debug)]
pub struct PeerVerifier {
    rules: SharedRules,
    expect: Expect,
    algorithms: WebPkiSupportedAlgorithms,
}

fn refuse(reason: String) -> rustls::Error {
    rustls::Error::General(reason)
}

impl PeerVerifier {
    /// A verifier under `rules` expecting `expect`.
    pub fn new(rules: SharedRules, expect: Expect, algorithms: WebPkiSupportedAlgorithms) -> Self {
        Self { rules, expect, algorithms }
    }

    /// The peer `end_entity` names, if it passes every rule at `now`.
    pub fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: webpki::KeyUsage,
    ) -> Result<PeerName, rustls::Error> {
        let info = inspect(end_entity).map_err(|e| refuse(e.to_string()))?;
        let name = info.sole_name("peer certificate", true).map_err(|e| refuse(e.to_string()))?.clone();
        let rules = self.rules.read().unwrap_or_else(|p| p.into_inner());
        if &name.trust_domain != rules.anchors.trust_domain() {
            return Err(refuse(format!(
                "peer certificate names {name}, of another trust domain than {}",
                rules.anchors.trust_domain()
            )));
        }
        let cas = rules.anchors.for_site(&name.site);
        if cas.is_empty() {
            return Err(refuse(format!(
                "peer certificate names {name}, and no CA is trusted for site {} (import its CA)",
                name.site
            )));
        }
        let anchors =
            cas.iter().filter_map(|ca| webpki::anchor_from_trusted_cert(ca).ok()).collect::<Vec<_>>();
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| refuse(format!("peer certificate does not parse: {e}")))?;
        cert.verify_for_usage(self.algorithms.all, &anchors, intermediates, now, usage, None, None).map_err(
            |e| {
                refuse(format!(
                    "peer certificate for {name} is not valid under site {}'s CA: {}",
                    name.site,
                    describe(&e, &info, now)
                ))
            },
        )?;
        // `sole_name(.., true)` returned a node's name, so `node` is set.
        if name.site == rules.own_site && name.node.is_some_and(|node| rules.removed.contains(&node)) {
            return Err(refuse(format!("peer {name} was removed from site {}", rules.own_site)));
        }
        match &self.expect {
            Expect::Anyone => {}
            Expect::Member(id) => {
                if name.site != rules.own_site || name.node != Some(*id) {
                    return Err(refuse(format!(
                        "dialled node {id} of site {}, the certificate names {name}",
                        rules.own_site
                    )));
                }
            }
            Expect::SiteNode(site) => {
                if &name.site != site {
                    return Err(refuse(format!(
                        "dialled a node of site {site}, the certificate names {name}"
                    )));
                }
            }
        }
        Ok(name)
    }
}

fn describe(error: &webpki::Error, info: &crate::CertInfo, now: UnixTime) -> String {
    let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    match error {
        webpki::Error::CertExpired { .. } => {
            format!("expired {} s ago (not after {})", now_secs - info.not_after_secs, info.not_after_secs)
        }
        webpki::Error::CertNotValidYet { .. } => format!("not valid before {}", info.not_before_secs),
        webpki::Error::UnknownIssuer => "it was not issued by that CA (unknown issuer)".to_owned(),
        webpki::Error::InvalidSignatureForPublicKey => {
            "it was not issued by that CA (signature does not verify with the CA's key)".to_owned()
        }
        other => format!("{other:?}"),
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity, intermediates, now, webpki::KeyUsage::client_auth())?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Peers are named by SPIFFE id, not by host name: the address is only where to dial.
        self.check(end_entity, intermediates, now, webpki::KeyUsage::server_auth())?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
