//! Tokens on real processes: issuance on a cut-off follower, revocation seen by every node,
//! key rotation with tokens in flight, refusals over gRPC, replay memory across a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use idmesh_proto::v1::signing_keys_client::SigningKeysClient;
use idmesh_proto::v1::tokens_client::TokensClient;
use idmesh_proto::v1::{
    Consistency, GetAgentRequest, GetJwksRequest, IssueTokenRequest, IssueTokenResponse,
    RegisterAgentRequest, RevokeAgentRequest, RotateSigningKeyRequest, SuspendAgentRequest,
};
use idmesh_token::access::{self, VerifyRules};
use idmesh_token::{Jwks, TokenError};
use idmesh_types::UnixMillis;
use std::time::{Duration, Instant};
use support::*;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(30);

async fn register_with_key(site: &Site, node: u64, name: &str, seed: u8) {
    let request = RegisterAgentRequest {
        agent: name.into(),
        owner: "ops".into(),
        credentials: vec![public_jwk(&agent_key(seed))],
        ..Default::default()
    };
    site.registry(node).await.register_agent(request).await.unwrap();
}

async fn issue(
    site: &Site,
    node: u64,
    name: &str,
    seed: u8,
    jti: &str,
) -> Result<IssueTokenResponse, tonic::Status> {
    let request = IssueTokenRequest {
        client_assertion: assertion(&agent_key(seed), name, &format!("{}/token", issuer()), jti),
        scopes: vec!["read".into()],
        audiences: vec!["payments".into()],
        ..Default::default()
    };
    let mut api = TokensClient::new(channel(site.node(node).public).await);
    api.issue_token(request).await.map(|r| r.into_inner())
}

async fn jwks(site: &Site, node: u64) -> Jwks {
    let mut api = TokensClient::new(channel(site.node(node).public).await);
    Jwks::parse(&api.get_jwks(GetJwksRequest::default()).await.unwrap().into_inner().jwks).unwrap()
}

fn verify(token: &str, jwks: &Jwks) -> Result<idmesh_token::AccessClaims, TokenError> {
    let rules = VerifyRules { issuers: vec![issuer()], audience: Some("payments".into()), leeway_secs: 5 };
    let now = UnixMillis(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64,
    );
    access::verify(token, jwks, &rules, now)
}

/// Waits until node `node` has applied `name` with `status`.
async fn wait_agent_status(site: &Site, node: u64, name: &str, status: i32) {
    let deadline = Instant::now() + WAIT;
    loop {
        let request = GetAgentRequest { agent: name.into(), consistency: Consistency::Local as i32 };
        if let Ok(reply) = site.registry(node).await.get_agent(request).await
            && reply.into_inner().agent.unwrap().status == status
        {
            return;
        }
        assert!(Instant::now() < deadline, "node {node} did not apply {name} with status {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_follower_issues_and_a_revocation_reaches_every_node() {
    let mut site = Site::start(3, Options::default());
    let leader = site.wait_leader(WAIT).await;
    register_with_key(&site, leader, "bot", 1).await;
    for node in 1..=3 {
        wait_agent_status(&site, node, "bot", 1).await;
    }
    let jwks = jwks(&site, leader).await;

    // Every node issues from its own state; each token names the node that issued it.
    for node in 1..=3 {
        let token = issue(&site, node, "bot", 1, &format!("j-{node}")).await.unwrap();
        let claims = verify(&token.access_token, &jwks).unwrap();
        assert_eq!(claims.sub, format!("spiffe://{TRUST_DOMAIN}/agents/bot"));
        assert_eq!(claims.idmesh.node, node);
        assert_eq!(claims.scope, "read");
        assert!(token.audit_seq > 0);
    }

    // A follower alone: the leader and the other follower are gone. It cannot write…
    let follower = (1..=3).find(|&n| n != leader).unwrap();
    for node in (1..=3).filter(|&n| n != follower) {
        site.kill(node);
    }
    let mut registry = site.registry(follower).await;
    let write = registry
        .register_agent(RegisterAgentRequest {
            agent: "while-cut-off".into(),
            owner: "ops".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(write.unwrap_err().code(), Code::Unavailable);
    // …but it still issues valid tokens.
    for i in 0..3 {
        let token = issue(&site, follower, "bot", 1, &format!("cut-off-{i}")).await.unwrap();
        assert_eq!(verify(&token.access_token, &jwks).unwrap().idmesh.node, follower);
    }

    // The site heals; a revocation made through the leader is enforced by every node as soon as
    // it has applied it.
    for node in (1..=3).filter(|&n| n != follower) {
        site.spawn(node);
    }
    let leader = site.wait_leader(WAIT).await;
    site.registry(leader)
        .await
        .revoke_agent(RevokeAgentRequest { agent: "bot".into(), reason: "leaked".into() })
        .await
        .unwrap();
    for node in 1..=3 {
        wait_agent_status(&site, node, "bot", 3).await;
        let err = issue(&site, node, "bot", 1, &format!("after-revoke-{node}")).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "node {node}: {err:?}");
        assert!(err.message().contains("revoked"), "{}", err.message());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_with_tokens_in_flight() {
    // Short lifetimes so that retirement happens within the test: tokens live 4 s, leeway 1 s.
    let options = Options {
        extra_args: [
            "--token-default-ttl-secs",
            "4",
            "--token-max-ttl-secs",
            "4",
            "--clock-leeway-secs",
            "1",
        ]
        .map(String::from)
        .to_vec(),
        ..Options::default()
    };
    let site = Site::start(3, options);
    let leader = site.wait_leader(WAIT).await;
    register_with_key(&site, leader, "bot", 1).await;
    for node in 1..=3 {
        wait_agent_status(&site, node, "bot", 1).await;
    }
    let old = issue(&site, leader, "bot", 1, "before").await.unwrap();

    let mut keys = SigningKeysClient::new(channel(site.node(leader).public).await);
    let rotated =
        keys.rotate_signing_key(RotateSigningKeyRequest { activate_after_secs: Some(3) }).await.unwrap();
    let next = rotated.into_inner().keys.into_iter().find(|k| k.kid != old.kid).unwrap();
    let activates_at = next.activates_at_unix_ms;

    // Published before use: every node's JWKS holds both keys while the old one still signs.
    let deadline = Instant::now() + WAIT;
    for node in 1..=3 {
        while jwks(&site, node).await.key(&next.kid).is_none() {
            assert!(Instant::now() < deadline, "node {node} never published the next key");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let token = issue(&site, node, "bot", 1, &format!("pending-{node}")).await.unwrap();
        assert_eq!(token.kid, old.kid, "node {node} signed with the next key before it activated");
    }
    let both = jwks(&site, leader).await;
    verify(&old.access_token, &both).unwrap();

    // After activation every node signs with the new key; the old token still verifies.
    let wait_ms = activates_at.saturating_sub(now_secs() * 1000) + 300;
    tokio::time::sleep(Duration::from_millis(wait_ms)).await;
    for node in 1..=3 {
        let token = issue(&site, node, "bot", 1, &format!("active-{node}")).await.unwrap();
        assert_eq!(token.kid, next.kid, "node {node}");
        verify(&token.access_token, &jwks(&site, node).await).unwrap();
    }
    assert!(jwks(&site, leader).await.key(&old.kid).is_some(), "old key retired while its tokens live");

    // Once every token the old key could sign has expired (activation + 4 s + 1 s leeway), it
    // leaves the JWKS.
    let retire_ms = (activates_at + 5_000).saturating_sub(now_secs() * 1000) + 1_200;
    tokio::time::sleep(Duration::from_millis(retire_ms)).await;
    let after = jwks(&site, leader).await;
    assert!(after.key(&old.kid).is_none(), "old key still published after retirement");
    assert!(after.key(&next.kid).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_over_grpc_and_replay_across_a_restart() {
    let mut site = Site::start(1, Options::default());
    site.wait_leader(WAIT).await;
    register_with_key(&site, 1, "bot", 1).await;
    register_with_key(&site, 1, "paused", 2).await;
    site.registry(1)
        .await
        .suspend_agent(SuspendAgentRequest { agent: "paused".into(), reason: "audit".into() })
        .await
        .unwrap();
    let mut api = TokensClient::new(channel(site.node(1).public).await);
    let token_endpoint = format!("{}/token", issuer());
    let request = |assertion: String| IssueTokenRequest {
        client_assertion: assertion,
        audiences: vec!["payments".into()],
        ..Default::default()
    };

    let first = assertion(&agent_key(1), "bot", &token_endpoint, "once");
    api.issue_token(request(first.clone())).await.unwrap();
    let cases: Vec<(IssueTokenRequest, Code, &str)> = vec![
        (request(first.clone()), Code::Unauthenticated, "already used"),
        (
            request(assertion(&agent_key(1), "bot", "https://elsewhere/token", "a1")),
            Code::Unauthenticated,
            "audience",
        ),
        (
            request(assertion(&agent_key(9), "bot", &token_endpoint, "a2")),
            Code::Unauthenticated,
            "unknown key",
        ),
        (
            request(assertion(&agent_key(9), "ghost", &token_endpoint, "a3")),
            Code::Unauthenticated,
            "unknown agent",
        ),
        (
            request(assertion(&agent_key(2), "paused", &token_endpoint, "a4")),
            Code::PermissionDenied,
            "suspended",
        ),
        (request("not.a.jwt".into()), Code::Unauthenticated, "malformed"),
        (
            IssueTokenRequest {
                scopes: (0..33).map(|i| format!("s{i}")).collect(),
                ..request(assertion(&agent_key(1), "bot", &token_endpoint, "a5"))
            },
            Code::InvalidArgument,
            "scopes",
        ),
        (
            IssueTokenRequest {
                ttl_secs: 3601,
                ..request(assertion(&agent_key(1), "bot", &token_endpoint, "a6"))
            },
            Code::InvalidArgument,
            "ttl_secs",
        ),
        (
            IssueTokenRequest {
                audiences: vec![],
                ..request(assertion(&agent_key(1), "bot", &token_endpoint, "a7"))
            },
            Code::InvalidArgument,
            "audiences",
        ),
        (
            IssueTokenRequest {
                client_assertion_type: "password".into(),
                ..request(assertion(&agent_key(1), "bot", &token_endpoint, "a8"))
            },
            Code::InvalidArgument,
            "client_assertion_type",
        ),
    ];
    for (req, code, text) in cases {
        let err = api.issue_token(req).await.unwrap_err();
        assert_eq!(err.code(), code, "{text}: {err:?}");
        assert!(err.message().contains(text), "message {:?} lacks {text:?}", err.message());
    }

    // After a restart the memory of spent assertions is rebuilt from the audit log.
    site.kill(1);
    site.spawn(1);
    site.wait_leader(WAIT).await;
    let mut api = TokensClient::new(channel(site.node(1).public).await);
    let err = api.issue_token(request(first)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("already used"), "{}", err.message());
    api.issue_token(request(assertion(&agent_key(1), "bot", &token_endpoint, "fresh"))).await.unwrap();
}
