//! Audit retention on real files (sled) and real peer gRPC: records older than the retention
//! period go only once every known site acknowledged them, only up to what each acknowledged,
//! and only just before a signed checkpoint; what is kept still verifies, after a restart too;
//! a node that never held the chain receives it from the cut; removing more than the cut is
//! found.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use idmesh_audit::{Event, Filter, Record, RecordOrigin};
use idmesh_node::audit::ChainReport;
use idmesh_node::audit::keys::record_key;
use idmesh_node::{Node, RunningNode};
use idmesh_store::{SledOptions, SledStore, Store, WriteBatch};
use std::path::Path;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

const RETENTION_SECS: u64 = 1;

async fn start(site: &str, dir: &Path, retention_secs: u64) -> RunningNode {
    support::start_node(site, dir, retention_secs).await
}

async fn trust_each_other(a: &Node, b: &Node) {
    a.import_trust(&serde_json::to_string(&b.export_trust()).unwrap()).await.unwrap();
    b.import_trust(&serde_json::to_string(&a.export_trust()).unwrap()).await.unwrap();
}

fn channel(to: &RunningNode) -> Channel {
    Endpoint::from_shared(format!("http://{}", to.peer_addr)).unwrap().connect_lazy()
}

fn verify(node: &Node) -> Vec<ChainReport> {
    let key_of = |site: &str, kid: &str| node.site_key(site, kid);
    node.audit().verify_all(&key_of).unwrap()
}

fn report<'a>(reports: &'a [ChainReport], origin: &RecordOrigin) -> &'a ChainReport {
    reports.iter().find(|r| &r.origin == origin).unwrap()
}

/// Checkpoint records of `origin` held by `node`: (seq, the seq it covers).
fn checkpoints(node: &Node, origin: &RecordOrigin) -> Vec<u64> {
    let filter =
        Filter { action: Some("checkpoint".into()), site: Some(origin.site.clone()), ..Filter::default() };
    let records = node.audit().query(&filter, None, 1000, false).unwrap().records;
    records.iter().filter(|r| &r.origin == origin).map(|r| r.seq).collect()
}

fn cuts_recorded(node: &Node) -> Vec<Record> {
    let filter = Filter { action: Some("retention_applied".into()), ..Filter::default() };
    node.audit().query(&filter, None, 1000, false).unwrap().records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_only_what_every_known_site_holds_and_what_is_kept_still_verifies() {
    let (eu_dir, us_dir, ap_dir) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let eu = start("eu", eu_dir.path(), RETENTION_SECS).await;
    let us = start("us", us_dir.path(), 0).await;
    trust_each_other(&eu.node, &us.node).await;
    let chain = eu.node.audit().origin().clone();

    // 2,500 records at eu: at least two checkpoints in its chain.
    for n in 0..2500 {
        eu.node.audit().append(Event::NodeStarted { version: format!("load-{n}") }).await.unwrap();
    }
    let signed = checkpoints(&eu.node, &chain);
    assert!(signed.len() >= 2, "{signed:?}");
    let held_before = eu.node.audit().last_seq().unwrap();
    tokio::time::sleep(Duration::from_millis(RETENTION_SECS * 1000 + 200)).await;

    // us is a known site (trusted) that never said what it holds: nothing goes.
    assert!(eu.node.apply_audit_retention().await.unwrap().is_empty());
    assert_eq!(eu.node.audit().first_kept(&chain), 1);
    assert_eq!(eu.node.audit_acknowledged_by_all().get(&chain).copied().unwrap_or(0), 0);
    assert_eq!(eu.node.audit().read_chain(&chain, 1, 1).unwrap()[0].seq, 1);

    // us holds the chain up to the middle of the second checkpoint interval: the cut is at the
    // first checkpoint, and not one record past what us acknowledged goes.
    let acknowledged = signed[1] - 2;
    let us_holder = RecordOrigin { site: "us".into(), node: 1 };
    eu.node.audit().note_acknowledged(us_holder, [(chain.clone(), acknowledged)].into()).unwrap();
    eu.node.apply_audit_retention().await.unwrap();
    assert_eq!(eu.node.audit().first_kept(&chain), signed[0]);
    assert!(eu.node.audit().read_chain(&chain, 1, 1).unwrap()[0].seq == signed[0]);
    let reports = verify(&eu.node);
    let kept = report(&reports, &chain);
    assert_eq!(kept.broken, None, "{reports:?}");
    assert_eq!(kept.summary.first, Some(signed[0]));
    // The removed records are gone from the indexes too.
    let loaded = Filter { action: Some("node_started".into()), site: Some("eu".into()), ..Filter::default() };
    let first_found = eu.node.audit().query(&loaded, None, 1, false).unwrap().records;
    assert!(first_found[0].seq > signed[0], "{:?}", first_found[0].seq);

    // us pulls everything over the peer API: its pull is its acknowledgement; the next pass
    // cuts at the newest old checkpoint.
    let from_eu = RecordOrigin { site: "eu".into(), node: 0 };
    us.node.pull_audit(channel(&eu), "eu/link", &from_eu).await.unwrap();
    // (A pull says what the caller held before it: the next one acknowledges what it got.)
    us.node.pull_audit(channel(&eu), "eu/link", &from_eu).await.unwrap();
    assert!(us.node.audit().held().get(&chain).unwrap().0 >= held_before);
    eu.node.apply_audit_retention().await.unwrap();
    let newest_old = *signed.last().unwrap();
    assert_eq!(eu.node.audit().first_kept(&chain), newest_old);
    let cuts = cuts_recorded(&eu.node);
    assert!(cuts.len() >= 2, "each cut is audited: {cuts:?}");
    match &cuts[0].event {
        Event::RetentionApplied(cut) => {
            assert_eq!((cut.site.as_str(), cut.node, cut.first_kept_seq), ("eu", 1, signed[0]));
            assert_eq!((cut.removed, cut.retention_secs), (signed[0] - 1, RETENTION_SECS));
        }
        other => panic!("{other:?}"),
    }

    // A site that never held the chain receives it from the cut, proven by the checkpoint.
    let ap = start("ap", ap_dir.path(), 0).await;
    trust_each_other(&eu.node, &ap.node).await;
    ap.node.pull_audit(channel(&eu), "eu/link", &from_eu).await.unwrap();
    assert_eq!(ap.node.audit().first_kept(&chain), newest_old);
    let at_ap = verify(&ap.node);
    assert_eq!(report(&at_ap, &chain).broken, None, "{at_ap:?}");
    assert!(ap.node.audit().problems().is_empty(), "{:?}", ap.node.audit().problems());
    // ap is a new known site that has not acknowledged eu's newer records: no more cuts.
    eu.node.audit().append(Event::NodeStopping).await.unwrap();
    assert!(eu.node.apply_audit_retention().await.unwrap().is_empty());

    // The cut survives a restart and still verifies.
    us.shutdown().await;
    ap.shutdown().await;
    eu.shutdown().await;
    let eu = start("eu", eu_dir.path(), RETENTION_SECS).await;
    assert_eq!(eu.node.audit().first_kept(&chain), newest_old);
    assert_eq!(report(&verify(&eu.node), &chain).broken, None);
    eu.shutdown().await;

    // Removing the checkpoint the chain starts with (more than retention cut) is found.
    let store = SledStore::open(eu_dir.path().join("store"), SledOptions::default()).unwrap();
    let mut batch = WriteBatch::new();
    batch.delete(record_key(&chain, newest_old));
    store.write(batch).unwrap();
    store.flush().unwrap();
    drop(store);
    let eu = start("eu", eu_dir.path(), 0).await;
    let broken = report(&verify(&eu.node), &chain).broken.clone().unwrap();
    assert_eq!(broken.seq, newest_old + 1);
    assert!(broken.reason.contains(&format!("records {newest_old} to {newest_old} are missing")), "{broken}");
    eu.shutdown().await;
}
