//! The validated configuration of a node.

use idmesh_types::{InvalidField, NodeId, SiteName, TrustDomain};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything a node needs to start. Built and checked by the binary from flags and TOML.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's id within its site.
    pub node_id: NodeId,
    /// The site this node belongs to.
    pub site: SiteName,
    /// The deployment's trust domain.
    pub trust_domain: TrustDomain,
    /// Where the node keeps its store.
    pub data_dir: PathBuf,
    /// Public gRPC listener.
    pub listen: SocketAddr,
    /// Peer (node-to-node) gRPC listener.
    pub peer_listen: SocketAddr,
    /// Peer addresses of the site's initial members, by node id. Empty for a node that will be
    /// added later with `site add-node`.
    pub site_peers: BTreeMap<NodeId, String>,
    /// Raft timing and log retention.
    pub raft: RaftTiming,
}

/// Timing of the site's Raft group and retention of its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftTiming {
    /// Interval between leader heartbeats.
    pub heartbeat_interval_ms: u64,
    /// Lower bound of the randomized election timeout.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomized election timeout.
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many log entries since the last one.
    pub snapshot_every_logs: u64,
    /// Log entries kept behind the last snapshot (for followers that lag a little).
    pub logs_kept_after_snapshot: u64,
    /// Deadline for sending or installing one whole snapshot; sized for large state.
    pub snapshot_timeout_ms: u64,
    /// How long a write may wait for commit before the client is told UNAVAILABLE.
    pub write_timeout_ms: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 150,
            election_timeout_min_ms: 750,
            election_timeout_max_ms: 1500,
            snapshot_every_logs: 10_000,
            logs_kept_after_snapshot: 1_000,
            snapshot_timeout_ms: 120_000,
            write_timeout_ms: 10_000,
        }
    }
}

impl NodeConfig {
    /// Checks the rules that involve several keys.
    pub fn validate(&self) -> Result<(), InvalidField> {
        if !self.site_peers.is_empty() && !self.site_peers.contains_key(&self.node_id) {
            return Err(InvalidField::new(
                "site_peers",
                format!(
                    "must include this node ({}) when given; a node joining later starts with no site_peers and is added with `idmesh site add-node`",
                    self.node_id
                ),
            ));
        }
        if self.listen == self.peer_listen {
            return Err(InvalidField::new(
                "peer_listen",
                "must differ from listen (public and peer traffic use separate listeners)",
            ));
        }
        let t = &self.raft;
        if t.heartbeat_interval_ms == 0 || t.election_timeout_min_ms <= t.heartbeat_interval_ms * 2 {
            return Err(InvalidField::new(
                "election_timeout_min_ms",
                "must be more than twice heartbeat_interval_ms (and heartbeat_interval_ms at least 1)",
            ));
        }
        if t.election_timeout_max_ms <= t.election_timeout_min_ms {
            return Err(InvalidField::new(
                "election_timeout_max_ms",
                "must be greater than election_timeout_min_ms",
            ));
        }
        if t.snapshot_every_logs == 0 {
            return Err(InvalidField::new("snapshot_every_logs", "must be at least 1"));
        }
        if t.write_timeout_ms < t.election_timeout_max_ms {
            return Err(InvalidField::new("write_timeout_ms", "must be at least election_timeout_max_ms"));
        }
        Ok(())
    }

    /// The openraft configuration for these settings.
    pub fn openraft_config(&self) -> Result<openraft::Config, InvalidField> {
        let t = &self.raft;
        let config = openraft::Config {
            cluster_name: format!("{}/{}", self.trust_domain, self.site),
            heartbeat_interval: t.heartbeat_interval_ms,
            election_timeout_min: t.election_timeout_min_ms,
            election_timeout_max: t.election_timeout_max_ms,
            install_snapshot_timeout: t.snapshot_timeout_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(t.snapshot_every_logs),
            max_in_snapshot_log_to_keep: t.logs_kept_after_snapshot,
            enable_pre_vote: Some(true),
            ..Default::default()
        };
        config.validate().map_err(|e| InvalidField::new("raft", e.to_string()))
    }
}
