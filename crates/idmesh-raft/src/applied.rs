//! The applied state of a node, shared between the state machine (its only writer) and the
//! services that read it; and the CRDT shard documents behind the registry.

use crate::codec::{decode, store_err};
use crate::keys::{self, SM_AGENT, SM_APPLIED, SM_KEYS, SM_MEMBERSHIP, SM_TRUST};
use crate::{LogId, StoredMembership};
use idmesh_state::crdt::{SHARD_COUNT, Shard, ShardId, TrustBundle};
use idmesh_state::{Agent, Registry, SiteKeys, SiteState};
use idmesh_store::{KeyRange, Order, Store};
use idmesh_types::TrustDomain;
use std::io;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// One shard: the document as applied, and, on a leader, a working copy that also holds the
/// leader's own changes that are proposed but not applied yet.
#[derive(Debug, Default)]
pub struct ShardSlot {
    /// The document as every applied entry made it.
    pub applied: Shard,
    /// The leader's working copy (absent on followers, dropped when leadership changes).
    pub working: Option<Shard>,
    /// Changes stored one by one since the document was last saved whole (see `compact`).
    pub unsaved: usize,
}

/// What a node has applied.
#[derive(Debug)]
pub struct AppliedState {
    /// The materialized agents and the signing keys.
    pub state: SiteState,
    /// The registry documents, one per shard.
    pub shards: Vec<ShardSlot>,
    /// Who owns the working copies: `(term, epoch)` of the leader that made them.
    pub working_owner: Option<(u64, u64)>,
    /// The last log entry applied.
    pub last_applied: Option<LogId>,
    /// The last membership applied.
    pub membership: StoredMembership,
}

impl AppliedState {
    /// The slot of `shard`.
    pub fn slot(&mut self, shard: ShardId) -> io::Result<&mut ShardSlot> {
        self.shards
            .get_mut(usize::from(shard.0))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("no shard {}", shard.0)))
    }

    /// Re-reads `names` from their shard into the registry; returns the agents that exist.
    pub fn rematerialize(&mut self, shard: ShardId, names: impl IntoIterator<Item = String>) -> Vec<Agent> {
        let trust_domain = self.state.registry.trust_domain().clone();
        let mut agents = Vec::new();
        if let Some(slot) = self.shards.get(usize::from(shard.0)) {
            for name in names {
                if let Some(agent) = slot.applied.agent(&trust_domain, &name) {
                    agents.push(agent);
                }
            }
        }
        for agent in &agents {
            self.state.registry.put_materialized(agent.clone());
        }
        agents
    }
}

/// The applied state behind a lock.
#[derive(Debug, Clone)]
pub struct SharedState(Arc<RwLock<AppliedState>>);

impl SharedState {
    pub(crate) fn new(state: AppliedState) -> Self {
        Self(Arc::new(RwLock::new(state)))
    }

    /// Read access. Readers hold it briefly: the state machine waits for them to apply.
    pub fn read(&self) -> RwLockReadGuard<'_, AppliedState> {
        // Poisoning cannot leave whole-agent data half written: every change is computed before
        // it is stored in the registry, so a poisoned lock still guards consistent agents.
        self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, AppliedState> {
        self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the working copy of `shard` owned by leader `(term, epoch)`: made from the
    /// applied document on first use; every working copy of another owner is dropped first.
    pub fn with_working<T>(
        &self,
        owner: (u64, u64),
        shard: ShardId,
        f: impl FnOnce(&mut Shard) -> T,
    ) -> io::Result<T> {
        let mut state = self.write();
        if state.working_owner != Some(owner) {
            for slot in &mut state.shards {
                slot.working = None;
            }
            state.working_owner = Some(owner);
        }
        let slot = state.slot(shard)?;
        let working = match &mut slot.working {
            Some(working) => working,
            None => {
                let fork = slot.applied.fork();
                slot.working.insert(fork)
            }
        };
        Ok(f(working))
    }

    /// Runs `f` on the applied document of `shard` (for the sync protocol, which reads it and
    /// records what the peer knows; changes never enter it this way).
    pub fn with_applied<T>(&self, shard: ShardId, f: impl FnOnce(&mut Shard) -> T) -> io::Result<T> {
        let mut state = self.write();
        Ok(f(&mut state.slot(shard)?.applied))
    }

    /// The canonical hash of every change applied here (see `idmesh_state::crdt::state_hash`).
    pub fn state_hash(&self) -> String {
        let mut state = self.write();
        idmesh_state::crdt::state_hash(state.shards.iter_mut().map(|slot| &mut slot.applied))
    }

    /// Up to `limit` conflicts recorded in the applied documents, and whether there were more.
    pub fn conflicts(&self, limit: usize) -> (Vec<idmesh_state::crdt::Conflict>, bool) {
        let state = self.read();
        let mut out = Vec::new();
        for slot in &state.shards {
            let policies =
                slot.applied.policy_ids().into_iter().flat_map(|id| slot.applied.policy_conflicts(&id));
            let names = slot.applied.names();
            let issuers = names
                .iter()
                .filter(|name| name.starts_with(idmesh_state::crdt::ISSUER_NAME_PREFIX))
                .flat_map(|name| slot.applied.issuer_conflicts(name));
            let agents = names.iter().flat_map(|name| slot.applied.conflicts(name));
            for conflict in policies.chain(issuers).chain(agents) {
                if out.len() == limit {
                    return (out, true);
                }
                out.push(conflict);
            }
        }
        (out, false)
    }

    /// Drops every working copy (a proposal failed, or this node stopped leading).
    pub fn drop_working(&self) {
        let mut state = self.write();
        for slot in &mut state.shards {
            slot.working = None;
        }
        state.working_owner = None;
    }
}

/// Loads the applied state from `store`: identity pointers, registry, keys, and every shard
/// (saved document plus the changes applied after it, in order).
pub(crate) fn load(store: &dyn Store, trust_domain: TrustDomain) -> io::Result<AppliedState> {
    let get = |key: &[u8]| store.get(key).map_err(store_err);
    let last_applied: Option<LogId> = match get(SM_APPLIED)? {
        Some(bytes) => decode("applied log id", &bytes)?,
        None => None,
    };
    let membership: StoredMembership = match get(SM_MEMBERSHIP)? {
        Some(bytes) => decode("membership", &bytes)?,
        None => StoredMembership::default(),
    };
    let pairs = store.scan(&KeyRange::prefix(SM_AGENT), Order::Ascending, usize::MAX).map_err(store_err)?;
    let agents =
        pairs.iter().map(|(_, bytes)| decode::<Agent>("agent", bytes)).collect::<Result<Vec<_>, _>>()?;
    let registry = Registry::restore(trust_domain, agents)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let signing_keys: SiteKeys = match get(SM_KEYS)?.map(zeroize::Zeroizing::new) {
        Some(bytes) => decode("signing keys", &bytes)?,
        None => SiteKeys::default(),
    };
    let join_tokens: idmesh_state::JoinTokens = match get(keys::SM_JOIN)? {
        Some(bytes) => decode("join tokens", &bytes)?,
        None => Default::default(),
    };
    let mut members_ever: std::collections::BTreeSet<u64> = match get(keys::SM_MEMBERS_EVER)? {
        Some(bytes) => decode("members ever", &bytes)?,
        None => Default::default(),
    };
    members_ever.extend(membership.membership().nodes().map(|(id, _)| *id));
    let trust: TrustBundle = match get(SM_TRUST)? {
        Some(bytes) => decode("trust bundle", &bytes)?,
        None => TrustBundle::default(),
    };
    let mut shards = Vec::with_capacity(usize::from(SHARD_COUNT));
    let mut changes_loaded = 0usize;
    for shard in 0..SHARD_COUNT {
        let mut applied = match get(&keys::crdt_doc_key(shard))? {
            Some(bytes) => Shard::load(&bytes).map_err(|e| corrupt(shard, &e.to_string()))?,
            None => Shard::new(),
        };
        let changes: Vec<Vec<u8>> = store
            .scan(&KeyRange::prefix(&keys::crdt_changes_prefix(shard)), Order::Ascending, usize::MAX)
            .map_err(store_err)?
            .into_iter()
            .map(|(_, bytes)| bytes)
            .collect();
        changes_loaded += changes.len();
        applied.apply_chunks(&changes).map_err(|e| corrupt(shard, &e.to_string()))?;
        shards.push(ShardSlot { applied, working: None, unsaved: changes.len() });
    }
    tracing::info!(
        agents = registry.len(),
        signing_keys = signing_keys.all().len(),
        crdt_changes = changes_loaded,
        last_applied = ?last_applied.as_ref().map(|l| l.index),
        "state machine loaded"
    );
    let mut site = SiteState {
        registry,
        keys: signing_keys,
        trust,
        policies: Arc::new(idmesh_state::crdt::materialize_policies(shards.iter().map(|s| &s.applied))),
        delegations: Default::default(),
        issuers: Default::default(),
        revoked_tokens: Default::default(),
        join_tokens,
        members_ever,
    };
    idmesh_state::crdt::materialize_grants(shards.iter().map(|s| &s.applied), &mut site);
    Ok(AppliedState { state: site, shards, working_owner: None, last_applied, membership })
}

fn corrupt(shard: u16, detail: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("stored registry shard {shard} is corrupt: {detail}"))
}
