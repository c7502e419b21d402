//! Membership changes of the site: add a node (learner first, then voter) and remove one, both
//! through joint consensus on the leader.

use crate::peer::{ForwardReply, ForwardRequest};
use crate::write::unexpected;
use crate::{Node, NodeError};
use idmesh_raft::{NodeInfo, TypeConfig};
use idmesh_types::{InvalidField, NodeId};
use openraft::ChangeMembers;
use openraft::error::{ClientWriteError, RaftError};
use std::collections::BTreeSet;
use std::time::Duration;

/// Longest peer address accepted.
const PEER_ADDR_MAX_BYTES: usize = 255;

/// Checks a `host:port` peer address.
pub fn check_peer_addr(field: &str, addr: &str) -> Result<(), InvalidField> {
    let bad = |rule: &str| Err(InvalidField::new(field, format!("{rule} (got {addr:?})")));
    if addr.is_empty() || addr.len() > PEER_ADDR_MAX_BYTES {
        return bad(&format!("must be host:port, 1 to {PEER_ADDR_MAX_BYTES} bytes"));
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return bad("must be host:port");
    };
    if host.is_empty() || host.contains(['/', ' ', '@']) {
        return bad("must be host:port with a plain host name or IP");
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => bad("port must be 1 to 65535"),
    }
}

impl Node {
    /// Adds node `node_id` at `peer_addr` to the site: as a learner until it has caught up, then
    /// as a voter. Returns the log index of the final membership. Adding a node that is already
    /// a voter at the same address changes nothing.
    pub async fn add_node(&self, node_id: u64, peer_addr: String) -> Result<u64, NodeError> {
        NodeId::parse_field("node_id", node_id)?;
        check_peer_addr("peer_addr", &peer_addr)?;
        match self.on_leader(ForwardRequest::AddNode { node_id, peer_addr }, false).await? {
            ForwardReply::MembershipChanged { log_index } => Ok(log_index),
            other => Err(unexpected(&other)),
        }
    }

    /// Removes node `node_id` from the site. Returns the log index of the final membership.
    pub async fn remove_node(&self, node_id: u64) -> Result<u64, NodeError> {
        NodeId::parse_field("node_id", node_id)?;
        match self.on_leader(ForwardRequest::RemoveNode { node_id }, false).await? {
            ForwardReply::MembershipChanged { log_index } => Ok(log_index),
            other => Err(unexpected(&other)),
        }
    }

    fn membership_timeout(&self) -> Duration {
        let raft = &self.config().raft;
        Duration::from_millis(raft.snapshot_timeout_ms + raft.write_timeout_ms)
    }

    pub(crate) async fn add_node_as_leader(&self, node_id: u64, peer_addr: String) -> ForwardReply {
        if let Some(reply) = self.refuse_unless_leader_with_quorum_soon().await {
            return reply;
        }
        let membership = self.metrics().membership_config.clone();
        if let Some(existing) = membership.membership().get_node(&node_id) {
            if existing.peer_addr != peer_addr {
                return ForwardReply::Failed(NodeError::Membership {
                    detail: format!(
                        "node {node_id} is already a member at {}; remove it first, or add the new node under an unused id",
                        existing.peer_addr
                    ),
                });
            }
            if membership.voter_ids().any(|v| v == node_id) {
                let log_index = membership.log_id().as_ref().map_or(0, |l| l.index);
                return ForwardReply::MembershipChanged { log_index };
            }
        }
        tracing::info!(node_id, %peer_addr, "adding node as learner");
        let node = NodeInfo { peer_addr };
        let timeout = self.membership_timeout();
        match tokio::time::timeout(timeout, self.raft().add_learner(node_id, node, true)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return membership_failure(e),
            Err(_) => return timed_out("adding the learner", timeout),
        }
        tracing::info!(node_id, "promoting learner to voter");
        let change = ChangeMembers::AddVoterIds(BTreeSet::from([node_id]));
        match tokio::time::timeout(timeout, self.raft().change_membership(change, false)).await {
            Ok(Ok(response)) => ForwardReply::MembershipChanged { log_index: response.log_id.index },
            Ok(Err(e)) => membership_failure(e),
            Err(_) => timed_out("promoting the learner", timeout),
        }
    }

    pub(crate) async fn remove_node_as_leader(&self, node_id: u64) -> ForwardReply {
        if let Some(reply) = self.refuse_unless_leader_with_quorum_soon().await {
            return reply;
        }
        let membership = self.metrics().membership_config.clone();
        if membership.membership().get_node(&node_id).is_none() {
            return ForwardReply::Failed(NodeError::NotFound {
                what: format!("node {node_id} in site {}", self.config().site),
            });
        }
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let change = if voters.contains(&node_id) {
            if voters.len() == 1 {
                return ForwardReply::Failed(NodeError::Membership {
                    detail: format!("node {node_id} is the only voter; a site cannot remove its last voter"),
                });
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([node_id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([node_id]))
        };
        tracing::info!(node_id, "removing node");
        let timeout = self.membership_timeout();
        match tokio::time::timeout(timeout, self.raft().change_membership(change, false)).await {
            Ok(Ok(response)) => ForwardReply::MembershipChanged { log_index: response.log_id.index },
            Ok(Err(e)) => membership_failure(e),
            Err(_) => timed_out("removing the node", timeout),
        }
    }
}

fn membership_failure(error: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> ForwardReply {
    match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            ForwardReply::NotLeader { leader: f.leader_id }
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            ForwardReply::Failed(NodeError::Membership { detail: e.to_string() })
        }
        RaftError::APIError(other) => ForwardReply::Failed(NodeError::OutcomeUnknown {
            what: "membership change".into(),
            detail: other.to_string(),
        }),
        RaftError::Fatal(fatal) => ForwardReply::Failed(NodeError::Stopped { detail: fatal.to_string() }),
    }
}

fn timed_out(what: &str, timeout: Duration) -> ForwardReply {
    ForwardReply::Failed(NodeError::OutcomeUnknown {
        what: "membership change".into(),
        detail: format!(
            "{what} did not finish within {} ms; check `idmesh site status`",
            timeout.as_millis()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::check_peer_addr;

    #[test]
    fn peer_addresses() {
        for ok in ["127.0.0.1:7701", "node-2.site.example:7701", "[::1]:7701"] {
            assert!(check_peer_addr("peer_addr", ok).is_ok(), "{ok}");
        }
        for bad in ["", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:99999", ":7701", "http://x:1"] {
            assert!(check_peer_addr("peer_addr", bad).is_err(), "{bad}");
        }
    }
}
