//! Policies on real processes: validation on write (nothing stored when invalid), replication
//! to every node, enforcement at issuance with the policy version in the token, Authorize with
//! the determining policies, and the partition-aware context at a cut-off node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use idmesh_proto::v1::authz_client::AuthzClient;
use idmesh_proto::v1::tokens_client::TokensClient;
use idmesh_proto::v1::{
    AuthorizeRequest, AuthorizeResponse, IssueTokenRequest, RegisterAgentRequest, RevokeAgentRequest,
};
use serde_json::Value;
use std::process::Output;
use std::time::{Duration, Instant};
use support::*;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(30);
const STALE: &str = include_str!("../examples/policies/stale-payments.cedar");
const PAYMENTS: &str = include_str!("../examples/policies/payments.cedar");

fn json(output: &Output) -> Value {
    assert!(output.status.success(), "command failed: {}{}", stdout(output), stderr(output));
    serde_json::from_str(&stdout(output)).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(output)))
}

fn write_file(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

async fn issue(
    site: &Site,
    node: u64,
    agent: &str,
    seed: u8,
    scopes: &[&str],
) -> Result<String, tonic::Status> {
    let jti = format!("{agent}-{node}-{}-{}", scopes.join("+"), now_secs_nanos());
    let request = IssueTokenRequest {
        client_assertion: assertion(&agent_key(seed), agent, &format!("{}/token", issuer()), &jti),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        audiences: vec!["payments-api".into()],
        ..Default::default()
    };
    let mut api = TokensClient::new(channel(site.node(node).public).await);
    api.issue_token(request).await.map(|r| r.into_inner().access_token)
}

fn now_secs_nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

async fn authorize(
    site: &Site,
    node: u64,
    token: &str,
    action: &str,
    owner: &str,
) -> Result<AuthorizeResponse, tonic::Status> {
    let mut api = AuthzClient::new(channel(site.node(node).public).await);
    let request = AuthorizeRequest {
        token: token.into(),
        action: action.into(),
        resource: "accounts/42".into(),
        resource_attributes: [("owner".to_owned(), owner.to_owned())].into(),
    };
    api.authorize(request).await.map(|r| r.into_inner())
}

/// The payload of a JWT, parsed.
fn claims(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap())
        .unwrap()
}

/// Waits until every node lists the same policy version, and returns it.
async fn wait_same_version(site: &Site, nodes: &[u64], want_policies: usize) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let lists: Vec<Value> =
            nodes.iter().map(|n| json(&site.cli(*n, &["policy", "list", "--output", "json"]))).collect();
        let versions: Vec<&str> = lists.iter().map(|l| l["policy_version"].as_str().unwrap()).collect();
        if versions.iter().all(|v| *v == versions[0])
            && lists.iter().all(|l| l["policies"].as_array().unwrap().len() == want_policies)
        {
            return versions[0].to_owned();
        }
        assert!(Instant::now() < deadline, "nodes disagree on policies: {lists:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_are_validated_replicated_and_enforced_at_issuance_and_authorize() {
    let site = Site::start(3, Options::default());
    let leader = site.wait_leader(WAIT).await;
    let follower = if leader == 1 { 2 } else { 1 };
    let dir = tempfile::tempdir().unwrap();

    // An invalid policy is refused with Cedar's diagnostics, and nothing is stored.
    let undeclared = write_file(dir.path(), "stale.cedar", STALE);
    let refused = site.cli(follower, &["policy", "put", "stale-payments", "--file", &undeclared]);
    assert_eq!(refused.status.code(), Some(1), "{}", stdout(&refused));
    assert!(stderr(&refused).contains("INVALID_ARGUMENT"), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("payments:write"), "names the unknown action: {}", stderr(&refused));
    let typo = write_file(
        dir.path(),
        "typo.cedar",
        "permit (principal, action == Action::\"issue_token\", resource) when { context.sync_age };",
    );
    let validate = site.cli(follower, &["policy", "validate", "typo", "--file", &typo]);
    assert_eq!(validate.status.code(), Some(1));
    assert!(stderr(&validate).contains("sync_age"), "{}", stderr(&validate));
    let empty = json(&site.cli(leader, &["policy", "list", "--output", "json"]));
    assert!(empty["policies"].as_array().unwrap().is_empty(), "{empty}");
    let builtin_version = empty["policy_version"].as_str().unwrap().to_owned();

    // Declared actions, then valid policies, written at a follower (forwarded to the leader).
    json(
        &site.cli(
            follower,
            &["policy", "action", "add", "payments:write", "payments:read", "--output", "json"],
        ),
    );
    let no_admin = write_file(
        dir.path(),
        "no-admin.cedar",
        "forbid (principal, action == Action::\"issue_token\", resource) when { context.scopes.contains(\"admin\") };",
    );
    for (id, file) in [
        ("stale-payments", undeclared.clone()),
        ("payments", write_file(dir.path(), "payments.cedar", PAYMENTS)),
        ("no-admin", no_admin),
    ] {
        let put = json(&site.cli(follower, &["policy", "put", id, "--file", &file, "--output", "json"]));
        assert_eq!(put["revision"], 1, "{put}");
    }
    let version = wait_same_version(&site, &[1, 2, 3], 3).await;
    assert_ne!(version, builtin_version);

    // Issuance: a forbidden scope is refused naming the policy, at any node.
    let registry = |n| site.registry(n);
    registry(leader)
        .await
        .register_agent(RegisterAgentRequest {
            agent: "payer".into(),
            owner: "ops".into(),
            credentials: vec![public_jwk(&agent_key(7))],
            ..Default::default()
        })
        .await
        .unwrap();
    site.wait_status(3, WAIT, "agent applied", |s| s.agent_count == 1).await;
    let denied = issue(&site, 3, "payer", 7, &["admin"]).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.message().contains("forbidden by no-admin"), "{}", denied.message());

    // A permitted token carries the policy version it was issued under.
    let write_token = issue(&site, 3, "payer", 7, &["payments:write"]).await.unwrap();
    assert_eq!(claims(&write_token)["idmesh"]["policy_version"], version.as_str());

    // Authorize: denied without a user (payments requires on_behalf_of), with no policy named.
    let no_user = authorize(&site, follower, &write_token, "payments:write", "ops").await.unwrap();
    assert!(!no_user.allowed);
    assert!(no_user.determining_policies.is_empty());
    assert_eq!(no_user.reason, "no policy permits it");
    assert_eq!(no_user.agent_id, "spiffe://acme.example/agents/payer");
    assert!(no_user.audit_seq > 0);
    // Reading needs the read scope.
    assert!(!authorize(&site, 1, &write_token, "payments:read", "ops").await.unwrap().allowed);
    let read_token = issue(&site, 2, "payer", 7, &["payments:read"]).await.unwrap();
    let read = authorize(&site, 1, &read_token, "payments:read", "ops").await.unwrap();
    assert!(read.allowed, "{read:?}");
    assert_eq!(read.determining_policies, vec!["payments".to_owned()]);
    assert_eq!(read.policy_version, version);

    // An enforcement point can embed the verifier: the policies it fetches compile to the same
    // version and decide the same way without asking a node.
    let mut policies_api =
        idmesh_proto::v1::policies_client::PoliciesClient::new(channel(site.node(2).public).await);
    let listed =
        policies_api.list_policies(idmesh_proto::v1::ListPoliciesRequest {}).await.unwrap().into_inner();
    let stored: Vec<idmesh_policy::StoredPolicy> = listed
        .policies
        .iter()
        .map(|p| idmesh_policy::StoredPolicy { id: p.id.clone(), text: p.text.clone() })
        .collect();
    let local =
        idmesh_policy::PolicyBook::compile(&stored, &listed.actions.iter().cloned().collect()).unwrap();
    assert_eq!(local.version(), version);
    let question = idmesh_policy::DecisionRequest {
        principal: idmesh_policy::Principal::Agent {
            id: "spiffe://acme.example/agents/payer".into(),
            owner: "ops".into(),
            labels: Default::default(),
        },
        action: "payments:read".into(),
        resource: idmesh_policy::Resource::App { id: "accounts/42".into(), attributes: Default::default() },
        site: "eu-west".into(),
        node: 0,
        now_secs: now_secs(),
        sync_age_secs: 0,
        partitioned: false,
        scopes: vec!["payments:read".into()],
        audiences: vec!["payments-api".into()],
        actors: vec![],
        on_behalf_of: None,
        remote_sites: vec![],
    };
    let embedded = local.decide(&question).unwrap();
    assert!(embedded.allowed);
    assert_eq!(embedded.determining, read.determining_policies);

    // Bad input: an undeclared action; an over-long resource.
    let unknown = authorize(&site, 1, &read_token, "payments:refund", "ops").await.unwrap_err();
    assert_eq!(unknown.code(), Code::InvalidArgument);
    assert!(unknown.message().contains("payments:refund"), "{}", unknown.message());
    let mut api = AuthzClient::new(channel(site.node(1).public).await);
    let long = AuthorizeRequest {
        token: read_token.clone(),
        action: "payments:read".into(),
        resource: "r".repeat(600),
        ..Default::default()
    };
    let too_long = api.authorize(long).await.unwrap_err();
    assert_eq!(too_long.code(), Code::InvalidArgument);
    assert!(too_long.message().contains("resource"), "{}", too_long.message());

    // The CLI exits 1 on a deny and 0 on a permit.
    let cli_read = site.cli(
        2,
        &[
            "authorize",
            "--token",
            &read_token,
            "--action",
            "payments:read",
            "--resource",
            "a/1",
            "--output",
            "json",
        ],
    );
    assert!(json(&cli_read)["allowed"].as_bool().unwrap());
    let cli_write = site
        .cli(2, &["authorize", "--token", &write_token, "--action", "payments:write", "--resource", "a/1"]);
    assert_eq!(cli_write.status.code(), Some(1));

    // A revoked agent's token is denied, with the reason.
    registry(leader)
        .await
        .revoke_agent(RevokeAgentRequest { agent: "payer".into(), reason: "test".into() })
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = authorize(&site, 3, &read_token, "payments:read", "ops").await.unwrap();
        if !answer.allowed {
            assert!(answer.reason.contains("revoked"), "{}", answer.reason);
            break;
        }
        assert!(Instant::now() < deadline, "revocation never reached node 3");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Deleting a policy lifts what it forbade; the version changes everywhere.
    json(&site.cli(1, &["policy", "delete", "no-admin", "--output", "json"]));
    let after_delete = wait_same_version(&site, &[1, 2, 3], 2).await;
    assert_ne!(after_delete, version);
    let missing = site.cli(1, &["policy", "get", "no-admin"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("NOT_FOUND"), "{}", stderr(&missing));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_node_refuses_high_risk_scopes_and_keeps_issuing_low_risk_ones() {
    let mut site = Site::start(3, Options::default());
    let leader = site.wait_leader(WAIT).await;
    let dir = tempfile::tempdir().unwrap();
    json(&site.cli(leader, &["policy", "action", "add", "payments:write", "--output", "json"]));
    // Stale after 2 seconds without the leader (the example uses an hour).
    let quick = write_file(
        dir.path(),
        "quick.cedar",
        "forbid (principal, action == Action::\"issue_token\", resource) when { context.scopes.contains(\"payments:write\") && context.sync_age_secs > 2 };",
    );
    json(&site.cli(leader, &["policy", "put", "stale-quick", "--file", &quick, "--output", "json"]));
    site.registry(leader)
        .await
        .register_agent(RegisterAgentRequest {
            agent: "ship-bot".into(),
            owner: "ops".into(),
            credentials: vec![public_jwk(&agent_key(9))],
            ..Default::default()
        })
        .await
        .unwrap();
    let survivor = if leader == 3 { 2 } else { 3 };
    wait_same_version(&site, &[1, 2, 3], 1).await;
    site.wait_status(survivor, WAIT, "agent applied", |s| s.agent_count == 1).await;
    issue(&site, survivor, "ship-bot", 9, &["payments:write"]).await.expect("fresh: permitted");

    // Cut the survivor off: the two other nodes stop.
    for node in [1, 2, 3].into_iter().filter(|n| *n != survivor) {
        site.kill(node);
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let stale = issue(&site, survivor, "ship-bot", 9, &["payments:write"]).await.unwrap_err();
    assert_eq!(stale.code(), Code::PermissionDenied);
    assert!(stale.message().contains("forbidden by stale-quick"), "{}", stale.message());
    issue(&site, survivor, "ship-bot", 9, &["payments:read"]).await.expect("low risk keeps working");
}
