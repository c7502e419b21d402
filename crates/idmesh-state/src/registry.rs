//! The registry of agents and the pure `apply` of commands to it.

use crate::command::{RegisterAgent, UpdateAgent};
use crate::{Agent, AgentStatus, Command, Credential, Op, StateError};
use idmesh_types::limits::CREDENTIALS_MAX_COUNT;
use idmesh_types::{AgentId, InvalidField, TrustDomain, UnixMillis};
use imbl::OrdMap;
use std::sync::Arc;

/// All agents of a trust domain as known by one replica.
///
/// Changed only by [`Registry::apply`]; a refused command leaves it exactly as it was.
///
/// Cloning is O(1): agents live in a persistent ordered map that shares structure between
/// versions, so a snapshot of the whole registry is taken without copying it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    trust_domain: TrustDomain,
    agents: OrdMap<AgentId, Arc<Agent>>,
}

impl Registry {
    /// An empty registry for `trust_domain`.
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self { trust_domain, agents: OrdMap::new() }
    }

    /// A registry holding `agents`, as restored from a snapshot or from disk. Agents of another
    /// trust domain are refused.
    pub fn restore(
        trust_domain: TrustDomain,
        agents: impl IntoIterator<Item = Agent>,
    ) -> Result<Self, InvalidField> {
        let mut registry = Self::new(trust_domain);
        for agent in agents {
            if agent.id.trust_domain() != &registry.trust_domain {
                return Err(InvalidField::new(
                    "agent_id",
                    format!("restored agent {} is not of trust domain {}", agent.id, registry.trust_domain),
                ));
            }
            registry.agents.insert(agent.id.clone(), Arc::new(agent));
        }
        Ok(registry)
    }

    /// Puts `agent` as the CRDT documents materialize it (changes from other sites). Unlike
    /// [`Registry::apply`] this checks nothing: the documents are the authority.
    pub fn put_materialized(&mut self, agent: Agent) {
        self.agents.insert(agent.id.clone(), Arc::new(agent));
    }

    /// The trust domain every agent here belongs to.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The agent `id`, if registered.
    pub fn get(&self, id: &AgentId) -> Option<&Agent> {
        self.agents.get(id).map(Arc::as_ref)
    }

    /// Number of agents (in every status).
    pub fn len(&self) -> usize {
        self.agents.len()
    }

    /// True when no agent is registered.
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    /// Every agent, in id order.
    pub fn agents(&self) -> impl Iterator<Item = &Agent> {
        self.agents.values().map(Arc::as_ref)
    }

    /// Agents with ids strictly after `after` (or from the start), in id order.
    pub(crate) fn agents_after(&self, after: Option<&AgentId>) -> impl Iterator<Item = &Agent> {
        use std::ops::Bound;
        let lower = match after {
            Some(id) => Bound::Excluded(id),
            None => Bound::Unbounded,
        };
        self.agents.range((lower, Bound::Unbounded)).map(|(_, agent)| agent.as_ref())
    }

    /// Applies `command` and returns the agent as it is afterwards.
    ///
    /// Deterministic: depends only on `self` and `command`. On error nothing changed.
    /// Repeating a suspend, resume or revoke that already holds is accepted and changes nothing.
    pub fn apply(&mut self, command: &Command) -> Result<Agent, StateError> {
        let agent = self.evaluate(command)?;
        self.agents.insert(agent.id.clone(), Arc::new(agent.clone()));
        Ok(agent)
    }

    /// What [`Registry::apply`] would make of `command` now, without changing anything. A leader
    /// uses it to refuse a command that would fail before proposing it; `apply` stays the
    /// authority, since the state may change before the command is applied.
    pub fn evaluate(&self, command: &Command) -> Result<Agent, StateError> {
        let before = command.agent_id().and_then(|id| self.get(id));
        agent_after(&self.trust_domain, before, command)
    }
}

/// The agent as `command` leaves it, given the agent `before` it (`None`: not registered).
/// Pure; refuses with the rule broken. This is the whole logic of agent commands: the registry
/// applies it to its own copy, and a leader applies it to the agent as its working documents
/// have it (including its own changes not yet applied).
pub fn agent_after(
    trust_domain: &TrustDomain,
    before: Option<&Agent>,
    command: &Command,
) -> Result<Agent, StateError> {
    command.validate(trust_domain)?;
    let at = command.at;
    match &command.op {
        Op::RegisterAgent(register) => register_agent(before, register, at),
        Op::UpdateAgent(update) => update_agent(existing(before, &update.id)?, update, at),
        Op::SuspendAgent { id, reason } => {
            set_status(existing(before, id)?, AgentStatus::Suspended, reason, at)
        }
        Op::ResumeAgent { id } => set_status(existing(before, id)?, AgentStatus::Active, "", at),
        Op::RevokeAgent { id, reason } => set_status(existing(before, id)?, AgentStatus::Revoked, reason, at),
        Op::AddSigningKey(_) | Op::MintJoinToken { .. } | Op::RedeemJoinToken { .. } => {
            Err(InvalidField::new(
                "op",
                "signing keys and join tokens are not agents: apply them to the site state",
            )
            .into())
        }
        Op::PutPolicy { .. }
        | Op::DeletePolicy { .. }
        | Op::DeclareActions { .. }
        | Op::GrantDelegation(_)
        | Op::RevokeDelegation { .. }
        | Op::PutIssuer(_)
        | Op::DeleteIssuer { .. }
        | Op::RevokeToken { .. } => {
            Err(InvalidField::new("op", "not an agent command: it travels as an admin change").into())
        }
    }
}

fn existing<'a>(before: Option<&'a Agent>, id: &AgentId) -> Result<&'a Agent, StateError> {
    before.ok_or_else(|| StateError::NotFound { what: format!("agent {id}") })
}

fn register_agent(before: Option<&Agent>, r: &RegisterAgent, at: UnixMillis) -> Result<Agent, StateError> {
    if let Some(existing) = before {
        let hint = if existing.status == AgentStatus::Revoked {
            " (it was revoked; a revoked id is never reused: register under a new name)"
        } else {
            ""
        };
        return Err(StateError::AlreadyExists { what: format!("agent {}{hint}", r.id) });
    }
    Ok(Agent {
        id: r.id.clone(),
        owner: r.owner.clone(),
        labels: r.labels.clone(),
        credentials: sorted(r.credentials.iter().map(|jwk| Credential::new(jwk.clone(), at))),
        status: AgentStatus::Active,
        status_reason: None,
        created_at: at,
        updated_at: at,
        revision: 1,
    })
}

fn update_agent(current: &Agent, u: &UpdateAgent, at: UnixMillis) -> Result<Agent, StateError> {
    if current.status == AgentStatus::Revoked {
        return Err(revoked(&u.id, "update"));
    }
    if let Some(expected) = u.expected_revision
        && expected != current.revision
    {
        return Err(StateError::FailedPrecondition {
            what: format!("agent {}", u.id),
            rule: format!(
                "expected revision {expected} but it is at {}; read it again and retry",
                current.revision
            ),
        });
    }
    let mut next = current.clone();
    if let Some(owner) = &u.owner {
        next.owner = owner.clone();
    }
    if let Some(labels) = &u.labels {
        next.labels = labels.clone();
    }
    for kid in &u.remove_credentials {
        let before = next.credentials.len();
        next.credentials.retain(|c| &c.kid != kid);
        if next.credentials.len() == before {
            return Err(StateError::NotFound { what: format!("credential {kid} of agent {}", u.id) });
        }
    }
    for jwk in &u.add_credentials {
        let kid = jwk.thumbprint();
        if next.credentials.iter().any(|c| c.kid == kid) {
            return Err(StateError::AlreadyExists { what: format!("credential {kid} of agent {}", u.id) });
        }
        next.credentials.push(Credential::new(jwk.clone(), at));
    }
    if next.credentials.len() > CREDENTIALS_MAX_COUNT {
        return Err(InvalidField::new(
            "add_credentials",
            format!(
                "an agent holds at most {CREDENTIALS_MAX_COUNT} credentials (would hold {})",
                next.credentials.len()
            ),
        )
        .into());
    }
    next.credentials = sorted(next.credentials);
    Ok(changed(next, at))
}

fn set_status(
    current: &Agent,
    status: AgentStatus,
    reason: &str,
    at: UnixMillis,
) -> Result<Agent, StateError> {
    if current.status == status {
        return Ok(current.clone());
    }
    if current.status == AgentStatus::Revoked {
        let verb = if status == AgentStatus::Active { "resume" } else { "suspend" };
        return Err(revoked(&current.id, verb));
    }
    let mut next = current.clone();
    next.status = status;
    next.status_reason = (status != AgentStatus::Active).then(|| reason.to_owned());
    Ok(changed(next, at))
}

fn revoked(id: &AgentId, verb: &str) -> StateError {
    StateError::FailedPrecondition {
        what: format!("agent {id}"),
        rule: format!("cannot {verb} a revoked agent: revocation is permanent; register a new agent instead"),
    }
}

fn sorted(credentials: impl IntoIterator<Item = Credential>) -> Vec<Credential> {
    let mut list: Vec<Credential> = credentials.into_iter().collect();
    list.sort_by(|a, b| a.kid.cmp(&b.kid));
    list
}

/// `next` as a new revision changed at `at` (never earlier than its last change).
fn changed(mut next: Agent, at: UnixMillis) -> Agent {
    next.updated_at = next.updated_at.max(at);
    next.revision += 1;
    next
}
