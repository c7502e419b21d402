//! Delegations: user U lets agent A act for U with scopes S on audiences R until T. A grant is
//! written once and never edited; the only change it knows is its revocation, which is final
//! (DESIGN §2.5: revocation wins). The pure logic of the commands that create and revoke them.

use crate::{Agent, AgentStatus, Command, Op, StateError};
use idmesh_types::limits::{
    AUDIENCES_MAX_COUNT, DELEGATION_MAX_LIFETIME_SECS, DELEGATIONS_MAX_COUNT, SCOPES_MAX_COUNT,
};
use idmesh_types::{
    AgentId, InvalidField, UnixMillis, validate_audience, validate_issuer, validate_scope,
    validate_user_subject,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// What starts every delegation id; 32 lowercase hex digits follow.
pub const DELEGATION_ID_PREFIX: &str = "dlg-";

/// A user as a trusted issuer names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UserRef {
    /// The issuer of the user's tokens (`iss`).
    pub issuer: String,
    /// The user's subject at that issuer (`sub`).
    pub subject: String,
}

impl fmt::Display for UserRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (issuer {})", self.subject, self.issuer)
    }
}

/// A grant as it is asked for. The id is drawn once, by the node that takes the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewDelegation {
    /// `dlg-` and 32 hex digits.
    pub id: String,
    /// Who grants.
    pub user: UserRef,
    /// Who may act for the user.
    pub agent: AgentId,
    /// The scopes the agent may hold for the user (a token's scopes are a subset).
    pub scopes: Vec<String>,
    /// The audiences (a token's audiences are a subset).
    pub audiences: Vec<String>,
    /// When the grant ends.
    pub expires_at: UnixMillis,
}

/// A delegation's revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelegationRevocation {
    /// When (the revoking command's time).
    pub at: UnixMillis,
    /// Why (free text, may be empty).
    pub reason: String,
}

/// A delegation as the replicated state holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delegation {
    /// Its id.
    pub id: String,
    /// Who granted.
    pub user: UserRef,
    /// Who may act for the user.
    pub agent: AgentId,
    /// Scopes granted, sorted.
    pub scopes: BTreeSet<String>,
    /// Audiences granted, sorted.
    pub audiences: BTreeSet<String>,
    /// When it was granted.
    pub granted_at: UnixMillis,
    /// When it ends.
    pub expires_at: UnixMillis,
    /// Set once revoked; never unset.
    pub revoked: Option<DelegationRevocation>,
}

/// Why a delegation does not cover a request now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotCovered {
    /// Revoked (final).
    #[error("delegation {id} was revoked at {at}{reason}")]
    Revoked {
        /// The delegation.
        id: String,
        /// When.
        at: UnixMillis,
        /// `": why"` or empty.
        reason: String,
    },
    /// Past its end.
    #[error("delegation {id} expired at {expires_at}")]
    Expired {
        /// The delegation.
        id: String,
        /// When it ended.
        expires_at: UnixMillis,
    },
    /// Asks for more than was granted.
    #[error("delegation {id} does not grant {what} {missing}")]
    Escalation {
        /// The delegation.
        id: String,
        /// `scope` or `audience`.
        what: &'static str,
        /// The first value not granted.
        missing: String,
    },
}

impl Delegation {
    /// Whether it lets its agent act now (not revoked, not expired).
    pub fn check_live(&self, now: UnixMillis) -> Result<(), NotCovered> {
        if let Some(revoked) = &self.revoked {
            let reason =
                if revoked.reason.is_empty() { String::new() } else { format!(": {}", revoked.reason) };
            return Err(NotCovered::Revoked { id: self.id.clone(), at: revoked.at, reason });
        }
        if now >= self.expires_at {
            return Err(NotCovered::Expired { id: self.id.clone(), expires_at: self.expires_at });
        }
        Ok(())
    }

    /// Whether it is live and grants every one of `scopes` and `audiences`.
    pub fn check_covers(
        &self,
        now: UnixMillis,
        scopes: &[String],
        audiences: &[String],
    ) -> Result<(), NotCovered> {
        self.check_live(now)?;
        let escalation = |what, missing: &String| NotCovered::Escalation {
            id: self.id.clone(),
            what,
            missing: missing.clone(),
        };
        if let Some(missing) = scopes.iter().find(|s| !self.scopes.contains(*s)) {
            return Err(escalation("scope", missing));
        }
        if let Some(missing) = audiences.iter().find(|a| !self.audiences.contains(*a)) {
            return Err(escalation("audience", missing));
        }
        Ok(())
    }
}

/// Every delegation a replica holds, by id, and indexed by (agent, user). Materialized from the
/// shard documents, never stored or sent as such.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Delegations {
    /// By id. Read freely; write only through [`Delegations::insert`], which keeps the index in step.
    pub by_id: BTreeMap<String, Delegation>,
    /// Ids by (agent, user): what an exchange looks up.
    by_grantee: BTreeMap<(String, UserRef), std::collections::BTreeSet<String>>,
}

impl Delegations {
    /// Adds or replaces `delegation` (its grant never changes; its revocation may appear).
    pub fn insert(&mut self, delegation: Delegation) {
        let key = (delegation.agent.to_string(), delegation.user.clone());
        self.by_grantee.entry(key).or_default().insert(delegation.id.clone());
        self.by_id.insert(delegation.id.clone(), delegation);
    }

    /// The delegations of `user` to `agent`, newest grant first.
    pub fn of(&self, user: &UserRef, agent: &AgentId) -> Vec<&Delegation> {
        let key = (agent.to_string(), user.clone());
        let mut found: Vec<&Delegation> =
            self.by_grantee.get(&key).into_iter().flatten().filter_map(|id| self.by_id.get(id)).collect();
        found.sort_by(|a, b| b.granted_at.cmp(&a.granted_at).then_with(|| a.id.cmp(&b.id)));
        found
    }
}

/// A delegation id: `dlg-` and 32 lowercase hex digits.
pub fn validate_delegation_id(field: &str, id: &str) -> Result<(), InvalidField> {
    let ok = id.strip_prefix(DELEGATION_ID_PREFIX).is_some_and(|hex| {
        hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if ok {
        Ok(())
    } else {
        Err(InvalidField::new(
            field,
            format!("must be {DELEGATION_ID_PREFIX} and 32 lowercase hex digits (got {id:?})"),
        ))
    }
}

/// Checks the rules of a delegation command that do not depend on the state.
pub(crate) fn validate(op: &Op, at: UnixMillis) -> Result<(), InvalidField> {
    match op {
        Op::GrantDelegation(grant) => {
            validate_delegation_id("delegation_id", &grant.id)?;
            validate_issuer("user_issuer", &grant.user.issuer)?;
            validate_user_subject("user", &grant.user.subject)?;
            if grant.scopes.is_empty() || grant.scopes.len() > SCOPES_MAX_COUNT {
                return Err(InvalidField::new("scopes", format!("1 to {SCOPES_MAX_COUNT} are required")));
            }
            for scope in &grant.scopes {
                validate_scope("scopes", scope)?;
            }
            if grant.audiences.is_empty() || grant.audiences.len() > AUDIENCES_MAX_COUNT {
                return Err(InvalidField::new(
                    "audiences",
                    format!("1 to {AUDIENCES_MAX_COUNT} are required"),
                ));
            }
            for audience in &grant.audiences {
                validate_audience("audiences", audience)?;
            }
            let longest = UnixMillis(at.0.saturating_add(DELEGATION_MAX_LIFETIME_SECS * 1000));
            if grant.expires_at <= at || grant.expires_at > longest {
                return Err(InvalidField::new(
                    "expires_at",
                    format!("must be after the grant and at most {DELEGATION_MAX_LIFETIME_SECS} s after it"),
                ));
            }
            Ok(())
        }
        Op::RevokeDelegation { id, reason } => {
            validate_delegation_id("delegation_id", id)?;
            crate::validate::reason(reason)
        }
        _ => Ok(()),
    }
}

/// What a grant or revocation needs to know about the rest of the state.
#[derive(Debug)]
pub struct DelegationContext<'a> {
    /// The agent granted to, as applied.
    pub agent: Option<&'a Agent>,
    /// Whether the user's issuer is trusted.
    pub issuer_trusted: bool,
    /// How many delegations exist.
    pub count: usize,
}

/// The delegation `command` leaves, given the delegation `before` it.
pub fn delegation_after(
    before: Option<&Delegation>,
    context: &DelegationContext<'_>,
    command: &Command,
) -> Result<Delegation, StateError> {
    validate(&command.op, command.at)?;
    match &command.op {
        Op::GrantDelegation(grant) => {
            if before.is_some() {
                return Err(StateError::AlreadyExists { what: format!("delegation {}", grant.id) });
            }
            if context.count >= DELEGATIONS_MAX_COUNT {
                return Err(InvalidField::new(
                    "delegation_id",
                    format!("a trust domain holds at most {DELEGATIONS_MAX_COUNT} delegations"),
                )
                .into());
            }
            match context.agent {
                None => return Err(StateError::NotFound { what: format!("agent {}", grant.agent) }),
                Some(agent) if agent.status != AgentStatus::Active => {
                    return Err(StateError::FailedPrecondition {
                        what: format!("delegation to {}", grant.agent),
                        rule: format!("the agent is {}; only an active agent can be granted", agent.status),
                    });
                }
                Some(_) => {}
            }
            if !context.issuer_trusted {
                return Err(StateError::FailedPrecondition {
                    what: format!("delegation from {}", grant.user),
                    rule: format!(
                        "issuer {} is not trusted; add it first (idmesh issuer put)",
                        grant.user.issuer
                    ),
                });
            }
            Ok(Delegation {
                id: grant.id.clone(),
                user: grant.user.clone(),
                agent: grant.agent.clone(),
                scopes: grant.scopes.iter().cloned().collect(),
                audiences: grant.audiences.iter().cloned().collect(),
                granted_at: command.at,
                expires_at: grant.expires_at,
                revoked: None,
            })
        }
        Op::RevokeDelegation { id, reason } => {
            let before = before.ok_or_else(|| StateError::NotFound { what: format!("delegation {id}") })?;
            if before.revoked.is_some() {
                return Ok(before.clone());
            }
            Ok(Delegation {
                revoked: Some(DelegationRevocation { at: command.at, reason: reason.clone() }),
                ..before.clone()
            })
        }
        _ => Err(InvalidField::new("op", "not a delegation command").into()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::RegisterAgent;
    use idmesh_types::TrustDomain;

    const ID: &str = "dlg-0123456789abcdef0123456789abcdef";

    fn agent(status: AgentStatus) -> Agent {
        let td = TrustDomain::parse_field("td", "acme.example").unwrap();
        let command = Command {
            at: UnixMillis(1),
            op: Op::RegisterAgent(RegisterAgent {
                id: AgentId::parse_field("agent", &format!("spiffe://{td}/agents/bot")).unwrap(),
                owner: "ops".into(),
                labels: Default::default(),
                credentials: vec![],
            }),
        };
        Agent { status, ..crate::agent_after(&td, None, &command).unwrap() }
    }

    fn grant(expires_at: u64) -> Command {
        Command {
            at: UnixMillis(1_000),
            op: Op::GrantDelegation(NewDelegation {
                id: ID.into(),
                user: UserRef { issuer: "https://idp.example".into(), subject: "alice".into() },
                agent: agent(AgentStatus::Active).id,
                scopes: vec!["payments:read".into(), "payments:write".into()],
                audiences: vec!["payments".into()],
                expires_at: UnixMillis(expires_at),
            }),
        }
    }

    #[test]
    fn a_grant_covers_only_what_it_grants_until_it_ends_or_is_revoked() {
        let active = agent(AgentStatus::Active);
        let context = DelegationContext { agent: Some(&active), issuer_trusted: true, count: 0 };
        let d = delegation_after(None, &context, &grant(10_000)).unwrap();
        let read = vec!["payments:read".to_owned()];
        let aud = vec!["payments".to_owned()];
        assert!(d.check_covers(UnixMillis(5_000), &read, &aud).is_ok());
        let admin = vec!["payments:admin".to_owned()];
        assert!(matches!(
            d.check_covers(UnixMillis(5_000), &admin, &aud),
            Err(NotCovered::Escalation { what: "scope", .. })
        ));
        let other = vec!["ledger".to_owned()];
        assert!(matches!(
            d.check_covers(UnixMillis(5_000), &read, &other),
            Err(NotCovered::Escalation { what: "audience", .. })
        ));
        assert!(matches!(d.check_live(UnixMillis(10_000)), Err(NotCovered::Expired { .. })));
        let revoke = Command {
            at: UnixMillis(6_000),
            op: Op::RevokeDelegation { id: ID.into(), reason: "left".into() },
        };
        let revoked = delegation_after(Some(&d), &context, &revoke).unwrap();
        assert!(matches!(revoked.check_live(UnixMillis(6_001)), Err(NotCovered::Revoked { .. })));
        // Revoking again changes nothing (the first revocation stays).
        let again = Command {
            at: UnixMillis(7_000),
            op: Op::RevokeDelegation { id: ID.into(), reason: String::new() },
        };
        assert_eq!(delegation_after(Some(&revoked), &context, &again).unwrap(), revoked);
    }

    #[test]
    fn grants_that_break_a_rule_are_refused() {
        let active = agent(AgentStatus::Active);
        let suspended = agent(AgentStatus::Suspended);
        let ok = DelegationContext { agent: Some(&active), issuer_trusted: true, count: 0 };
        let d = delegation_after(None, &ok, &grant(10_000)).unwrap();
        assert!(matches!(
            delegation_after(Some(&d), &ok, &grant(10_000)),
            Err(StateError::AlreadyExists { .. })
        ));
        let untrusted = DelegationContext { issuer_trusted: false, ..ok };
        assert!(matches!(
            delegation_after(None, &untrusted, &grant(10_000)),
            Err(StateError::FailedPrecondition { .. })
        ));
        let inactive = DelegationContext { agent: Some(&suspended), issuer_trusted: true, count: 0 };
        assert!(matches!(
            delegation_after(None, &inactive, &grant(10_000)),
            Err(StateError::FailedPrecondition { .. })
        ));
        let missing = DelegationContext { agent: None, issuer_trusted: true, count: 0 };
        assert!(matches!(delegation_after(None, &missing, &grant(10_000)), Err(StateError::NotFound { .. })));
        let full =
            DelegationContext { agent: Some(&active), issuer_trusted: true, count: DELEGATIONS_MAX_COUNT };
        assert!(matches!(delegation_after(None, &full, &grant(10_000)), Err(StateError::Invalid(_))));
        // Ends before it starts, or lasts over a year.
        assert!(delegation_after(None, &ok, &grant(1_000)).is_err());
        assert!(
            delegation_after(None, &ok, &grant(1_000 + DELEGATION_MAX_LIFETIME_SECS * 1000 + 1)).is_err()
        );
        let mut too_many = grant(10_000);
        if let Op::GrantDelegation(g) = &mut too_many.op {
            g.scopes = (0..=SCOPES_MAX_COUNT).map(|i| format!("s{i}")).collect();
        }
        assert!(delegation_after(None, &ok, &too_many).is_err());
        let mut bad_id = grant(10_000);
        if let Op::GrantDelegation(g) = &mut bad_id.op {
            g.id = "dlg-XYZ".into();
        }
        assert!(delegation_after(None, &ok, &bad_id).is_err());
        let revoke_missing =
            Command { at: UnixMillis(2), op: Op::RevokeDelegation { id: ID.into(), reason: String::new() } };
        assert!(matches!(delegation_after(None, &ok, &revoke_missing), Err(StateError::NotFound { .. })));
    }
}
