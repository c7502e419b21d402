//! One shard: an automerge document holding the agents whose name hashes to it.

use super::keys;
use automerge::{AutoCommit, Change, ChangeHash, Prop, patches::PatchAction};
use idmesh_types::AgentName;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;

/// Number of shard documents. With a million agents a shard holds about 16,000.
pub const SHARD_COUNT: u16 = 64;

/// Which shard an agent lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct ShardId(pub u16);

/// The shard of `name`: the first two bytes of SHA-256 of the name, modulo [`SHARD_COUNT`].
/// Stable across versions and machines (it decides where data lives).
pub fn shard_of(name: &AgentName) -> ShardId {
    let digest = Sha256::digest(name.as_str().as_bytes());
    ShardId(u16::from_be_bytes([digest[0], digest[1]]) % SHARD_COUNT)
}

/// Why changes could not be applied or created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrdtError {
    /// Bytes that are not an automerge change.
    #[error("not a valid change: {0}")]
    Decode(String),
    /// automerge refused the operation.
    #[error("document error: {0}")]
    Document(String),
}

/// A shard document.
#[derive(Debug)]
pub struct Shard {
    pub(super) doc: AutoCommit,
}

impl Default for Shard {
    fn default() -> Self {
        Self::new()
    }
}

impl Shard {
    /// An empty shard.
    pub fn new() -> Self {
        let mut doc = AutoCommit::new();
        doc.update_diff_cursor();
        Self { doc }
    }

    /// A shard from its saved form.
    pub fn load(bytes: &[u8]) -> Result<Self, CrdtError> {
        let mut doc = AutoCommit::load(bytes).map_err(|e| CrdtError::Decode(e.to_string()))?;
        doc.update_diff_cursor();
        Ok(Self { doc })
    }

    /// A copy to work on (a leader records its own changes in one before they are applied).
    pub fn fork(&mut self) -> Shard {
        let mut doc = self.doc.fork();
        doc.update_diff_cursor();
        Shard { doc }
    }

    /// The compact saved form (whole history).
    pub fn save(&mut self) -> Vec<u8> {
        self.doc.save()
    }

    /// The heads, sorted: two shards with the same set of changes have the same heads.
    pub fn heads(&mut self) -> Vec<ChangeHash> {
        let mut heads = self.doc.get_heads();
        heads.sort();
        heads
    }

    /// Changes this shard has that a holder of `heads` lacks, as bytes.
    pub fn changes_since(&mut self, heads: &[ChangeHash]) -> Vec<Vec<u8>> {
        self.doc.get_changes(heads).into_iter().map(|c| c.raw_bytes().to_vec()).collect()
    }

    /// Applies changes (any order, duplicates harmless; a change whose dependencies are missing
    /// waits inside the document until they arrive). Returns the names of the agents whose
    /// materialized state may have changed.
    pub fn apply(&mut self, changes: &[Vec<u8>]) -> Result<BTreeSet<String>, CrdtError> {
        let decoded = changes
            .iter()
            .map(|bytes| Change::from_bytes(bytes.clone()).map_err(|e| CrdtError::Decode(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        self.doc.apply_changes(decoded).map_err(|e| CrdtError::Document(e.to_string()))?;
        Ok(self.touched())
    }

    /// Agents changed since the last call (by local edits or applied changes).
    pub(super) fn touched(&mut self) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for patch in self.doc.diff_incremental() {
            let key = match &patch.action {
                PatchAction::PutMap { key, .. } | PatchAction::DeleteMap { key } => Some(key.as_str()),
                PatchAction::Increment { prop: Prop::Map(key), .. }
                | PatchAction::Conflict { prop: Prop::Map(key) } => Some(key.as_str()),
                _ => None,
            };
            if let Some(name) = key.and_then(keys::name_of) {
                names.insert(name.to_owned());
            }
        }
        names
    }
}
