//! Compaction of the stored shard documents: a shard's changes are stored one key per change as
//! they are applied (cheap to write); every so often the document is saved whole (automerge's
//! compressed form) and the changes it covers are deleted. Loading is then one saved document
//! plus the few changes after it.
//!
//! Safe against every interleaving with apply: a change written after the save but covered by
//! it is loaded twice, which changes nothing (applying a change twice is a no-op); a change not
//! covered by the save keeps its key (only keys up to the applied index at the save are deleted).

use crate::applied::SharedState;
use crate::codec::store_err;
use crate::keys;
use idmesh_state::crdt::SHARD_COUNT;
use idmesh_store::{KeyRange, Store, WriteBatch};
use std::io;

/// A shard is saved whole once this many changes are stored one by one.
pub const COMPACT_AFTER_CHANGES: usize = 256;

/// What one compaction did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Compacted {
    /// Shards saved whole.
    pub shards: usize,
    /// Stored changes they replaced.
    pub changes: usize,
}

/// Saves whole every shard with at least [`COMPACT_AFTER_CHANGES`] changes stored one by one,
/// and deletes the changes each saved document covers. Each shard is one atomic write.
pub fn compact_shards(store: &dyn Store, shared: &SharedState) -> io::Result<Compacted> {
    let mut done = Compacted::default();
    for shard in 0..SHARD_COUNT {
        let saved = {
            let mut state = shared.write();
            let applied_index = state.last_applied.map_or(0, |l| l.index);
            let slot = state.slot(idmesh_state::crdt::ShardId(shard))?;
            if slot.unsaved < COMPACT_AFTER_CHANGES {
                continue;
            }
            let changes = std::mem::take(&mut slot.unsaved);
            (slot.applied.save(), applied_index, changes)
        };
        let (bytes, applied_index, changes) = saved;
        let prefix = keys::crdt_changes_prefix(shard);
        let mut end = prefix.clone();
        end.extend_from_slice(&applied_index.saturating_add(1).to_be_bytes());
        let mut batch = WriteBatch::new();
        batch.put(keys::crdt_doc_key(shard), bytes);
        batch.delete_range(KeyRange::between(prefix, end));
        store.write(batch).map_err(store_err)?;
        done.shards += 1;
        done.changes += changes;
    }
    Ok(done)
}
