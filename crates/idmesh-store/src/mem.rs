//! The in-memory adapter, with honest durability for tests and simulations.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::batch::resolve_effects;
use crate::{KeyRange, Order, Pair, Store, StoreError, WriteBatch};

/// An in-memory [`Store`] that models durability the way a disk does.
///
/// Rules:
/// - Reads see every write that returned (like any store).
/// - [`Store::flush`] makes every write that returned before it durable.
/// - [`MemStore::crash`] throws away every write not yet flushed: the store returns to its state
///   at the last flush, exactly what a process would find on disk after a power cut.
/// - [`MemStore::reopen`] returns a new, independent store holding only the durable state: the
///   store a restarted process would open. The old handle is not changed by it; drop it.
///
/// Clones are handles to the same store. Costs: a write costs its own size; `flush` and
/// `crash` cost the number of distinct keys written since the last flush, not the store size;
/// `reopen` copies the durable state once.
#[derive(Clone, Debug, Default)]
pub struct MemStore {
    state: Arc<RwLock<MemState>>,
}

#[derive(Debug, Default)]
struct MemState {
    /// What reads see.
    live: BTreeMap<Vec<u8>, Vec<u8>>,
    /// What survives a crash: the state at the last flush.
    durable: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Keys whose live value may differ from their durable one.
    unflushed_keys: BTreeSet<Vec<u8>>,
}

impl MemStore {
    /// An empty store (nothing written, nothing durable).
    pub fn new() -> Self {
        Self::default()
    }

    /// Simulates a crash: every write not covered by a flush is lost; the store keeps its
    /// durable state and stays usable, like a process that restarted on the same disk.
    pub fn crash(&self) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        let MemState { live, durable, unflushed_keys } = &mut *state;
        for key in std::mem::take(unflushed_keys) {
            match durable.get(&key) {
                Some(value) => live.insert(key, value.clone()),
                None => live.remove(&key),
            };
        }
    }

    /// A new store holding only this store's durable state, as a process restarting after a
    /// crash would find it. Independent of `self` from then on.
    pub fn reopen(&self) -> MemStore {
        let durable = self.state.read().unwrap_or_else(PoisonError::into_inner).durable.clone();
        let state = MemState { live: durable.clone(), durable, unflushed_keys: BTreeSet::new() };
        MemStore { state: Arc::new(RwLock::new(state)) }
    }

    /// The number of keys written or deleted since the last flush (what a crash would lose).
    pub fn unflushed_key_count(&self) -> Result<usize, StoreError> {
        Ok(self.read_state()?.unflushed_keys.len())
    }

    fn read_state(&self) -> Result<RwLockReadGuard<'_, MemState>, StoreError> {
        self.state.read().map_err(|_| poisoned())
    }

    fn write_state(&self) -> Result<RwLockWriteGuard<'_, MemState>, StoreError> {
        self.state.write().map_err(|_| poisoned())
    }
}

/// A panic while holding the lock may have left a batch half applied: reads and writes refuse
/// further use. (`crash` and `reopen` recover the lock: they only keep the durable state, which
/// only `flush` changes, and nothing in `flush` can panic.)
fn poisoned() -> StoreError {
    StoreError::Engine { detail: "MemStore lock poisoned by a panic during an earlier operation".to_owned() }
}

impl Store for MemStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.read_state()?.live.get(key).cloned())
    }

    fn scan(&self, range: &KeyRange, order: Order, limit: usize) -> Result<Vec<Pair>, StoreError> {
        if limit == 0 || range.is_empty() {
            return Ok(Vec::new());
        }
        let state = self.read_state()?;
        let pairs = state.live.range::<[u8], _>(range.as_slice_bounds());
        let clone_pair = |(key, value): (&Vec<u8>, &Vec<u8>)| (key.clone(), value.clone());
        Ok(match order {
            Order::Ascending => pairs.take(limit).map(clone_pair).collect(),
            Order::Descending => pairs.rev().take(limit).map(clone_pair).collect(),
        })
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut state = self.write_state()?;
        let MemState { live, unflushed_keys, .. } = &mut *state;
        let effects = resolve_effects(batch, |range| {
            Ok(live.range::<[u8], _>(range.as_slice_bounds()).map(|(key, _)| key.clone()).collect())
        })?;
        for (key, effect) in effects {
            match effect {
                Some(value) => live.insert(key.clone(), value),
                None => live.remove(&key),
            };
            unflushed_keys.insert(key);
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        let mut state = self.write_state()?;
        let MemState { live, durable, unflushed_keys } = &mut *state;
        for key in std::mem::take(unflushed_keys) {
            match live.get(&key) {
                Some(value) => durable.insert(key, value.clone()),
                None => durable.remove(&key),
            };
        }
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(0)
    }

    fn is_in_memory(&self) -> bool {
        true
    }
}
