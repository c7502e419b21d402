//! Admin certificates: what lets a client change the site's membership and PKI (mint join
//! tokens, add and remove nodes). An admin certificate is issued by the site's CA and names
//! `spiffe://<td>/sites/<site>/admins/<name>`; it is checked against that CA only, so another
//! CA the public port trusts for clients cannot make one.

use crate::inspect::inspect;
use crate::{TlsError, TrustAnchors};
use idmesh_types::{SiteName, TrustDomain};
use rustls_pki_types::{CertificateDer, UnixTime};

/// Longest admin name.
pub const ADMIN_NAME_MAX_BYTES: usize = 63;

/// Checks an admin name: 1 to 63 of `a-z`, `0-9`, `-`.
pub fn check_admin_name(name: &str) -> Result<(), TlsError> {
    if name.is_empty()
        || name.len() > ADMIN_NAME_MAX_BYTES
        || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(TlsError::cert(
            "admin",
            format!("{name:?}: must be 1 to {ADMIN_NAME_MAX_BYTES} of a-z, 0-9, -"),
        ));
    }
    Ok(())
}

/// The URI an admin certificate names.
pub fn admin_uri(trust_domain: &TrustDomain, site: &SiteName, name: &str) -> String {
    format!("spiffe://{trust_domain}/sites/{site}/admins/{name}")
}

/// The admin a client certificate chain proves, for `site` of `trust_domain`: the leaf must
/// name exactly one admin of that site and chain, at `now`, to one of `anchors`' CAs for it.
pub fn verify_admin(
    chain: &[CertificateDer<'_>],
    anchors: &TrustAnchors,
    site: &SiteName,
    now: UnixTime,
) -> Result<String, TlsError> {
    let leaf = chain.first().ok_or_else(|| TlsError::cert("client certificate", "none was presented"))?;
    let info = inspect(leaf)?;
    let prefix = format!("spiffe://{}/sites/{site}/admins/", anchors.trust_domain());
    let names: Vec<&str> = info.other_uris.iter().filter_map(|u| u.strip_prefix(&prefix)).collect();
    let [name] = names.as_slice() else {
        return Err(TlsError::cert(
            "client certificate",
            format!("must name exactly one admin as {prefix}<name> (it names {:?})", info.other_uris),
        ));
    };
    check_admin_name(name)?;
    let cas: Vec<_> =
        anchors.for_site(site).iter().filter_map(|ca| webpki::anchor_from_trusted_cert(ca).ok()).collect();
    let algorithms = crate::config::provider().signature_verification_algorithms;
    webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| TlsError::cert("client certificate", format!("does not parse: {e}")))?
        .verify_for_usage(algorithms.all, &cas, &chain[1..], now, webpki::KeyUsage::client_auth(), None, None)
        .map_err(|e| {
            TlsError::cert(
                "client certificate",
                format!("is not an admin certificate of site {site}'s CA: {e:?}"),
            )
        })?;
    Ok((*name).to_owned())
}
