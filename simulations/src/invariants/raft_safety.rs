//! Raft safety inside each site: at most one leader per term (election safety), and an entry
//! once applied is never applied as a different entry (state-machine safety: committed entries
//! never change). Protects every site-local guarantee — a second leader or a rewritten entry
//! could acknowledge a write and then lose it.

use super::Violation;
use openraft::ServerState;
use std::collections::BTreeMap;

/// What has been seen of each site's terms and applied entries.
#[derive(Debug, Default)]
pub struct RaftSafety {
    leaders: BTreeMap<(String, u64), u64>,
    applied: BTreeMap<(String, u64), String>,
}

impl RaftSafety {
    /// Checks one node's metrics against everything seen before.
    pub fn observe(
        &mut self,
        site: &str,
        host: &str,
        metrics: &openraft::RaftMetrics<idmesh_raft::TypeConfig>,
        now_ms: u64,
    ) -> Vec<Violation> {
        let mut out = Vec::new();
        if metrics.state == ServerState::Leader {
            let (term, id) = (metrics.current_term, metrics.id);
            if let Some(other) = self.leaders.insert((site.to_owned(), term), id)
                && other != id
            {
                out.push(Violation::new(
                    "raft_safety",
                    format!("site {site}: nodes {other} and {id} both led term {term} (seen at {now_ms} ms)"),
                ));
            }
        }
        if let Some(applied) = &metrics.last_applied {
            let shown = applied.to_string();
            if let Some(before) = self.applied.insert((site.to_owned(), applied.index()), shown.clone())
                && before != shown
            {
                out.push(Violation::new(
                    "raft_safety",
                    format!(
                        "site {site}: entry {} was applied as {before}, then as {shown} at {host} ({now_ms} ms)",
                        applied.index()
                    ),
                ));
            }
        }
        out
    }
}

/// Most log entries read per node.
const LOG_ENTRIES_MAX: usize = 100_000;

/// After the run: inside each site, any two nodes hold the same entry at every index both still
/// have and both know to be committed (log matching over the committed prefix, read from each
/// node's disk).
pub fn check_logs(world: &crate::world::World) -> Vec<Violation> {
    use idmesh_raft::keys::{COMMITTED, LOG, log_index};
    use idmesh_store::{KeyRange, Order, Store as _};
    use sha2::{Digest as _, Sha256};
    let stores = crate::world::lock(&world.stores).clone();
    let mut out = Vec::new();
    for site in &world.plan.sites {
        let mut logs: Vec<(String, BTreeMap<u64, Vec<u8>>)> = Vec::new();
        for host in site.hosts() {
            let Some(store) = stores.get(&host) else { continue };
            let committed = store
                .get(COMMITTED)
                .ok()
                .flatten()
                .and_then(|bytes| serde_json::from_slice::<idmesh_raft::LogId>(&bytes).ok())
                .map_or(0, |id| id.index());
            let entries =
                store.scan(&KeyRange::prefix(LOG), Order::Ascending, LOG_ENTRIES_MAX).unwrap_or_default();
            let digests = entries
                .iter()
                .filter_map(|(key, value)| log_index(key).map(|i| (i, value)))
                .filter(|(index, _)| *index <= committed)
                .map(|(index, value)| (index, Sha256::digest(value).to_vec()))
                .collect();
            logs.push((host, digests));
        }
        for (i, (host_a, a)) in logs.iter().enumerate() {
            for (host_b, b) in &logs[i + 1..] {
                let differing =
                    a.iter().find(|(index, digest)| b.get(index).is_some_and(|other| other != *digest));
                if let Some((index, _)) = differing {
                    out.push(Violation::new(
                        "raft_safety",
                        format!(
                            "site {}: committed entry {index} differs between {host_a} and {host_b}",
                            site.name
                        ),
                    ));
                }
            }
        }
    }
    out
}
