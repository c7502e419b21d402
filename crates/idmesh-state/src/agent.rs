use crate::credential::Credential;
use idmesh_types::{AgentId, UnixMillis};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// The lifecycle state of an agent.
///
/// `Active` ⇄ `Suspended` are reversible; `Revoked` is final: a revoked agent is never
/// re-enabled (register a new agent, with new credentials, instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    /// May authenticate and receive tokens.
    Active,
    /// Temporarily refused; can be resumed.
    Suspended,
    /// Permanently refused.
    Revoked,
}

impl AgentStatus {
    /// The status as a lowercase word.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Active => "active",
            AgentStatus::Suspended => "suspended",
            AgentStatus::Revoked => "revoked",
        }
    }
}

impl fmt::Display for AgentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AgentStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(AgentStatus::Active),
            "suspended" => Ok(AgentStatus::Suspended),
            "revoked" => Ok(AgentStatus::Revoked),
            other => Err(format!("must be one of active, suspended, revoked (got {other:?})")),
        }
    }
}

/// A registered agent: a non-human principal of the trust domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    /// `spiffe://<trust-domain>/agents/<name>`.
    pub id: AgentId,
    /// Who is responsible for the agent (free text: a team, an email).
    pub owner: String,
    /// Key/value labels used to select agents.
    pub labels: BTreeMap<String, String>,
    /// Public keys the agent proves possession of, ordered by `kid`.
    pub credentials: Vec<Credential>,
    /// Lifecycle state.
    pub status: AgentStatus,
    /// Why the agent was last suspended or revoked, if it was.
    pub status_reason: Option<String>,
    /// When the agent was registered (time of the registering command).
    pub created_at: UnixMillis,
    /// When the agent last changed (never earlier than `created_at`).
    pub updated_at: UnixMillis,
    /// Number of changes applied to this agent; 1 after registration.
    pub revision: u64,
}
