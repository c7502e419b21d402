//! Authorize: verify a token, then decide whether its agent may do an action on a resource,
//! with this node's partition-aware context. Every decision is audited before it is answered.

use crate::{Node, NodeError};
use idmesh_audit::{AuthzDecision, Event};
use idmesh_policy::{Principal, Resource};
use idmesh_types::limits::{
    ATTRIBUTE_KEY_MAX_BYTES, ATTRIBUTE_VALUE_MAX_BYTES, REQUEST_ATTRIBUTES_MAX_COUNT, RESOURCE_ID_MAX_BYTES,
};
use idmesh_types::{AgentId, InvalidField, validate_action_name};
use std::collections::BTreeMap;

/// What an enforcement point asks.
#[derive(Debug, Clone, Default)]
pub struct AuthorizeQuery {
    /// An access token of any site of the trust domain.
    pub token: String,
    /// The action.
    pub action: String,
    /// The resource id.
    pub resource: String,
    /// The resource's attributes (Cedar tags).
    pub resource_attributes: BTreeMap<String, String>,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizeOutcome {
    /// Permitted.
    pub allowed: bool,
    /// The policies that determined it.
    pub determining: Vec<String>,
    /// Why, in one line.
    pub reason: String,
    /// Policies skipped for this request.
    pub errors: Vec<String>,
    /// The policy version decided with.
    pub policy_version: String,
    /// The acting agent (empty if the token did not verify).
    pub agent: String,
    /// The user acted for, if any.
    pub on_behalf_of: Option<String>,
    /// The acting chain, outermost first (empty when the agent acts for itself).
    pub actors: Vec<String>,
    /// The decision's audit record.
    pub audit_seq: u64,
}

fn check(query: &AuthorizeQuery) -> Result<(), InvalidField> {
    if query.token.is_empty() || query.token.len() > idmesh_token::TOKEN_MAX_BYTES {
        return Err(InvalidField::new(
            "token",
            format!("must be 1 to {} bytes", idmesh_token::TOKEN_MAX_BYTES),
        ));
    }
    validate_action_name("action", &query.action)?;
    if query.resource.is_empty() || query.resource.len() > RESOURCE_ID_MAX_BYTES {
        return Err(InvalidField::new("resource", format!("must be 1 to {RESOURCE_ID_MAX_BYTES} bytes")));
    }
    if query.resource_attributes.len() > REQUEST_ATTRIBUTES_MAX_COUNT {
        return Err(InvalidField::new(
            "resource_attributes",
            format!("at most {REQUEST_ATTRIBUTES_MAX_COUNT} (got {})", query.resource_attributes.len()),
        ));
    }
    for (key, value) in &query.resource_attributes {
        if key.is_empty() || key.len() > ATTRIBUTE_KEY_MAX_BYTES || value.len() > ATTRIBUTE_VALUE_MAX_BYTES {
            return Err(InvalidField::new(
                format!("resource_attributes.{key}"),
                format!(
                    "key must be 1 to {ATTRIBUTE_KEY_MAX_BYTES} bytes, value at most {ATTRIBUTE_VALUE_MAX_BYTES}"
                ),
            ));
        }
    }
    Ok(())
}

impl Node {
    /// Decides `query` and records the decision in the audit log, durably, before answering.
    /// Bad input (limits, an unknown action) is refused and audited as a deny.
    pub async fn authorize(&self, query: AuthorizeQuery) -> Result<AuthorizeOutcome, NodeError> {
        let book = self.policy_book()?;
        let mut record = AuthzDecision {
            agent: None,
            on_behalf_of: None,
            actors: Vec::new(),
            jti: None,
            action: query.action.chars().take(128).collect(),
            resource: query.resource.chars().take(RESOURCE_ID_MAX_BYTES).collect(),
            allowed: false,
            determining_policies: Vec::new(),
            reason: String::new(),
            policy_version: book.version().to_owned(),
        };
        let refused = match check(&query) {
            Err(invalid) => Some(NodeError::Invalid(invalid)),
            Ok(()) if !book.knows_action(&query.action) => {
                Some(NodeError::UnknownAction { action: query.action.clone() })
            }
            Ok(()) => None,
        };
        if let Some(error) = refused {
            record.reason = error.to_string();
            self.audit_decision(record).await?;
            return Err(error);
        }
        let mut outcome = AuthorizeOutcome {
            allowed: false,
            determining: Vec::new(),
            reason: String::new(),
            errors: Vec::new(),
            policy_version: book.version().to_owned(),
            agent: String::new(),
            on_behalf_of: None,
            actors: Vec::new(),
            audit_seq: 0,
        };
        match self.verify_access_token(&query.token, None) {
            Err(rejected) => {
                outcome.reason = format!("token not valid here: {rejected}");
                // Signed by a site of the trust domain but no longer honoured: the refusal is
                // recorded under the agents, user and token it names, so a trace finds it.
                let signed = rejected.signature_verified().then(|| {
                    idmesh_token::jws::parse(&query.token)
                        .and_then(|t| t.claims::<idmesh_token::AccessClaims>())
                        .ok()
                });
                if let Some(claims) = signed.flatten() {
                    name_token(&mut record, &claims);
                }
            }
            Ok(verified) => {
                let claims = verified.claims;
                let (owner, labels) = AgentId::parse_field("client_id", &claims.client_id)
                    .ok()
                    .and_then(|id| {
                        self.shared()
                            .read()
                            .state
                            .registry
                            .get(&id)
                            .map(|a| (a.owner.clone(), a.labels.clone()))
                    })
                    .unwrap_or_default();
                let on_behalf_of = claims.on_behalf_of().map(str::to_owned);
                let actors = claims.actors();
                let freshness = self.freshness();
                let mut question = self.decision_request_with(
                    &freshness,
                    Principal::Agent { id: claims.client_id.clone(), owner, labels },
                    &query.action,
                    Resource::App {
                        id: query.resource.clone(),
                        attributes: query.resource_attributes.clone(),
                    },
                    claims.scopes().map(str::to_owned).collect(),
                    claims.aud.to_vec(),
                );
                question.on_behalf_of = on_behalf_of.clone();
                question.actors = actors.clone();
                let decision = book.decide(&question)?;
                outcome.allowed = decision.allowed;
                outcome.reason = decision.reason();
                outcome.determining = decision.determining;
                outcome.errors = decision.errors;
                outcome.agent = claims.client_id.clone();
                outcome.on_behalf_of = on_behalf_of;
                outcome.actors = actors;
                name_token(&mut record, &claims);
            }
        }
        record.allowed = outcome.allowed;
        record.determining_policies = outcome.determining.clone();
        record.reason = outcome.reason.clone();
        outcome.audit_seq = self.audit_decision(record).await?;
        tracing::debug!(agent = %outcome.agent, action = %query.action, allowed = outcome.allowed, "authorize");
        Ok(outcome)
    }

    async fn audit_decision(&self, record: AuthzDecision) -> Result<u64, NodeError> {
        match self.audit().append(Event::Authorized(record)).await {
            Ok(appended) => Ok(appended.seq),
            Err(e) => {
                tracing::error!(error = %e, "audit append failed; decision not answered");
                Err(NodeError::AuditUnavailable { detail: e.to_string() })
            }
        }
    }
}

/// Puts in the record whom the token names: its agent, the user it acts for, the acting chain
/// and its `jti`.
fn name_token(record: &mut AuthzDecision, claims: &idmesh_token::AccessClaims) {
    record.agent = Some(claims.client_id.clone());
    record.on_behalf_of = claims.on_behalf_of().map(str::to_owned);
    record.actors = claims.actors();
    record.jti = Some(claims.jti.clone());
}
