//! Storage for idmesh: one small trait, [`Store`], and the adapters behind it.
//!
//! A `Store` is an ordered map from byte keys to byte values with two promises:
//!
//! - **Atomic batches.** [`Store::write`] applies every operation of a [`WriteBatch`] or none of
//!   them, also across a crash. Writes are visible to reads as soon as `write` returns.
//! - **An explicit durability point.** A write is *durable* only after a later [`Store::flush`]
//!   has returned. Nothing may be acknowledged to a client before the flush that covers it.
//!   Callers group many writes under one flush (group commit).
//!
//! Callers give keys a prefix per keyspace (see [`KeyRange::prefix`]). Adapters:
//! [`SledStore`] (on disk, sled 0.34) and [`MemStore`] (in memory, models durability honestly:
//! what was flushed survives [`MemStore::crash`], what was not is lost).

mod batch;
mod error;
mod mem;
mod range;
pub mod sealed;
mod sled_store;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use batch::{WriteBatch, WriteOp};
pub use error::StoreError;
pub use mem::MemStore;
pub use range::{KeyRange, Order};
pub use sealed::{Kek, SealedStore};
pub use sled_store::{SledMode, SledOptions, SledStore};

/// One key-value pair as returned by [`Store::scan`].
pub type Pair = (Vec<u8>, Vec<u8>);

/// An ordered key-value store with atomic batches and an explicit durability point.
///
/// Implementations are shared between threads (`Arc<dyn Store>`); every method takes `&self`.
/// Methods block on IO: call them from a blocking context (or accept the short stall of an
/// in-memory operation on an async worker).
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// The value stored under `key`, if any.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// At most `limit` pairs whose keys fall in `range`, in key order (`Order::Ascending`) or
    /// reverse key order (`Order::Descending`).
    fn scan(&self, range: &KeyRange, order: Order, limit: usize) -> Result<Vec<Pair>, StoreError>;

    /// Applies every operation of `batch`, in order, atomically. Visible to reads on return;
    /// durable only once a later [`Store::flush`] returns.
    fn write(&self, batch: WriteBatch) -> Result<(), StoreError>;

    /// Makes every write that returned before this call durable.
    fn flush(&self) -> Result<(), StoreError>;

    /// Whether this store lives in memory, so that its calls (flush included) return at once
    /// and may run on an async worker instead of a thread of their own. Disk stores answer
    /// false (the default). A simulation relies on this: with no thread of its own, a node's
    /// every step happens on the simulation's thread, in a reproducible order.
    fn is_in_memory(&self) -> bool {
        false
    }

    /// Bytes the store occupies on disk (0 for an in-memory store).
    fn size_on_disk(&self) -> Result<u64, StoreError>;
}
