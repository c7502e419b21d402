//! Every issuance and every refusal leaves exactly one audit record, durably, before the answer;
//! when the audit log cannot be written, nothing is issued (fail closed). In-process node on a
//! `MemStore` wrapped to fail audit writes on demand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ed25519_dalek::SigningKey;
use idmesh_audit::{Event, verify_chain};
use idmesh_node::tokens::TokenRequest;
use idmesh_node::{Node, NodeConfig, NodeError, RunningNode};
use idmesh_state::{Op, PublicJwk, RegisterAgent};
use idmesh_store::{KeyRange, MemStore, Order, Pair, Store, StoreError, WriteBatch};
use idmesh_types::{SiteName, TrustDomain};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A store whose writes under `audit/` fail while `broken` is set.
#[derive(Debug)]
struct BreakableAudit {
    inner: MemStore,
    broken: AtomicBool,
}

impl Store for BreakableAudit {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key)
    }
    fn scan(&self, range: &KeyRange, order: Order, limit: usize) -> Result<Vec<Pair>, StoreError> {
        self.inner.scan(range, order, limit)
    }
    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let touches_audit = batch
            .ops()
            .iter()
            .any(|op| matches!(op, idmesh_store::WriteOp::Put { key, .. } if key.starts_with(b"audit/")));
        if touches_audit && self.broken.load(Ordering::SeqCst) {
            return Err(StoreError::Io(std::io::Error::other("disk full (test)")));
        }
        self.inner.write(batch)
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }
    fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
}

fn config() -> NodeConfig {
    let trust_domain = TrustDomain::parse_field("td", "acme.example").unwrap();
    let site = SiteName::parse_field("site", "eu").unwrap();
    let peer = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    NodeConfig::single_node(trust_domain, site, "mem".into(), "127.0.0.1:0".parse().unwrap(), peer)
}

async fn ready(store: Arc<BreakableAudit>) -> RunningNode {
    let running = Node::start_on(config(), store).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while running.node.signing_keys().is_empty() {
        assert!(Instant::now() < deadline, "no signing key");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running
}

fn assertion(key: &SigningKey, jti: &str) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let id = "spiffe://acme.example/agents/bot";
    let claims = serde_json::json!({"iss": id, "sub": id, "aud": "https://acme.example/sites/eu", "iat": now, "exp": now + 60, "jti": jti});
    idmesh_token::jws::sign(key, "JWT", &PublicJwk::of_signing_key(key).thumbprint(), &claims).unwrap()
}

fn request(assertion: String) -> TokenRequest {
    TokenRequest { client_assertion: assertion, audiences: vec!["payments".into()], ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_outcome_is_one_record_and_a_broken_audit_log_issues_nothing() {
    let store = Arc::new(BreakableAudit { inner: MemStore::new(), broken: AtomicBool::new(false) });
    let running = ready(store.clone()).await;
    let node = running.node.clone();
    let key = SigningKey::from_bytes(&[5; 32]);
    node.write(Op::RegisterAgent(RegisterAgent {
        id: "spiffe://acme.example/agents/bot".parse().unwrap(),
        owner: "ops".into(),
        labels: BTreeMap::new(),
        credentials: vec![PublicJwk::of_signing_key(&key)],
    }))
    .await
    .unwrap();

    let issued = node.issue_token(request(assertion(&key, "ok-1"))).await.unwrap();
    let replay = node.issue_token(request(assertion(&key, "ok-1"))).await.unwrap_err();
    assert!(matches!(replay, NodeError::Unauthenticated { .. }), "{replay}");
    let wrong_key =
        node.issue_token(request(assertion(&SigningKey::from_bytes(&[6; 32]), "x"))).await.unwrap_err();
    assert!(matches!(wrong_key, NodeError::Unauthenticated { .. }), "{wrong_key}");
    let bad_ttl = node
        .issue_token(TokenRequest { ttl_secs: 999_999, ..request(assertion(&key, "ttl")) })
        .await
        .unwrap_err();
    assert!(matches!(bad_ttl, NodeError::Invalid(_)), "{bad_ttl}");

    let records = node.audit().read_from(1, 1000).unwrap();
    verify_chain(&records).unwrap();
    let issued_records: Vec<_> = records
        .iter()
        .filter_map(|r| if let Event::TokenIssued(t) = &r.event { Some((r.seq, t)) } else { None })
        .collect();
    assert_eq!(issued_records.len(), 1);
    assert_eq!(issued_records[0].0, issued.audit_seq);
    assert_eq!(issued_records[0].1.jti, issued.claims.jti);
    let refusals: Vec<_> = records
        .iter()
        .filter_map(|r| if let Event::TokenRefused(t) = &r.event { Some(t) } else { None })
        .collect();
    assert_eq!(refusals.len(), 3);
    assert!(refusals[0].reason.contains("already used"), "{}", refusals[0].reason);
    assert_eq!(refusals[0].agent.as_deref(), Some("spiffe://acme.example/agents/bot"));
    assert_eq!(refusals[2].code, "InvalidArgument");
    // Durable: the records survive a crash of the store.
    store.inner.crash();
    assert_eq!(
        store.inner.scan(&KeyRange::prefix(b"audit/r/"), Order::Ascending, 1000).unwrap().len(),
        records.len()
    );

    // The audit log breaks: a valid request gets no token, and nothing is recorded.
    store.broken.store(true, Ordering::SeqCst);
    let err = node.issue_token(request(assertion(&key, "while-broken"))).await.unwrap_err();
    assert!(matches!(err, NodeError::AuditUnavailable { .. }), "{err}");
    assert_eq!(node.audit().read_from(1, 1000).unwrap().len(), records.len());
    // So does a change to the site: it is not even proposed.
    let suspend =
        Op::SuspendAgent { id: "spiffe://acme.example/agents/bot".parse().unwrap(), reason: "x".into() };
    let err = node.write(suspend).await.unwrap_err();
    assert!(matches!(err, NodeError::AuditUnavailable { .. }), "{err}");
    store.broken.store(false, Ordering::SeqCst);
    let bot: idmesh_types::AgentId = "spiffe://acme.example/agents/bot".parse().unwrap();
    let status = node.shared().read().state.registry.get(&bot).map(|a| a.status);
    assert_eq!(status, Some(idmesh_state::AgentStatus::Active), "the refused change changed nothing");
    node.issue_token(request(assertion(&key, "after-repair"))).await.unwrap();
    running.shutdown().await;
}
