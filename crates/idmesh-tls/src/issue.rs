//! Making a site's CA and the certificates it issues to its nodes (rcgen, ECDSA P-256).

use crate::inspect::{certs_from_pem, inspect};
use crate::{PeerName, TlsError};
use idmesh_types::{NodeId, SiteName, TrustDomain};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, PublicKeyData as _, SanType,
};
use std::net::IpAddr;
use zeroize::Zeroizing;

/// A site CA is valid ten years unless asked otherwise.
pub const CA_VALID_SECS_DEFAULT: u64 = 10 * 365 * 86_400;
/// A node certificate is valid 90 days unless asked otherwise; rotate it before then.
pub const NODE_CERT_VALID_SECS_DEFAULT: u64 = 90 * 86_400;

/// A certificate and its private key, as PEM. The key is wiped from memory when dropped.
#[derive(Debug)]
pub struct IssuedCert {
    /// The certificate, followed by its issuer's for a node (the chain a node presents).
    pub cert_pem: String,
    /// The PKCS#8 private key.
    pub key_pem: Zeroizing<String>,
}

/// A site's CA, loaded with its private key, able to issue node certificates.
pub struct SiteCa {
    name: PeerName,
    cert_pem: String,
    key: KeyPair,
}

impl std::fmt::Debug for SiteCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteCa").field("name", &self.name).finish_non_exhaustive()
    }
}

fn time(what: &str, secs: i64) -> Result<time::OffsetDateTime, TlsError> {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .map_err(|e| TlsError::cert(what, format!("time {secs} is out of range: {e}")))
}

fn window(
    not_before_secs: i64,
    not_after_secs: i64,
) -> Result<(time::OffsetDateTime, time::OffsetDateTime), TlsError> {
    if not_after_secs <= not_before_secs {
        return Err(TlsError::cert("validity", "must end after it starts"));
    }
    Ok((time("not_before", not_before_secs)?, time("not_after", not_after_secs)?))
}

impl SiteCa {
    /// A new CA for `site`, valid from `not_before_secs` to `not_after_secs` (unix seconds).
    pub fn generate(
        trust_domain: &TrustDomain,
        site: &SiteName,
        not_before_secs: i64,
        not_after_secs: i64,
    ) -> Result<IssuedCert, TlsError> {
        let name = PeerName::site(trust_domain.clone(), site.clone());
        let mut params = CertificateParams::default();
        (params.not_before, params.not_after) = window(not_before_secs, not_after_secs)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, trust_domain.to_string());
        dn.push(DnType::CommonName, format!("idmesh site CA {site}"));
        params.distinguished_name = dn;
        // A site CA signs node certificates only, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.subject_alt_names = vec![uri(&name)?];
        let key = KeyPair::generate().map_err(|e| TlsError::generate("a CA key", e))?;
        let cert = params.self_signed(&key).map_err(|e| TlsError::generate("the CA certificate", e))?;
        Ok(IssuedCert { cert_pem: cert.pem(), key_pem: Zeroizing::new(key.serialize_pem()) })
    }

    /// The CA of `cert_pem` with its private key `key_pem`; the certificate must be a CA that
    /// names one site and the key must be its own.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let certs = certs_from_pem("CA certificate", cert_pem)?;
        let info = inspect(&certs[0])?;
        if !info.is_ca {
            return Err(TlsError::cert("CA certificate", "is not a CA (basic constraints)"));
        }
        let name = info.sole_name("CA certificate", false)?.clone();
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| TlsError::pem("CA key", format!("does not parse: {e}")))?;
        let x509 = x509_parser::parse_x509_certificate(&certs[0])
            .map_err(|e| TlsError::cert("CA certificate", e.to_string()))?
            .1;
        if x509.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(TlsError::cert("CA key", "is not the key of the CA certificate"));
        }
        let cert_pem = pem::encode_config(
            &pem::Pem::new("CERTIFICATE", certs[0].to_vec()),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        );
        Ok(Self { name, cert_pem, key })
    }

    /// The site this CA vouches for.
    pub fn name(&self) -> &PeerName {
        &self.name
    }

    /// The CA's certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A new key and a client certificate for admin `name` of this CA's site (see
    /// [`crate::verify_admin`]).
    pub fn issue_admin(
        &self,
        name: &str,
        not_before_secs: i64,
        not_after_secs: i64,
    ) -> Result<IssuedCert, TlsError> {
        crate::check_admin_name(name)?;
        let key = KeyPair::generate().map_err(|e| TlsError::generate("an admin key", e))?;
        let uri = crate::admin_uri(&self.name.trust_domain, &self.name.site, name);
        let leaf = Leaf {
            what: "an admin certificate",
            common_name: format!("idmesh admin {name} of site {}", self.name.site),
            names: vec![SanType::URI(uri.try_into().map_err(|e| TlsError::generate("an admin URI", e))?)],
            usages: vec![ExtendedKeyUsagePurpose::ClientAuth],
            window: window(not_before_secs, not_after_secs)?,
        };
        let cert_pem = self.sign(&key, leaf)?;
        Ok(IssuedCert { cert_pem, key_pem: Zeroizing::new(key.serialize_pem()) })
    }

    /// A new key and certificate for node `node` of this CA's site, naming also `names` (DNS
    /// names or IP addresses clients dial its public listener by).
    pub fn issue_node(
        &self,
        node: NodeId,
        names: &[String],
        not_before_secs: i64,
        not_after_secs: i64,
    ) -> Result<IssuedCert, TlsError> {
        let key = KeyPair::generate().map_err(|e| TlsError::generate("a node key", e))?;
        let cert_pem = self.sign_node_key(&key, node, names, not_before_secs, not_after_secs)?;
        Ok(IssuedCert { cert_pem, key_pem: Zeroizing::new(key.serialize_pem()) })
    }

    /// A certificate for node `node` over the public key of a PEM certificate signing request
    /// (what a joining node sends); only the key is taken from the request: the names are
    /// `node`'s SPIFFE id and `names`.
    pub fn sign_request(
        &self,
        csr_pem: &str,
        node: NodeId,
        names: &[String],
        not_before_secs: i64,
        not_after_secs: i64,
    ) -> Result<String, TlsError> {
        if csr_pem.len() > 64 * 1024 {
            return Err(TlsError::pem("csr", "larger than 65536 bytes"));
        }
        let request = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| TlsError::pem("csr", format!("is not a signed certificate request: {e}")))?;
        self.sign_node_key(&request.public_key, node, names, not_before_secs, not_after_secs)
    }

    fn sign_node_key(
        &self,
        public_key: &impl rcgen::PublicKeyData,
        node: NodeId,
        names: &[String],
        not_before_secs: i64,
        not_after_secs: i64,
    ) -> Result<String, TlsError> {
        if names.len() > crate::CERT_NAMES_MAX {
            return Err(TlsError::cert("names", format!("at most {}", crate::CERT_NAMES_MAX)));
        }
        let name = PeerName::node(self.name.trust_domain.clone(), self.name.site.clone(), node);
        let mut sans = vec![uri(&name)?];
        for n in names {
            sans.push(match n.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => {
                    let not_a_name = |e: &dyn std::fmt::Display| {
                        TlsError::cert("names", format!("{n:?} is neither an IP address nor a DNS name: {e}"))
                    };
                    rustls_pki_types::DnsName::try_from(n.as_str()).map_err(|e| not_a_name(&e))?;
                    SanType::DnsName(n.clone().try_into().map_err(|e| not_a_name(&e))?)
                }
            });
        }
        let leaf = Leaf {
            what: "a node certificate",
            common_name: format!("idmesh node {} of site {}", node.0, self.name.site),
            names: sans,
            usages: vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
            window: window(not_before_secs, not_after_secs)?,
        };
        self.sign(public_key, leaf)
    }

    /// `leaf` over `public_key`, signed by this CA; the PEM of it followed by the CA's.
    fn sign(&self, public_key: &impl rcgen::PublicKeyData, leaf: Leaf) -> Result<String, TlsError> {
        let mut params = CertificateParams::default();
        (params.not_before, params.not_after) = leaf.window;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, self.name.trust_domain.to_string());
        dn.push(DnType::CommonName, leaf.common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = leaf.usages;
        params.use_authority_key_identifier_extension = true;
        params.subject_alt_names = leaf.names;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)
            .map_err(|e| TlsError::cert("CA certificate", e.to_string()))?;
        let cert = params.signed_by(public_key, &issuer).map_err(|e| TlsError::generate(leaf.what, e))?;
        Ok(format!("{}{}", cert.pem(), self.cert_pem))
    }
}

/// What differs between the end-entity certificates a site CA issues.
struct Leaf {
    /// Names it in errors.
    what: &'static str,
    common_name: String,
    /// Subject alternative names: the SPIFFE URI first.
    names: Vec<SanType>,
    usages: Vec<ExtendedKeyUsagePurpose>,
    window: (time::OffsetDateTime, time::OffsetDateTime),
}

/// A new key and a certificate signing request over it (what a joining node sends; the CA
/// decides the names). Returns (request PEM, key PEM).
pub fn new_signing_request() -> Result<(String, Zeroizing<String>), TlsError> {
    let key = KeyPair::generate().map_err(|e| TlsError::generate("a node key", e))?;
    let request = CertificateParams::default()
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(|e| TlsError::generate("a certificate request", e))?;
    Ok((request, Zeroizing::new(key.serialize_pem())))
}

fn uri(name: &PeerName) -> Result<SanType, TlsError> {
    Ok(SanType::URI(name.to_string().try_into().map_err(|e| TlsError::generate("a SPIFFE URI", e))?))
}
