//! Which air-gap bundles were imported, replicated like everything else: a bundle imported at
//! any node of any site is known as imported everywhere its changes went, so importing it again
//! is refused instead of silently repeated.
//!
//! Entry name `"@bundle.<id>"` (never an agent name: agent names have no `'@'`): the origin site
//! and the import time. Concurrent imports of one bundle keep one value of each (harmless).

use super::edit::Actor;
use super::shard::{CrdtError, Shard, ShardId, doc_err, shard_of_key};
use automerge::transaction::Transactable as _;
use automerge::{ActorId, ROOT, ReadDoc as _, ScalarValue};
use idmesh_types::UnixMillis;

const PREFIX: &str = "@bundle.";

/// The shard holding the import record of bundle `id`.
pub fn shard_of_bundle(id: &str) -> ShardId {
    shard_of_key(&format!("{PREFIX}{id}"))
}

/// When and where a bundle was first imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRecord {
    /// The site that exported it.
    pub origin_site: String,
    /// When it was imported, unix ms.
    pub imported_at: UnixMillis,
}

impl Shard {
    /// The import record of bundle `id`, if it was imported.
    pub fn bundle_import(&self, id: &str) -> Option<ImportRecord> {
        let read = |field: &str| self.doc.get(ROOT, format!("{PREFIX}{id}/{field}")).ok().flatten();
        let origin_site = match read("site")?.0.into_scalar().ok()? {
            ScalarValue::Str(s) => s.to_string(),
            _ => return None,
        };
        let imported_at = read("at")
            .and_then(|(v, _)| v.into_scalar().ok())
            .and_then(|v| v.as_i64())
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(0);
        Some(ImportRecord { origin_site, imported_at: UnixMillis(imported_at) })
    }

    /// Records, as `actor`, that bundle `id` from `origin_site` was imported at `at`; returns
    /// the change.
    pub fn record_bundle_import(
        &mut self,
        actor: &Actor,
        at: UnixMillis,
        id: &str,
        origin_site: &str,
    ) -> Result<Option<Vec<u8>>, CrdtError> {
        let at_ms = i64::try_from(at.0).unwrap_or(i64::MAX);
        self.doc.set_actor(ActorId::from(actor.0));
        self.doc.put(ROOT, format!("{PREFIX}{id}/site"), origin_site).map_err(doc_err)?;
        self.doc.put(ROOT, format!("{PREFIX}{id}/at"), at_ms).map_err(doc_err)?;
        self.commit_change(at)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_import_record_replicates() {
        let mut shard = Shard::new();
        assert_eq!(shard.bundle_import("ab12"), None);
        let change = shard
            .record_bundle_import(&Actor::derive("west", 1, 1, 0), UnixMillis(9_000), "ab12", "east")
            .unwrap()
            .unwrap();
        let mut replica = Shard::new();
        replica.apply(&[change]).unwrap();
        let record = ImportRecord { origin_site: "east".into(), imported_at: UnixMillis(9_000) };
        assert_eq!(replica.bundle_import("ab12"), Some(record));
        assert_eq!(replica.bundle_import("ab13"), None);
    }
}
