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
