//! Write batches: the unit of atomic change.

use std::collections::BTreeMap;

use crate::{KeyRange, StoreError};

/// One operation of a [`WriteBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOp {
    /// Store `value` under `key`, replacing any previous value.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The new value.
        value: Vec<u8>,
    },
    /// Remove `key` if present.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// Remove every key in `range` present when the batch is applied: those stored before the
    /// batch and those put by earlier operations of the same batch. Adapters expand it into
    /// single deletes inside the same atomic application.
    DeleteRange {
        /// The keys to remove.
        range: KeyRange,
    },
}

/// An ordered list of operations that [`Store::write`](crate::Store::write) applies atomically:
/// all of them or none, also across a crash.
///
/// Operations apply in the order they were added, so later ones win: put then delete of the
/// same key leaves it absent; delete then put leaves it present with the put value. An empty
/// batch is valid and changes nothing.
///
/// ```
/// # use idmesh_store::{KeyRange, WriteBatch};
/// let mut batch = WriteBatch::new();
/// batch.put(b"a/1".to_vec(), b"one".to_vec()).delete(b"a/2".to_vec());
/// batch.delete_range(KeyRange::prefix(b"tmp/"));
/// assert_eq!(batch.len(), 3);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<WriteOp>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put of `value` under `key`.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> &mut Self {
        self.push(WriteOp::Put { key: key.into(), value: value.into() })
    }

    /// Adds a delete of `key`.
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) -> &mut Self {
        self.push(WriteOp::Delete { key: key.into() })
    }

    /// Adds a delete of every key in `range` present when this operation is reached.
    pub fn delete_range(&mut self, range: KeyRange) -> &mut Self {
        self.push(WriteOp::DeleteRange { range })
    }

    /// Adds `op`.
    pub fn push(&mut self, op: WriteOp) -> &mut Self {
        self.ops.push(op);
        self
    }

    /// Whether the batch has no operations.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The number of operations (a delete-range counts as one).
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// The operations, in application order.
    pub fn ops(&self) -> &[WriteOp] {
        &self.ops
    }

    /// The operations, in application order.
    pub fn into_ops(self) -> Vec<WriteOp> {
        self.ops
    }
}

impl From<Vec<WriteOp>> for WriteBatch {
    fn from(ops: Vec<WriteOp>) -> Self {
        Self { ops }
    }
}

impl FromIterator<WriteOp> for WriteBatch {
    fn from_iter<I: IntoIterator<Item = WriteOp>>(iter: I) -> Self {
        Self { ops: iter.into_iter().collect() }
    }
}

impl Extend<WriteOp> for WriteBatch {
    fn extend<I: IntoIterator<Item = WriteOp>>(&mut self, iter: I) {
        self.ops.extend(iter);
    }
}

impl IntoIterator for WriteBatch {
    type Item = WriteOp;
    type IntoIter = std::vec::IntoIter<WriteOp>;

    fn into_iter(self) -> Self::IntoIter {
        self.ops.into_iter()
    }
}

/// The net effect of a batch: for every key it touches, `Some(value)` to store or `None` to
/// remove. Applying these effects in any order equals applying the batch's operations in order.
pub(crate) type Effects = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Resolves `batch` into its net [`Effects`]. `stored_keys_in` lists the keys stored *before*
/// the batch that lie in a range; the caller must keep the store from changing between this
/// call and applying the effects (hold its write lock), so that a delete-range removes exactly
/// the keys present at write time.
pub(crate) fn resolve_effects<F>(batch: WriteBatch, mut stored_keys_in: F) -> Result<Effects, StoreError>
where
    F: FnMut(&KeyRange) -> Result<Vec<Vec<u8>>, StoreError>,
{
    let mut effects = Effects::new();
    for op in batch {
        match op {
            WriteOp::Put { key, value } => {
                effects.insert(key, Some(value));
            }
            WriteOp::Delete { key } => {
                effects.insert(key, None);
            }
            WriteOp::DeleteRange { range } => {
                if range.is_empty() {
                    continue;
                }
                for (_, effect) in effects.range_mut::<[u8], _>(range.as_slice_bounds()) {
                    *effect = None;
                }
                for key in stored_keys_in(&range)? {
                    effects.insert(key, None);
                }
            }
        }
    }
    Ok(effects)
}
