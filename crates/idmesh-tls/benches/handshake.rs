//! What a TLS handshake between two nodes costs in CPU: full mutual TLS 1.3 handshakes (the
//! peer configurations, with `PeerVerifier` on both sides) run in memory, one at a time, next
//! to the limits measured in the same run: ECDSA P-256 signatures per second (each handshake
//! signs twice: server and client CertificateVerify) and a server-auth-only handshake (the
//! public port). `cargo bench -p idmesh-tls --bench handshake`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use idmesh_tls::{Expect, NodeIdentity, PeerRules, SiteCa, TrustAnchors};
use idmesh_types::{NodeId, SiteName, TrustDomain};
use rustls::{ClientConnection, ServerConnection};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn rate(secs: f64, mut op: impl FnMut()) -> f64 {
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs_f64(secs) {
        op();
        n += 1;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// Drives one handshake to completion in memory.
fn handshake(client: &mut ClientConnection, server: &mut ServerConnection) {
    let mut buf = Vec::with_capacity(16 * 1024);
    while client.is_handshaking() || server.is_handshaking() {
        buf.clear();
        client.write_tls(&mut buf).unwrap();
        if !buf.is_empty() {
            server.read_tls(&mut &buf[..]).unwrap();
            server.process_new_packets().unwrap();
        }
        buf.clear();
        server.write_tls(&mut buf).unwrap();
        if !buf.is_empty() {
            client.read_tls(&mut &buf[..]).unwrap();
            client.process_new_packets().unwrap();
        }
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("handshake: skipped (a benchmark: cargo bench -p idmesh-tls --bench handshake)");
        return;
    }
    idmesh_tls::install_crypto_provider();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let td = TrustDomain::parse_field("t", "bench.example").unwrap();
    let site = SiteName::parse_field("s", "bench").unwrap();
    let made = SiteCa::generate(&td, &site, now - 60, now + 86_400).unwrap();
    let ca = SiteCa::load(&made.cert_pem, &made.key_pem).unwrap();
    let identity = |id| {
        let cert = ca.issue_node(NodeId(id), &["127.0.0.1".into()], now - 60, now + 86_400).unwrap();
        Arc::new(NodeIdentity::from_pem(&cert.cert_pem, &cert.key_pem).unwrap())
    };
    let (one, two) = (identity(1), identity(2));
    let mut anchors = TrustAnchors::new(td);
    anchors.add_pem("ca", ca.cert_pem()).unwrap();
    let rules = Arc::new(RwLock::new(PeerRules { anchors, own_site: site, removed: Default::default() }));
    let server_config = idmesh_tls::peer_server_config(two.clone(), rules.clone()).unwrap();
    let client_config =
        idmesh_tls::peer_client_config(one.clone(), rules, Expect::Member(NodeId(2))).unwrap();
    let public_server = idmesh_tls::public_server_config(two, idmesh_tls::ClientAuth::None).unwrap();
    let public_client = idmesh_tls::client_config(ca.cert_pem(), None).unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();

    let signer = {
        let cert = ca.issue_node(NodeId(3), &[], now - 60, now + 86_400).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::try_from(
            rustls::pki_types::pem::PemObject::from_pem_slice(cert.key_pem.as_bytes())
                .map(|k: rustls::pki_types::PrivateKeyDer<'static>| k.secret_der().to_vec())
                .unwrap(),
        )
        .unwrap();
        let key = rustls::crypto::ring::sign::any_ecdsa_type(&key).unwrap();
        key.choose_scheme(&[rustls::SignatureScheme::ECDSA_NISTP256_SHA256]).unwrap()
    };
    let signs_per_s = rate(2.0, || {
        std::hint::black_box(signer.sign(b"a handshake transcript hash, 32 bytes").unwrap());
    });
    let mutual_per_s = rate(3.0, || {
        let mut client = ClientConnection::new(client_config.clone(), name.clone()).unwrap();
        let mut server = ServerConnection::new(server_config.clone()).unwrap();
        handshake(&mut client, &mut server);
        assert!(server.peer_certificates().is_some());
    });
    let server_only_per_s = rate(3.0, || {
        let mut client = ClientConnection::new(public_client.clone(), name.clone()).unwrap();
        let mut server = ServerConnection::new(public_server.clone()).unwrap();
        handshake(&mut client, &mut server);
    });
    println!("==== handshake report (one core, both ends in this process) ====");
    println!("limit: ECDSA P-256 signatures {signs_per_s:.0}/s");
    println!(
        "mutual TLS 1.3 peer handshake (2 signs, 4 signature checks, 2 x25519 exchanges, SPIFFE checks): {mutual_per_s:.0}/s = {:.0} µs of CPU for both ends",
        1e6 / mutual_per_s
    );
    println!(
        "server-auth TLS 1.3 handshake (public port): {server_only_per_s:.0}/s = {:.0} µs",
        1e6 / server_only_per_s
    );
}
