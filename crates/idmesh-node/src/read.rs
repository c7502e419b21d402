//! Linearizable reads: the leader confirms with a quorum that it still leads and names a read
//! index; the answering node waits until it has applied that index, then reads locally.

use crate::peer::{ForwardReply, ForwardRequest};
use crate::write::unexpected;
use crate::{Node, NodeError};
use openraft::ReadPolicy;
use openraft::error::{LinearizableReadError, RaftError};
use std::time::Duration;

impl Node {
    /// Waits until this node's state reflects every write acknowledged before the call.
    /// Returns the applied index reached.
    pub async fn linearize(&self) -> Result<u64, NodeError> {
        let index = match self.on_leader(ForwardRequest::ReadIndex, true).await? {
            ForwardReply::ReadIndex { index } => index,
            other => return Err(unexpected(&other)),
        };
        let timeout = Duration::from_millis(self.config().raft.write_timeout_ms);
        self.raft()
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map_err(|e| NodeError::ReadNotLinearizable {
                detail: format!("this node did not apply index {index} in time ({e})"),
            })?;
        Ok(index)
    }

    pub(crate) async fn read_index_as_leader(&self) -> ForwardReply {
        if !self.raft().is_leader() {
            return ForwardReply::NotLeader { leader: self.current_leader() };
        }
        let timeout = Duration::from_millis(self.config().raft.election_timeout_max_ms * 2);
        match tokio::time::timeout(timeout, self.raft().get_read_linearizer(ReadPolicy::ReadIndex)).await {
            Ok(Ok(linearizer)) => ForwardReply::ReadIndex { index: linearizer.read_log_id().index() },
            Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f)))) => {
                ForwardReply::NotLeader { leader: f.leader_id }
            }
            Ok(Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(e)))) => {
                ForwardReply::Failed(NodeError::ReadNotLinearizable { detail: e.to_string() })
            }
            Ok(Err(RaftError::Fatal(fatal))) => {
                ForwardReply::Failed(NodeError::Stopped { detail: fatal.to_string() })
            }
            Err(_) => ForwardReply::Failed(NodeError::ReadNotLinearizable {
                detail: format!("a quorum did not confirm the leader within {} ms", timeout.as_millis()),
            }),
        }
    }
}
