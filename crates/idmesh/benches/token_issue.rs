//! Token issuance throughput and latency on one node over gRPC (audit included: every token's
//! record is durable before the answer), next to the limits measured in the same run on the
//! same machine: the raw Ed25519 sign and verify rates on one core. Then the embedded
//! verifier's rate next to raw verification.
//!
//! Run: `cargo bench -p idmesh --bench token_issue` (does nothing without `--bench`).
//! `IDMESH_BENCH_SECS` sets the measured seconds per run (default 5).
//!
//! Every issuance verifies one client assertion (an Ed25519 verification) and signs one token
//! (an Ed25519 signature), so the crypto ceiling per core is 1 / (sign time + verify time); the
//! report prints it. Assertions are signed by the clients before each run so that their cost is
//! not charged to the node; the clients still share the machine's cores with the node.
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::unwrap_used, clippy::expect_used, dead_code)]

#[path = "support/mod.rs"]
mod support;

use ed25519_dalek::{Signer as _, SigningKey};
use idmesh_proto::v1::agent_registry_client::AgentRegistryClient;
use idmesh_proto::v1::signing_keys_client::SigningKeysClient;
use idmesh_proto::v1::tokens_client::TokensClient;
use idmesh_proto::v1::{GetJwksRequest, IssueTokenRequest, ListSigningKeysRequest, RegisterAgentRequest};
use idmesh_state::PublicJwk;
use idmesh_token::access::{self, VerifyRules};
use idmesh_token::{Jwks, jws};
use idmesh_types::UnixMillis;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::load::{Op, load, rate};
use support::{Cluster, TRUST_DOMAIN, connect};

const CONCURRENCY: [usize; 3] = [1, 16, 64];
const ISSUER: &str = "https://bench.example/sites/bench";

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn assertion(key: &SigningKey, agent: &str, jti: usize) -> String {
    let now = now_secs();
    let claims = serde_json::json!({"iss": agent, "sub": agent, "aud": format!("{ISSUER}/token"),
        "iat": now, "exp": now + 240, "jti": format!("bench-{jti}")});
    jws::sign(key, "JWT", &PublicJwk::of_signing_key(key).thumbprint(), &claims).unwrap()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("token_issue: skipped (run with `cargo bench`)");
        return;
    }
    let secs: f64 = std::env::var("IDMESH_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(bench(secs));
}

async fn bench(secs: f64) {
    // Limits, measured first, on one core of this machine.
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
    let ceiling = 1.0 / (1.0 / sign_per_s + 1.0 / verify_per_s);

    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start_idmesh(dir.path(), "tokens", 1).unwrap();
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

    let mut runs = Vec::new();
    let mut first_jti = 0;
    for clients in CONCURRENCY {
        let budget = (secs * 12_000.0) as usize;
        let assertions: Arc<Vec<String>> =
            Arc::new((first_jti..first_jti + budget).map(|j| assertion(&agent_key, &agent, j)).collect());
        first_jti += budget;
        let op: Op = Arc::new(move |channel, i| {
            let request = IssueTokenRequest {
                client_assertion: assertions[i].clone(),
                scopes: vec!["read".into()],
                audiences: vec!["payments".into()],
                ..Default::default()
            };
            Box::pin(async move {
                TokensClient::new(channel).issue_token(request).await.map(|_| ()).map_err(|e| e.to_string())
            })
        });
        let r = load(addr, pid, clients, secs, budget, op).await;
        println!(
            "{:>3} in flight: {:>7.0} tokens/s  p50 {:>6.2} ms  p99 {:>6.2} ms  node CPU {:.2} cores  errors {}",
            r.clients, r.ops_per_s, r.p50_ms, r.p99_ms, r.node_cores, r.errors
        );
        runs.push(r);
    }

    // The embedded verifier, in process.
    let jwks = Jwks::parse(
        &TokensClient::new(channel.clone())
            .get_jwks(GetJwksRequest::default())
            .await
            .unwrap()
            .into_inner()
            .jwks,
    )
    .unwrap();
    let token = TokensClient::new(channel)
        .issue_token(IssueTokenRequest {
            client_assertion: assertion(&agent_key, &agent, usize::MAX),
            audiences: vec!["payments".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .access_token;
    let rules =
        VerifyRules { issuers: vec![ISSUER.into()], audience: Some("payments".into()), leeway_secs: 30 };
    let now = UnixMillis(now_secs() * 1000);
    let verifier_per_s = rate(2.0, |_| {
        access::verify(&token, &jwks, &rules, now).unwrap();
    });

    println!();
    println!("==== token_issue report (client ⇄ node over {}) ====", support::transport_name());
    println!(
        "limits on one core of this machine: Ed25519 sign {sign_per_s:.0}/s, verify {verify_per_s:.0}/s;"
    );
    println!("one issuance = 1 verify + 1 sign, so the crypto ceiling is {ceiling:.0} issuances/s per core");
    println!(
        "clients  tokens/s   p50 ms   p99 ms  node cores  tokens/s/core  vs sign rate  vs crypto ceiling  errors"
    );
    for r in &runs {
        let per_core = r.per_core();
        println!(
            "{:>7} {:>9.0} {:>8.2} {:>8.2} {:>11.2} {:>14.0} {:>12.0}% {:>17.0}% {:>7}",
            r.clients,
            r.ops_per_s,
            r.p50_ms,
            r.p99_ms,
            r.node_cores,
            per_core,
            100.0 * per_core / sign_per_s,
            100.0 * per_core / ceiling,
            r.errors
        );
    }
    println!(
        "embedded verifier: {verifier_per_s:.0} tokens/s on one core ({:.0}% of raw Ed25519 verify)",
        100.0 * verifier_per_s / verify_per_s
    );
}
