//! Writes: proposed on the leader (forwarded there by a follower), answered only once committed
//! by a quorum, durable, and applied.

use crate::peer::{ForwardReply, ForwardRequest};
use crate::{Node, NodeError, clock};
use idmesh_raft::WriteOutcome;
use idmesh_state::{Agent, Applied, Command, Op};
use idmesh_types::InvalidField;
use idmesh_types::limits::COMMAND_MAX_BYTES;
use openraft::Instant as _;
use openraft::error::{ClientWriteError, RaftError};
use std::time::Duration;
use tokio::time::Instant;

/// Pause between attempts to reach a leader while the site elects one.
const LEADER_RETRY_PAUSE: Duration = Duration::from_millis(100);

impl Node {
    /// Applies an agent `op` to the site's state: stamps it with this node's clock, checks it,
    /// proposes it through the leader and returns the agent as it is afterwards and the log
    /// index.
    pub async fn write(&self, op: Op) -> Result<(Agent, u64), NodeError> {
        match self.write_command(Command { at: clock::now(), op }).await? {
            (Applied::Agent(agent), log_index) => Ok((agent, log_index)),
            (other, _) => {
                Err(NodeError::Storage { detail: format!("an agent command applied as {other:?}") })
            }
        }
    }

    /// Checks `command` (already stamped with its time), proposes it through the leader, and
    /// returns what applying it produced and its log index.
    pub async fn write_command(&self, command: Command) -> Result<(Applied, u64), NodeError> {
        command.validate(&self.config().trust_domain)?;
        let size = serde_json::to_vec(&command).map(|b| b.len()).unwrap_or(usize::MAX);
        if size > COMMAND_MAX_BYTES {
            return Err(InvalidField::new(
                "request",
                format!("encodes to {size} bytes; at most {COMMAND_MAX_BYTES}"),
            )
            .into());
        }
        tracing::debug!(command = %command, "write");
        match self.on_leader(ForwardRequest::Write(command), false).await? {
            ForwardReply::Written { outcome: WriteOutcome::Applied(applied), log_index } => {
                Ok((applied, log_index))
            }
            ForwardReply::Written { outcome: WriteOutcome::Refused(refused), .. } => Err(refused.into()),
            other => Err(unexpected(&other)),
        }
    }

    /// Runs `request` on the leader: here if this node leads, else forwarded to the leader it
    /// knows. While there is no leader or the hint is stale, retries until the write timeout.
    /// A request that may have reached the leader is never sent twice unless `idempotent`.
    pub(crate) async fn on_leader(
        &self,
        request: ForwardRequest,
        idempotent: bool,
    ) -> Result<ForwardReply, NodeError> {
        let timeout = Duration::from_millis(self.config().raft.write_timeout_ms);
        let deadline = Instant::now() + timeout;
        let me = self.config().node_id.0;
        let mut last_error = None;
        loop {
            let reply = match self.current_leader() {
                Some(leader) if leader == me => self.serve_forwarded(request.clone()).await,
                Some(leader) => {
                    let remaining =
                        deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
                    match self.forward_to(leader, &request, remaining).await {
                        Ok(reply) => reply,
                        Err(e) if idempotent => {
                            last_error = Some(e);
                            ForwardReply::NotLeader { leader: None }
                        }
                        Err(e) => return Err(e),
                    }
                }
                None => ForwardReply::NotLeader { leader: None },
            };
            match reply {
                ForwardReply::NotLeader { .. } => {
                    if Instant::now() + LEADER_RETRY_PAUSE >= deadline {
                        return Err(last_error.unwrap_or_else(|| NodeError::NoLeader {
                            site: self.config().site.to_string(),
                        }));
                    }
                    tokio::time::sleep(LEADER_RETRY_PAUSE).await;
                }
                ForwardReply::Failed(e) => return Err(e),
                other => return Ok(other),
            }
        }
    }

    /// Proposes `command` if this node is the leader and has a quorum.
    pub(crate) async fn write_as_leader(&self, command: Command) -> ForwardReply {
        if let Some(reply) = self.refuse_unless_leader_with_quorum() {
            return reply;
        }
        // Refuse what would certainly fail against the state as applied here, without spending a
        // log entry on it. Apply decides in the end: the state may change before the entry is.
        if let Err(refused) = self.shared().read().state.evaluate(&command) {
            return ForwardReply::Failed(refused.into());
        }
        let what = command.to_string();
        let timeout = Duration::from_millis(self.config().raft.write_timeout_ms);
        match tokio::time::timeout(timeout, self.raft().client_write(command)).await {
            Ok(Ok(response)) => {
                ForwardReply::Written { outcome: response.data, log_index: response.log_id.index }
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                ForwardReply::NotLeader { leader: f.leader_id }
            }
            Ok(Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)))) => {
                ForwardReply::Failed(NodeError::OutcomeUnknown {
                    what,
                    detail: "the leader changed while the write was in flight".into(),
                })
            }
            Ok(Err(RaftError::APIError(other))) => {
                ForwardReply::Failed(NodeError::Storage { detail: other.to_string() })
            }
            Ok(Err(RaftError::Fatal(fatal))) => {
                ForwardReply::Failed(NodeError::Stopped { detail: fatal.to_string() })
            }
            Err(_) => ForwardReply::Failed(NodeError::OutcomeUnknown {
                what,
                detail: format!(
                    "not committed within {} ms; the site may have lost its quorum",
                    timeout.as_millis()
                ),
            }),
        }
    }

    /// `None` if this node leads and a quorum acknowledged it recently; else the reply that
    /// refuses the request without proposing anything.
    pub(crate) fn refuse_unless_leader_with_quorum(&self) -> Option<ForwardReply> {
        let metrics = self.metrics();
        let me = self.config().node_id.0;
        if metrics.current_leader != Some(me) || !self.raft().is_leader() {
            return Some(ForwardReply::NotLeader { leader: metrics.current_leader.filter(|l| *l != me) });
        }
        let voters = metrics.membership_config.membership().voter_ids().count();
        if voters <= 1 {
            return None;
        }
        let limit = Duration::from_millis(self.config().raft.election_timeout_max_ms);
        let silent = metrics.last_quorum_acked.as_ref().map(|acked| acked.elapsed());
        match silent {
            Some(silent) if silent <= limit => None,
            _ => Some(ForwardReply::Failed(NodeError::NoQuorum {
                site: self.config().site.to_string(),
                leader: me,
                silent_ms: silent.map_or(u64::MAX, |s| u64::try_from(s.as_millis()).unwrap_or(u64::MAX)),
            })),
        }
    }
}

pub(crate) fn unexpected(reply: &ForwardReply) -> NodeError {
    NodeError::Storage { detail: format!("unexpected reply from the leader: {reply:?}") }
}
