//! The site as seen by one node: members, leader, term, log progress.

use crate::Node;
use idmesh_proto::v1::{Member, NodeRole, SiteStatus};
use openraft::ServerState;

impl Node {
    /// This node's view of its site.
    pub fn site_status(&self) -> SiteStatus {
        let metrics = self.metrics();
        let membership = metrics.membership_config.clone();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, info)| Member {
                node_id: *id,
                peer_addr: info.peer_addr.clone(),
                voter: voters.contains(id),
                matched_index: metrics
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(id))
                    .map(|matched| matched.as_ref().map_or(0, |l| l.index)),
            })
            .collect();
        let role = match metrics.state {
            ServerState::Leader => NodeRole::Leader,
            ServerState::Follower => NodeRole::Follower,
            ServerState::Candidate => NodeRole::Candidate,
            ServerState::Learner => NodeRole::Learner,
            ServerState::Shutdown => NodeRole::Shutdown,
        };
        let index = |id: &Option<idmesh_raft::LogId>| id.as_ref().map_or(0, |l| l.index);
        SiteStatus {
            trust_domain: self.config().trust_domain.to_string(),
            site: self.config().site.to_string(),
            node_id: self.config().node_id.0,
            role: role as i32,
            leader_id: metrics.current_leader.unwrap_or(0),
            term: metrics.current_term,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            commit_index: index(&metrics.cluster_committed),
            applied_index: index(&metrics.last_applied),
            snapshot_index: index(&metrics.snapshot),
            purged_index: index(&metrics.purged),
            members,
            joint: membership.membership().get_joint_config().len() > 1,
            agent_count: self.shared().read().state.registry.len() as u64,
        }
    }
}
