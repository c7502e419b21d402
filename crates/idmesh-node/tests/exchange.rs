//! Delegations and token exchange (RFC 8693) on an in-process node: the happy path (a user's
//! token becomes a token on the user's behalf; a sub-agent's token nests `act`), and every bad
//! input the issue names, each refused with its reason, audited, and changing nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ed25519_dalek::SigningKey;
use idmesh_audit::Event;
use idmesh_node::authz::AuthorizeQuery;
use idmesh_node::exchange::ExchangeRequest;
use idmesh_node::tokens::IssuedToken;
use idmesh_node::{Node, NodeConfig, NodeError, RunningNode};
use idmesh_state::{IssuerKey, NewDelegation, Op, PublicJwk, RegisterAgent, TrustedIssuer, UserRef};
use idmesh_store::MemStore;
use idmesh_types::{SiteName, TrustDomain, UnixMillis};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const IDP: &str = "https://idp.example";
const IDP_KID: &str = "idp-2026";
const AUDIENCE: &str = "acme.example";

fn agent_id(name: &str) -> String {
    format!("spiffe://acme.example/agents/{name}")
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// An agent's client assertion (the actor token).
fn assertion(name: &str, seed: u8) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let now = now_secs();
    let id = agent_id(name);
    let claims = json!({"iss": id, "sub": id, "aud": "https://acme.example/sites/eu", "iat": now, "exp": now + 60, "jti": format!("{name}-{n}")});
    let key = key(seed);
    idmesh_token::jws::sign(&key, "JWT", &PublicJwk::of_signing_key(&key).thumbprint(), &claims).unwrap()
}

/// A user's token from the identity provider (or from a forger, with another key).
fn user_token(signer: u8, claims: serde_json::Value) -> String {
    idmesh_token::jws::sign(&key(signer), "JWT", IDP_KID, &claims).unwrap()
}

fn alice(extra: serde_json::Value) -> serde_json::Value {
    let now = now_secs();
    let mut claims = json!({"iss": IDP, "sub": "alice", "aud": AUDIENCE, "iat": now, "exp": now + 300});
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    claims
}

fn exchange(subject: String, actor: &str, seed: u8, scopes: &[&str], audiences: &[&str]) -> ExchangeRequest {
    ExchangeRequest {
        subject_token: subject,
        actor_token: assertion(actor, seed),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        audiences: audiences.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }
}

async fn start() -> RunningNode {
    let trust_domain = TrustDomain::parse_field("td", "acme.example").unwrap();
    let site = SiteName::parse_field("site", "eu").unwrap();
    let peer = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut config =
        NodeConfig::single_node(trust_domain, site, "mem".into(), "127.0.0.1:0".parse().unwrap(), peer);
    config.tokens.max_actor_chain_depth = 2;
    let running = Node::start_on(config, Arc::new(MemStore::new())).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while running.node.signing_keys().is_empty() {
        assert!(Instant::now() < deadline, "no signing key");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running
}

async fn register(node: &Node, name: &str, seed: u8) {
    node.write(Op::RegisterAgent(RegisterAgent {
        id: agent_id(name).parse().unwrap(),
        owner: "ops".into(),
        labels: BTreeMap::new(),
        credentials: vec![PublicJwk::of_signing_key(&key(seed))],
    }))
    .await
    .unwrap();
}

async fn grant(node: &Node, agent: &str, scopes: &[&str], ttl_ms: u64) -> idmesh_state::Delegation {
    let (delegation, _) = node
        .grant_delegation(NewDelegation {
            id: String::new(),
            user: UserRef { issuer: IDP.into(), subject: "alice".into() },
            agent: agent_id(agent).parse().unwrap(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            audiences: vec!["payments".into()],
            expires_at: UnixMillis(node.now().0 + ttl_ms),
        })
        .await
        .unwrap();
    delegation
}

fn claims(token: &IssuedToken) -> serde_json::Value {
    serde_json::to_value(&token.claims).unwrap()
}

/// Asserts `result` is refused with `code`-like error whose message holds `says`, and that the
/// refusal is the last audit record.
fn refused(node: &Node, result: Result<IssuedToken, NodeError>, code: tonic::Code, says: &str) {
    let error = result.expect_err(says);
    assert_eq!(error.code(), code, "{error}");
    assert!(error.to_string().contains(says), "expected {says:?} in: {error}");
    let records = node.audit().read_from(1, 100_000).unwrap();
    match &records.last().unwrap().event {
        Event::ExchangeRefused(r) => assert_eq!(r.reason, error.to_string()),
        other => panic!("last record is not the refusal: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_delegates_an_agent_exchanges_and_a_sub_agent_nests() {
    let running = start().await;
    let node = running.node.clone();
    for (name, seed) in [("assistant", 11), ("helper", 12), ("intern", 13), ("mallory", 14)] {
        register(&node, name, seed).await;
    }
    // Before the issuer is trusted, a grant from its users is refused.
    let untrusted = node
        .grant_delegation(NewDelegation {
            id: String::new(),
            user: UserRef { issuer: IDP.into(), subject: "alice".into() },
            agent: agent_id("assistant").parse().unwrap(),
            scopes: vec!["payments:read".into()],
            audiences: vec!["payments".into()],
            expires_at: UnixMillis(node.now().0 + 60_000),
        })
        .await
        .unwrap_err();
    assert_eq!(untrusted.code(), tonic::Code::FailedPrecondition, "{untrusted}");
    let idp_key = PublicJwk::of_signing_key(&key(40));
    node.write_issuer(Op::PutIssuer(TrustedIssuer {
        issuer: IDP.into(),
        audience: AUDIENCE.into(),
        keys: vec![IssuerKey { kid: IDP_KID.into(), jwk: idp_key }],
        updated_at: UnixMillis(0),
    }))
    .await
    .unwrap();
    let delegation = grant(&node, "assistant", &["payments:read", "payments:refund"], 3_600_000).await;
    assert!(delegation.id.starts_with("dlg-"), "{}", delegation.id);

    // The exchange: sub = alice, client_id = act.sub = the assistant, the delegation named.
    let t1 = node
        .exchange_token(exchange(
            user_token(40, alice(json!({}))),
            "assistant",
            11,
            &["payments:read"],
            &["payments"],
        ))
        .await
        .unwrap();
    let c1 = claims(&t1);
    assert_eq!(c1["sub"], "alice");
    assert_eq!(c1["client_id"], agent_id("assistant"));
    assert_eq!(c1["act"], json!({"sub": agent_id("assistant")}));
    assert_eq!(c1["idmesh"]["delegation"], delegation.id.as_str());
    assert_eq!(c1["idmesh"]["user_issuer"], IDP);
    assert!(t1.claims.exp <= delegation.expires_at.as_secs());
    let records = node.audit().read_from(1, 100_000).unwrap();
    match &records.last().unwrap().event {
        Event::TokenExchanged(e) => {
            assert_eq!(e.user, "alice");
            assert_eq!(e.actors, vec![agent_id("assistant")]);
            assert_eq!(e.delegation, delegation.id);
            assert_eq!(e.jti, t1.claims.jti);
            assert!(e.determining_policies.contains(&idmesh_policy::DEFAULT_EXCHANGE_POLICY_ID.to_owned()));
        }
        other => panic!("{other:?}"),
    }

    // Passing it on needs a permit of `delegate`: none is built in.
    let no_permit = node
        .exchange_token(exchange(t1.access_token.clone(), "helper", 12, &["payments:read"], &["payments"]))
        .await;
    refused(&node, no_permit, tonic::Code::PermissionDenied, "policy refuses delegate");
    node.put_policy(
        "sub-agents".into(),
        "permit (principal, action == Action::\"delegate\", resource) when { context has on_behalf_of };"
            .into(),
        None,
    )
    .await
    .unwrap();
    // A sub-agent: act nests, the current actor outermost.
    let t2 = node
        .exchange_token(exchange(t1.access_token.clone(), "helper", 12, &["payments:read"], &["payments"]))
        .await
        .unwrap();
    let c2 = claims(&t2);
    assert_eq!(c2["sub"], "alice");
    assert_eq!(c2["client_id"], agent_id("helper"));
    assert_eq!(c2["act"], json!({"sub": agent_id("helper"), "act": {"sub": agent_id("assistant")}}));
    assert!(t2.claims.exp <= t1.claims.exp, "a sub-agent's token never outlives its parent");

    // Authorize sees the whole chain, and audits it.
    node.write_command(idmesh_state::Command {
        at: node.now(),
        op: Op::DeclareActions { names: vec!["payments:read".into()] },
    })
    .await
    .unwrap();
    node.put_policy(
        "read-for-users".into(),
        "permit (principal, action == Action::\"payments:read\", resource) when { context has on_behalf_of && context.scopes.contains(\"payments:read\") };".into(),
        None,
    )
    .await
    .unwrap();
    let query = |token: &str| AuthorizeQuery {
        token: token.to_owned(),
        action: "payments:read".into(),
        resource: "accounts/42".into(),
        resource_attributes: BTreeMap::new(),
    };
    let decided = node.authorize(query(&t2.access_token)).await.unwrap();
    assert!(decided.allowed, "{decided:?}");
    assert_eq!(decided.on_behalf_of.as_deref(), Some("alice"));
    assert_eq!(decided.actors, vec![agent_id("helper"), agent_id("assistant")]);
    let records = node.audit().read_from(decided.audit_seq, 1).unwrap();
    match &records[0].event {
        Event::Authorized(a) => assert_eq!(a.actors, decided.actors),
        other => panic!("{other:?}"),
    }

    // Bad input, each refused with its reason and audited.
    let forged = node
        .exchange_token(exchange(
            user_token(41, alice(json!({}))),
            "assistant",
            11,
            &["payments:read"],
            &["payments"],
        ))
        .await;
    refused(&node, forged, tonic::Code::Unauthenticated, "signature");
    let expired = alice(json!({"exp": now_secs() - 600, "iat": now_secs() - 900}));
    let expired = node
        .exchange_token(exchange(user_token(40, expired), "assistant", 11, &["payments:read"], &["payments"]))
        .await;
    refused(&node, expired, tonic::Code::Unauthenticated, "expired");
    let evil = alice(json!({"iss": "https://evil.example"}));
    let untrusted = node
        .exchange_token(exchange(user_token(40, evil), "assistant", 11, &["payments:read"], &["payments"]))
        .await;
    refused(&node, untrusted, tonic::Code::Unauthenticated, "subject_token refused");
    let elsewhere = alice(json!({"aud": "someone-else"}));
    let wrong_aud = node
        .exchange_token(exchange(
            user_token(40, elsewhere),
            "assistant",
            11,
            &["payments:read"],
            &["payments"],
        ))
        .await;
    refused(&node, wrong_aud, tonic::Code::Unauthenticated, "not acme.example");
    let may_act = alice(json!({"may_act": {"sub": agent_id("helper")}}));
    let not_allowed = node
        .exchange_token(exchange(user_token(40, may_act), "assistant", 11, &["payments:read"], &["payments"]))
        .await;
    refused(&node, not_allowed, tonic::Code::PermissionDenied, "may_act");
    let escalation = node
        .exchange_token(exchange(
            user_token(40, alice(json!({}))),
            "assistant",
            11,
            &["payments:write"],
            &["payments"],
        ))
        .await;
    refused(&node, escalation, tonic::Code::PermissionDenied, "does not grant scope payments:write");
    let other_audience = node
        .exchange_token(exchange(
            user_token(40, alice(json!({}))),
            "assistant",
            11,
            &["payments:read"],
            &["ledger"],
        ))
        .await;
    refused(&node, other_audience, tonic::Code::PermissionDenied, "does not grant audience ledger");
    let no_grant = node
        .exchange_token(exchange(
            user_token(40, alice(json!({}))),
            "mallory",
            14,
            &["payments:read"],
            &["payments"],
        ))
        .await;
    refused(&node, no_grant, tonic::Code::PermissionDenied, "has not delegated");
    // Along a chain scopes only narrow: the helper's parent token holds payments:read only.
    let widen = node
        .exchange_token(exchange(t1.access_token.clone(), "helper", 12, &["payments:refund"], &["payments"]))
        .await;
    refused(&node, widen, tonic::Code::PermissionDenied, "scopes only narrow");
    let too_deep = node
        .exchange_token(exchange(t2.access_token.clone(), "intern", 13, &["payments:read"], &["payments"]))
        .await;
    refused(&node, too_deep, tonic::Code::PermissionDenied, "at most 2");
    let own_token = node
        .exchange_token(exchange(t1.access_token.clone(), "assistant", 11, &["payments:read"], &["payments"]))
        .await;
    refused(&node, own_token, tonic::Code::PermissionDenied, "already in the acting chain");
    let too_many = ExchangeRequest {
        scopes: (0..33).map(|i| format!("s{i}")).collect(),
        ..exchange(user_token(40, alice(json!({}))), "assistant", 11, &[], &["payments"])
    };
    refused(&node, node.exchange_token(too_many).await, tonic::Code::InvalidArgument, "scopes");
    let huge = exchange("x".repeat(9000), "assistant", 11, &["payments:read"], &["payments"]);
    refused(&node, node.exchange_token(huge).await, tonic::Code::InvalidArgument, "subject_token");
    // A forbid names itself.
    node.put_policy(
        "no-refunds-for-users".into(),
        "forbid (principal, action == Action::\"exchange_token\", resource) when { context.scopes.contains(\"payments:refund\") };".into(),
        None,
    )
    .await
    .unwrap();
    let forbidden = node
        .exchange_token(exchange(
            user_token(40, alice(json!({}))),
            "assistant",
            11,
            &["payments:refund"],
            &["payments"],
        ))
        .await;
    refused(&node, forbidden, tonic::Code::PermissionDenied, "no-refunds-for-users");

    // A delegation that ends refuses from then on.
    let short = grant(&node, "mallory", &["payments:read"], 1_200).await;
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let ended = node
        .exchange_token(exchange(
            user_token(40, alice(json!({}))),
            "mallory",
            14,
            &["payments:read"],
            &["payments"],
        ))
        .await;
    refused(&node, ended, tonic::Code::PermissionDenied, &format!("delegation {} expired", short.id));

    // Revocation: the exchange refuses, and the tokens acting under it (the sub-agent's too) no
    // longer authorize. Revoking twice changes nothing.
    let (revoked, _) = node.revoke_delegation(delegation.id.clone(), "alice left".into()).await.unwrap();
    assert!(revoked.revoked.is_some());
    let (again, _) = node.revoke_delegation(delegation.id.clone(), "again".into()).await.unwrap();
    assert_eq!(again, revoked);
    let after_revoke = node
        .exchange_token(exchange(
            user_token(40, alice(json!({}))),
            "assistant",
            11,
            &["payments:read"],
            &["payments"],
        ))
        .await;
    refused(&node, after_revoke, tonic::Code::PermissionDenied, "was revoked");
    for token in [&t1, &t2] {
        let decided = node.authorize(query(&token.access_token)).await.unwrap();
        assert!(!decided.allowed, "{decided:?}");
        assert!(decided.reason.contains("revoked"), "{}", decided.reason);
    }
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_grants_and_issuers_are_refused_and_change_nothing() {
    let running = start().await;
    let node = running.node.clone();
    register(&node, "assistant", 11).await;
    node.write_issuer(Op::PutIssuer(TrustedIssuer {
        issuer: IDP.into(),
        audience: AUDIENCE.into(),
        keys: vec![IssuerKey { kid: IDP_KID.into(), jwk: PublicJwk::of_signing_key(&key(40)) }],
        updated_at: UnixMillis(0),
    }))
    .await
    .unwrap();
    let before = node.shared().state_hash();
    let base = NewDelegation {
        id: String::new(),
        user: UserRef { issuer: IDP.into(), subject: "alice".into() },
        agent: agent_id("assistant").parse().unwrap(),
        scopes: vec!["payments:read".into()],
        audiences: vec!["payments".into()],
        expires_at: UnixMillis(node.now().0 + 60_000),
    };
    let cases: Vec<(NewDelegation, tonic::Code, &str)> = vec![
        (NewDelegation { scopes: vec![], ..base.clone() }, tonic::Code::InvalidArgument, "scopes"),
        (
            NewDelegation { scopes: vec!["a b".into()], ..base.clone() },
            tonic::Code::InvalidArgument,
            "scopes",
        ),
        (NewDelegation { audiences: vec![], ..base.clone() }, tonic::Code::InvalidArgument, "audiences"),
        (
            NewDelegation { expires_at: UnixMillis(node.now().0 + 400 * 86_400_000), ..base.clone() },
            tonic::Code::InvalidArgument,
            "expires_at",
        ),
        (
            NewDelegation {
                user: UserRef { issuer: "https://other.example".into(), subject: "alice".into() },
                ..base.clone()
            },
            tonic::Code::FailedPrecondition,
            "not trusted",
        ),
        (
            NewDelegation { agent: agent_id("ghost").parse().unwrap(), ..base.clone() },
            tonic::Code::NotFound,
            "ghost",
        ),
        (
            NewDelegation { agent: "spiffe://other.example/agents/x".parse().unwrap(), ..base.clone() },
            tonic::Code::InvalidArgument,
            "trust domain",
        ),
    ];
    for (grant, code, says) in cases {
        let error = node.grant_delegation(grant).await.unwrap_err();
        assert_eq!(error.code(), code, "{error}");
        assert!(error.to_string().contains(says), "expected {says:?} in {error}");
    }
    let unknown = node.revoke_delegation("dlg-00000000000000000000000000000000".into(), String::new()).await;
    assert_eq!(unknown.unwrap_err().code(), tonic::Code::NotFound);
    let malformed = node.revoke_delegation("dlg-nope".into(), String::new()).await;
    assert_eq!(malformed.unwrap_err().code(), tonic::Code::InvalidArgument);
    // Issuers: an RSA key or a key without kid is refused before anything is written.
    let rsa = r#"{"keys":[{"kty":"RSA","kid":"r1","n":"abc","e":"AQAB"}]}"#;
    assert!(idmesh_node::api::parse_issuer_jwks(rsa).unwrap_err().rule.contains("Ed25519"));
    let x = PublicJwk::of_signing_key(&key(40)).x().to_owned();
    let no_kid = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x}]}).to_string();
    assert!(idmesh_node::api::parse_issuer_jwks(&no_kid).unwrap_err().rule.contains("kid"));
    let bad_url = node
        .write_issuer(Op::PutIssuer(TrustedIssuer {
            issuer: "idp.example".into(),
            audience: AUDIENCE.into(),
            keys: vec![IssuerKey { kid: IDP_KID.into(), jwk: PublicJwk::of_signing_key(&key(40)) }],
            updated_at: UnixMillis(0),
        }))
        .await
        .unwrap_err();
    assert_eq!(bad_url.code(), tonic::Code::InvalidArgument, "{bad_url}");
    assert_eq!(node.shared().state_hash(), before, "a refused write changed the state");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_id_or_a_removed_credential_no_longer_verifies() {
    let running = start().await;
    let node = running.node.clone();
    register(&node, "assistant", 11).await;
    let issue = |jti_seed: &str| idmesh_node::tokens::TokenRequest {
        client_assertion: assertion("assistant", 11),
        audiences: vec!["payments".into()],
        scopes: vec![jti_seed.to_owned()],
        ..Default::default()
    };
    let kept = node.issue_token(issue("a")).await.unwrap();
    let leaked = node.issue_token(issue("b")).await.unwrap();
    assert_eq!(kept.claims.idmesh.credential, PublicJwk::of_signing_key(&key(11)).thumbprint());
    node.verify_access_token(&leaked.access_token, None).unwrap();

    // Revoking one token id refuses that token and no other.
    let exp = UnixMillis(leaked.claims.exp * 1000);
    let (revoked, _) =
        node.revoke_token(leaked.claims.jti.clone(), exp, "leaked in a log".into()).await.unwrap();
    assert_eq!(revoked.jti, leaked.claims.jti);
    let rejected = node.verify_access_token(&leaked.access_token, None).unwrap_err();
    assert!(rejected.to_string().contains("was revoked: leaked in a log"), "{rejected}");
    node.verify_access_token(&kept.access_token, None).unwrap();
    // Twice is the same revocation; an expired or malformed one is refused.
    let (again, _) = node.revoke_token(leaked.claims.jti.clone(), exp, "again".into()).await.unwrap();
    assert_eq!(again, revoked);
    let expired =
        node.revoke_token("old".into(), UnixMillis(node.now().0 - 1), String::new()).await.unwrap_err();
    assert_eq!(expired.code(), tonic::Code::InvalidArgument, "{expired}");
    let bad = node.revoke_token("a/b".into(), exp, String::new()).await.unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad}");

    // Removing the credential the agent authenticated with refuses the tokens obtained with it.
    node.write(Op::UpdateAgent(idmesh_state::UpdateAgent {
        id: agent_id("assistant").parse().unwrap(),
        owner: None,
        labels: None,
        add_credentials: vec![PublicJwk::of_signing_key(&key(15))],
        remove_credentials: vec![PublicJwk::of_signing_key(&key(11)).thumbprint()],
        expected_revision: None,
    }))
    .await
    .unwrap();
    let rejected = node.verify_access_token(&kept.access_token, None).unwrap_err();
    assert!(rejected.to_string().contains("was removed"), "{rejected}");
    running.shutdown().await;
}
