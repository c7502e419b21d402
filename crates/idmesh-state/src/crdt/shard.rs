//! One shard: an automerge document holding the agents whose name hashes to it.

use super::keys;
use automerge::transaction::CommitOptions;
use automerge::{AutoCommit, Change, ChangeHash};
use idmesh_types::{AgentName, UnixMillis};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;

/// Number of shard documents. With a million agents a shard holds about 1,000: small documents
/// keep applying one change cheap (automerge's apply walks the document's root map).
pub const SHARD_COUNT: u16 = 1024;

/// Which shard an agent lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct ShardId(pub u16);

/// The shard of `name`: the first two bytes of SHA-256 of the name, modulo [`SHARD_COUNT`].
/// Stable across versions and machines (it decides where data lives).
pub fn shard_of(name: &AgentName) -> ShardId {
    shard_of_key(name.as_str())
}

/// The shard of an entry named `key` (an agent name, or a non-agent entry such as a site's
/// trust entry): same rule as [`shard_of`].
pub(super) fn shard_of_key(key: &str) -> ShardId {
    let digest = Sha256::digest(key.as_bytes());
    ShardId(u16::from_be_bytes([digest[0], digest[1]]) % SHARD_COUNT)
}

/// automerge's refusal of an operation.
pub(super) fn doc_err(e: automerge::AutomergeError) -> CrdtError {
    CrdtError::Document(e.to_string())
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
    /// Changes received whose dependencies are missing, with the agents they touch: they apply
    /// when the dependencies arrive.
    waiting: Vec<(ChangeHash, BTreeSet<String>)>,
}

impl Default for Shard {
    fn default() -> Self {
        Self::new()
    }
}

impl Shard {
    /// An empty shard.
    pub fn new() -> Self {
        Self { doc: AutoCommit::new(), waiting: Vec::new() }
    }

    /// A shard from its saved form.
    pub fn load(bytes: &[u8]) -> Result<Self, CrdtError> {
        let doc = AutoCommit::load(bytes).map_err(|e| CrdtError::Decode(e.to_string()))?;
        Ok(Self { doc, waiting: Vec::new() })
    }

    /// A copy to work on (a leader records its own changes in one before they are applied).
    pub fn fork(&mut self) -> Shard {
        Shard { doc: self.doc.fork(), waiting: self.waiting.clone() }
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

    /// Everything this shard holds that a holder of `heads` lacks, as one compact chunk; empty
    /// when the holder lacks nothing (or the shard is empty). Heads this shard does not hold are
    /// ignored (then it may give more).
    pub fn save_after(&mut self, heads: &[ChangeHash]) -> Vec<u8> {
        let mut known: Vec<ChangeHash> =
            heads.iter().copied().filter(|h| self.doc.get_change_by_hash(h).is_some()).collect();
        known.sort();
        let ours = self.heads();
        if ours.is_empty() || known == ours {
            Vec::new()
        } else if known.is_empty() {
            self.doc.save()
        } else {
            self.doc.save_after(&known)
        }
    }

    /// Changes this shard has that a holder of `heads` lacks, as bytes.
    pub fn changes_since(&mut self, heads: &[ChangeHash]) -> Vec<Vec<u8>> {
        self.doc.get_changes(heads).into_iter().map(|c| c.raw_bytes().to_vec()).collect()
    }

    /// Applies changes (any order, duplicates harmless; a change whose dependencies are missing
    /// waits inside the document until they arrive). Returns the names of the agents whose
    /// materialized state may have changed.
    pub fn apply(&mut self, changes: &[Vec<u8>]) -> Result<BTreeSet<String>, CrdtError> {
        self.apply_filtered(changes, false)
    }

    /// Applies chunks as a peer's sync message carries them (single changes, or several changes
    /// compressed together); missing dependencies wait as for [`Shard::apply`]. Returns the
    /// agents touched by every change that entered the document.
    pub fn apply_chunks(&mut self, chunks: &[Vec<u8>]) -> Result<BTreeSet<String>, CrdtError> {
        // A chunk that is one change (what small syncs carry) is applied as a change: its
        // agents are read from it, with no walk over the document's history.
        let mut single = Vec::new();
        let mut whole = Vec::new();
        for chunk in chunks {
            match Change::from_bytes(chunk.clone()) {
                Ok(change) => single.push(change),
                Err(_) => whole.push(chunk),
            }
        }
        let mut touched = self.apply_decoded(single, false)?;
        if !whole.is_empty() {
            // Documents and compressed runs of changes: find what entered by comparing heads.
            let before = self.doc.get_heads();
            for chunk in whole {
                self.doc.load_incremental(chunk).map_err(|e| CrdtError::Decode(e.to_string()))?;
            }
            for change in self.doc.get_changes(&before) {
                touched.extend(names_in(&change));
            }
            self.settle_waiting(Vec::new(), &mut touched);
        }
        Ok(touched)
    }

    /// Commits what was written since the last commit as one change stamped `at`, and returns
    /// its bytes; `None` if nothing was written.
    pub(super) fn commit_change(&mut self, at: UnixMillis) -> Result<Option<Vec<u8>>, CrdtError> {
        let at_secs = i64::try_from(at.0 / 1000).unwrap_or(i64::MAX);
        if self.doc.commit_with(CommitOptions::default().with_time(at_secs)).is_none() {
            return Ok(None);
        }
        let change = self
            .doc
            .get_last_local_change()
            .ok_or_else(|| CrdtError::Document("no change after commit".into()))?;
        Ok(Some(change.raw_bytes().to_vec()))
    }

    /// Reports into `touched` the agents of every waiting change (and of `incoming`) that is in
    /// the document now; keeps waiting those whose dependencies are still missing.
    fn settle_waiting(
        &mut self,
        incoming: Vec<(ChangeHash, BTreeSet<String>)>,
        touched: &mut BTreeSet<String>,
    ) {
        let mut still_waiting = Vec::new();
        for (hash, names) in std::mem::take(&mut self.waiting).into_iter().chain(incoming) {
            if self.doc.get_change_by_hash(&hash).is_some() {
                touched.extend(names);
            } else {
                still_waiting.push((hash, names));
            }
        }
        self.waiting = still_waiting;
    }

    /// Like [`Shard::apply`], skipping the changes this shard holds already (a leader's working
    /// copy already holds the changes it recorded itself).
    pub fn apply_missing(&mut self, changes: &[Vec<u8>]) -> Result<BTreeSet<String>, CrdtError> {
        self.apply_filtered(changes, true)
    }

    fn apply_filtered(
        &mut self,
        changes: &[Vec<u8>],
        skip_known: bool,
    ) -> Result<BTreeSet<String>, CrdtError> {
        let decoded = changes
            .iter()
            .map(|bytes| Change::from_bytes(bytes.clone()).map_err(|e| CrdtError::Decode(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        self.apply_decoded(decoded, skip_known)
    }

    fn apply_decoded(
        &mut self,
        decoded: Vec<Change>,
        skip_known: bool,
    ) -> Result<BTreeSet<String>, CrdtError> {
        let decoded: Vec<Change> = if skip_known {
            decoded.into_iter().filter(|c| self.doc.get_change_by_hash(&c.hash()).is_none()).collect()
        } else {
            decoded
        };
        if decoded.is_empty() {
            return Ok(BTreeSet::new());
        }
        let incoming: Vec<(ChangeHash, BTreeSet<String>)> =
            decoded.iter().map(|c| (c.hash(), names_in(c))).collect();
        self.doc.apply_changes(decoded).map_err(|e| CrdtError::Document(e.to_string()))?;
        // Report every change that is in the document now, including earlier ones that were
        // waiting for these.
        let mut touched = BTreeSet::new();
        self.settle_waiting(incoming, &mut touched);
        Ok(touched)
    }
}

/// The agents a change writes to (from the keys of its operations).
fn names_in(change: &Change) -> BTreeSet<String> {
    change
        .decode()
        .operations
        .iter()
        .filter_map(|op| match &op.key {
            automerge::legacy::Key::Map(key) => keys::name_of(key).map(str::to_owned),
            automerge::legacy::Key::Seq(_) => None,
        })
        .collect()
}
