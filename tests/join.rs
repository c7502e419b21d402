//! Joining a site with a single-use token, with real processes: a new node makes its key,
//! sends a signing request with the token and gets a certificate of the site's CA; a replayed,
//! expired, mistyped or other site's token, and a node id that is or was a member's, are
//! refused, the joiner writes no certificate and exits, and a refused attempt spends nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod support;

use std::time::{Duration, Instant};
use support::*;

const WAIT: Duration = Duration::from_secs(60);

fn mint(site: &Site, ttl: &str) -> String {
    let out = site.cli(1, &["site", "join-token", "--ttl", ttl, "--output", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    json["token"].as_str().unwrap().to_owned()
}

/// Starts node `id` joining with `token`; waits for its process to exit; returns its log.
fn refused_join(site: &mut Site, id: u64, token: &str) -> String {
    site.add_joining_process(id, token, 1, &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let child = site.nodes.get_mut(&id).unwrap().child.as_mut().unwrap();
        if let Some(status) = child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(1), "node {id} exited with {status}");
            break;
        }
        assert!(Instant::now() < deadline, "node {id} is running: its join was not refused");
        std::thread::sleep(Duration::from_millis(100));
    }
    site.nodes.get_mut(&id).unwrap().child = None;
    let tls = site.node(id).data_dir.with_extension("tls");
    assert!(!tls.join("node.pem").exists() && !tls.join("node.key").exists(), "a refused join left files");
    let log = std::fs::read_to_string(&site.node(id).log_path).unwrap();
    site.nodes.remove(&id);
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_with_a_token_once_and_every_other_use_is_refused() {
    let mut site = Site::start(1, Options::default());
    // Node 1 holds the site's CA: it signs joiners' certificates.
    site.stop(1);
    let ca_dir = site.ca_dir.display().to_string();
    site.nodes.get_mut(&1).unwrap().extra_args = vec!["--ca-dir".into(), ca_dir];
    site.spawn(1);
    site.wait_leader(WAIT).await;
    site.cli(1, &["agent", "register", "before", "--owner", "me"]);

    // Minting a token, or changing membership, needs an admin certificate of the site's CA:
    // none, or a node's certificate of that CA, is refused.
    let server = site.node(1).public.to_string();
    let ca = site.ca_dir.join("ca.pem");
    let node_tls = site.node(1).data_dir.with_extension("tls");
    for (args, client_cert, expected) in [
        (&["site", "join-token"][..], None, "UNAUTHENTICATED"),
        (&["site", "remove-node", "--node-id", "1"][..], None, "UNAUTHENTICATED"),
        (&["site", "join-token"][..], Some(&node_tls), "must name exactly one admin"),
    ] {
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(args).args(["--server", &server, "--ca"]).arg(&ca);
        if let Some(dir) = client_cert {
            cmd.arg("--client-cert").arg(dir.join("node.pem")).arg("--client-key").arg(dir.join("node.key"));
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(expected) && stderr(&out).contains("admin certificate"),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(site.status(1).await.unwrap().members.len(), 1, "a refused remove-node changed membership");

    let token = mint(&site, "1h");
    assert!(token.starts_with("idmesh-join.eu-west."), "{token}");
    // A token of another site, a wrong secret, a malformed token: refused, nothing spent.
    let elsewhere = token.replacen(".eu-west.", ".us-east.", 1);
    let log = refused_join(&mut site, 2, &elsewhere);
    assert!(log.contains("PERMISSION_DENIED") && log.contains("minted by site \"us-east\""), "{log}");
    let mut wrong_secret = token.clone();
    let last = wrong_secret.pop().unwrap();
    wrong_secret.push(if last == 'A' { 'B' } else { 'A' });
    let log = refused_join(&mut site, 2, &wrong_secret);
    assert!(log.contains("NOT_FOUND") && log.contains("join token"), "{log}");
    let log = refused_join(&mut site, 2, "idmesh-join.eu-west.nope");
    assert!(log.contains("INVALID_ARGUMENT") && log.contains("token"), "{log}");
    // Straight to the API: a member's node id is never given again, and a request that is not
    // a CSR is refused; neither spends the token.
    let mut api = idmesh_proto::v1::site_client::SiteClient::new(channel(site.node(1).public).await);
    let (csr, _key) = idmesh_tls::new_signing_request().unwrap();
    let join = |node_id: u64, csr_pem: &str| idmesh_proto::v1::JoinRequest {
        token: token.clone(),
        node_id,
        csr_pem: csr_pem.to_owned(),
        names: vec!["127.0.0.1".into()],
    };
    let e = api.join(join(1, &csr)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("never reused"), "{e}");
    let e = api
        .join(join(2, "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    assert!(e.message().contains("csr_pem"), "{e}");
    let mut too_many = join(2, &csr);
    too_many.names = (0..33).map(|i| format!("n{i}.example")).collect();
    let e = api.join(too_many).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");

    // The token still works: node 2 joins, gets its certificate, and is added.
    let peer2 = site.add_joining_process(2, &token, 1, &[]).peer.to_string();
    let tls2 = site.node(2).data_dir.with_extension("tls");
    let deadline = Instant::now() + WAIT;
    while site.status(2).await.is_none() {
        assert!(Instant::now() < deadline, "node 2 never served:\n{}", site.log_tail(2, 20));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cert = std::fs::read_to_string(tls2.join("node.pem")).unwrap();
    let chain = idmesh_tls::inspect_pem_certs("node.pem", &cert).unwrap();
    let info = idmesh_tls::inspect(&chain[0]).unwrap();
    assert_eq!(info.names[0].to_string(), format!("spiffe://{TRUST_DOMAIN}/sites/{SITE}/nodes/2"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(tls2.join("node.key")).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let out = site.cli(1, &["site", "add-node", "--node-id", "2", "--peer-addr", &peer2]);
    assert!(out.status.success(), "{}", stderr(&out));
    site.wait_status(2, WAIT, "the agent", |s| s.agent_count == 1).await;

    // Used once: a replay is refused and names who used it.
    let log = refused_join(&mut site, 3, &token);
    assert!(log.contains("already used by node 2"), "{log}");
    // Expired.
    let short = mint(&site, "1s");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let log = refused_join(&mut site, 3, &short);
    assert!(log.contains("expired"), "{log}");
    // Bad ttl: named, nothing minted.
    let out = site.cli(1, &["site", "join-token", "--ttl", "8d"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("ttl_secs"), "{}", stderr(&out));
    // The audit trail has the mint and the join.
    let out = site.cli(1, &["audit", "query", "--output", "json"]);
    let text = stdout(&out);
    assert!(text.contains("redeem join token") && text.contains("for node 2"), "{text}");
    // A node that does not hold the CA cannot sign: joining through node 2 is refused.
    let fresh = mint(&site, "1h");
    site.add_joining_process(3, &fresh, 2, &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while site.nodes.get_mut(&3).unwrap().child.as_mut().unwrap().try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "joining through a node without the CA was not refused");
        std::thread::sleep(Duration::from_millis(100));
    }
    site.nodes.get_mut(&3).unwrap().child = None;
    let log = std::fs::read_to_string(&site.node(3).log_path).unwrap();
    assert!(log.contains("--ca-dir"), "{log}");
}
