//! TLS with real processes: every way a peer can fail to prove who it is, refused at the
//! handshake (or, for a claim its certificate does not back, at the request) with the reason in
//! the node's log and nothing changed; a removed node locked out; two sites syncing over mutual
//! TLS while a site whose CA is not trusted is refused; the public port asking for client
//! certificates; certificates rotated under load with no failed request.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod support;

use idmesh_proto::peer::raft_peer_client::RaftPeerClient;
use idmesh_proto::peer::{PeerHeader, RaftRequest};
use idmesh_proto::v1::RegisterAgentRequest;
use idmesh_proto::v1::agent_registry_client::AgentRegistryClient;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use support::mesh_cli::*;
use support::*;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

const WAIT: Duration = Duration::from_secs(60);

/// A channel to a peer port presenting `identity` (a TLS dir: node.pem, node.key), trusting
/// `ca_file`; or presenting nothing.
fn peer_endpoint(addr: SocketAddr, ca_file: &Path, identity: Option<&Path>) -> Endpoint {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca_file).unwrap()))
        .domain_name("127.0.0.1");
    if let Some(dir) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(dir.join("node.pem")).unwrap(),
            std::fs::read(dir.join("node.key")).unwrap(),
        ));
    }
    Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
}

/// A vote request to node `to` of `site`, saying it is from node `from` (the payload is not a
/// vote: a request that gets past the identity checks is refused as INVALID_ARGUMENT).
async fn vote(endpoint: Endpoint, site: &str, from: u64, to: u64) -> Result<(), tonic::Status> {
    let channel = endpoint.connect().await.map_err(|e| tonic::Status::unavailable(format!("{e:?}")))?;
    let header =
        PeerHeader { trust_domain: TRUST_DOMAIN.into(), site: site.into(), from_node: from, to_node: to };
    RaftPeerClient::new(channel)
        .vote(RaftRequest { header: Some(header), payload: b"{}".to_vec().into() })
        .await
        .map(|_| ())
}

/// Waits until node `id`'s log has a line containing every one of `words`.
async fn wait_log(site: &Site, id: u64, words: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let log = std::fs::read_to_string(&site.node(id).log_path).unwrap_or_default();
        if log.lines().any(|l| words.iter().all(|w| l.contains(w))) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {id} never logged {words:?}; tail:\n{}",
            site.log_tail(id, 30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn issue_to(ca_dir: &Path, id: u64, out: &Path, window: (i64, i64)) -> std::path::PathBuf {
    support::pki::issue(ca_dir, id, out, window);
    out.to_owned()
}

async fn agent_count(site: &Site, id: u64) -> u64 {
    site.status(id).await.unwrap().agent_count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_are_refused_unless_a_certificate_of_the_site_ca_names_them() {
    let mut site = Site::start(3, Options::default());
    let leader = site.wait_leader(WAIT).await;
    site.cli(leader, &["agent", "register", "before", "--owner", "me"]);
    for id in 1..=3 {
        site.wait_status(id, WAIT, "1 agent", |s| s.agent_count == 1).await;
    }
    let target = leader;
    let peer = site.node(target).peer;
    let ca_file = site.ca_dir.join("ca.pem");
    let scratch = site.dir.path().join("scratch");
    let other = (1..=3).find(|&n| n != target).unwrap();
    let term_before = site.status(target).await.unwrap().term;

    // A plaintext client on the peer port.
    let plain = Channel::from_shared(format!("http://{peer}")).unwrap().timeout(Duration::from_secs(5));
    assert!(vote(plain, SITE, other, target).await.is_err());
    wait_log(&site, target, &["TLS handshake refused", "peer_listen"]).await;

    // TLS without a client certificate.
    let e = vote(peer_endpoint(peer, &ca_file, None), SITE, other, target).await.unwrap_err();
    eprintln!("no certificate: {e}");
    wait_log(&site, target, &["TLS handshake refused", "no certificates"]).await;

    // A certificate naming a member, from a CA that is not the site's (same names).
    let rogue_ca = scratch.join("rogue-ca");
    support::pki::make_ca(&rogue_ca, TRUST_DOMAIN, SITE);
    let rogue = issue_to(&rogue_ca, other, &scratch.join("rogue"), support::pki::VALID);
    assert!(vote(peer_endpoint(peer, &ca_file, Some(&rogue)), SITE, other, target).await.is_err());
    wait_log(&site, target, &["TLS handshake refused", "not issued by that CA"]).await;

    // The site's own CA, but expired an hour ago.
    let expired = issue_to(&site.ca_dir, other, &scratch.join("expired"), (-7200, -3600));
    assert!(vote(peer_endpoint(peer, &ca_file, Some(&expired)), SITE, other, target).await.is_err());
    wait_log(&site, target, &["TLS handshake refused", "expired"]).await;

    // A CA of another trust domain for a site of the same name.
    let foreign_ca = scratch.join("foreign-ca");
    support::pki::make_ca(&foreign_ca, "other.example", SITE);
    let foreign = issue_to(&foreign_ca, other, &scratch.join("foreign"), support::pki::VALID);
    assert!(vote(peer_endpoint(peer, &ca_file, Some(&foreign)), SITE, other, target).await.is_err());
    wait_log(&site, target, &["TLS handshake refused", "another trust domain"]).await;

    // A valid certificate of one member used to speak as another member, or as another site:
    // the handshake passes, the request is refused and names what the certificate says.
    let genuine = issue_to(&site.ca_dir, other, &scratch.join("genuine"), support::pki::VALID);
    let third = (1..=3).find(|&n| n != target && n != other).unwrap();
    let e = vote(peer_endpoint(peer, &ca_file, Some(&genuine)), SITE, third, target).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    assert!(
        e.message()
            .contains(&format!("certificate names spiffe://{TRUST_DOMAIN}/sites/{SITE}/nodes/{other}")),
        "{e}"
    );
    // A certificate of the site's CA for a node that is not a member: refused at the request.
    let stranger = issue_to(&site.ca_dir, 9, &scratch.join("node-9"), support::pki::VALID);
    let e = vote(peer_endpoint(peer, &ca_file, Some(&stranger)), SITE, 9, target).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    assert!(e.message().contains("is not a member"), "{e}");
    // The same certificate speaking as itself gets past identity (the payload is no vote).
    let e = vote(peer_endpoint(peer, &ca_file, Some(&genuine)), SITE, other, target).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");

    // The public port: the CLI with the wrong CA, or plaintext, reaches nothing.
    let out = Command::new(BIN)
        .args(["agent", "list", "--server", &site.node(target).public.to_string(), "--ca"])
        .arg(rogue_ca.join("ca.pem"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot connect"), "{}", stderr(&out));
    let out = Command::new(BIN)
        .args(["agent", "list", "--insecure", "--server", &site.node(target).public.to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    // Nothing changed: same agents everywhere, no election was caused.
    for id in 1..=3 {
        assert_eq!(agent_count(&site, id).await, 1);
    }
    assert_eq!(site.status(target).await.unwrap().term, term_before);

    // A node removed from the site cannot come back with its still-valid certificate.
    let removed = third;
    let out = site.cli(leader, &["site", "remove-node", "--node-id", &removed.to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    site.kill(removed);
    let removed_tls = site.node(removed).data_dir.with_extension("tls");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // At once its requests are refused (not a member); within a second, its handshakes.
        let result = vote(peer_endpoint(peer, &ca_file, Some(&removed_tls)), SITE, removed, target).await;
        let refused_at_handshake = result.as_ref().is_err_and(|e| {
            ![tonic::Code::InvalidArgument, tonic::Code::PermissionDenied].contains(&e.code())
        });
        if refused_at_handshake {
            break;
        }
        assert!(Instant::now() < deadline, "removed node {removed} still accepted: {result:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_log(&site, target, &["TLS handshake refused", "was removed"]).await;
    site.spawn(removed);
    wait_log(&site, other, &["TLS handshake refused", "was removed"]).await;
    site.cli(leader, &["agent", "register", "after", "--owner", "me"]);
    site.wait_status(other, WAIT, "2 agents", |s| s.agent_count == 2).await;
    assert_eq!(
        site.status(removed).await.map_or(0, |s| s.agent_count),
        1,
        "the removed node was replicated to"
    );
}

use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_sync_over_mutual_tls_and_a_site_whose_ca_is_not_trusted_is_refused() {
    let mut mesh = Mesh::new();
    mesh.add_site("hub", TRUST_DOMAIN, 1, Options::default());
    mesh.add_site("branch", TRUST_DOMAIN, 1, Options::default());
    mesh.add_site("stranger", TRUST_DOMAIN, 1, Options::default());
    let hub_peer = mesh.site("hub").node(1).peer;
    mesh.site_mut("branch").nodes.get_mut(&1).unwrap().extra_args = links("hub", hub_peer);
    mesh.site_mut("stranger").nodes.get_mut(&1).unwrap().extra_args = links("hub", hub_peer);
    mesh.start();
    // The hub trusts only the branch's CA (the stranger trusts the hub's).
    let branch_ca = mesh.site("branch").ca_dir.join("ca.pem");
    {
        let hub = mesh.site_mut("hub");
        hub.peer_cas = vec![branch_ca];
        hub.kill(1);
        hub.spawn(1);
    }
    for site in mesh.sites.values() {
        site.wait_leader(LEADER).await;
    }
    ok(&mesh, "hub", 1, &["agent", "register", "from-hub", "--owner", "hq"]);
    ok(&mesh, "stranger", 1, &["agent", "register", "from-stranger", "--owner", "x"]);
    wait_link(&mesh, "branch", 1, "hub", "connected", connected).await;
    let deadline = Instant::now() + CONVERGE;
    while agent(&mesh, "branch", 1, "from-hub").is_none() {
        assert!(Instant::now() < deadline, "the hub's agent never reached the branch");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The stranger's link is refused at the hub's handshake, with the reason on both sides.
    wait_log(mesh.site("hub"), 1, &["TLS handshake refused", "no CA is trusted for site stranger"]).await;
    wait_link(&mesh, "stranger", 1, "hub", "down", |l| !connected(l) && !l.last_error.is_empty()).await;
    assert!(agent(&mesh, "hub", 1, "from-stranger").is_none());
    assert!(agent(&mesh, "stranger", 1, "from-hub").is_none());
    let hub = mesh_status(mesh.site("hub").node(1).public).await.unwrap();
    assert!(hub.sites.iter().all(|s| s.site != "stranger"), "the hub heard from the stranger: {hub:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_port_can_require_client_certificates() {
    let site = {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("client-ca");
        support::pki::make_ca(&ca, TRUST_DOMAIN, "clients");
        let options = Options {
            extra_args: vec!["--public-client-ca".into(), ca.join("ca.pem").display().to_string()],
            ..Options::default()
        };
        let site = Site::start(1, options);
        (site, dir, ca)
    };
    let (site, _dir, client_ca) = site;
    // Without a certificate the CLI is refused; with one of the client CA it is served.
    let server = site.node(1).public.to_string();
    let ca = site.ca_dir.join("ca.pem");
    let deadline = Instant::now() + WAIT;
    let client = issue_to(&client_ca, 7, &site.dir.path().join("client"), support::pki::VALID);
    let with_cert = || {
        Command::new(BIN)
            .args(["site", "status", "--server", &server, "--ca"])
            .arg(&ca)
            .arg("--client-cert")
            .arg(client.join("node.pem"))
            .arg("--client-key")
            .arg(client.join("node.key"))
            .output()
            .unwrap()
    };
    while !with_cert().status.success() {
        assert!(Instant::now() < deadline, "{}", stderr(&with_cert()));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out =
        Command::new(BIN).args(["site", "status", "--server", &server, "--ca"]).arg(&ca).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "served without a client certificate");
    wait_log(&site, 1, &["TLS handshake refused", "listen"]).await;
    // A certificate of a CA that is neither the client CA nor the site's is refused; the
    // site's admin certificate is accepted (admins reach a node whatever clients it requires).
    let other_ca = site.dir.path().join("other-ca");
    support::pki::make_ca(&other_ca, TRUST_DOMAIN, "elsewhere");
    let other = issue_to(&other_ca, 7, &site.dir.path().join("other-client"), support::pki::VALID);
    let admin = support::pki::admin_dir(&site.ca_dir);
    for (pem, key, served) in [
        (other.join("node.pem"), other.join("node.key"), false),
        (admin.join("admin.pem"), admin.join("admin.key"), true),
    ] {
        let out = Command::new(BIN)
            .args(["site", "status", "--server", &server, "--ca"])
            .arg(&ca)
            .arg("--client-cert")
            .arg(&pem)
            .arg("--client-key")
            .arg(&key)
            .output()
            .unwrap();
        assert_eq!(out.status.success(), served, "{}: {}", pem.display(), stderr(&out));
    }
}

/// The certificate the node at `addr` presents to a new connection: its expiry (unix s).
async fn served_not_after(addr: SocketAddr, ca_file: &Path) -> i64 {
    let config = idmesh_tls::client_config(&std::fs::read_to_string(ca_file).unwrap(), None).unwrap();
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config).connect(name, stream).await.unwrap();
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    idmesh_tls::inspect(&leaf).unwrap().not_after_secs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_under_load_with_no_failed_request() {
    idmesh_tls::install_crypto_provider();
    let site = Site::start(3, Options::default());
    let leader = site.wait_leader(WAIT).await;
    let ca = site.ca_dir.join("ca.pem");
    let old = served_not_after(site.node(1).public, &ca).await;

    // Four writers, each opening a new connection (a new handshake) every 20 writes, through
    // every node (followers forward to the leader over the peer port).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4u64 {
        let addr = site.node(1 + w % 3).public;
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let (mut done, mut failed) = (0u64, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let mut api = AgentRegistryClient::new(channel(addr).await);
                for _ in 0..20 {
                    let request = RegisterAgentRequest {
                        agent: format!("w{w}-{done}"),
                        owner: "rotation".into(),
                        ..Default::default()
                    };
                    match api.register_agent(request).await {
                        Ok(_) => done += 1,
                        Err(e) => failed.push(e.to_string()),
                    }
                }
            }
            (done, failed)
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    // New certificates for every node (valid two days instead of one), then SIGHUP.
    for id in 1..=3 {
        support::pki::issue(
            &site.ca_dir,
            id,
            &site.node(id).data_dir.with_extension("tls"),
            (-60, 2 * 86_400),
        );
        let pid = site.node(id).child.as_ref().unwrap().id();
        assert!(Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap().success());
    }
    for id in 1..=3 {
        wait_log(&site, id, &["node certificate reloaded"]).await;
    }
    // Keep writing on the new certificates: peers reconnect with them too (a leader change
    // forces new peer connections).
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut total = 0;
    for writer in writers {
        let (done, failed) = writer.await.unwrap();
        assert!(
            failed.is_empty(),
            "{} requests failed during rotation: {:?}",
            failed.len(),
            &failed[..failed.len().min(5)]
        );
        total += done;
    }
    assert!(total > 0);
    for id in 1..=3 {
        let now = served_not_after(site.node(id).public, &ca).await;
        assert!(now > old + 86_000, "node {id} still serves the old certificate ({now} vs {old})");
    }
    for id in 1..=3 {
        site.wait_status(id, WAIT, "every write", |s| s.agent_count == total).await;
    }
    assert_eq!(site.wait_leader(WAIT).await, leader);
}
