//! idmesh's PKI and TLS rules.
//!
//! A site has a CA (`idmesh site init-ca`); its certificate names the site it vouches for with
//! a URI `spiffe://<trust-domain>/sites/<site>`. A node's certificate is issued by its site's
//! CA and names the node with a URI `spiffe://<trust-domain>/sites/<site>/nodes/<id>`, plus
//! the DNS names and IP addresses clients reach its public listener by.
//!
//! Between nodes every connection is mutual TLS 1.3. [`PeerVerifier`] accepts a certificate
//! only if it names exactly one node of this trust domain, chains to a CA trusted *for that
//! node's site* (a CA of site A never vouches for a node of site B), is within its validity,
//! and names a node that was not removed from this node's site; a dialling end also checks
//! that it reached the node (or site) it meant to. The node then binds every request's claimed
//! sender to the [`PeerName`] of its connection.
//!
//! Nothing here reads a clock: validity is checked at the time rustls passes in, and
//! certificates are issued for the times the caller names.

mod admin;
mod anchors;
mod config;
mod error;
mod identity;
mod inspect;
mod issue;
mod spiffe;
mod verify;

pub use admin::{ADMIN_NAME_MAX_BYTES, admin_uri, check_admin_name, verify_admin};
pub use anchors::TrustAnchors;
pub use config::{
    ClientAuth, client_config, install_crypto_provider, peer_client_config, peer_server_config,
    public_server_config,
};
pub use error::TlsError;
pub use identity::NodeIdentity;
pub use inspect::{CertInfo, certs_from_pem as inspect_pem_certs, inspect};
pub use issue::{
    CA_VALID_SECS_DEFAULT, IssuedCert, NODE_CERT_VALID_SECS_DEFAULT, SiteCa, new_signing_request,
};
pub use spiffe::PeerName;
pub use verify::{Expect, PeerRules, PeerVerifier, SharedRules};

/// Most certificates one PEM file may hold (a bundle of CAs, a chain).
pub const PEM_CERTS_MAX: usize = 256;
/// Largest PEM file read (a CA bundle of 256 certificates fits easily).
pub const PEM_FILE_MAX_BYTES: usize = 1024 * 1024;
/// Most DNS names and IP addresses a node certificate may carry.
pub const CERT_NAMES_MAX: usize = 32;
