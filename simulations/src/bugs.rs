//! Known bugs, re-introduced on purpose behind [`crate::world::Bugs`] so that a test can show
//! the simulation catches them. Never used unless a run asks for it.

use idmesh_store::{KeyRange, MemStore, Order, Pair, Store, StoreError, WriteBatch};
use std::sync::atomic::{AtomicU64, Ordering};

/// A disk whose flush returns at once and only really flushes when 500 ms have passed since
/// the last real flush: sled's default background sync, relied on instead of an explicit
/// flush. Writes acknowledged in between are lost by a crash.
#[derive(Debug)]
pub struct LyingFlush {
    /// The disk.
    pub disk: MemStore,
    /// Simulated ms of the last real flush.
    pub last_real_ms: AtomicU64,
}

/// The background sync interval of the bug.
const BACKGROUND_SYNC_MS: u64 = 500;

impl Store for LyingFlush {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.disk.get(key)
    }

    fn scan(&self, range: &KeyRange, order: Order, limit: usize) -> Result<Vec<Pair>, StoreError> {
        self.disk.scan(range, order, limit)
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.disk.write(batch)
    }

    fn flush(&self) -> Result<(), StoreError> {
        let now = crate::sim_host::sim_ms();
        if now.saturating_sub(self.last_real_ms.load(Ordering::SeqCst)) >= BACKGROUND_SYNC_MS {
            self.last_real_ms.store(now, Ordering::SeqCst);
            return self.disk.flush();
        }
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.disk.size_on_disk()
    }

    fn is_in_memory(&self) -> bool {
        true
    }
}
