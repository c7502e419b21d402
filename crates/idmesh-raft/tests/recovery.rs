//! Recovery and durability of the Raft layer over a store that models crashes honestly
//! (`MemStore`: what was not flushed is lost).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ed25519_dalek::SigningKey;
use idmesh_raft::{Entry, LogStore, SnapshotData, StateMachine, TypeConfig};
use idmesh_state::crdt::{Actor, Shard, shard_of};
use idmesh_state::{ChangeBytes, Command, Op, PublicJwk, RegisterAgent, agent_after};
use idmesh_store::{KeyRange, MemStore, Order, Pair, Store, StoreError, WriteBatch};
use idmesh_types::{TrustDomain, UnixMillis};
use openraft::async_runtime::Oneshot;
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogReader, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{LogId, Vote};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn td() -> TrustDomain {
    TrustDomain::parse_field("trust_domain", "acme.example").unwrap()
}

fn log_id(index: u64) -> idmesh_raft::LogId {
    use openraft::RaftTypeConfig;
    use openraft::vote::RaftLeaderIdExt;
    LogId::new(<TypeConfig as RaftTypeConfig>::LeaderId::new_committed(1, 1), index)
}

/// A log entry registering agent `a<index>`, with the change its leader would record (each with
/// an actor of its own: they are independent changes).
fn register(index: u64) -> Entry {
    let key = SigningKey::from_bytes(&[index as u8; 32]);
    let command = Command {
        at: UnixMillis(1000 + index),
        op: Op::RegisterAgent(RegisterAgent {
            id: format!("spiffe://acme.example/agents/a{index}").parse().unwrap(),
            owner: "o".into(),
            labels: Default::default(),
            credentials: vec![PublicJwk::from_key_bytes(&key.verifying_key().to_bytes()).unwrap()],
        }),
    };
    let after = agent_after(&td(), None, &command).unwrap();
    let shard = shard_of(after.id.name());
    let actor = Actor::from_bytes([index as u8; 16]);
    let change = Shard::new().record(&actor, command.at, None, &after).unwrap().unwrap();
    Entry::new_normal(
        log_id(index),
        idmesh_state::Entry::Agent { command, shard, change: ChangeBytes(change) },
    )
}

async fn apply(sm: &mut StateMachine, entries: Vec<Entry>) {
    let stream = futures::stream::iter(entries.into_iter().map(|e| Ok((e, None))));
    sm.apply(stream).await.unwrap();
}

#[tokio::test]
async fn state_machine_after_a_crash_is_consistent_with_its_applied_id() {
    let store = MemStore::new();
    let (_log, mut sm) = idmesh_raft::open(Arc::new(store.clone()), td()).unwrap();
    apply(&mut sm, (1..=3).map(register).collect()).await;
    assert_eq!(sm.shared().read().state.registry.len(), 3);

    // Nothing was flushed: after the crash the state machine is empty *and* says so, so openraft
    // re-applies the entries from the (durable) log.
    store.crash();
    let (_log, mut sm) = idmesh_raft::open(Arc::new(store.clone()), td()).unwrap();
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied, None);
    assert_eq!(sm.shared().read().state.registry.len(), 0);

    // Taking a snapshot flushes: the state up to it survives the next crash, with its applied
    // id, so the log before it may be purged.
    apply(&mut sm, (1..=3).map(register).collect()).await;
    let mut builder = sm.get_snapshot_builder().await;
    let snapshot = builder.build_snapshot().await.unwrap();
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(3)));
    assert_eq!(sm.get_current_snapshot().await.unwrap().unwrap().meta, snapshot.meta);
    apply(&mut sm, vec![register(4)]).await;
    // The snapshot is a view as of index 3: later changes are not in it.
    // Taking it copied nothing: the materialized view in it is as of index 3.
    let SnapshotData::View { state: at_snapshot, .. } = &snapshot.snapshot else { panic!("a view") };
    assert_eq!(at_snapshot.registry.len(), 3);
    store.crash();
    let (_log, mut sm) = idmesh_raft::open(Arc::new(store.clone()), td()).unwrap();
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(3)));
    assert_eq!(sm.shared().read().state.registry.len(), 3);
}

/// What a node has applied (and so may have shown or acted on) is never lost by a crash: openraft
/// saves the committed pointer just before it applies, and applying makes that pointer durable
/// first, so a restart re-applies at least as far. (The simulation found a follower that
/// applied a revocation, crashed, and came back showing the agent active.)
#[tokio::test]
async fn what_was_applied_is_still_committed_after_a_crash() {
    let store = MemStore::new();
    let (mut log, mut sm) = idmesh_raft::open(Arc::new(store.clone()), td()).unwrap();
    log.save_committed(Some(log_id(3))).await.unwrap();
    apply(&mut sm, (1..=3).map(register).collect()).await;
    store.crash();
    let (mut log, _sm) = idmesh_raft::open(Arc::new(store.clone()), td()).unwrap();
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(3)));
}

#[tokio::test]
async fn a_snapshot_round_trips_through_its_encoding() {
    let (_log, mut leader) = idmesh_raft::open(Arc::new(MemStore::new()), td()).unwrap();
    apply(&mut leader, (1..=4).map(register).collect()).await;
    let key = idmesh_state::NewSigningKey {
        secret: idmesh_state::KeySecret::from_bytes([42; 32]),
        activates_at: UnixMillis(2000),
        retire_previous_at: UnixMillis(2000),
        first: true,
    };
    let add_key = Command { at: UnixMillis(2000), op: Op::AddSigningKey(key) };
    apply(&mut leader, vec![Entry::new_normal(log_id(5), idmesh_state::Entry::Site(add_key))]).await;
    let snapshot = leader.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let bytes = snapshot.snapshot.encode().unwrap();
    let (_log, mut follower) = idmesh_raft::open(Arc::new(MemStore::new()), td()).unwrap();
    follower.install_snapshot(&snapshot.meta, SnapshotData::Encoded(bytes.clone())).await.unwrap();
    assert_eq!(follower.shared().read().state, leader.shared().read().state);
    assert_eq!(follower.shared().read().state.keys.all().len(), 1);
    assert_eq!(follower.applied_state().await.unwrap().0, Some(log_id(5)));
    // A snapshot of another trust domain is refused and changes nothing.
    let other = TrustDomain::parse_field("trust_domain", "other.example").unwrap();
    let (_log, mut stranger) = idmesh_raft::open(Arc::new(MemStore::new()), other).unwrap();
    assert!(stranger.install_snapshot(&snapshot.meta, SnapshotData::Encoded(bytes)).await.is_err());
    assert!(stranger.shared().read().state.registry.is_empty());
}

#[tokio::test]
async fn duplicate_and_undecodable_changes_change_nothing() {
    let (_log, mut sm) = idmesh_raft::open(Arc::new(MemStore::new()), td()).unwrap();
    apply(&mut sm, vec![register(1)]).await;
    let before = sm.shared().read().state.clone();
    // The same change again (a retry, a change learned twice): applied, nothing changes.
    let duplicate = {
        let mut e = register(1);
        e.log_id = log_id(2);
        e
    };
    apply(&mut sm, vec![duplicate]).await;
    assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(2)));
    assert_eq!(sm.shared().read().state, before);
    // Bytes that are not a change: refused, the entry is consumed, nothing changes.
    let mut garbage = register(3);
    if let openraft::EntryPayload::Normal(idmesh_state::Entry::Agent { change, .. }) = &mut garbage.payload {
        change.0 = b"not an automerge change".to_vec();
    }
    garbage.log_id = log_id(3);
    apply(&mut sm, vec![garbage]).await;
    assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(3)));
    assert_eq!(sm.shared().read().state, before);
}

/// A store whose flush is slow and counted, to observe group commit.
#[derive(Debug)]
struct SlowFlush {
    inner: MemStore,
    flushes: AtomicUsize,
}

impl Store for SlowFlush {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key)
    }
    fn scan(&self, range: &KeyRange, order: Order, limit: usize) -> Result<Vec<Pair>, StoreError> {
        self.inner.scan(range, order, limit)
    }
    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.inner.write(batch)
    }
    fn flush(&self) -> Result<(), StoreError> {
        std::thread::sleep(Duration::from_millis(20));
        self.flushes.fetch_add(1, Ordering::SeqCst);
        self.inner.flush()
    }
    fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_share_flushes_and_complete_only_once_durable() {
    let store = Arc::new(SlowFlush { inner: MemStore::new(), flushes: AtomicUsize::new(0) });
    let (mut log, _sm) = idmesh_raft::open(store.clone(), td()).unwrap();
    let mut waiters = Vec::new();
    for index in 1..=100 {
        let (tx, rx) = <openraft::alias::OneshotOf<TypeConfig> as Oneshot>::channel();
        log.append([register(index)], IOFlushed::<TypeConfig>::signal(tx)).await.unwrap();
        waiters.push(rx);
    }
    // Entries are readable at once, before they are durable.
    let mut reader = log.get_log_reader().await;
    assert_eq!(reader.try_get_log_entries(1..=100).await.unwrap().len(), 100);
    for rx in waiters {
        rx.await.unwrap().unwrap();
    }
    let flushes = store.flushes.load(Ordering::SeqCst);
    assert!(flushes < 20, "100 appends took {flushes} flushes: no group commit");

    // Everything acknowledged survives a crash.
    store.inner.crash();
    let (mut log, _sm) = idmesh_raft::open(Arc::new(store.inner.clone()), td()).unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id.map(|l| l.index), Some(100));
    assert_eq!(
        log.get_log_reader().await.try_get_log_entries(1..=100).await.unwrap()[99].log_id(),
        log_id(100)
    );
}

#[tokio::test]
async fn a_saved_vote_is_durable_when_save_returns() {
    let store = MemStore::new();
    let (mut log, _sm): (LogStore, StateMachine) = idmesh_raft::open(Arc::new(store.clone()), td()).unwrap();
    let vote = Vote::new_committed(3, 2);
    log.save_vote(&vote).await.unwrap();
    store.crash();
    let (mut log, _sm) = idmesh_raft::open(Arc::new(store.clone()), td()).unwrap();
    assert_eq!(log.get_log_reader().await.read_vote().await.unwrap(), Some(vote));
}

/// Like [`register`], for agent `a<agent>` at log index `index`, with an actor of its own for
/// every agent number.
fn register_at(index: u64, agent: u64) -> Entry {
    let command = Command {
        at: UnixMillis(1000 + index),
        op: Op::RegisterAgent(RegisterAgent {
            id: format!("spiffe://acme.example/agents/a{agent}").parse().unwrap(),
            owner: "o".into(),
            labels: Default::default(),
            credentials: vec![],
        }),
    };
    let after = agent_after(&td(), None, &command).unwrap();
    let shard = shard_of(after.id.name());
    let mut actor = [0u8; 16];
    actor[..8].copy_from_slice(&agent.to_be_bytes());
    let change = Shard::new().record(&Actor::from_bytes(actor), command.at, None, &after).unwrap().unwrap();
    Entry::new_normal(
        log_id(index),
        idmesh_state::Entry::Agent { command, shard, change: ChangeBytes(change) },
    )
}

fn stored_changes(store: &MemStore, shard: u16) -> usize {
    store
        .scan(&KeyRange::prefix(&idmesh_raft::keys::crdt_changes_prefix(shard)), Order::Ascending, usize::MAX)
        .unwrap()
        .len()
}

#[tokio::test]
async fn a_snapshot_folds_a_busy_shards_changes_into_its_saved_document() {
    // 300 agents that all live in one shard.
    let target = shard_of(&"a1".parse().unwrap());
    let agents: Vec<u64> =
        (1..).filter(|i| shard_of(&format!("a{i}").parse().unwrap()) == target).take(300).collect();
    let store = MemStore::new();
    let (_log, mut sm) = idmesh_raft::open(Arc::new(store.clone()), td()).unwrap();
    let entries: Vec<Entry> = agents.iter().enumerate().map(|(n, a)| register_at(n as u64 + 1, *a)).collect();
    apply(&mut sm, entries).await;
    assert_eq!(stored_changes(&store, target.0), 300);
    let hash = sm.shared().state_hash();

    sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    assert_eq!(stored_changes(&store, target.0), 0, "the saved document covers every stored change");
    assert!(store.get(&idmesh_raft::keys::crdt_doc_key(target.0)).unwrap().is_some());

    // A change after the save stays a change of its own; a restart loads both.
    let later = (agents[299] + 1..).find(|i| shard_of(&format!("a{i}").parse().unwrap()) == target).unwrap();
    apply(&mut sm, vec![register_at(301, later)]).await;
    let hash_after = sm.shared().state_hash();
    assert_ne!(hash_after, hash);
    store.flush().unwrap();
    store.crash();
    let (_log, sm) = idmesh_raft::open(Arc::new(store.clone()), td()).unwrap();
    assert_eq!(stored_changes(&store, target.0), 1);
    assert_eq!(sm.shared().state_hash(), hash_after);
    assert_eq!(sm.shared().read().state.registry.len(), 301);
}
