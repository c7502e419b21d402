//! The audit trail on a real process: a burst of issuance cut by SIGKILL leaves a record of
//! every token a client received; `idmesh audit query|trace|verify` over the result; bad
//! queries refused with the field named; every record reaches every node of a site; retention
//! waits for a member that is down.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use idmesh_proto::v1::audit_client::AuditClient;
use idmesh_proto::v1::tokens_client::TokensClient;
use idmesh_proto::v1::{AuditQueryRequest, AuditVerifyRequest, IssueTokenRequest, RegisterAgentRequest};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::*;

const WAIT: Duration = Duration::from_secs(30);
const CLIENTS: usize = 8;

/// Issues tokens as fast as one client can until `stop`, returning the `jti` of every token
/// it received.
async fn burst(site_addr: std::net::SocketAddr, client: usize, stop: Arc<AtomicBool>) -> Vec<String> {
    let mut api = TokensClient::new(channel(site_addr).await);
    let mut received = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let request = IssueTokenRequest {
            client_assertion: assertion(
                &agent_key(7),
                "bot",
                &format!("{}/token", issuer()),
                &format!("c{client}-{n}"),
            ),
            audiences: vec!["payments".into()],
            ..Default::default()
        };
        match api.issue_token(request).await {
            Ok(reply) => received.push(reply.into_inner().jti),
            // The node died: nothing more comes back from it.
            Err(_) => break,
        }
    }
    received
}

/// Registers agent `bot` with the key of seed 7.
async fn register_bot(site: &Site) {
    let register = RegisterAgentRequest {
        agent: "bot".into(),
        owner: "ops".into(),
        credentials: vec![public_jwk(&agent_key(7))],
        ..Default::default()
    };
    site.registry(1).await.register_agent(register).await.unwrap();
}

fn json_lines(out: &std::process::Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_token_received_before_a_sigkill_has_its_record_after_restart() {
    let mut site = Site::start(1, Options::default());
    site.wait_leader(WAIT).await;
    register_bot(&site).await;
    let addr = site.node(1).public;
    // Wait until tokens are issued at all (the first signing key exists).
    let deadline = Instant::now() + WAIT;
    loop {
        let request = IssueTokenRequest {
            client_assertion: assertion(&agent_key(7), "bot", &format!("{}/token", issuer()), "warm-up"),
            audiences: vec!["payments".into()],
            ..Default::default()
        };
        if TokensClient::new(channel(addr).await).issue_token(request).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "no token issued");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS).map(|c| tokio::spawn(burst(addr, c, stop.clone()))).collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    site.kill(1);
    stop.store(true, Ordering::SeqCst);
    let mut received = Vec::new();
    for client in clients {
        received.extend(client.await.unwrap());
    }
    assert!(received.len() > 20, "the burst issued only {} tokens", received.len());

    site.spawn(1);
    site.wait_leader(WAIT).await;
    let mut audit = AuditClient::new(channel(addr).await);
    for jti in &received {
        let request = AuditQueryRequest { jti: jti.clone(), ..Default::default() };
        let records = audit.query(request).await.unwrap().into_inner().records;
        assert_eq!(records.len(), 1, "token {jti}: {records:?}");
        assert_eq!(records[0].kind, "token_issued");
        assert_eq!(records[0].agents, [agent_spiffe("bot")]);
    }

    // The CLI over the same log: the chain verifies after the crash...
    let out = site.cli(1, &["audit", "verify"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(report.contains("ok") && report.contains("checkpoints="), "{report}");
    // ... a trace of the agent lists its registration and every token, oldest first ...
    let out = site.cli(1, &["audit", "trace", "--agent", "bot", "--output", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let trace = json_lines(&out);
    let issued = trace.iter().filter(|r| r["event"]["type"] == "token_issued").count();
    assert!(issued > received.len(), "{issued} records, {} tokens received", received.len());
    assert_eq!(trace[0]["event"]["type"], "admin_changed", "{}", trace[0]);
    let times: Vec<u64> = trace.iter().map(|r| r["time"].as_u64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
    let out = site.cli(1, &["audit", "trace", "--agent", "bot"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains(&format!("issue_token  allowed  agent={}", agent_spiffe("bot"))), "{text}");
    // ... and a query finds one token by its id.
    let out = site.cli(1, &["audit", "query", "--jti", &received[0], "--output", "json"]);
    let found = json_lines(&out);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["event"]["jti"], received[0].as_str());

    // Bad queries: refused, naming the field and the rule.
    let out = site.cli(1, &["audit", "query", "--from-unix-ms", "10", "--until-unix-ms", "5"]);
    assert_eq!(out.status.code(), Some(1));
    let error = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(error.contains("INVALID_ARGUMENT") && error.contains("until_unix_ms"), "{error}");
    let request = AuditQueryRequest { limit: 1001, ..Default::default() };
    let status = audit.query(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("limit"), "{}", status.message());
    let request = AuditQueryRequest { cursor: "zz".into(), ..Default::default() };
    let status = audit.query(request).await.unwrap_err();
    assert!(status.message().contains("cursor"), "{}", status.message());
    let request = AuditQueryRequest { agent: "a".repeat(600), ..Default::default() };
    let status = audit.query(request).await.unwrap_err();
    assert!(status.message().contains("agent") && status.message().contains("512"), "{}", status.message());
    let out = site.cli(1, &["audit", "query", "--decision", "maybe"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_reaches_every_node_of_the_site() {
    let site = Site::start(3, Options::default());
    site.wait_leader(WAIT).await;
    register_bot(&site).await;
    // One token issued at each node, each recorded in that node's own chain.
    let mut jtis = Vec::new();
    for node in 1..=3u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            let request = IssueTokenRequest {
                client_assertion: assertion(
                    &agent_key(7),
                    "bot",
                    &format!("{}/token", issuer()),
                    &format!("at-{node}-{}", jtis.len()),
                ),
                audiences: vec!["payments".into()],
                ..Default::default()
            };
            match TokensClient::new(channel(site.node(node).public).await).issue_token(request).await {
                Ok(reply) => {
                    jtis.push((node, reply.into_inner().jti));
                    break;
                }
                Err(status) => assert!(Instant::now() < deadline, "node {node} issues nothing: {status:?}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let verify = |node: u64| {
        let addr = site.node(node).public;
        async move {
            let mut api = AuditClient::new(channel(addr).await);
            api.verify(AuditVerifyRequest {}).await.unwrap().into_inner()
        }
    };
    let mut tails = Vec::new();
    for node in 1..=3u64 {
        let report = verify(node).await;
        let own = report.chains.iter().find(|c| c.node == node).unwrap();
        tails.push((node, own.last_seq));
    }
    // Every node comes to hold every node's chain (at least up to those tails), and each
    // verifies.
    let deadline = Instant::now() + WAIT;
    for node in 1..=3u64 {
        loop {
            let report = verify(node).await;
            assert!(report.ok, "node {node}: {report:?}");
            let holds = |of: u64, tail: u64| report.chains.iter().any(|c| c.node == of && c.last_seq >= tail);
            if tails.iter().all(|(of, tail)| holds(*of, *tail)) {
                break;
            }
            assert!(Instant::now() < deadline, "node {node} holds {:?}, wants {tails:?}", report.chains);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut audit = AuditClient::new(channel(site.node(node).public).await);
        for (issued_at, jti) in &jtis {
            let request = AuditQueryRequest { jti: jti.clone(), ..Default::default() };
            let records = audit.query(request).await.unwrap().into_inner().records;
            assert_eq!(records.len(), 1, "node {node}, token {jti}: {records:?}");
            assert_eq!(records[0].node, *issued_at, "recorded by the node that issued it");
        }
    }
}

async fn verify_at(site: &Site, node: u64) -> idmesh_proto::v1::AuditVerifyResponse {
    let mut api = AuditClient::new(channel(site.node(node).public).await);
    api.verify(AuditVerifyRequest {}).await.unwrap().into_inner()
}

fn chain_of(reply: &idmesh_proto::v1::AuditVerifyResponse, node: u64) -> idmesh_proto::v1::AuditChainReport {
    reply.chains.iter().find(|c| c.node == node).cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_waits_for_a_member_that_is_down_then_cuts_at_a_checkpoint() {
    let options =
        Options { extra_args: vec!["--audit-retention-secs".into(), "1".into()], ..Options::default() };
    let mut site = Site::start(3, options);
    site.wait_leader(WAIT).await;
    register_bot(&site).await;
    site.kill(3);
    // Node 1 writes past a checkpoint (one every 1,000 records) while node 3 is down.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4).map(|c| tokio::spawn(burst(site.node(1).public, c, stop.clone()))).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while chain_of(&verify_at(&site, 1).await, 1).last_checkpoint_seq < 1000 {
        assert!(Instant::now() < deadline, "no checkpoint after 1,000 records");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    let tail = chain_of(&verify_at(&site, 1).await, 1).last_seq;
    // Node 2 takes it all (and says so at its next pull); then node 1 runs retention passes
    // (every 10 s) with records old enough: node 3's silence keeps them all.
    let deadline = Instant::now() + WAIT;
    while chain_of(&verify_at(&site, 2).await, 1).last_seq < tail {
        assert!(Instant::now() < deadline, "node 2 does not catch up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(13)).await;
    let kept = chain_of(&verify_at(&site, 1).await, 1);
    assert!(kept.ok, "{kept:?}");
    assert_eq!(kept.first_seq, 1, "removed while node 3 had not acknowledged: {kept:?}");
    let status = site.cli(1, &["mesh", "status", "--output", "json"]);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    let chain = status["audit_chains"].as_array().unwrap().iter().find(|c| c["node"] == 1).unwrap().clone();
    assert!(chain["acknowledged_seq"].as_u64().unwrap() < 1000, "{chain}");
    assert_eq!(status["audit_retention_secs"], 1);

    // Node 3 comes back, catches up and acknowledges: node 1 cuts just before a checkpoint,
    // every node still verifies, and node 3 holds the whole chain of node 1.
    site.spawn(3);
    let deadline = Instant::now() + Duration::from_secs(60);
    let cut = loop {
        let chain = chain_of(&verify_at(&site, 1).await, 1);
        assert!(chain.ok, "{chain:?}");
        if chain.first_seq > 1 {
            break chain;
        }
        assert!(Instant::now() < deadline, "nothing removed once node 3 acknowledged: {chain:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(cut.first_seq > 1000 && cut.first_seq <= cut.last_checkpoint_seq + 1, "{cut:?}");
    let at_3 = chain_of(&verify_at(&site, 3).await, 1);
    assert!(at_3.ok && at_3.last_seq >= tail, "{at_3:?}");
    for node in 1..=3 {
        let report = verify_at(&site, node).await;
        assert!(report.ok, "node {node}: {report:?}");
    }
    let out = site.cli(1, &["audit", "query", "--action", "retention_applied", "--output", "json"]);
    let cuts = json_lines(&out);
    assert!(cuts.iter().any(|r| r["event"]["first_kept_seq"] == cut.first_seq), "{cuts:?}");
}

fn agent_spiffe(name: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/agents/{name}")
}
