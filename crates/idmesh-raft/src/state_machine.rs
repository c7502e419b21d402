//! The state machine: applies committed entries to the registry, writes the result through to
//! the store, builds and installs snapshots.

use crate::codec::{decode, encode, store_err};
use crate::keys::{self, SM_AGENT, SM_APPLIED, SM_KEYS, SM_MEMBERSHIP};
use crate::{LogId, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig, WriteOutcome};
use futures::{Stream, StreamExt};
use idmesh_state::{Agent, Applied, Registry, SiteKeys, SiteState};
use idmesh_store::{KeyRange, Order, Store, WriteBatch};
use idmesh_types::TrustDomain;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use std::io;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// What a node has applied. Services read it directly (local reads) through [`SharedState`].
#[derive(Debug, Clone)]
pub struct AppliedState {
    /// The agents and signing keys.
    pub state: SiteState,
    /// The last log entry applied.
    pub last_applied: Option<LogId>,
    /// The last membership applied.
    pub membership: StoredMembership,
}

/// The applied state, shared between the state machine (the only writer) and readers.
#[derive(Debug, Clone)]
pub struct SharedState(Arc<RwLock<AppliedState>>);

impl SharedState {
    /// Read access. Readers hold it briefly: the state machine waits for them to apply.
    pub fn read(&self) -> RwLockReadGuard<'_, AppliedState> {
        // A panic while holding the lock cannot leave the state half-applied: apply computes
        // each agent completely before inserting it, so a poisoned lock still guards whole data.
        self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, AppliedState> {
        self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The last snapshot taken or installed, kept in memory (see [`crate::SnapshotData`]).
type CurrentSnapshot = Arc<Mutex<Option<Snapshot>>>;

/// The state machine of one node.
#[derive(Debug)]
pub struct StateMachine {
    store: Arc<dyn Store>,
    shared: SharedState,
    current: CurrentSnapshot,
}

impl StateMachine {
    /// Loads the applied state from `store`.
    pub fn open(store: Arc<dyn Store>, trust_domain: TrustDomain) -> Result<Self, io::Error> {
        let read = |key: &[u8], what: &str| -> Result<Option<Vec<u8>>, io::Error> {
            let _ = what;
            store.get(key).map_err(store_err)
        };
        let last_applied: Option<LogId> = match read(SM_APPLIED, "applied")? {
            Some(bytes) => decode("applied log id", &bytes)?,
            None => None,
        };
        let membership: StoredMembership = match read(SM_MEMBERSHIP, "membership")? {
            Some(bytes) => decode("membership", &bytes)?,
            None => StoredMembership::default(),
        };
        let pairs =
            store.scan(&KeyRange::prefix(SM_AGENT), Order::Ascending, usize::MAX).map_err(store_err)?;
        let agents =
            pairs.iter().map(|(_, bytes)| decode::<Agent>("agent", bytes)).collect::<Result<Vec<_>, _>>()?;
        let registry = Registry::restore(trust_domain, agents)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        let keys: SiteKeys = match store.get(SM_KEYS).map_err(store_err)? {
            Some(bytes) => decode("signing keys", &bytes)?,
            None => SiteKeys::default(),
        };
        tracing::info!(agents = registry.len(), signing_keys = keys.all().len(), last_applied = ?last_applied.as_ref().map(|l| l.index), "state machine loaded");
        let state = AppliedState { state: SiteState { registry, keys }, last_applied, membership };
        Ok(Self { store, shared: SharedState(Arc::new(RwLock::new(state))), current: Arc::default() })
    }

    /// A handle for readers of the applied state.
    pub fn shared(&self) -> SharedState {
        self.shared.clone()
    }
}

/// Flushes `store` off the async workers.
async fn flush(store: &Arc<dyn Store>) -> Result<(), io::Error> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.flush())
        .await
        .map_err(|e| io::Error::other(format!("flush task failed: {e}")))?
        .map_err(store_err)
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
        let mut batch = WriteBatch::new();
        let mut replies = Vec::with_capacity(items.len());
        {
            let mut state = self.shared.write();
            let mut membership_changed = false;
            for (entry, responder) in items {
                let outcome = match entry.payload {
                    EntryPayload::Blank => WriteOutcome::Nothing,
                    EntryPayload::Normal(command) => match state.state.apply(&command) {
                        Ok(Applied::Agent(agent)) => {
                            batch.put(keys::agent_key(&agent.id), encode("agent", &agent)?);
                            WriteOutcome::Applied(Applied::Agent(agent))
                        }
                        Ok(applied @ Applied::SigningKey { .. }) => {
                            batch.put(SM_KEYS, encode("signing keys", &state.state.keys)?);
                            WriteOutcome::Applied(applied)
                        }
                        Err(refused) => WriteOutcome::Refused(refused),
                    },
                    EntryPayload::Membership(membership) => {
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
            }
        }
        // Not flushed here: the entries are durable in the log, and what the state machine
        // writes is recovered by re-applying them after a crash (applied id and agents are
        // written in one atomic batch, so they never disagree).
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
        let site = tokio::task::spawn_blocking(move || data.into_state(&trust_domain))
            .await
            .map_err(|e| io::Error::other(format!("snapshot decode task failed: {e}")))??;
        let mut batch = WriteBatch::new();
        batch.delete_range(KeyRange::prefix(SM_AGENT));
        for agent in site.registry.agents() {
            batch.put(keys::agent_key(&agent.id), encode("agent", agent)?);
        }
        batch.put(SM_KEYS, encode("signing keys", &site.keys)?);
        batch.put(SM_APPLIED, encode("applied log id", &meta.last_log_id)?);
        batch.put(SM_MEMBERSHIP, encode("membership", &meta.last_membership)?);
        self.store.write(batch).map_err(store_err)?;
        flush(&self.store).await?;
        let agents = site.registry.len();
        *self.shared.write() = AppliedState {
            state: site.clone(),
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        set_current(&self.current, Snapshot { meta: meta.clone(), snapshot: SnapshotData::View(site) });
        tracing::info!(agents, last_log_index = ?meta.last_log_id.as_ref().map(|l| l.index), "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(self.current.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// Takes a snapshot of the applied state at the moment it runs: a structure-sharing clone of the
/// registry, O(1), so applying never waits for it.
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
        // openraft purges the log up to the snapshot next: the state machine's own writes up to
        // `last_applied` must be durable first, so that no entry it still needs is lost.
        flush(&self.store).await?;
        let agents = site.registry.len();
        let snapshot = Snapshot { meta, snapshot: SnapshotData::View(site) };
        set_current(&self.current, snapshot.clone());
        tracing::info!(agents, last_log_index = ?snapshot.meta.last_log_id.as_ref().map(|l| l.index), "snapshot taken");
        Ok(snapshot)
    }
}
