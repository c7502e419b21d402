//! Air-gap bundles between two sites that never had a link: a bundle carries agents and a
//! revocation one way; every bad bundle (unknown site, truncated, corrupted, forged, other trust
//! domain, this site's own, imported before) is refused with its reason and changes nothing.
//! In-process nodes on `MemStore`s.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use idmesh_node::{Node, NodeConfig, NodeError, RunningNode};
use idmesh_state::bundle::BundleError;
use idmesh_state::{AgentStatus, Op, RegisterAgent};
use idmesh_store::MemStore;
use idmesh_types::{AgentId, SiteName, TrustDomain};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn start(trust_domain: &str, site: &str) -> RunningNode {
    let trust_domain = TrustDomain::parse_field("td", trust_domain).unwrap();
    let site = SiteName::parse_field("site", site).unwrap();
    let peer = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config =
        NodeConfig::single_node(trust_domain, site, "mem".into(), "127.0.0.1:0".parse().unwrap(), peer);
    let running = Node::start_on(config, Arc::new(MemStore::new())).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while running.node.signing_keys().is_empty() {
        assert!(Instant::now() < deadline, "no signing key");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running
}

fn agent(node: &Node, name: &str) -> AgentId {
    format!("spiffe://{}/agents/{name}", node.config().trust_domain).parse().unwrap()
}

async fn register(node: &Node, name: &str) {
    let op = Op::RegisterAgent(RegisterAgent {
        id: agent(node, name),
        owner: "ops".into(),
        labels: BTreeMap::new(),
        credentials: vec![],
    });
    node.write(op).await.unwrap();
}

fn status(node: &Node, name: &str) -> Option<AgentStatus> {
    node.shared().read().state.registry.get(&agent(node, name)).map(|a| a.status)
}

/// Waits until `node`'s own keys are in its trust bundle (the leader publishes them).
async fn published(node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while node.shared().read().state.trust.site(node.config().site.as_str()).is_none() {
        assert!(Instant::now() < deadline, "keys never published");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_carries_a_revocation_one_way_and_bad_bundles_change_nothing() {
    let east = start("acme.example", "east").await;
    let west = start("acme.example", "west").await;
    register(&east.node, "courier").await;
    register(&east.node, "rogue").await;
    east.node
        .write(Op::RevokeAgent { id: agent(&east.node, "rogue"), reason: "leaked key".into() })
        .await
        .unwrap();
    published(&east.node).await;
    published(&west.node).await; // west's own publication would change its hash below
    let (bundle, header) = east.node.export_bundle(None).await.unwrap();
    assert_eq!(header.origin_site, "east");

    // West has never heard of east: refused, nothing applied.
    let before = west.node.shared().state_hash();
    match west.node.import_bundle(&bundle).await {
        Err(NodeError::Bundle(BundleError::UnknownKey { site, .. })) => assert_eq!(site, "east"),
        other => panic!("expected an unknown-key refusal, got {other:?}"),
    }
    assert_eq!(west.node.shared().state_hash(), before);

    // The operator carries east's trust file over; then damaged bundles are still refused.
    let trust = serde_json::to_string(&east.node.export_trust()).unwrap();
    west.node.import_trust(&trust).await.unwrap();
    let before = west.node.shared().state_hash();
    let mut corrupted = bundle.clone();
    let middle = corrupted.len() / 2;
    corrupted[middle] ^= 0x20;
    let mut trailing = bundle.clone();
    trailing.push(0);
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", bundle[..bundle.len() - 1].to_vec()),
        ("truncated header", bundle[..20].to_vec()),
        ("corrupted", corrupted),
        ("trailing byte", trailing),
        ("empty", Vec::new()),
        ("not a bundle", b"PK\x03\x04 a zip file".to_vec()),
    ];
    for (what, bytes) in bad {
        let err = west.node.import_bundle(&bytes).await.expect_err(what);
        assert!(matches!(err, NodeError::Bundle(_)), "{what}: {err}");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{what}: {err}");
        assert_eq!(west.node.shared().state_hash(), before, "{what} changed the state");
    }
    // A bundle from another trust domain, and one signed by a site west does not trust.
    let other_domain = start("other.example", "east").await;
    let (foreign, _) = other_domain.node.export_bundle(None).await.unwrap();
    let err = west.node.import_bundle(&foreign).await.unwrap_err();
    assert!(err.to_string().contains("trust domain"), "{err}");
    other_domain.shutdown().await;
    let north = start("acme.example", "north").await;
    let (unknown, _) = north.node.export_bundle(None).await.unwrap();
    let err = west.node.import_bundle(&unknown).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    north.shutdown().await;
    // West's own bundle is not imported into west.
    let (own, _) = west.node.export_bundle(None).await.unwrap();
    let err = west.node.import_bundle(&own).await.unwrap_err();
    assert!(err.to_string().contains("this site"), "{err}");
    assert_eq!(west.node.shared().state_hash(), before);

    // The real bundle applies: agents and the revocation arrive.
    let summary = west.node.import_bundle(&bundle).await.unwrap();
    assert_eq!(summary.header.bundle_id, header.bundle_id);
    assert_eq!(status(&west.node, "courier"), Some(AgentStatus::Active));
    assert_eq!(status(&west.node, "rogue"), Some(AgentStatus::Revoked));
    // East's audit trail travelled with it: west holds east's chain and can tell who revoked
    // the rogue agent, there.
    let east_origin = idmesh_audit::RecordOrigin { site: "east".into(), node: 1 };
    let held = west.node.audit().held();
    assert!(held.get(&east_origin).is_some_and(|(seq, _)| *seq >= 5), "{held:?}");
    let rogue =
        idmesh_audit::Filter { agent: Some(agent(&west.node, "rogue").to_string()), ..Default::default() };
    let found = west.node.audit().query(&rogue, None, 100, false).unwrap().records;
    assert!(found.iter().any(|r| r.origin == east_origin && r.event.kind() == "admin_changed"), "{found:?}");
    // A revocation that travelled by bundle cannot be undone at west.
    let resume = west.node.write(Op::ResumeAgent { id: agent(&west.node, "rogue") }).await;
    assert!(resume.is_err(), "a revoked agent was resumed");

    // Importing it again is refused as a replay and changes nothing.
    let after = west.node.shared().state_hash();
    let err = west.node.import_bundle(&bundle).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err}");
    assert!(err.to_string().contains(&header.bundle_id), "{err}");
    assert_eq!(west.node.shared().state_hash(), after);

    // A later bundle made for west carries only what west was not known to have; west applies
    // it on top.
    east.node
        .write(Op::SuspendAgent { id: agent(&east.node, "courier"), reason: "audit".into() })
        .await
        .unwrap();
    let (second, _) = east.node.export_bundle(Some("west")).await.unwrap();
    west.node.import_bundle(&second).await.unwrap();
    assert_eq!(status(&west.node, "courier"), Some(AgentStatus::Suspended));
    // Its audit records overlap the first bundle's: duplicates, taken once, nothing reported.
    assert!(west.node.audit().problems().is_empty(), "{:?}", west.node.audit().problems());
    let held_after = west.node.audit().held()[&east_origin].0;
    assert!(held_after > held[&east_origin].0, "the suspension's records arrived");
    let key_of = |site: &str, kid: &str| west.node.site_key(site, kid);
    let reports = west.node.audit().verify_all(&key_of).unwrap();
    assert!(reports.iter().all(|r| r.broken.is_none()), "{reports:?}");
    assert_eq!(reports.len(), 2, "west's chain and east's");

    east.shutdown().await;
    west.shutdown().await;
}
