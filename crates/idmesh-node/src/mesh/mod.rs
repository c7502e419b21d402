//! Cross-site replication seen from a node: the links it dials, the sessions it serves, and
//! what it knows of every other site (link state, last sync, sync age).

mod link;
mod service;
pub mod session;

pub use link::run_link;
pub use service::MeshSyncService;

use idmesh_state::crdt::ChangeHash;
use idmesh_types::UnixMillis;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// State of the link to one remote site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// A sync session is open.
    Connected,
    /// Dialling.
    Connecting,
    /// The last attempt failed; waiting to retry.
    Down,
}

/// What this node knows of one other site.
#[derive(Debug, Clone)]
pub struct RemoteSite {
    /// The site.
    pub site: String,
    /// Link state.
    pub state: LinkState,
    /// The address this node dials (empty when the other side dialled in).
    pub peer_addr: String,
    /// When a session last found both sides holding the same changes.
    pub last_sync: Option<UnixMillis>,
    /// Shards on which the sides are not known to agree yet.
    pub shards_pending: u32,
    /// Changes received from the site (chunks proposed to this site's log).
    pub changes_received: u64,
    /// Sync messages sent.
    pub messages_sent: u64,
    /// The last error, if the last session ended with one.
    pub last_error: String,
    /// Sessions that got past the hello.
    pub sessions_opened: u64,
    /// Per shard, the heads the site was last known to have (from sync sessions; in memory
    /// only). Bundles made for the site leave out what it has.
    pub known_heads: Vec<Option<Vec<ChangeHash>>>,
    /// The audit records the site was last known to hold, per chain (from audit exchanges
    /// over the link; in memory only). Bundles made for the site leave those out.
    pub audit_held: std::collections::BTreeMap<idmesh_audit::RecordOrigin, u64>,
}

/// Every remote site this node has heard of, by name.
#[derive(Debug, Default)]
pub struct MeshState {
    sites: Mutex<BTreeMap<String, RemoteSite>>,
}

impl MeshState {
    /// Updates (or creates) the entry of `site`.
    pub fn update(&self, site: &str, f: impl FnOnce(&mut RemoteSite)) {
        let mut sites = self.sites.lock().unwrap_or_else(|p| p.into_inner());
        let entry = sites.entry(site.to_owned()).or_insert_with(|| RemoteSite {
            site: site.to_owned(),
            state: LinkState::Connecting,
            peer_addr: String::new(),
            last_sync: None,
            shards_pending: 0,
            changes_received: 0,
            messages_sent: 0,
            last_error: String::new(),
            sessions_opened: 0,
            known_heads: Vec::new(),
            audit_held: std::collections::BTreeMap::new(),
        });
        f(entry);
    }

    /// A copy of every entry, by site name.
    pub fn sites(&self) -> Vec<RemoteSite> {
        self.sites.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// Per known site: its link state and when it last synced fully (cheap: no heads copied).
    pub fn sync_summary(&self) -> Vec<(String, LinkState, Option<UnixMillis>)> {
        let sites = self.sites.lock().unwrap_or_else(|p| p.into_inner());
        sites.values().map(|s| (s.site.clone(), s.state, s.last_sync)).collect()
    }

    /// Sessions opened with `site` so far.
    pub fn sessions_opened(&self, site: &str) -> u64 {
        let sites = self.sites.lock().unwrap_or_else(|p| p.into_inner());
        sites.get(site).map_or(0, |s| s.sessions_opened)
    }

    /// The heads `site` was last known to hold in each shard (`None` where unknown).
    pub fn known_heads(&self, site: &str) -> Vec<Option<Vec<ChangeHash>>> {
        let sites = self.sites.lock().unwrap_or_else(|p| p.into_inner());
        sites.get(site).map(|s| s.known_heads.clone()).unwrap_or_default()
    }

    /// Seconds since this node last synced fully with `site`, if ever (for policy decisions).
    pub fn sync_age_secs(&self, site: &str, now: UnixMillis) -> Option<u64> {
        let sites = self.sites.lock().unwrap_or_else(|p| p.into_inner());
        sites.get(site).and_then(|s| s.last_sync).map(|at| now.0.saturating_sub(at.0) / 1000)
    }
}
