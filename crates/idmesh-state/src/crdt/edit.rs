//! Turning one applied command into one automerge change.
//!
//! The leader evaluates a command against its materialized view (see `Registry::evaluate`),
//! which gives the agent before and after. [`Shard::record`] writes the difference as a change
//! under an explicit actor and time; the change's bytes then travel in the log.

use super::keys::{self, field, sub};
use super::shard::{CrdtError, Shard, doc_err};
use crate::{Agent, AgentStatus};
use automerge::transaction::Transactable as _;
use automerge::{ActorId, ROOT, ScalarValue};
use idmesh_types::UnixMillis;
use std::fmt;

/// The author of changes: unique per (site, node, term) or per node incarnation, so that a
/// change lost in a crash can never be confused with a new one of the same sequence number.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Actor(pub(super) [u8; 16]);

impl Actor {
    /// An actor from 16 bytes chosen by the caller.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The actor of node `node` of `site` while it leads in `term`, in its `epoch`th working
    /// session of that term (a new one after every proposal whose outcome is unknown).
    pub fn derive(site: &str, node: u64, term: u64, epoch: u64) -> Self {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        hasher.update(b"idmesh-actor-v1\0");
        hasher.update((site.len() as u64).to_be_bytes());
        hasher.update(site.as_bytes());
        hasher.update(node.to_be_bytes());
        hasher.update(term.to_be_bytes());
        hasher.update(epoch.to_be_bytes());
        let digest = hasher.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Self(bytes)
    }

    /// The bytes, hex, as they appear in revocation keys.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Actor({})", self.hex())
    }
}

impl Shard {
    /// Records the change from `before` to `after` (one agent) made by `actor` at `at`, applies
    /// it to this shard, and returns its bytes; `None` if nothing changed.
    pub fn record(
        &mut self,
        actor: &Actor,
        at: UnixMillis,
        before: Option<&Agent>,
        after: &Agent,
    ) -> Result<Option<Vec<u8>>, CrdtError> {
        if before == Some(after) {
            return Ok(None);
        }
        let name = after.id.name().as_str();
        self.doc.set_actor(ActorId::from(actor.0));
        let doc = &mut self.doc;
        let at_ms = i64::try_from(at.0).unwrap_or(i64::MAX);
        match before {
            None => {
                doc.put(ROOT, field(name, keys::EXISTS), true).map_err(doc_err)?;
                doc.put(ROOT, field(name, keys::CREATED), after.created_at.0 as i64).map_err(doc_err)?;
                doc.put(ROOT, field(name, keys::REVISION), ScalarValue::counter(1)).map_err(doc_err)?;
            }
            Some(_) => {
                doc.increment(ROOT, field(name, keys::REVISION), 1).map_err(doc_err)?;
            }
        }
        doc.put(ROOT, field(name, keys::UPDATED), after.updated_at.0 as i64).map_err(doc_err)?;
        if before.is_none_or(|b| b.owner != after.owner) {
            doc.put(ROOT, field(name, keys::OWNER), after.owner.as_str()).map_err(doc_err)?;
        }
        // Labels: delete those gone, put those new or changed.
        if let Some(b) = before {
            for key in b.labels.keys().filter(|k| !after.labels.contains_key(*k)) {
                doc.delete(ROOT, sub(name, keys::LABEL, key)).map_err(doc_err)?;
            }
        }
        for (key, value) in &after.labels {
            if before.is_none_or(|b| b.labels.get(key) != Some(value)) {
                doc.put(ROOT, sub(name, keys::LABEL, key), value.as_str()).map_err(doc_err)?;
            }
        }
        // Credentials: add new kids; removal is a tombstone that wins over any add.
        let had = |kid: &str| before.is_some_and(|b| b.credentials.iter().any(|c| c.kid == kid));
        for credential in after.credentials.iter().filter(|c| !had(&c.kid)) {
            doc.put(ROOT, sub(name, keys::CRED, &credential.kid), credential.jwk.x()).map_err(doc_err)?;
            doc.put(ROOT, sub(name, keys::CRED_AT, &credential.kid), credential.added_at.0 as i64)
                .map_err(doc_err)?;
        }
        if let Some(b) = before {
            for gone in b.credentials.iter().filter(|c| !after.credentials.iter().any(|a| a.kid == c.kid)) {
                doc.put(ROOT, sub(name, keys::CRED_REMOVED, &gone.kid), at_ms).map_err(doc_err)?;
            }
        }
        // Status.
        let before_status = before.map(|b| b.status);
        if before_status != Some(after.status) {
            let reason = after.status_reason.clone().unwrap_or_default();
            match after.status {
                AgentStatus::Active => {
                    doc.put(ROOT, field(name, keys::SUSPENDED), false).map_err(doc_err)?;
                    if before.is_some() {
                        doc.put(ROOT, field(name, keys::REASON), "").map_err(doc_err)?;
                    }
                }
                AgentStatus::Suspended => {
                    doc.put(ROOT, field(name, keys::SUSPENDED), true).map_err(doc_err)?;
                    doc.put(ROOT, field(name, keys::REASON), reason.as_str()).map_err(doc_err)?;
                }
                AgentStatus::Revoked => {
                    let key = sub(name, keys::REVOKED, &format!("{}-{}", actor.hex(), at.0));
                    doc.put(ROOT, key, reason.as_str()).map_err(doc_err)?;
                    doc.put(ROOT, field(name, keys::REASON), reason.as_str()).map_err(doc_err)?;
                }
            }
        }
        self.commit_change(at)
    }
}
