//! Policies at a node: writing them (validated with Cedar on the leader before anything is
//! proposed), the compiled book cached per policy state, and the partition-aware context every
//! decision sees (DESIGN §2.6).

use crate::write::Prepared;
use crate::{Node, NodeError};
use idmesh_policy::{DecisionRequest, PolicyBook, Principal, RemoteSite, Resource};
use idmesh_state::crdt::{Actor, shard_of_actions, shard_of_policy};
use idmesh_state::{Applied, ChangeBytes, Command, Entry, Op, Policies, actions_after, policy_after};
use std::sync::{Arc, Mutex};

/// The compiled policies and the applied policy state they were compiled from.
pub type PolicyCache = Mutex<Option<(Arc<Policies>, Arc<PolicyBook>)>>;

/// Where a decision is made and how fresh this node's knowledge is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freshness {
    /// Seconds since the site's leader last reached this node (0 on a leader with its quorum).
    pub sync_age_secs: u64,
    /// Cut off from the site's quorum, or a configured link to another site is down.
    pub partitioned: bool,
    /// Every other site known, with its sync age.
    pub remote_sites: Vec<RemoteSite>,
}

impl Node {
    /// The policies in force here, compiled (once per change of the applied policies).
    pub fn policy_book(&self) -> Result<Arc<PolicyBook>, NodeError> {
        let policies = self.shared().read().state.policies.clone();
        let mut cache = self.policy_cache().lock().unwrap_or_else(|p| p.into_inner());
        if let Some((compiled_from, book)) = cache.as_ref()
            && Arc::ptr_eq(compiled_from, &policies)
        {
            return Ok(book.clone());
        }
        let stored: Vec<idmesh_policy::StoredPolicy> = policies
            .by_id
            .values()
            .map(|p| idmesh_policy::StoredPolicy { id: p.id.clone(), text: p.text.clone() })
            .collect();
        let book = Arc::new(PolicyBook::compile(&stored, &policies.actions)?);
        for (id, why) in book.excluded() {
            tracing::warn!(policy = %id, reason = %why, "policy not in force at this node");
        }
        *cache = Some((policies, book.clone()));
        Ok(book)
    }

    /// How fresh this node's knowledge is, now.
    pub fn freshness(&self) -> Freshness {
        let now = self.now();
        let metrics = self.metrics();
        let me = self.config().node_id.0;
        let window_secs = self.config().raft.election_timeout_max_ms.div_ceil(1000);
        let sync_age_secs = if metrics.current_leader == Some(me) && self.raft().is_leader() {
            let voters = metrics.membership_config.membership().voter_ids().count();
            match &metrics.last_quorum_acked {
                _ if voters <= 1 => 0,
                Some(acked) => {
                    use openraft::Instant as _;
                    acked.elapsed().as_secs()
                }
                None => u64::MAX,
            }
        } else {
            match self.leader_contact_ms() {
                0 => u64::MAX,
                at => now.0.saturating_sub(at) / 1000,
            }
        };
        let sites = self.mesh().sync_summary();
        let link_down = sites.iter().any(|(_, state, _)| *state != crate::mesh::LinkState::Connected);
        let mut remote_sites: Vec<RemoteSite> = sites
            .into_iter()
            .map(|(site, _, last_sync)| RemoteSite {
                site,
                sync_age_secs: last_sync.map(|at| now.0.saturating_sub(at.0) / 1000),
            })
            .collect();
        // Sites known only from the trust bundle (never synced with directly) count as never.
        let own = self.config().site.as_str().to_owned();
        for (site, _) in self.shared().read().state.trust.sites() {
            if site != own && !remote_sites.iter().any(|r| r.site == site) {
                remote_sites.push(RemoteSite { site: site.to_owned(), sync_age_secs: None });
            }
        }
        remote_sites.sort_by(|a, b| a.site.cmp(&b.site));
        Freshness { sync_age_secs, partitioned: sync_age_secs > window_secs || link_down, remote_sites }
    }

    /// A decision request from its parts, with this node's place and clock and `freshness`.
    pub fn decision_request_with(
        &self,
        freshness: &Freshness,
        principal: Principal,
        action: &str,
        resource: Resource,
        scopes: Vec<String>,
        audiences: Vec<String>,
    ) -> DecisionRequest {
        DecisionRequest {
            principal,
            action: action.to_owned(),
            resource,
            site: self.config().site.to_string(),
            node: self.config().node_id.0,
            now_secs: self.now().0 / 1000,
            sync_age_secs: freshness.sync_age_secs,
            partitioned: freshness.partitioned,
            scopes,
            audiences,
            actors: Vec::new(),
            on_behalf_of: None,
            remote_sites: freshness.remote_sites.clone(),
        }
    }

    /// Puts a policy: validated with Cedar here first (nothing is proposed if it fails), then
    /// written through the leader.
    pub async fn put_policy(
        &self,
        id: String,
        text: String,
        expected_revision: Option<u64>,
    ) -> Result<(idmesh_state::Policy, u64), NodeError> {
        let actions = self.shared().read().state.policies.actions.clone();
        idmesh_policy::validate_policy(&id, &text, &actions)?;
        match self
            .write_command(Command { at: self.now(), op: Op::PutPolicy { id, text, expected_revision } })
            .await?
        {
            (Applied::Policy(policy), index) => Ok((policy, index)),
            (other, _) => Err(NodeError::Storage { detail: format!("a policy write applied as {other:?}") }),
        }
    }

    /// The leader's half of a policy or action command: checks it against the policies as this
    /// leader's working documents have them and records the change.
    pub(crate) fn prepare_policy(&self, command: Command) -> Result<Prepared, NodeError> {
        let term = self.metrics().current_term;
        let epoch = self.working_epoch();
        let actor = Actor::derive(self.config().site.as_str(), self.config().node_id.0, term, epoch);
        let storage = |e: &dyn std::fmt::Display| NodeError::Storage { detail: e.to_string() };
        match &command.op {
            Op::PutPolicy { id, .. } | Op::DeletePolicy { id } => {
                if let Op::PutPolicy { text, .. } = &command.op {
                    // The leader checks again, against the actions it has applied: the node
                    // the client called may be behind.
                    let actions = self.shared().read().state.policies.actions.clone();
                    idmesh_policy::validate_policy(id, text, &actions)?;
                }
                let count = self.shared().read().state.policies.by_id.len();
                let shard = shard_of_policy(id);
                self.shared()
                    .with_working((term, epoch), shard, |working| -> Result<Prepared, NodeError> {
                        let before = working.policy(id);
                        let after = policy_after(before.as_ref(), &command, count)?;
                        let change = working
                            .record_policy(&actor, command.at, id, before.as_ref(), after.as_ref())
                            .map_err(|e| storage(&e))?;
                        Ok(match (change, after) {
                            (Some(change), _) => Prepared::Entry(Entry::Admin {
                                command: command.clone(),
                                shard,
                                change: ChangeBytes(change),
                            }),
                            (None, Some(policy)) => Prepared::Unchanged(Applied::Policy(policy)),
                            (None, None) => Prepared::Unchanged(Applied::PolicyDeleted { id: id.clone() }),
                        })
                    })
                    .map_err(|e| storage(&e))?
            }
            Op::DeclareActions { .. } => {
                let shard = shard_of_actions();
                self.shared()
                    .with_working((term, epoch), shard, |working| -> Result<Prepared, NodeError> {
                        let after = actions_after(&working.declared_actions(), &command)?;
                        Ok(
                            match working
                                .record_actions(&actor, command.at, &after)
                                .map_err(|e| storage(&e))?
                            {
                                Some(change) => Prepared::Entry(Entry::Admin {
                                    command: command.clone(),
                                    shard,
                                    change: ChangeBytes(change),
                                }),
                                None => Prepared::Unchanged(Applied::Actions(after)),
                            },
                        )
                    })
                    .map_err(|e| storage(&e))?
            }
            _ => Err(NodeError::Storage { detail: format!("not a policy command: {command}") }),
        }
    }
}
