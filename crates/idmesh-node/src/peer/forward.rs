//! Requests only the leader can serve, forwarded to it by a follower, and the client side of
//! forwarding.

use crate::{Node, NodeError};
use idmesh_raft::WriteOutcome;
use idmesh_state::{Command, Entry};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What a follower asks its leader to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardRequest {
    /// Propose this command (its time was set by the node the client called).
    Write(Command),
    /// Add a node to the site.
    AddNode {
        /// The new node's id.
        node_id: u64,
        /// Its peer address.
        peer_addr: String,
    },
    /// Remove a node from the site.
    RemoveNode {
        /// The node's id.
        node_id: u64,
    },
    /// Confirm leadership with a quorum and return the index a linearizable read must wait for.
    ReadIndex,
    /// Propose this entry as it is (changes learned from another site).
    Propose(Entry),
    /// Record a change only the leader can make (it owns the working documents).
    Record(crate::bundle::Record),
}

/// The leader's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardReply {
    /// The command was committed at `log_index` and applied with `outcome`.
    Written {
        /// What applying it gave.
        outcome: WriteOutcome,
        /// Where it sits in the log.
        log_index: u64,
    },
    /// The membership change was committed at `log_index`.
    MembershipChanged {
        /// Where the (final) membership entry sits in the log.
        log_index: u64,
    },
    /// Reads must wait until this index is applied.
    ReadIndex {
        /// The read index.
        index: u64,
    },
    /// The node asked is not the leader; `leader` is who it thinks is.
    NotLeader {
        /// The leader it knows of, if any.
        leader: Option<u64>,
    },
    /// The leader could not serve the request.
    Failed(NodeError),
}

impl Node {
    /// Sends `request` to the leader `leader` and returns its answer.
    pub(crate) async fn forward_to(
        &self,
        leader: u64,
        request: &ForwardRequest,
        timeout: Duration,
    ) -> Result<ForwardReply, NodeError> {
        let addr = self
            .peer_addr_of(leader)
            .ok_or_else(|| NodeError::NoLeader { site: self.config().site.to_string() })?;
        let unreachable =
            |detail: String| NodeError::LeaderUnreachable { leader, addr: addr.clone(), detail };
        let payload = serde_json::to_vec(request).map_err(|e| unreachable(format!("encode: {e}")))?;
        let mut client = self.peers().client(leader, &addr)?;
        let mut message = tonic::Request::new(idmesh_proto::peer::ForwardRequest {
            header: Some(self.peers().header(leader)),
            payload: payload.into(),
        });
        message.set_timeout(timeout);
        let reply = client.forward(message).await.map_err(|s| unreachable(s.message().to_owned()))?;
        serde_json::from_slice(&reply.into_inner().payload)
            .map_err(|e| unreachable(format!("reply does not decode: {e}")))
    }

    /// Serves a request forwarded by another member (this node should be the leader).
    pub(crate) async fn serve_forwarded(&self, request: ForwardRequest) -> ForwardReply {
        match request {
            ForwardRequest::Write(command) => self.write_as_leader(command).await,
            ForwardRequest::AddNode { node_id, peer_addr } => {
                self.add_node_as_leader(node_id, peer_addr).await
            }
            ForwardRequest::RemoveNode { node_id } => self.remove_node_as_leader(node_id).await,
            ForwardRequest::ReadIndex => self.read_index_as_leader().await,
            ForwardRequest::Propose(entry) => self.propose_as_leader(entry).await,
            ForwardRequest::Record(record) => self.record_request_as_leader(record).await,
        }
    }
}
