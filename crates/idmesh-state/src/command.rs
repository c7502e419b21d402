//! Commands: the only way a site's state changes. Each is one Raft log entry.

use crate::keys::KeySecret;
use crate::{PublicJwk, validate};
use idmesh_types::limits::CREDENTIALS_MAX_COUNT;
use idmesh_types::{AgentId, InvalidField, TrustDomain, UnixMillis};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A change to the site's state, with the time it was made.
///
/// `at` is chosen once, by the node that proposes the command, and replicated with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// When the change was requested (wall clock of the proposing node).
    pub at: UnixMillis,
    /// What changes.
    pub op: Op,
}

/// The changes a site knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Create an agent.
    RegisterAgent(RegisterAgent),
    /// Change an agent's owner, labels or credentials.
    UpdateAgent(UpdateAgent),
    /// Refuse an agent until it is resumed.
    SuspendAgent {
        /// The agent.
        id: AgentId,
        /// Why (free text, may be empty).
        reason: String,
    },
    /// Undo a suspension.
    ResumeAgent {
        /// The agent.
        id: AgentId,
    },
    /// Refuse an agent forever.
    RevokeAgent {
        /// The agent.
        id: AgentId,
        /// Why (free text, may be empty).
        reason: String,
    },
    /// Add a signing key to the site (its first, or the next one of a rotation).
    AddSigningKey(NewSigningKey),
    /// Remember a join token (its id and the SHA-256 of its secret) until it expires.
    MintJoinToken {
        /// 16 hex digits.
        id: String,
        /// SHA-256 of the secret, 64 hex digits.
        secret_sha256: String,
        /// When it stops working.
        expires_at: UnixMillis,
    },
    /// Spend a join token on node `node_id`.
    RedeemJoinToken {
        /// The token's id.
        id: String,
        /// SHA-256 of the secret presented.
        secret_sha256: String,
        /// The node id the joiner gets.
        node_id: u64,
    },
    /// Create or replace a policy.
    PutPolicy {
        /// The policy id.
        id: String,
        /// Its Cedar text.
        text: String,
        /// Apply only if the policy is at this revision (0: does not exist yet).
        expected_revision: Option<u64>,
    },
    /// Delete a policy.
    DeletePolicy {
        /// The policy id.
        id: String,
    },
    /// Declare application actions that policies and Authorize may name.
    DeclareActions {
        /// Their names.
        names: Vec<String>,
    },
    /// Let an agent act for a user.
    GrantDelegation(crate::NewDelegation),
    /// Withdraw a delegation, for good.
    RevokeDelegation {
        /// The delegation.
        id: String,
        /// Why (free text, may be empty).
        reason: String,
    },
    /// Trust a user issuer's keys (create or replace). `updated_at` is ignored: the command's
    /// time is used.
    PutIssuer(crate::TrustedIssuer),
    /// Stop trusting a user issuer.
    DeleteIssuer {
        /// Its `iss`.
        issuer: String,
    },
    /// Withdraw one token before it expires.
    RevokeToken {
        /// The token's `jti`.
        jti: String,
        /// The token's `exp`, unix ms.
        expires_at: UnixMillis,
        /// Why (free text, may be empty).
        reason: String,
    },
}

/// A new signing key. The secret was drawn by the proposing node; it travels in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewSigningKey {
    /// The private key.
    pub secret: KeySecret,
    /// When it starts signing (for the first key: the command's time).
    pub activates_at: UnixMillis,
    /// When the keys in use now stop verifying: after the last token they can sign has
    /// expired. Ignored for the first key.
    pub retire_previous_at: UnixMillis,
    /// The site's first key: refused if the site has one already (two leaders may both try).
    pub first: bool,
}

/// Registration of a new agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterAgent {
    /// The new agent's id; its trust domain must be the site's.
    pub id: AgentId,
    /// Who is responsible for it.
    pub owner: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Public keys it may authenticate with.
    pub credentials: Vec<PublicJwk>,
}

/// A change of some of an agent's fields. Absent fields stay as they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateAgent {
    /// The agent.
    pub id: AgentId,
    /// New owner.
    pub owner: Option<String>,
    /// New labels, replacing all current labels.
    pub labels: Option<BTreeMap<String, String>>,
    /// Keys to add.
    pub add_credentials: Vec<PublicJwk>,
    /// Thumbprints (`kid`) of keys to remove; removal happens before addition.
    pub remove_credentials: Vec<String>,
    /// Apply only if the agent is at this revision (optimistic concurrency).
    pub expected_revision: Option<u64>,
}

impl Command {
    /// The agent this command is about, if it is about one.
    pub fn agent_id(&self) -> Option<&AgentId> {
        match &self.op {
            Op::RegisterAgent(r) => Some(&r.id),
            Op::UpdateAgent(u) => Some(&u.id),
            Op::SuspendAgent { id, .. } | Op::ResumeAgent { id } | Op::RevokeAgent { id, .. } => Some(id),
            _ => None,
        }
    }

    /// True for the commands that travel as [`crate::Entry::Admin`]: policies, actions,
    /// delegations and trusted issuers.
    pub fn is_admin(&self) -> bool {
        matches!(
            self.op,
            Op::PutPolicy { .. }
                | Op::DeletePolicy { .. }
                | Op::DeclareActions { .. }
                | Op::GrantDelegation(_)
                | Op::RevokeDelegation { .. }
                | Op::PutIssuer(_)
                | Op::DeleteIssuer { .. }
                | Op::RevokeToken { .. }
        )
    }

    /// The delegation this command is about, if it is about one.
    pub fn delegation_id(&self) -> Option<&str> {
        match &self.op {
            Op::GrantDelegation(grant) => Some(&grant.id),
            Op::RevokeDelegation { id, .. } => Some(id),
            _ => None,
        }
    }

    /// The trusted issuer this command is about, if it is about one.
    pub fn issuer(&self) -> Option<&str> {
        match &self.op {
            Op::PutIssuer(issuer) => Some(&issuer.issuer),
            Op::DeleteIssuer { issuer } => Some(issuer),
            _ => None,
        }
    }

    /// What this command changes, named as its kind names it: an agent id, `policy <id>`, a
    /// delegation id, an issuer URL, `jti <id>`, `key <kid>`, `actions`.
    pub fn target(&self) -> String {
        if let Some(agent) = self.agent_id() {
            return agent.to_string();
        }
        match &self.op {
            Op::PutPolicy { id, .. } | Op::DeletePolicy { id } => format!("policy {id}"),
            Op::DeclareActions { .. } => "actions".to_owned(),
            Op::GrantDelegation(grant) => grant.id.clone(),
            Op::RevokeDelegation { id, .. } => id.clone(),
            Op::PutIssuer(issuer) => issuer.issuer.clone(),
            Op::DeleteIssuer { issuer } => issuer.clone(),
            Op::RevokeToken { jti, .. } => format!("jti {jti}"),
            Op::AddSigningKey(key) => format!("key {}", key.secret.public().thumbprint()),
            Op::MintJoinToken { id, .. } | Op::RedeemJoinToken { id, .. } => format!("join token {id}"),
            Op::RegisterAgent(_)
            | Op::UpdateAgent(_)
            | Op::SuspendAgent { .. }
            | Op::ResumeAgent { .. }
            | Op::RevokeAgent { .. } => String::new(),
        }
    }

    /// The policy this command is about, if it is about one.
    pub fn policy_id(&self) -> Option<&str> {
        match &self.op {
            Op::PutPolicy { id, .. } | Op::DeletePolicy { id } => Some(id),
            _ => None,
        }
    }

    /// Checks every rule that does not depend on the current state.
    pub fn validate(&self, trust_domain: &TrustDomain) -> Result<(), InvalidField> {
        let agent = match &self.op {
            Op::GrantDelegation(grant) => Some(&grant.agent),
            _ => self.agent_id(),
        };
        if let Some(id) = agent
            && id.trust_domain() != trust_domain
        {
            return Err(InvalidField::new(
                "agent_id",
                format!("trust domain must be {trust_domain} (this site's), got {}", id.trust_domain()),
            ));
        }
        match &self.op {
            Op::RegisterAgent(r) => {
                validate::owner(&r.owner)?;
                validate::labels(&r.labels)?;
                validate::credentials("credentials", &r.credentials)
            }
            Op::UpdateAgent(u) => {
                if u.owner.is_none()
                    && u.labels.is_none()
                    && u.add_credentials.is_empty()
                    && u.remove_credentials.is_empty()
                {
                    return Err(InvalidField::new(
                        "update",
                        "must change at least one of owner, labels, credentials",
                    ));
                }
                if let Some(owner) = &u.owner {
                    validate::owner(owner)?;
                }
                if let Some(labels) = &u.labels {
                    validate::labels(labels)?;
                }
                validate::credentials("add_credentials", &u.add_credentials)?;
                if u.remove_credentials.len() > CREDENTIALS_MAX_COUNT {
                    return Err(InvalidField::new(
                        "remove_credentials",
                        format!("must have at most {CREDENTIALS_MAX_COUNT} entries"),
                    ));
                }
                Ok(())
            }
            Op::SuspendAgent { reason, .. } | Op::RevokeAgent { reason, .. } => validate::reason(reason),
            Op::ResumeAgent { .. } => Ok(()),
            Op::PutPolicy { .. } | Op::DeletePolicy { .. } | Op::DeclareActions { .. } => {
                crate::policy::validate(&self.op)
            }
            Op::GrantDelegation(_) | Op::RevokeDelegation { .. } => {
                crate::delegation::validate(&self.op, self.at)
            }
            Op::PutIssuer(_) | Op::DeleteIssuer { .. } => crate::issuer::validate(&self.op),
            Op::RevokeToken { .. } => crate::token_revocation::validate(&self.op, self.at),
            Op::MintJoinToken { id, secret_sha256, expires_at } => {
                crate::join::validate_mint(id, secret_sha256, self.at, *expires_at)
            }
            Op::RedeemJoinToken { id, secret_sha256, node_id } => {
                crate::join::validate_redeem(id, secret_sha256, *node_id)
            }
            Op::AddSigningKey(key) => {
                if key.activates_at < self.at {
                    return Err(InvalidField::new("activates_at", "must not be before the command's time"));
                }
                if !key.first && key.retire_previous_at < key.activates_at {
                    return Err(InvalidField::new(
                        "retire_previous_at",
                        "must not be before the new key activates (tokens signed until then must verify)",
                    ));
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = match &self.op {
            Op::RegisterAgent(_) => "register",
            Op::UpdateAgent(_) => "update",
            Op::SuspendAgent { .. } => "suspend",
            Op::ResumeAgent { .. } => "resume",
            Op::RevokeAgent { .. } => "revoke",
            Op::AddSigningKey(key) => {
                return write!(f, "add signing key {} at {}", key.secret.public().thumbprint(), self.at);
            }
            Op::PutPolicy { .. } => "put",
            Op::DeletePolicy { .. } => "delete",
            Op::DeclareActions { names } => {
                return write!(f, "declare actions {} at {}", names.join(", "), self.at);
            }
            Op::GrantDelegation(grant) => {
                return write!(
                    f,
                    "grant delegation {} from {} to {} at {}",
                    grant.id, grant.user, grant.agent, self.at
                );
            }
            Op::RevokeDelegation { id, .. } => return write!(f, "revoke delegation {id} at {}", self.at),
            Op::PutIssuer(issuer) => return write!(f, "trust issuer {} at {}", issuer.issuer, self.at),
            Op::DeleteIssuer { issuer } => return write!(f, "distrust issuer {issuer} at {}", self.at),
            Op::RevokeToken { jti, .. } => return write!(f, "revoke token {jti} at {}", self.at),
            Op::MintJoinToken { id, expires_at, .. } => {
                return write!(f, "mint join token {id} expiring at {expires_at} at {}", self.at);
            }
            Op::RedeemJoinToken { id, node_id, .. } => {
                return write!(f, "redeem join token {id} for node {node_id} at {}", self.at);
            }
        };
        match self.agent_id() {
            Some(id) => write!(f, "{verb} {id} at {}", self.at),
            None if self.policy_id().is_some() => {
                write!(f, "{verb} policy {} at {}", self.policy_id().unwrap_or_default(), self.at)
            }
            None => write!(f, "{verb} at {}", self.at),
        }
    }
}
