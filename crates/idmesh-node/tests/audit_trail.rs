//! The audit trail of one node on real files (sled): records found by agent, user, token,
//! action and decision; checkpoints signed with the site key; and every kind of tampering with
//! the store between runs found at the exact record.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use ed25519_dalek::SigningKey;
use idmesh_audit::{Checkpoint, Event, Filter, Record, RecordOrigin};
use idmesh_node::audit::keys::record_key;
use idmesh_node::audit::{CHECKPOINT_EVERY_RECORDS, ChainReport};
use idmesh_node::authz::AuthorizeQuery;
use idmesh_node::tokens::TokenRequest;
use idmesh_node::{Node, RunningNode};
use idmesh_state::{Op, PublicJwk, RegisterAgent};
use idmesh_store::{SledOptions, SledStore, Store, WriteBatch};
use idmesh_types::UnixMillis;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

fn agent_id(name: &str) -> String {
    format!("spiffe://acme.example/agents/{name}")
}

fn origin() -> RecordOrigin {
    RecordOrigin { site: "eu".into(), node: 1 }
}

async fn start(dir: &Path) -> RunningNode {
    support::start_node("eu", dir, 0).await
}

async fn register(node: &Node, name: &str, key: &SigningKey) {
    node.write(Op::RegisterAgent(RegisterAgent {
        id: agent_id(name).parse().unwrap(),
        owner: "ops".into(),
        labels: BTreeMap::new(),
        credentials: vec![PublicJwk::of_signing_key(key)],
    }))
    .await
    .unwrap();
}

async fn issue(node: &Node, name: &str, key: &SigningKey, jti: &str) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let id = agent_id(name);
    let claims = serde_json::json!({"iss": id, "sub": id, "aud": "https://acme.example/sites/eu", "iat": now, "exp": now + 60, "jti": jti});
    let assertion =
        idmesh_token::jws::sign(key, "JWT", &PublicJwk::of_signing_key(key).thumbprint(), &claims).unwrap();
    let request = TokenRequest {
        client_assertion: assertion,
        audiences: vec!["payments".into()],
        ..Default::default()
    };
    node.issue_token(request).await.unwrap().access_token
}

fn verify(node: &Node) -> Vec<ChainReport> {
    let key_of = |site: &str, kid: &str| node.site_key(site, kid);
    node.audit().verify_all(&key_of).unwrap()
}

fn query(node: &Node, filter: Filter) -> Vec<Record> {
    node.audit().query(&filter, None, 1000, false).unwrap().records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_found_by_what_they_concern_and_checkpoints_sign_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path()).await;
    let node = running.node.clone();
    let (bot_key, other_key) = (SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32]));
    register(&node, "bot", &bot_key).await;
    register(&node, "other", &other_key).await;
    let token = issue(&node, "bot", &bot_key, "a-1").await;
    issue(&node, "other", &other_key, "b-1").await;
    let claims = node.verify_access_token(&token, None).unwrap().claims;

    // By agent: its registration (requested, applied) and its token; nothing of the other agent.
    let bot = query(&node, Filter { agent: Some(agent_id("bot")), ..Filter::default() });
    let kinds: Vec<&str> = bot.iter().map(|r| r.event.kind()).collect();
    assert_eq!(kinds, ["admin_changed", "admin_changed", "token_issued"]);
    match (&bot[0].event, &bot[1].event) {
        (Event::AdminChanged(requested), Event::AdminChanged(applied)) => {
            assert_eq!((requested.stage.as_str(), applied.stage.as_str()), ("requested", "applied"));
            assert!(applied.detail.starts_with("log index "), "{}", applied.detail);
        }
        other => panic!("{other:?}"),
    }
    // By token id: exactly the issuance.
    let by_jti = query(&node, Filter { jti: Some(claims.jti.clone()), ..Filter::default() });
    assert_eq!(by_jti.len(), 1);
    assert!(matches!(&by_jti[0].event, Event::TokenIssued(t) if t.agent == agent_id("bot")));

    // Decisions: 1,200 refused Authorize calls (a token that does not verify), side by side.
    let asks = (0..1200).map(|n| {
        let node = node.clone();
        async move {
            let query = AuthorizeQuery {
                token: format!("not-a-token-{n}"),
                action: "reports:read".into(),
                resource: format!("report/{n}"),
                resource_attributes: BTreeMap::new(),
            };
            node.authorize(query).await
        }
    });
    for outcome in futures::future::join_all(asks).await {
        assert!(outcome.map(|o| !o.allowed).unwrap_or(true));
    }
    let denied = Filter { action: Some("reports:read".into()), allowed: Some(false), ..Filter::default() };
    let page = node.audit().query(&denied, None, 1000, false).unwrap();
    assert_eq!(page.records.len(), 1000);
    let rest = node.audit().query(&denied, page.cursor.as_deref(), 1000, false).unwrap();
    assert_eq!(rest.records.len(), 200, "the second page holds the rest");
    let times: Vec<UnixMillis> = page.records.iter().chain(&rest.records).map(|r| r.time).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "time order");
    let newest = node.audit().query(&denied, None, 1, true).unwrap().records;
    assert_eq!(newest[0].seq, rest.records.last().unwrap().seq);
    assert!(
        query(
            &node,
            Filter { action: Some("issue_token".into()), allowed: Some(false), ..Filter::default() }
        )
        .is_empty()
    );
    let bad_cursor = node.audit().query(&denied, Some("00ff"), 10, false).unwrap_err();
    assert!(bad_cursor.to_string().contains("cursor"), "{bad_cursor}");
    assert!(node.audit().query(&denied, None, 1001, false).is_err());

    // Past 1,000 records the chain carries a checkpoint signed by the site's key.
    let reports = verify(&node);
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].broken, None);
    assert!(reports[0].summary.checkpoints >= 1, "{reports:?}");
    assert!(reports[0].summary.last_checkpoint.unwrap() >= CHECKPOINT_EVERY_RECORDS);
    let checkpoints = query(&node, Filter { action: Some("checkpoint".into()), ..Filter::default() });
    assert!(matches!(&checkpoints[0].event, Event::Checkpoint(c) if c.kid == claims_kid(&token)));

    // Stopping records the stop and signs the tail; a restart verifies it all and goes on.
    let last_before = node.audit().last_seq().unwrap();
    running.shutdown().await;
    drop(node);
    let running = start(dir.path()).await;
    let node = running.node.clone();
    let tail = node.audit().read_from(last_before + 1, 10).unwrap();
    let kinds: Vec<&str> = tail.iter().map(|r| r.event.kind()).collect();
    assert_eq!(&kinds[..3], ["node_stopping", "checkpoint", "node_started"]);
    let reports = verify(&node);
    assert_eq!(reports[0].broken, None);
    assert_eq!(
        reports[0].summary.last_checkpoint,
        Some(last_before + 1),
        "the checkpoint covers node_stopping"
    );
    running.shutdown().await;
}

fn claims_kid(token: &str) -> String {
    idmesh_token::jws::parse(token).unwrap().header.kid.clone().unwrap()
}

/// Copies a stopped node's data dir, so each case tampers with a fresh copy.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn read(store: &SledStore, seq: u64) -> Record {
    serde_json::from_slice(&store.get(&record_key(&origin(), seq)).unwrap().unwrap()).unwrap()
}

fn put(store: &SledStore, seq: u64, record: &Record) {
    let mut batch = WriteBatch::new();
    batch.put(record_key(&origin(), seq), serde_json::to_vec(record).unwrap());
    store.write(batch).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_with_the_store_between_runs_is_found_at_the_exact_record() {
    let original = tempfile::tempdir().unwrap();
    let running = start(original.path()).await;
    let key = SigningKey::from_bytes(&[1; 32]);
    register(&running.node, "bot", &key).await;
    for n in 0..4 {
        issue(&running.node, "bot", &key, &format!("t-{n}")).await;
    }
    let last = running.node.audit().last_seq().unwrap();
    running.shutdown().await;
    // The run ended with node_stopping and a checkpoint signed by the site key.
    let checkpoint_seq = last + 2;

    type Tamper = Box<dyn Fn(&SledStore)>;
    let cases: Vec<(&str, Tamper, u64, &str)> = vec![
        (
            "modified",
            Box::new(|s: &SledStore| {
                let mut record = read(s, 4);
                record.time = UnixMillis(record.time.0 + 1);
                put(s, 4, &record);
            }),
            4,
            "modified",
        ),
        (
            "deleted",
            Box::new(|s: &SledStore| {
                let mut batch = WriteBatch::new();
                batch.delete(record_key(&origin(), 4));
                s.write(batch).unwrap();
            }),
            5,
            "follows seq 3",
        ),
        (
            "reordered",
            Box::new(|s: &SledStore| {
                let (four, five) = (read(s, 4), read(s, 5));
                put(s, 4, &five);
                put(s, 5, &four);
            }),
            4,
            "moved",
        ),
        (
            "inserted (a forged record that links to the one before, its successors renumbered)",
            Box::new(move |s: &SledStore| {
                let before = read(s, 3);
                let forged = Record::next(Some(&before), origin(), before.time, Event::NodeStopping);
                let mut records: Vec<Record> = (4..=checkpoint_seq).map(|seq| read(s, seq)).collect();
                put(s, 4, &forged);
                for record in &mut records {
                    record.seq += 1;
                    put(s, record.seq, record);
                }
            }),
            5,
            "modified",
        ),
        (
            "checkpoint forged (signed with another key, the record re-hashed)",
            Box::new(move |s: &SledStore| {
                let before = read(s, checkpoint_seq - 1);
                let real = read(s, checkpoint_seq);
                let Event::Checkpoint(c) = &real.event else { panic!("not a checkpoint: {real:?}") };
                let forger = SigningKey::from_bytes(&[66; 32]);
                let fake = Checkpoint::sign(&forger, &c.kid, &origin(), before.seq, before.hash);
                let forged = Record::next(Some(&before), origin(), real.time, Event::Checkpoint(fake));
                put(s, checkpoint_seq, &forged);
            }),
            checkpoint_seq,
            "forged",
        ),
    ];
    for (what, tamper, expected_seq, expected_reason) in cases {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(original.path(), copy.path());
        {
            let store = SledStore::open(copy.path().join("store"), SledOptions::default()).unwrap();
            tamper(&store);
            store.flush().unwrap();
        }
        let running = start(copy.path()).await;
        let reports = verify(&running.node);
        let broken = reports[0].broken.clone().unwrap_or_else(|| panic!("{what}: not found: {reports:?}"));
        assert_eq!(broken.seq, expected_seq, "{what}: {broken}");
        assert!(broken.reason.contains(expected_reason), "{what}: {broken}");
        running.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_pushed_by_a_peer_that_do_not_fit_are_reported_and_not_stored() {
    use idmesh_proto::peer::AuditPushRequest;
    use idmesh_proto::peer::audit_peer_client::AuditPeerClient;
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path()).await;
    let node = running.node.clone();
    let mut peer = AuditPeerClient::connect(format!("http://{}", running.peer_addr)).await.unwrap();
    let push = |records: Vec<Record>, trust_domain: &str| AuditPushRequest {
        trust_domain: trust_domain.into(),
        from_site: "elsewhere".into(),
        from_node: 7,
        records: records.iter().map(|r| serde_json::to_vec(r).unwrap().into()).collect(),
    };

    // A node that is not a member of this site; records of this node it never wrote; another
    // version of this node's first record.
    let stranger = RecordOrigin { site: "eu".into(), node: 9 };
    let strange = Record::next(None, stranger, UnixMillis(1), Event::NodeStopping);
    let mine = node.audit().read_from(1, 1).unwrap().remove(0);
    let ahead = Record::after(Some((100, mine.hash)), origin(), UnixMillis(2), Event::NodeStopping);
    let forked = Record::next(None, origin(), UnixMillis(3), Event::NodeStopping);
    let same = mine.clone();
    let mut problems = Vec::new();
    // (A chain is examined up to its first problem: each case goes in its own push.)
    for records in [vec![strange, ahead], vec![forked], vec![same]] {
        let reply = peer.push(push(records, "acme.example")).await.unwrap().into_inner();
        assert_eq!(reply.stored, 0, "{reply:?}");
        problems.extend(reply.problems);
    }
    let problems = problems.join("\n");
    assert!(problems.contains("unknown node: node 9 of site eu"), "{problems}");
    assert!(problems.contains("own chain from 101"), "{problems}");
    assert!(problems.contains("fork: record 1 of node 1 of site eu"), "{problems}");
    assert_eq!(problems.lines().count(), 3, "the identical record is a duplicate, not a problem: {problems}");
    // (This node's own chain may grow meanwhile: its first key's records land just after start.)
    let chains: Vec<RecordOrigin> = node.audit().held().into_keys().collect();
    assert_eq!(chains, [origin()], "nothing of another chain stored");
    assert_eq!(node.audit().problems().len(), 3, "kept for mesh status");
    assert!(node.audit().problems().iter().all(|p| p.from == "elsewhere/7"));

    // Another site's chains are taken only of the nodes that site published.
    let public = idmesh_state::KeySecret::from_bytes([5; 32]).public();
    let trust = idmesh_node::bundle::TrustFile {
        format: "idmesh-trust-1".into(),
        trust_domain: "acme.example".into(),
        site: "us".into(),
        trust: idmesh_state::crdt::SiteTrust {
            issuer: "https://acme.example/sites/us".into(),
            keys: vec![idmesh_state::crdt::TrustedKey {
                kid: public.thumbprint(),
                public,
                from: UnixMillis(0),
                until: None,
            }],
            nodes: vec![1],
        },
    };
    node.import_trust(&serde_json::to_string(&trust).unwrap()).await.unwrap();
    let listed =
        Record::next(None, RecordOrigin { site: "us".into(), node: 1 }, UnixMillis(1), Event::NodeStopping);
    let unlisted =
        Record::next(None, RecordOrigin { site: "us".into(), node: 9 }, UnixMillis(1), Event::NodeStopping);
    let reply = peer.push(push(vec![listed, unlisted], "acme.example")).await.unwrap().into_inner();
    assert_eq!((reply.stored, reply.problems.len()), (1, 0), "{reply:?}");
    let us_chains: Vec<u64> =
        node.audit().held().into_keys().filter(|o| o.site == "us").map(|o| o.node).collect();
    assert_eq!(us_chains, [1], "node 9 of us is not one us published");
    let waiting = node.audit().waiting();
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert!(waiting[0].problem.contains("node 9 of site us"), "{waiting:?}");
    assert_eq!(waiting[0].from, "elsewhere/7");

    // Bad form: refused whole, the field named.
    let mut garbage = push(vec![], "acme.example");
    garbage.records = vec![b"{not json".to_vec().into()];
    let status = peer.push(garbage).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("record 0 does not decode"), "{}", status.message());
    let status = peer.push(push(vec![mine], "other.example")).await.unwrap_err();
    assert!(status.message().contains("trust domain"), "{}", status.message());
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_streams_the_matching_records_as_they_are_written() {
    use idmesh_proto::v1::AuditQueryRequest;
    use idmesh_proto::v1::audit_client::AuditClient;
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path()).await;
    let mut api = AuditClient::connect(format!("http://{}", running.public_addr)).await.unwrap();
    let request = AuditQueryRequest { action: "issue_token".into(), ..Default::default() };
    let mut stream = api.follow(request).await.unwrap().into_inner();
    let key = SigningKey::from_bytes(&[3; 32]);
    register(&running.node, "bot", &key).await; // admin records: not asked for
    let token = issue(&running.node, "bot", &key, "f-1").await;
    let jti = running.node.verify_access_token(&token, None).unwrap().claims.jti;
    let record =
        tokio::time::timeout(Duration::from_secs(5), stream.message()).await.unwrap().unwrap().unwrap();
    assert_eq!((record.kind.as_str(), record.jti.as_str()), ("token_issued", jti.as_str()));
    assert_eq!(record.agents, [agent_id("bot")]);
    // A bad filter is refused before anything is streamed.
    let bad = AuditQueryRequest { decision: "perhaps".into(), ..Default::default() };
    let status = api.follow(bad).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("decision"), "{}", status.message());
    running.shutdown().await;
}
