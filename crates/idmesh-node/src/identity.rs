//! Which node a data dir belongs to. Recorded on first start; checked on every later start, so a
//! data dir is never silently used by another node, site or trust domain.

use crate::NodeConfig;
use idmesh_raft::keys::IDENTITY;
use idmesh_store::{KeyRange, Order, Store, WriteBatch};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Identity {
    trust_domain: String,
    site: String,
    node_id: u64,
}

/// Records the identity in a fresh store, or checks the one recorded. Returns a reason on
/// mismatch or when a non-empty store has no identity (it was not written by idmesh).
pub(crate) fn check_or_record(store: &dyn Store, config: &NodeConfig) -> Result<(), String> {
    let want = Identity {
        trust_domain: config.trust_domain.to_string(),
        site: config.site.to_string(),
        node_id: config.node_id.0,
    };
    match store.get(IDENTITY).map_err(|e| e.to_string())? {
        Some(bytes) => {
            let have: Identity = serde_json::from_slice(&bytes)
                .map_err(|e| format!("the recorded node identity is corrupt ({e})"))?;
            if have != want {
                return Err(format!(
                    "it belongs to node {} of site {} in trust domain {}, but this node is configured as node {} of site {} in {}; start that node with its own data dir",
                    have.node_id, have.site, have.trust_domain, want.node_id, want.site, want.trust_domain
                ));
            }
            Ok(())
        }
        None => {
            let any = store.scan(&KeyRange::all(), Order::Ascending, 1).map_err(|e| e.to_string())?;
            if !any.is_empty() {
                return Err(
                    "it holds data but no node identity; it was not written by this version of idmesh".into(),
                );
            }
            let bytes = serde_json::to_vec(&want).map_err(|e| e.to_string())?;
            let mut batch = WriteBatch::new();
            batch.put(IDENTITY, bytes);
            store.write(batch).map_err(|e| e.to_string())?;
            store.flush().map_err(|e| e.to_string())
        }
    }
}
