//! Writes: proposed on the leader (forwarded there by a follower), answered only once committed
//! by a quorum, durable, and applied.

use crate::peer::{ForwardReply, ForwardRequest};
use crate::{Node, NodeError};
use idmesh_audit::{AdminChange, Event};
use idmesh_raft::WriteOutcome;
use idmesh_state::crdt::{
    Actor, ShardId, shard_of, shard_of_actions, shard_of_delegation, shard_of_issuer, shard_of_policy,
    shard_of_site, shard_of_token,
};
use idmesh_state::{Agent, Applied, ChangeBytes, Command, Entry, Op, agent_after};
use idmesh_types::InvalidField;
use idmesh_types::limits::COMMAND_MAX_BYTES;
use openraft::Instant as _;
use openraft::error::ClientWriteError;
use openraft::impls::ProgressResponder;
use std::time::Duration;
use tokio::time::Instant;

/// Who asks for a change through the public API. Clients do not authenticate yet (mTLS is
/// issue 8); when they do, their identity goes here.
pub const CLIENT_CALLER: &str = "unauthenticated client";

/// Pause between attempts to reach a leader while the site elects one.
const LEADER_RETRY_PAUSE: Duration = Duration::from_millis(100);

impl Node {
    /// Applies an agent `op` to the site's state: stamps it with this node's clock, checks it,
    /// proposes it through the leader and returns the agent as it is afterwards and the log
    /// index.
    pub async fn write(&self, op: Op) -> Result<(Agent, u64), NodeError> {
        match self.write_command(Command { at: self.now(), op }).await? {
            (Applied::Agent(agent), log_index) => Ok((agent, log_index)),
            (other, _) => {
                Err(NodeError::Storage { detail: format!("an agent command applied as {other:?}") })
            }
        }
    }

    /// Checks `command` (already stamped with its time), proposes it through the leader, and
    /// returns what applying it produced and its log index. Audited: a `requested` record is
    /// made durable before anything is proposed (else the change is refused), and the outcome
    /// is recorded after.
    pub async fn write_command(&self, command: Command) -> Result<(Applied, u64), NodeError> {
        self.write_command_by(command, CLIENT_CALLER).await
    }

    /// [`Node::write_command`] on behalf of `by` (as the audit record names it).
    pub(crate) async fn write_command_by(
        &self,
        command: Command,
        by: &str,
    ) -> Result<(Applied, u64), NodeError> {
        let record = |stage: &str, detail: String| {
            Event::AdminChanged(AdminChange {
                change: command.to_string(),
                target: command.target(),
                by: by.to_owned(),
                stage: stage.to_owned(),
                detail,
            })
        };
        let requested = record("requested", String::new());
        self.audit()
            .append(requested)
            .await
            .map_err(|e| NodeError::AuditUnavailable { detail: e.to_string() })?;
        let result = self.propose_command(command.clone()).await;
        let (stage, detail) = match &result {
            Ok((_, log_index)) => ("applied", format!("log index {log_index}")),
            Err(e) => ("failed", e.to_string()),
        };
        if let Err(e) = self.audit().append(record(stage, detail)).await {
            tracing::warn!(error = %e, change = %command, "audit: cannot record the outcome of a change");
        }
        result
    }

    async fn propose_command(&self, command: Command) -> Result<(Applied, u64), NodeError> {
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
    ///
    /// A signing-key command travels as itself. An agent command is evaluated against the
    /// agent as this leader's working documents have it (its own changes not yet applied
    /// included, so consecutive writes to one agent see each other), recorded as one automerge
    /// change under this leader's actor, and that change travels in the log.
    pub(crate) async fn write_as_leader(&self, command: Command) -> ForwardReply {
        let what = command.to_string();
        let shard = match &command.op {
            Op::PutPolicy { id, .. } | Op::DeletePolicy { id } => Some(shard_of_policy(id)),
            Op::DeclareActions { .. } => Some(shard_of_actions()),
            Op::GrantDelegation(grant) => Some(shard_of_delegation(&grant.id)),
            Op::RevokeDelegation { id, .. } => Some(shard_of_delegation(id)),
            Op::PutIssuer(issuer) => Some(shard_of_issuer(&issuer.issuer)),
            Op::DeleteIssuer { issuer } => Some(shard_of_issuer(issuer)),
            Op::RevokeToken { jti, .. } => Some(shard_of_token(jti)),
            _ => command.agent_id().map(|id| shard_of(id.name())),
        };
        self.submit_as_leader(shard, what, |node| node.prepare(command)).await
    }

    /// Publishes this site's issuer and public keys in the trust bundle if what is published
    /// differs; `Ok(false)` when nothing needed publishing.
    pub(crate) async fn publish_trust_as_leader(&self) -> Result<bool, NodeError> {
        let site = self.config().site.clone();
        let wanted = self.own_site_trust();
        if self.shared().read().state.trust.site(site.as_str()).is_some_and(|published| {
            published.issuer == wanted.issuer
                && wanted.keys.iter().all(|k| published.keys.contains(k))
                && wanted.nodes.iter().all(|n| published.nodes.contains(n))
        }) {
            return Ok(false);
        }
        let shard = shard_of_site(&site);
        self.record_as_leader(shard, "trust bundle entry", |working, actor| {
            working.publish_site_keys(actor, self.now(), &site, &wanted)
        })
        .await
        .map(|()| true)
    }

    /// Records, on the leader, a change that is not an admin command (`record` writes it in the
    /// working copy of `shard` as the leader's actor) and proposes it as a `Publish` entry.
    pub(crate) async fn record_as_leader(
        &self,
        shard: ShardId,
        what: &str,
        record: impl FnOnce(
            &mut idmesh_state::crdt::Shard,
            &Actor,
        ) -> Result<Option<Vec<u8>>, idmesh_state::crdt::CrdtError>,
    ) -> Result<(), NodeError> {
        let reply = self
            .submit_as_leader(Some(shard), what.to_owned(), |node| {
                let term = node.metrics().current_term;
                let epoch = node.working_epoch();
                let actor = Actor::derive(node.config().site.as_str(), node.config().node_id.0, term, epoch);
                node.shared()
                    .with_working((term, epoch), shard, |working| record(working, &actor))
                    .map_err(|e| NodeError::Storage { detail: e.to_string() })?
                    .map_err(|e| NodeError::Storage { detail: e.to_string() })
                    .map(|change| match change {
                        Some(change) => {
                            Prepared::Entry(Entry::Publish { shard, change: ChangeBytes(change) })
                        }
                        None => Prepared::Nothing,
                    })
            })
            .await;
        match reply {
            ForwardReply::Written { outcome: WriteOutcome::Refused(refused), .. } => Err(refused.into()),
            ForwardReply::Written { .. } => Ok(()),
            ForwardReply::NotLeader { .. } => {
                Err(NodeError::NoLeader { site: self.config().site.to_string() })
            }
            ForwardReply::Failed(e) => Err(e),
            other => Err(unexpected(&other)),
        }
    }

    /// Proposes what `prepare` makes of a request, if this node is the leader and has a quorum,
    /// and waits for the outcome. `shard` is the document the entry changes (`None`: site state).
    async fn submit_as_leader(
        &self,
        shard: Option<ShardId>,
        what: String,
        prepare: impl FnOnce(&Self) -> Result<Prepared, NodeError>,
    ) -> ForwardReply {
        if let Some(reply) = self.refuse_unless_leader_with_quorum_soon().await {
            return reply;
        }
        let timeout = Duration::from_millis(self.config().raft.write_timeout_ms);
        // Record and submit in one step per shard: a shard's changes form one chain (each
        // depends on the one before), so they must reach the log in the order they were made.
        let completion = {
            let _turn = self.proposal_turn(shard).await;
            let entry = match prepare(self) {
                Ok(Prepared::Entry(entry)) => entry,
                Ok(Prepared::Unchanged(applied)) => {
                    // Nothing to change (e.g. suspending a suspended agent): nothing to log.
                    let log_index = self.applied_index();
                    return ForwardReply::Written { outcome: WriteOutcome::Applied(applied), log_index };
                }
                Ok(Prepared::Nothing) => {
                    return ForwardReply::Written {
                        outcome: WriteOutcome::Nothing,
                        log_index: self.applied_index(),
                    };
                }
                Err(e) => return ForwardReply::Failed(e),
            };
            let (responder, completion) = ProgressResponder::complete_only();
            if let Err(fatal) = self.raft().client_write_ff(entry, Some(responder)).await {
                self.abandon_working();
                return ForwardReply::Failed(NodeError::Stopped { detail: fatal.to_string() });
            }
            completion
        };
        let reply = match tokio::time::timeout(timeout, completion).await {
            Ok(Ok(Ok(response))) => {
                return ForwardReply::Written { outcome: response.data, log_index: response.log_id.index };
            }
            Ok(Ok(Err(ClientWriteError::ForwardToLeader(f)))) => {
                ForwardReply::NotLeader { leader: f.leader_id }
            }
            Ok(Ok(Err(ClientWriteError::LogEntryDiscarded(_)))) => {
                ForwardReply::Failed(NodeError::OutcomeUnknown {
                    what,
                    detail: "the leader changed while the write was in flight".into(),
                })
            }
            Ok(Ok(Err(other))) => ForwardReply::Failed(NodeError::Storage { detail: other.to_string() }),
            Ok(Err(_)) => ForwardReply::Failed(NodeError::OutcomeUnknown {
                what,
                detail: "consensus stopped before answering".into(),
            }),
            Err(_) => ForwardReply::Failed(NodeError::OutcomeUnknown {
                what,
                detail: format!(
                    "not committed within {} ms; the site may have lost its quorum",
                    timeout.as_millis()
                ),
            }),
        };
        // The change recorded in the working documents may never be applied: start again from
        // the applied documents, under a new actor, so no change can reuse its sequence number.
        self.abandon_working();
        reply
    }

    /// Puts changes learned from site `origin` into this site's log; returns the entry's index
    /// once committed and applied by the leader, and how many chunks did not load (dropped on
    /// every replica alike).
    pub async fn propose_remote(
        &self,
        origin: &str,
        changes: Vec<(ShardId, ChangeBytes)>,
    ) -> Result<(u64, u32), NodeError> {
        let entry = Entry::Remote { origin: origin.to_owned(), changes };
        match self.on_leader(ForwardRequest::Propose(entry), false).await? {
            ForwardReply::Written { log_index, outcome: WriteOutcome::Merged { dropped, .. } } => {
                Ok((log_index, dropped))
            }
            ForwardReply::Written { outcome: WriteOutcome::Refused(refused), .. } => Err(refused.into()),
            ForwardReply::Written { log_index, .. } => Ok((log_index, 0)),
            other => Err(unexpected(&other)),
        }
    }

    /// Waits until this node has applied log index `index`.
    pub async fn wait_applied(&self, index: u64) -> Result<(), NodeError> {
        let timeout = Duration::from_millis(self.config().raft.write_timeout_ms);
        self.raft()
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "changes from another site")
            .await
            .map(|_| ())
            .map_err(|e| NodeError::OutcomeUnknown { what: "remote changes".into(), detail: e.to_string() })
    }

    /// The index this node has applied up to.
    pub fn applied_index(&self) -> u64 {
        self.shared().read().last_applied.map_or(0, |l| l.index)
    }

    /// Proposes `entry` as it is, if this node leads with a quorum.
    pub(crate) async fn propose_as_leader(&self, entry: Entry) -> ForwardReply {
        if let Some(reply) = self.refuse_unless_leader_with_quorum_soon().await {
            return reply;
        }
        let timeout = Duration::from_millis(self.config().raft.write_timeout_ms);
        match tokio::time::timeout(timeout, self.raft().client_write(entry)).await {
            Ok(Ok(response)) => {
                ForwardReply::Written { outcome: response.data, log_index: response.log_id.index }
            }
            Ok(Err(openraft::error::RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                ForwardReply::NotLeader { leader: f.leader_id }
            }
            Ok(Err(e)) => ForwardReply::Failed(NodeError::OutcomeUnknown {
                what: "remote changes".into(),
                detail: e.to_string(),
            }),
            Err(_) => ForwardReply::Failed(NodeError::OutcomeUnknown {
                what: "remote changes".into(),
                detail: format!("not committed within {} ms", timeout.as_millis()),
            }),
        }
    }

    /// Turns `command` into the log entry that carries it, or finds it changes nothing.
    fn prepare(&self, command: Command) -> Result<Prepared, NodeError> {
        if matches!(command.op, Op::PutPolicy { .. } | Op::DeletePolicy { .. } | Op::DeclareActions { .. }) {
            return self.prepare_policy(command);
        }
        if command.is_admin() {
            return self.prepare_grant(command);
        }
        let trust_domain = &self.config().trust_domain;
        let Some(id) = command.agent_id().cloned() else {
            // Refuse what would certainly fail against the state as applied here, without
            // spending a log entry on it. Apply decides in the end.
            self.shared().read().state.evaluate(&command)?;
            return Ok(Prepared::Entry(Entry::Site(command)));
        };
        let term = self.metrics().current_term;
        let epoch = self.working_epoch();
        let actor = Actor::derive(self.config().site.as_str(), self.config().node_id.0, term, epoch);
        let shard = shard_of(id.name());
        let recorded = self
            .shared()
            .with_working((term, epoch), shard, |working| -> Result<Prepared, NodeError> {
                let before = working.agent(trust_domain, id.name().as_str());
                let after = agent_after(trust_domain, before.as_ref(), &command)?;
                match working.record(&actor, command.at, before.as_ref(), &after) {
                    Ok(Some(change)) => Ok(Prepared::Entry(Entry::Agent {
                        command: command.clone(),
                        shard,
                        change: ChangeBytes(change),
                    })),
                    Ok(None) => Ok(Prepared::Unchanged(Applied::Agent(after))),
                    Err(e) => Err(NodeError::Storage { detail: e.to_string() }),
                }
            })
            .map_err(|e| NodeError::Storage { detail: e.to_string() })??;
        Ok(recorded)
    }

    /// [`Node::refuse_unless_leader_with_quorum`], except that a leader that no majority has
    /// acknowledged yet in its term (just elected: its first heartbeats are in flight, over
    /// connections that may still be in their TLS handshakes) waits up to the election
    /// timeout for one before refusing. A leader that had a quorum and lost it is refused at
    /// once, as before.
    pub(crate) async fn refuse_unless_leader_with_quorum_soon(&self) -> Option<ForwardReply> {
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.config().raft.election_timeout_max_ms);
        loop {
            let refusal = self.refuse_unless_leader_with_quorum();
            let newly_elected = matches!(refusal, Some(ForwardReply::Failed(NodeError::NoQuorum { .. })))
                && self.metrics().last_quorum_acked.is_none();
            if !newly_elected || tokio::time::Instant::now() >= deadline {
                return refusal;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
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

/// What a command becomes on the leader.
pub(crate) enum Prepared {
    /// The entry to propose.
    Entry(Entry),
    /// The command holds already: what it would produce.
    Unchanged(Applied),
    /// Nothing to propose.
    Nothing,
}

pub(crate) fn unexpected(reply: &ForwardReply) -> NodeError {
    NodeError::Storage { detail: format!("unexpected reply from the leader: {reply:?}") }
}
