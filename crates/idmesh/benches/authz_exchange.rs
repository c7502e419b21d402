//! Token exchange (RFC 8693) and Authorize over gRPC on one node, next to the limits measured in
//! the same run: the raw Ed25519 sign and verify rates on one core.
//!
//! Run: `cargo bench -p idmesh --bench authz_exchange` (does nothing without `--bench`).
//! `IDMESH_BENCH_SECS` sets the measured seconds per run (default 5).
//!
//! An exchange verifies the user's token and the agent's assertion (two Ed25519 verifications),
//! evaluates `exchange_token`, signs one token and appends one durable audit record. An
//! Authorize verifies one token, evaluates the application action against the policies, and
//! appends one durable audit record. Requests are signed before each run, so their cost is not
//! charged to the node; the clients still share the machine's cores with it.
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::unwrap_used, clippy::expect_used, dead_code)]

#[path = "support/mod.rs"]
mod support;

use ed25519_dalek::{Signer as _, SigningKey};
use idmesh_proto::v1::agent_registry_client::AgentRegistryClient;
use idmesh_proto::v1::authz_client::AuthzClient;
use idmesh_proto::v1::delegations_client::DelegationsClient;
use idmesh_proto::v1::issuers_client::IssuersClient;
use idmesh_proto::v1::policies_client::PoliciesClient;
use idmesh_proto::v1::signing_keys_client::SigningKeysClient;
use idmesh_proto::v1::tokens_client::TokensClient;
use idmesh_proto::v1::{
    AuthorizeRequest, DeclareActionsRequest, ExchangeTokenRequest, GrantDelegationRequest,
    ListSigningKeysRequest, PutIssuerRequest, PutPolicyRequest, RegisterAgentRequest,
};
use idmesh_state::PublicJwk;
use idmesh_token::jws;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::load::{LoadRun, Op, load, rate};
use support::{Cluster, TRUST_DOMAIN, connect};

const CONCURRENCY: [usize; 3] = [1, 16, 64];
const POLICY_COUNTS: [usize; 3] = [10, 100, 1000];
const ISSUER: &str = "https://bench.example/sites/bench";
const IDP: &str = "https://idp.bench.example";

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn assertion(key: &SigningKey, agent: &str, jti: usize) -> String {
    let now = now_secs();
    let claims = serde_json::json!({"iss": agent, "sub": agent, "aud": format!("{ISSUER}/token"),
        "iat": now, "exp": now + 240, "jti": format!("bench-{jti}")});
    jws::sign(key, "JWT", &PublicJwk::of_signing_key(key).thumbprint(), &claims).unwrap()
}

fn user_token(idp: &SigningKey) -> String {
    let now = now_secs();
    let claims =
        serde_json::json!({"iss": IDP, "sub": "alice", "aud": TRUST_DOMAIN, "iat": now, "exp": now + 3600});
    jws::sign(idp, "JWT", "idp-1", &claims).unwrap()
}

fn print_runs(what: &str, runs: &[LoadRun]) {
    println!("{what} (client ⇄ node over {})", support::transport_name());
    println!("  clients      ops/s   p50 ms   p99 ms  node cores  ops/s/core  errors");
    for r in runs {
        println!(
            "  {:>7} {:>10.0} {:>8.2} {:>8.2} {:>11.2} {:>11.0} {:>7}{}",
            r.clients,
            r.ops_per_s,
            r.p50_ms,
            r.p99_ms,
            r.node_cores,
            r.per_core(),
            r.errors,
            r.first_error.as_deref().map(|e| format!("  first: {e}")).unwrap_or_default()
        );
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("authz_exchange: skipped (run with `cargo bench`)");
        return;
    }
    let secs: f64 = std::env::var("IDMESH_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(bench(secs));
}

async fn bench(secs: f64) {
    let key = SigningKey::from_bytes(&[3; 32]);
    let message = [7u8; 300];
    let sign_per_s = rate(2.0, |_| {
        std::hint::black_box(key.sign(&message));
    });
    let signature = key.sign(&message);
    let verifying = key.verifying_key();
    let verify_per_s = rate(2.0, |_| {
        verifying.verify_strict(&message, &signature).unwrap();
    });

    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start_idmesh(dir.path(), "authz", 1).unwrap();
    cluster.idmesh_leader(Duration::from_secs(30)).await.unwrap();
    let addr = cluster.members[0].public;
    let pid = cluster.members[0].pid().unwrap();
    let channel = connect(addr).await.unwrap();
    while SigningKeysClient::new(channel.clone())
        .list_signing_keys(ListSigningKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys
        .is_empty()
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let agent_key = SigningKey::from_bytes(&[9; 32]);
    let agent = format!("spiffe://{TRUST_DOMAIN}/agents/bench-bot");
    AgentRegistryClient::new(channel.clone())
        .register_agent(RegisterAgentRequest {
            agent: "bench-bot".into(),
            owner: "bench".into(),
            credentials: vec![PublicJwk::of_signing_key(&agent_key).to_json()],
            ..Default::default()
        })
        .await
        .unwrap();
    let idp = SigningKey::from_bytes(&[40; 32]);
    let mut idp_jwk: serde_json::Value =
        serde_json::from_str(&PublicJwk::of_signing_key(&idp).to_json()).unwrap();
    idp_jwk["kid"] = "idp-1".into();
    IssuersClient::new(channel.clone())
        .put_issuer(PutIssuerRequest {
            issuer: IDP.into(),
            audience: TRUST_DOMAIN.into(),
            jwks: serde_json::json!({ "keys": [idp_jwk] }).to_string(),
        })
        .await
        .unwrap();
    DelegationsClient::new(channel.clone())
        .grant_delegation(GrantDelegationRequest {
            user: "alice".into(),
            user_issuer: IDP.into(),
            agent_id: agent.clone(),
            scopes: vec!["payments:read".into()],
            audiences: vec!["payments".into()],
            ttl_secs: 86_400,
        })
        .await
        .unwrap();

    // Token exchange.
    let mut exchange_runs = Vec::new();
    let mut first_jti = 0;
    let subject = user_token(&idp);
    for clients in CONCURRENCY {
        let budget = (secs * 6_000.0) as usize;
        let assertions: Arc<Vec<String>> =
            Arc::new((first_jti..first_jti + budget).map(|j| assertion(&agent_key, &agent, j)).collect());
        first_jti += budget;
        let subject = subject.clone();
        let op: Op = Arc::new(move |channel, i| {
            let request = ExchangeTokenRequest {
                subject_token: subject.clone(),
                actor_token: assertions[i].clone(),
                scopes: vec!["payments:read".into()],
                audiences: vec!["payments".into()],
                ..Default::default()
            };
            Box::pin(async move {
                TokensClient::new(channel)
                    .exchange_token(request)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
        });
        exchange_runs.push(load(addr, pid, clients, secs, budget, op).await);
    }

    // Authorize, with more and more policies.
    let on_behalf = TokensClient::new(channel.clone())
        .exchange_token(ExchangeTokenRequest {
            subject_token: subject.clone(),
            actor_token: assertion(&agent_key, &agent, usize::MAX),
            scopes: vec!["payments:read".into()],
            audiences: vec!["payments".into()],
            ttl_secs: 3600,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .access_token;
    let actions: Vec<String> =
        (0..100).map(|i| format!("app:a{i}")).chain(["payments:read".into()]).collect();
    PoliciesClient::new(channel.clone())
        .declare_actions(DeclareActionsRequest { names: actions })
        .await
        .unwrap();
    let mut authz_runs = Vec::new();
    let mut written = 0;
    for count in POLICY_COUNTS {
        // Policy 0 permits the asked action; the others are spread over 100 other actions.
        while written < count {
            let text = if written == 0 {
                "permit (principal, action == Action::\"payments:read\", resource) when { context has on_behalf_of && context.scopes.contains(\"payments:read\") };".to_owned()
            } else {
                format!(
                    "permit (principal, action == Action::\"app:a{}\", resource) when {{ context.scopes.contains(\"s{written}\") }};",
                    written % 100
                )
            };
            PoliciesClient::new(channel.clone())
                .put_policy(PutPolicyRequest { id: format!("p{written}"), text, expected_revision: None })
                .await
                .unwrap();
            written += 1;
        }
        let mut runs = Vec::new();
        for clients in CONCURRENCY {
            let token = on_behalf.clone();
            let op: Op = Arc::new(move |channel, _| {
                let request = AuthorizeRequest {
                    token: token.clone(),
                    action: "payments:read".into(),
                    resource: "accounts/42".into(),
                    ..Default::default()
                };
                Box::pin(async move {
                    match AuthzClient::new(channel).authorize(request).await {
                        Ok(reply) if reply.get_ref().allowed => Ok(()),
                        Ok(reply) => Err(format!("denied: {}", reply.into_inner().reason)),
                        Err(e) => Err(e.to_string()),
                    }
                })
            });
            runs.push(load(addr, pid, clients, secs, usize::MAX, op).await);
        }
        authz_runs.push((count, runs));
    }

    println!();
    println!("==== authz_exchange report ====");
    println!(
        "limits on one core of this machine: Ed25519 sign {sign_per_s:.0}/s, verify {verify_per_s:.0}/s"
    );
    let exchange_ceiling = 1.0 / (1.0 / sign_per_s + 2.0 / verify_per_s);
    println!("one exchange = 2 verifies + 1 sign: crypto ceiling {exchange_ceiling:.0}/s per core");
    print_runs("token exchange over gRPC (audited, durable):", &exchange_runs);
    println!("one Authorize = 1 verify + Cedar: crypto ceiling {verify_per_s:.0}/s per core");
    for (count, runs) in &authz_runs {
        print_runs(&format!("Authorize over gRPC with {count} policies (audited, durable):"), runs);
    }
}
