//! Site CAs, node certificates and the peer rules, checked the way a handshake checks them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use idmesh_tls::{Expect, NodeIdentity, PeerRules, PeerVerifier, SiteCa, TrustAnchors};
use idmesh_types::{NodeId, SiteName, TrustDomain};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, UnixTime};
use std::sync::{Arc, RwLock};

const NOW: i64 = 1_800_000_000;
const DAY: i64 = 86_400;

fn td(s: &str) -> TrustDomain {
    TrustDomain::parse_field("t", s).unwrap()
}
fn site(s: &str) -> SiteName {
    SiteName::parse_field("s", s).unwrap()
}

fn ca(trust_domain: &str, name: &str) -> SiteCa {
    let made = SiteCa::generate(&td(trust_domain), &site(name), NOW - DAY, NOW + 365 * DAY).unwrap();
    SiteCa::load(&made.cert_pem, &made.key_pem).unwrap()
}

fn chain(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes()).map(Result::unwrap).collect()
}

fn rules(cas: &[&SiteCa], own: &str, removed: &[u64]) -> Arc<RwLock<PeerRules>> {
    let mut anchors = TrustAnchors::new(td("acme.example"));
    for ca in cas {
        anchors.add_pem("ca", ca.cert_pem()).unwrap();
    }
    Arc::new(RwLock::new(PeerRules {
        anchors,
        own_site: site(own),
        removed: removed.iter().map(|&n| NodeId(n)).collect(),
    }))
}

fn check(rules: &Arc<RwLock<PeerRules>>, expect: Expect, cert_pem: &str, at: i64) -> Result<String, String> {
    idmesh_tls::install_crypto_provider();
    let provider = rustls::crypto::CryptoProvider::get_default().unwrap();
    let verifier = PeerVerifier::new(rules.clone(), expect, provider.signature_verification_algorithms);
    let certs = chain(cert_pem);
    verifier
        .check(
            &certs[0],
            &certs[1..],
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(at as u64)),
            webpki::KeyUsage::client_auth(),
        )
        .map(|name| name.to_string())
        .map_err(|e| e.to_string())
}

#[test]
fn a_node_certificate_passes_only_under_its_own_site_ca_and_within_its_validity() {
    let eu = ca("acme.example", "eu-west");
    let us = ca("acme.example", "us-east");
    let node2 =
        eu.issue_node(NodeId(2), &["127.0.0.1".into(), "localhost".into()], NOW - 60, NOW + DAY).unwrap();
    let both = rules(&[&eu, &us], "eu-west", &[]);
    assert_eq!(
        check(&both, Expect::Anyone, &node2.cert_pem, NOW).unwrap(),
        "spiffe://acme.example/sites/eu-west/nodes/2"
    );
    assert!(check(&both, Expect::Member(NodeId(2)), &node2.cert_pem, NOW).is_ok());

    // Expired, not yet valid.
    let e = check(&both, Expect::Anyone, &node2.cert_pem, NOW + 2 * DAY).unwrap_err();
    assert!(e.contains("expired"), "{e}");
    let e = check(&both, Expect::Anyone, &node2.cert_pem, NOW - 3600).unwrap_err();
    assert!(e.contains("not valid before"), "{e}");

    // Signed by a CA this node does not trust for that site (us-east's CA signing an eu-west
    // name is refused: a CA vouches only for its own site).
    let forged = {
        // A certificate naming an eu-west node, issued by a different CA that also calls
        // itself eu-west's.
        let rogue = ca("acme.example", "eu-west");
        rogue.issue_node(NodeId(2), &[], NOW - 60, NOW + DAY).unwrap()
    };
    let e = check(&both, Expect::Anyone, &forged.cert_pem, NOW).unwrap_err();
    assert!(e.contains("not issued by that CA"), "{e}");
    let only_us = rules(&[&us], "eu-west", &[]);
    let e = check(&only_us, Expect::Anyone, &node2.cert_pem, NOW).unwrap_err();
    assert!(e.contains("no CA is trusted for site eu-west"), "{e}");

    // Dialled node 3, reached node 2; dialled site us-east, reached eu-west.
    let e = check(&both, Expect::Member(NodeId(3)), &node2.cert_pem, NOW).unwrap_err();
    assert!(e.contains("dialled node 3"), "{e}");
    let e = check(&both, Expect::SiteNode(site("us-east")), &node2.cert_pem, NOW).unwrap_err();
    assert!(e.contains("dialled a node of site us-east"), "{e}");

    // A node removed from the site is refused even with a valid certificate.
    let removed = rules(&[&eu], "eu-west", &[2]);
    let e = check(&removed, Expect::Anyone, &node2.cert_pem, NOW).unwrap_err();
    assert!(e.contains("was removed"), "{e}");
    // ... but a node of another site with the same id is not.
    let us2 = us.issue_node(NodeId(2), &[], NOW - 60, NOW + DAY).unwrap();
    let removed_both = rules(&[&eu, &us], "eu-west", &[2]);
    assert!(check(&removed_both, Expect::Anyone, &us2.cert_pem, NOW).is_ok());
}

#[test]
fn cas_and_certificates_that_break_a_rule_are_named() {
    let eu = ca("acme.example", "eu-west");
    // A CA of another trust domain is not imported.
    let other = ca("other.example", "eu-west");
    let mut anchors = TrustAnchors::new(td("acme.example"));
    let e = anchors.add_pem("other.pem", other.cert_pem()).unwrap_err().to_string();
    assert!(e.contains("trust domain other.example"), "{e}");
    // A node certificate is not a CA.
    let node = eu.issue_node(NodeId(1), &[], NOW - 60, NOW + DAY).unwrap();
    let e = anchors.add_pem("node.pem", &node.cert_pem).unwrap_err().to_string();
    assert!(e.contains("not a CA"), "{e}");
    assert!(anchors.add_pem("empty.pem", "hello").unwrap_err().to_string().contains("no CERTIFICATE"));
    // A CA with a key that is not its own.
    let made = SiteCa::generate(&td("acme.example"), &site("eu-west"), NOW, NOW + DAY).unwrap();
    let e = SiteCa::load(other.cert_pem(), &made.key_pem).unwrap_err().to_string();
    assert!(e.contains("not the key of the CA certificate"), "{e}");
    // Bad names, bad windows.
    let e = eu.issue_node(NodeId(1), &["not a name!".into()], NOW, NOW + DAY).unwrap_err().to_string();
    assert!(e.contains("neither an IP address nor a DNS name"), "{e}");
    assert!(eu.issue_node(NodeId(1), &[], NOW, NOW).is_err());
    let many: Vec<String> = (0..33).map(|i| format!("n{i}.example")).collect();
    assert!(eu.issue_node(NodeId(1), &many, NOW, NOW + DAY).unwrap_err().to_string().contains("at most 32"));
}

#[test]
fn an_identity_swaps_its_certificate_only_for_one_naming_the_same_node() {
    let eu = ca("acme.example", "eu-west");
    let first = eu.issue_node(NodeId(1), &[], NOW - 60, NOW + DAY).unwrap();
    let identity = NodeIdentity::from_pem(&first.cert_pem, &first.key_pem).unwrap();
    assert_eq!(identity.not_after_secs(), NOW + DAY);
    let next = eu.issue_node(NodeId(1), &[], NOW - 60, NOW + 30 * DAY).unwrap();
    identity.replace(&next.cert_pem, &next.key_pem).unwrap();
    assert_eq!(identity.not_after_secs(), NOW + 30 * DAY);
    let other = eu.issue_node(NodeId(2), &[], NOW - 60, NOW + DAY).unwrap();
    assert!(
        identity
            .replace(&other.cert_pem, &other.key_pem)
            .unwrap_err()
            .to_string()
            .contains("names spiffe://acme.example/sites/eu-west/nodes/2")
    );
    // A key that is not the certificate's.
    let e = NodeIdentity::from_pem(&first.cert_pem, &next.key_pem).unwrap_err().to_string();
    assert!(e.contains("not the key"), "{e}");
    assert_eq!(identity.not_after_secs(), NOW + 30 * DAY);
}

#[test]
fn a_signing_request_gives_a_certificate_for_the_assigned_node_only() {
    let eu = ca("acme.example", "eu-west");
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["spiffe-bait.example".to_owned()]).unwrap();
    params
        .subject_alt_names
        .push(rcgen::SanType::URI("spiffe://acme.example/sites/eu-west/nodes/1".try_into().unwrap()));
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let cert = eu.sign_request(&csr, NodeId(4), &["127.0.0.1".into()], NOW - 60, NOW + DAY).unwrap();
    let info = idmesh_tls::inspect(&chain(&cert)[0]).unwrap();
    assert_eq!(info.names.len(), 1);
    assert_eq!(info.names[0].to_string(), "spiffe://acme.example/sites/eu-west/nodes/4");
    assert!(
        eu.sign_request(
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            NodeId(4),
            &[],
            NOW,
            NOW + DAY
        )
        .is_err()
    );
}

#[test]
fn only_an_admin_certificate_of_the_site_ca_proves_an_admin() {
    let eu = ca("acme.example", "eu-west");
    let us = ca("acme.example", "us-east");
    let mut anchors = TrustAnchors::new(td("acme.example"));
    anchors.add_pem("eu", eu.cert_pem()).unwrap();
    anchors.add_pem("us", us.cert_pem()).unwrap();
    let at = |secs: i64| UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs as u64));
    let admin = eu.issue_admin("alice", NOW - 60, NOW + DAY).unwrap();
    let verify =
        |pem: &str, when: i64| idmesh_tls::verify_admin(&chain(pem), &anchors, &site("eu-west"), at(when));
    assert_eq!(verify(&admin.cert_pem, NOW).unwrap(), "alice");
    assert!(verify(&admin.cert_pem, NOW + 2 * DAY).is_err(), "expired");
    // A node's certificate of the same CA is no admin's; another site's admin is not this one's.
    let node = eu.issue_node(NodeId(1), &[], NOW - 60, NOW + DAY).unwrap();
    assert!(verify(&node.cert_pem, NOW).unwrap_err().to_string().contains("exactly one admin"));
    let other = us.issue_admin("alice", NOW - 60, NOW + DAY).unwrap();
    assert!(verify(&other.cert_pem, NOW).is_err());
    // A CA that calls itself eu-west's but is not the trusted one.
    let rogue = ca("acme.example", "eu-west").issue_admin("alice", NOW - 60, NOW + DAY).unwrap();
    assert!(verify(&rogue.cert_pem, NOW).unwrap_err().to_string().contains("not an admin certificate"));
    assert!(eu.issue_admin("Bad Name", NOW, NOW + DAY).is_err());
}
