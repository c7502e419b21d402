//! The state machine: applies committed entries, writes the result through to the store, takes
//! and installs snapshots.

use crate::applied::{self, AppliedState, ShardSlot, SharedState};
use crate::apply::apply_entry;
use crate::codec::{encode, store_err};
use crate::keys::{self, CRDT_CHANGES, CRDT_DOC, SM_AGENT, SM_APPLIED, SM_KEYS, SM_MEMBERSHIP};
use crate::{LogId, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig, WriteOutcome};
use futures::{Stream, StreamExt};
use idmesh_state::{Registry, SiteState};
use idmesh_store::{KeyRange, Store, WriteBatch};
use idmesh_types::TrustDomain;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use std::io;
use std::sync::{Arc, Mutex};

/// The last snapshot taken or installed, kept in memory (see [`crate::SnapshotData`]).
type CurrentSnapshot = Arc<Mutex<Option<Snapshot>>>;

/// The state machine of one node.
#[derive(Debug)]
pub struct StateMachine {
    store: Arc<dyn Store>,
    shared: SharedState,
    current: CurrentSnapshot,
    flusher: crate::flusher::Flusher,
}

impl StateMachine {
    /// Loads the applied state from `store`.
    pub fn open(
        store: Arc<dyn Store>,
        trust_domain: TrustDomain,
        flusher: crate::flusher::Flusher,
    ) -> Result<Self, io::Error> {
        let state = applied::load(store.as_ref(), trust_domain)?;
        Ok(Self { store, shared: SharedState::new(state), current: Arc::default(), flusher })
    }

    /// A handle for readers of the applied state.
    pub fn shared(&self) -> SharedState {
        self.shared.clone()
    }
}

/// Flushes `store` off the async workers.
async fn flush(store: &Arc<dyn Store>) -> Result<(), io::Error> {
    let store = store.clone();
    crate::offload::off_worker(store.is_in_memory(), "flush", move || store.flush()).await?.map_err(store_err)
}

fn set_current(current: &CurrentSnapshot, snapshot: Snapshot) {
    *current.lock().unwrap_or_else(|p| p.into_inner()) = Some(snapshot);
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let state = self.shared.read();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut items = Vec::new();
        while let Some(item) = entries.next().await {
            items.push(item?);
        }
        // Nothing this node shows may be lost by a crash. The entries are durable in the log,
        // but that they are committed is known only from the committed pointer openraft saved
        // just before this call; once it is on disk, a restart re-applies everything applied
        // here before serving (openraft re-applies up to it while starting). Without this a
        // follower that applied a revocation and crashed came back showing the agent active
        // until its leader reached it: a restarted node cut off from its leader could issue
        // tokens to an agent it had already refused. (Found by the simulation, seed 2.) One
        // group-committed flush per batch, off the consensus loop.
        self.flusher.flush().await?;
        let mut batch = WriteBatch::new();
        let mut replies = Vec::with_capacity(items.len());
        {
            let mut state = self.shared.write();
            let mut membership_changed = false;
            for (entry, responder) in items {
                let outcome = match entry.payload {
                    EntryPayload::Blank => WriteOutcome::Nothing,
                    EntryPayload::Normal(normal) => {
                        apply_entry(&mut state, entry.log_id.index, normal, &mut batch)?
                    }
                    EntryPayload::Membership(membership) => {
                        state.state.members_ever.extend(membership.nodes().map(|(id, _)| *id));
                        state.membership = StoredMembership::new(Some(entry.log_id), membership);
                        membership_changed = true;
                        WriteOutcome::Nothing
                    }
                };
                state.last_applied = Some(entry.log_id);
                if let Some(responder) = responder {
                    replies.push((responder, outcome));
                }
            }
            batch.put(SM_APPLIED, encode("applied log id", &state.last_applied)?);
            if membership_changed {
                batch.put(SM_MEMBERSHIP, encode("membership", &state.membership)?);
                batch.put(keys::SM_MEMBERS_EVER, encode("members ever", &state.state.members_ever)?);
            }
        }
        // Not flushed here: the entries are durable in the log, and what the state machine
        // writes is recovered by re-applying them after a crash (the applied id and everything
        // it covers are written in one atomic batch, so they never disagree).
        self.store.write(batch).map_err(store_err)?;
        for (responder, outcome) in replies {
            responder.send(outcome);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            store: self.store.clone(),
            shared: self.shared.clone(),
            current: self.current.clone(),
        }
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, data: SnapshotData) -> Result<(), io::Error> {
        let trust_domain = self.shared.read().state.registry.trust_domain().clone();
        let decode_domain = trust_domain.clone();
        let (signing_keys, join_tokens, mut members_ever, mut shards, saved) =
            crate::offload::off_worker(self.store.is_in_memory(), "snapshot decode", move || {
                data.into_parts(&decode_domain)
            })
            .await??;
        let mut registry = Registry::new(trust_domain);
        let mut trust = idmesh_state::crdt::TrustBundle::default();
        for shard in &mut shards {
            let _ = shard.apply(&[]);
            for site in shard.published_sites() {
                let published = shard.site_trust(&site);
                trust.set(&site, published);
            }
            for name in shard.names() {
                if let Some(agent) = shard.agent(registry.trust_domain(), &name) {
                    registry.put_materialized(agent);
                }
            }
        }
        let mut batch = WriteBatch::new();
        batch.delete_range(KeyRange::prefix(SM_AGENT));
        batch.delete_range(KeyRange::prefix(CRDT_CHANGES));
        batch.delete_range(KeyRange::prefix(CRDT_DOC));
        for agent in registry.agents() {
            batch.put(keys::agent_key(&agent.id), encode("agent", agent)?);
        }
        for (shard, bytes) in saved.into_iter().enumerate() {
            let shard = u16::try_from(shard).map_err(|_| io::Error::other("too many shards"))?;
            batch.put(keys::crdt_doc_key(shard), bytes.0);
        }
        batch.put(SM_KEYS, encode("signing keys", &signing_keys)?);
        batch.put(keys::SM_JOIN, encode("join tokens", &join_tokens)?);
        members_ever.extend(meta.last_membership.membership().nodes().map(|(id, _)| *id));
        batch.put(keys::SM_MEMBERS_EVER, encode("members ever", &members_ever)?);
        batch.put(keys::SM_TRUST, encode("trust bundle", &trust)?);
        batch.put(SM_APPLIED, encode("applied log id", &meta.last_log_id)?);
        batch.put(SM_MEMBERSHIP, encode("membership", &meta.last_membership)?);
        self.store.write(batch).map_err(store_err)?;
        flush(&self.store).await?;
        let agents = registry.len();
        let policies = std::sync::Arc::new(idmesh_state::crdt::materialize_policies(shards.iter()));
        let mut site = SiteState {
            registry,
            keys: signing_keys,
            trust,
            policies,
            delegations: Default::default(),
            issuers: Default::default(),
            revoked_tokens: Default::default(),
            join_tokens,
            members_ever,
        };
        idmesh_state::crdt::materialize_grants(shards.iter(), &mut site);
        {
            let mut state = self.shared.write();
            *state = AppliedState {
                state: site.clone(),
                shards: shards
                    .into_iter()
                    .map(|applied| ShardSlot { applied, working: None, unsaved: 0 })
                    .collect(),
                working_owner: None,
                last_applied: meta.last_log_id,
                membership: meta.last_membership.clone(),
            };
        }
        let view = SnapshotData::View { state: site, shared: self.shared.clone() };
        set_current(&self.current, Snapshot { meta: meta.clone(), snapshot: view });
        tracing::info!(agents, last_log_index = ?meta.last_log_id.as_ref().map(|l| l.index), "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(self.current.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// Takes a snapshot of the applied state at the moment it runs: a structure-sharing clone of the
/// materialized state, O(1), so applying never waits for it.
#[derive(Debug)]
pub struct SnapshotBuilder {
    store: Arc<dyn Store>,
    shared: SharedState,
    current: CurrentSnapshot,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let (site, meta) = {
            let state = self.shared.read();
            let meta =
                SnapshotMeta { last_log_id: state.last_applied, last_membership: state.membership.clone() };
            (state.state.clone(), meta)
        };
        // Fold shards' accumulated changes into saved documents (bounded storage and restart
        // time), then make everything durable: openraft purges the log up to the snapshot next,
        // so the state machine's own writes up to `last_applied` must be on disk first.
        let compacted = crate::compact::compact_shards(self.store.as_ref(), &self.shared)?;
        flush(&self.store).await?;
        if compacted.shards > 0 {
            tracing::info!(
                shards = compacted.shards,
                changes = compacted.changes,
                "shard documents saved whole"
            );
        }
        let agents = site.registry.len();
        let snapshot =
            Snapshot { meta, snapshot: SnapshotData::View { state: site, shared: self.shared.clone() } };
        set_current(&self.current, snapshot.clone());
        tracing::info!(agents, last_log_index = ?snapshot.meta.last_log_id.as_ref().map(|l| l.index), "snapshot taken");
        Ok(snapshot)
    }
}
