//! Token exchange (RFC 8693): an agent, authenticated by its client assertion (the
//! `actor_token`), trades a user's token (the `subject_token`) for a token that acts on the
//! user's behalf: `sub` = the user, `client_id` and `act.sub` = the agent.
//!
//! The subject token is either a user's token from a trusted issuer (verified against the
//! issuer's keys in the replicated state, so this works offline), or an idmesh token that
//! already acts for a user: then the agent that holds it passes its grant on to a sub-agent,
//! the acting chain grows by one (`act` nests), and scopes, audiences and lifetime can only
//! narrow. Either way a live delegation of the user must cover the request, and policy must
//! permit `exchange_token` (and `delegate`, for a sub-agent). Like issuance, it is decided from
//! this node's applied state and audited before the answer leaves.

use crate::tokens::{IssuedToken, TokenRequest, check_request, random_id};
use crate::{Node, NodeError};
use idmesh_audit::{Event, ExchangedToken, RefusedExchange};
use idmesh_policy::{PolicyBook, Principal, Resource};
use idmesh_state::{Agent, Delegation, SiteState, UserRef};
use idmesh_token::access::{self, AccessClaims, ActorClaim, Audience, IdmeshClaims};
use idmesh_token::user::{self, IssuerView};
use idmesh_types::{InvalidField, UnixMillis};

/// RFC 8693 token type of a JWT (a user's token, or an agent's assertion).
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
/// RFC 8693 token type of an access token (an idmesh token passed on to a sub-agent).
pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

/// What an agent asks for.
#[derive(Debug, Clone, Default)]
pub struct ExchangeRequest {
    /// The user's token, or an idmesh token acting for the user.
    pub subject_token: String,
    /// Its type: empty, [`TOKEN_TYPE_JWT`] or [`TOKEN_TYPE_ACCESS_TOKEN`].
    pub subject_token_type: String,
    /// The asking agent's client assertion (RFC 7523).
    pub actor_token: String,
    /// Its type: empty or [`TOKEN_TYPE_JWT`].
    pub actor_token_type: String,
    /// Requested scopes.
    pub scopes: Vec<String>,
    /// Requested audiences.
    pub audiences: Vec<String>,
    /// Requested lifetime; 0 for the default.
    pub ttl_secs: u64,
    /// The delegation to act under; empty: the newest live one that covers the request.
    pub delegation_id: String,
}

/// A refusal and what its audit record says.
struct Refused {
    error: NodeError,
    record: RefusedExchange,
}

/// What was decided, ready to be recorded.
struct Exchanged {
    claims: AccessClaims,
    kid: String,
    access_token: String,
    ttl_secs: u64,
    record: ExchangedToken,
}

/// The subject of the exchange once verified.
struct Subject {
    user: UserRef,
    /// The acting chain of the subject token (empty for a user's token), outermost first.
    actors: Vec<String>,
    /// For an idmesh token: its delegation, scopes, audiences and expiry (the bounds).
    parent: Option<(String, Vec<String>, Vec<String>, u64)>,
    /// The agent a user's token allows (`may_act`).
    may_act: Option<String>,
    /// For the audit record.
    described: String,
}

impl Node {
    /// Exchanges `request`, or refuses it; either way the outcome is in the audit log, durably,
    /// before this returns.
    pub async fn exchange_token(&self, request: ExchangeRequest) -> Result<IssuedToken, NodeError> {
        let now = self.now();
        match self.decide_exchange(&request, now) {
            Ok(exchanged) => {
                let record =
                    self.audit().append(Event::TokenExchanged(exchanged.record)).await.map_err(|e| {
                        tracing::error!(error = %e, "audit append failed; token not issued");
                        NodeError::AuditUnavailable { detail: e.to_string() }
                    })?;
                let claims = exchanged.claims;
                tracing::debug!(agent = %claims.client_id, user = %claims.sub, jti = %claims.jti, "token exchanged");
                Ok(IssuedToken {
                    access_token: exchanged.access_token,
                    claims,
                    kid: exchanged.kid,
                    ttl_secs: exchanged.ttl_secs,
                    audit_seq: record.seq,
                })
            }
            Err(refused) => {
                let mut record = refused.record;
                record.code = format!("{:?}", refused.error.code());
                record.reason = refused.error.to_string();
                if let Err(e) = self.audit().append(Event::ExchangeRefused(record)).await {
                    tracing::error!(error = %e, "audit append failed for a refusal");
                    return Err(NodeError::AuditUnavailable { detail: e.to_string() });
                }
                tracing::debug!(error = %refused.error, "token exchange refused");
                Err(refused.error)
            }
        }
    }

    fn decide_exchange(&self, request: &ExchangeRequest, now: UnixMillis) -> Result<Exchanged, Box<Refused>> {
        let mut record = RefusedExchange {
            agent: None,
            user: None,
            delegation: None,
            actors: Vec::new(),
            code: String::new(),
            reason: String::new(),
            assertion: None,
            policy_version: String::new(),
            determining_policies: Vec::new(),
        };
        macro_rules! refuse {
            ($error:expr) => {
                return Err(Box::new(Refused { error: $error, record }))
            };
        }
        let settings = &self.config().tokens;
        let as_token_request = TokenRequest {
            client_assertion: request.actor_token.clone(),
            client_assertion_type: String::new(),
            scopes: request.scopes.clone(),
            audiences: request.audiences.clone(),
            ttl_secs: request.ttl_secs,
        };
        let checked = check_request(&as_token_request, settings.default_ttl_secs, settings.max_ttl_secs)
            .map_err(|e| InvalidField::new(e.field.replace("client_assertion", "actor_token"), e.rule))
            .and_then(|checked| check_exchange(request).map(|()| checked));
        let (scopes, audiences, ttl_secs) = match checked {
            Ok(checked) => checked,
            Err(invalid) => refuse!(invalid.into()),
        };
        let book = match self.policy_book() {
            Ok(book) => book,
            Err(e) => refuse!(e),
        };
        record.policy_version = book.version().to_owned();
        // An idmesh subject token is verified first: it reads the state itself.
        let subject_is_idmesh = match user::claimed_issuer(&request.subject_token) {
            Ok(issuer) => !self.shared().read().state.issuers.by_issuer.contains_key(&issuer),
            Err(e) => refuse!(subject_refused(e.to_string())),
        };
        let idmesh_subject = if subject_is_idmesh {
            match self.verify_access_token(&request.subject_token, None) {
                Ok(verified) => Some(verified.claims),
                Err(rejected) => refuse!(subject_refused(format!(
                    "issuer is not trusted and it is not an idmesh token valid here: {rejected}"
                ))),
            }
        } else {
            None
        };
        let freshness = self.freshness();
        let state = self.shared().read();
        let (agent, verified) = match self.authenticate(&request.actor_token, now, &state.state.registry) {
            Ok(found) => found,
            Err(failed) => {
                record.agent = failed.agent;
                record.assertion = failed.assertion;
                refuse!(actor_refused(failed.error))
            }
        };
        let agent_name = verified.agent.to_string();
        record.agent = Some(agent_name.clone());
        record.assertion = Some((verified.jti.clone(), verified.exp));
        let subject = match idmesh_subject {
            Some(claims) => subject_of_idmesh_token(claims),
            None => self.subject_of_user_token(&state.state, &request.subject_token, now),
        };
        let subject = match subject {
            Ok(subject) => subject,
            Err(error) => refuse!(error),
        };
        record.user = Some(subject.user.subject.clone());
        let mut actors = vec![agent_name.clone()];
        actors.extend(subject.actors.iter().cloned());
        record.actors = actors.clone();
        if let Some(allowed) = &subject.may_act
            && allowed != &agent_name
        {
            refuse!(NodeError::PermissionDenied {
                reason: format!("the subject token's may_act allows {allowed}, not {agent_name}"),
            });
        }
        if subject.actors.contains(&agent_name) {
            refuse!(NodeError::PermissionDenied {
                reason: format!(
                    "{agent_name} is already in the acting chain [{}]",
                    subject.actors.join(", ")
                ),
            });
        }
        let depth_limit = settings.max_actor_chain_depth;
        if actors.len() > depth_limit {
            refuse!(NodeError::PermissionDenied {
                reason: format!(
                    "the acting chain would be {} agents deep; this trust domain allows at most {depth_limit}",
                    actors.len()
                ),
            });
        }
        // Scopes and audiences only narrow along a chain; the root grant bounds them all.
        let mut expires_at_secs = now.as_secs() + ttl_secs;
        let delegation = match &subject.parent {
            Some((id, held_scopes, held_audiences, exp)) => {
                if let Some(missing) = scopes.iter().find(|s| !held_scopes.contains(s)) {
                    refuse!(NodeError::PermissionDenied {
                        reason: format!(
                            "scope {missing} is not held by the subject token: scopes only narrow"
                        ),
                    });
                }
                if let Some(missing) = audiences.iter().find(|a| !held_audiences.contains(a)) {
                    refuse!(NodeError::PermissionDenied {
                        reason: format!(
                            "audience {missing} is not held by the subject token: audiences only narrow"
                        ),
                    });
                }
                expires_at_secs = expires_at_secs.min(*exp);
                state.state.delegations.by_id.get(id).cloned()
            }
            None => {
                let found = self.covering_delegation(
                    &state.state,
                    &subject.user,
                    agent,
                    &request.delegation_id,
                    &scopes,
                    &audiences,
                    now,
                );
                match found {
                    Ok(found) => found,
                    Err(error) => {
                        if !request.delegation_id.is_empty() {
                            record.delegation = Some(request.delegation_id.clone());
                        }
                        refuse!(error)
                    }
                }
            }
        };
        let Some(delegation) = delegation else {
            refuse!(NodeError::PermissionDenied {
                reason: "the subject token's delegation is not known here".into()
            });
        };
        record.delegation = Some(delegation.id.clone());
        if let Err(not_covered) = delegation.check_covers(now, &scopes, &audiences) {
            refuse!(NodeError::PermissionDenied { reason: not_covered.to_string() });
        }
        expires_at_secs = expires_at_secs.min(delegation.expires_at.as_secs());
        // Policy: passing the grant on (sub-agents), then the exchange for every audience.
        let mut permitted_by = Vec::new();
        let question = |principal: Principal, action: &str, resource: Resource, chain: &[String]| {
            let mut q = self.decision_request_with(
                &freshness,
                principal,
                action,
                resource,
                scopes.clone(),
                audiences.clone(),
            );
            q.on_behalf_of = Some(subject.user.subject.clone());
            q.actors = chain.to_vec();
            q
        };
        if let Some(holder) = subject.actors.first() {
            let holder_agent = idmesh_types::AgentId::parse_field("act.sub", holder)
                .ok()
                .and_then(|id| state.state.registry.get(&id));
            let principal = principal_of(holder, holder_agent);
            let resource = Resource::Agent {
                id: agent_name.clone(),
                owner: agent.owner.clone(),
                labels: agent.labels.clone(),
            };
            match decide(&book, &question(principal, "delegate", resource, &subject.actors)) {
                Ok(by) => permitted_by.extend(by),
                Err((error, forbidden)) => {
                    record.determining_policies = forbidden;
                    refuse!(error);
                }
            }
        }
        for audience in &audiences {
            let principal = principal_of(&agent_name, Some(agent));
            match decide(
                &book,
                &question(principal, "exchange_token", Resource::Audience(audience.clone()), &actors),
            ) {
                Ok(by) => permitted_by.extend(by),
                Err((error, forbidden)) => {
                    record.determining_policies = forbidden;
                    refuse!(error);
                }
            }
        }
        permitted_by.sort();
        permitted_by.dedup();
        let Some(key) = state.state.keys.signing_key_at(now) else {
            refuse!(NodeError::NoSigningKey { site: self.config().site.to_string() });
        };
        let jti = match random_id(self) {
            Ok(jti) => jti,
            Err(e) => refuse!(e),
        };
        let now_secs = now.as_secs();
        let claims = AccessClaims {
            iss: settings.issuer.clone(),
            sub: subject.user.subject.clone(),
            client_id: agent_name.clone(),
            aud: if audiences.len() == 1 {
                Audience::One(audiences[0].clone())
            } else {
                Audience::Many(audiences.clone())
            },
            scope: scopes.join(" "),
            iat: now_secs,
            nbf: now_secs,
            exp: expires_at_secs,
            jti,
            act: ActorClaim::from_chain(&actors),
            idmesh: IdmeshClaims {
                site: self.config().site.to_string(),
                node: self.config().node_id.0,
                policy_version: book.version().to_owned(),
                delegation: delegation.id.clone(),
                user_issuer: subject.user.issuer.clone(),
                credential: verified.kid.clone(),
            },
        };
        let signing_key = self.key_cache().signing_key(key);
        let access_token = match access::mint(&signing_key, &key.kid, &claims) {
            Ok(token) => token,
            Err(e) => refuse!(NodeError::Storage { detail: e.to_string() }),
        };
        let record = ExchangedToken {
            agent: agent_name,
            user: subject.user.subject.clone(),
            user_issuer: subject.user.issuer.clone(),
            delegation: delegation.id.clone(),
            actors,
            jti: claims.jti.clone(),
            kid: key.kid.clone(),
            scopes,
            audiences,
            issued_at: claims.iat,
            expires_at: claims.exp,
            assertion_jti: verified.jti,
            assertion_exp: verified.exp,
            subject: subject.described,
            policy_version: book.version().to_owned(),
            determining_policies: permitted_by,
        };
        Ok(Exchanged {
            ttl_secs: claims.exp.saturating_sub(now_secs),
            claims,
            kid: key.kid.clone(),
            access_token,
            record,
        })
    }

    /// Verifies a user's token against its trusted issuer.
    fn subject_of_user_token(
        &self,
        state: &SiteState,
        token: &str,
        now: UnixMillis,
    ) -> Result<Subject, NodeError> {
        let issuer_url = user::claimed_issuer(token).map_err(|e| subject_refused(e.to_string()))?;
        let Some(trusted) = state.issuers.by_issuer.get(&issuer_url) else {
            return Err(subject_refused(format!("issuer {issuer_url} is not trusted")));
        };
        let view = IssuerView {
            audience: trusted.audience.clone(),
            keys: trusted
                .keys
                .iter()
                .filter_map(|k| {
                    ed25519_dalek::VerifyingKey::from_bytes(&k.jwk.key_bytes())
                        .ok()
                        .map(|v| (k.kid.clone(), v))
                })
                .collect(),
        };
        let verified =
            user::verify_user_token(token, &issuer_url, &view, self.config().tokens.leeway_secs, now)
                .map_err(|e| subject_refused(e.to_string()))?;
        Ok(Subject {
            described: format!("user token of {}", verified.issuer),
            user: UserRef { issuer: verified.issuer, subject: verified.subject },
            actors: Vec::new(),
            parent: None,
            may_act: verified.may_act,
        })
    }

    /// The delegation of `user` to `agent` that covers the request: the one named, or the
    /// newest live one that covers it.
    #[allow(clippy::too_many_arguments)]
    fn covering_delegation(
        &self,
        state: &SiteState,
        user: &UserRef,
        agent: &Agent,
        named: &str,
        scopes: &[String],
        audiences: &[String],
        now: UnixMillis,
    ) -> Result<Option<Delegation>, NodeError> {
        if !named.is_empty() {
            let found = state.delegations.by_id.get(named).filter(|d| &d.user == user && d.agent == agent.id);
            return match found {
                Some(d) => Ok(Some(d.clone())),
                None => Err(NodeError::PermissionDenied {
                    reason: format!("delegation {named} is not a grant of {user} to {}", agent.id),
                }),
            };
        }
        let candidates = state.delegations.of(user, &agent.id);
        if let Some(d) = candidates.iter().find(|d| d.check_covers(now, scopes, audiences).is_ok()) {
            return Ok(Some((*d).clone()));
        }
        Err(NodeError::PermissionDenied {
            reason: match candidates.first() {
                None => format!("{user} has not delegated to {}", agent.id),
                Some(newest) => match newest.check_covers(now, scopes, audiences) {
                    Err(why) => {
                        format!("no live delegation of {user} to {} covers the request: {why}", agent.id)
                    }
                    Ok(()) => format!("no delegation of {user} to {} covers the request", agent.id),
                },
            },
        })
    }
}

/// The subject of an idmesh token that acts for a user.
fn subject_of_idmesh_token(claims: AccessClaims) -> Result<Subject, NodeError> {
    let actors = claims.actors();
    if claims.idmesh.delegation.is_empty() || actors.is_empty() {
        return Err(subject_refused(format!(
            "idmesh token {} acts for no user: only a token on behalf of a user can be passed on",
            claims.jti
        )));
    }
    Ok(Subject {
        described: format!("idmesh token {}", claims.jti),
        user: UserRef { issuer: claims.idmesh.user_issuer.clone(), subject: claims.sub.clone() },
        parent: Some((
            claims.idmesh.delegation.clone(),
            claims.scopes().map(str::to_owned).collect(),
            claims.aud.to_vec(),
            claims.exp,
        )),
        actors,
        may_act: None,
    })
}

fn principal_of(id: &str, agent: Option<&Agent>) -> Principal {
    Principal::Agent {
        id: id.to_owned(),
        owner: agent.map(|a| a.owner.clone()).unwrap_or_default(),
        labels: agent.map(|a| a.labels.clone()).unwrap_or_default(),
    }
}

/// Decides `question`; the permitting policies, or the refusal and the forbidding policies.
fn decide(
    book: &PolicyBook,
    question: &idmesh_policy::DecisionRequest,
) -> Result<Vec<String>, (NodeError, Vec<String>)> {
    let decision = book.decide(question).map_err(|e| (NodeError::from(e), Vec::new()))?;
    if decision.allowed {
        return Ok(decision.determining);
    }
    let about = match &question.resource {
        Resource::Agent { id, .. } => format!("to {id}"),
        Resource::Audience(audience) => format!("for audience {audience}"),
        Resource::App { id, .. } => format!("on {id}"),
    };
    let who = match &question.principal {
        Principal::Agent { id, .. } | Principal::User { id, .. } => id.clone(),
    };
    let error = NodeError::PermissionDenied {
        reason: format!(
            "policy refuses {} by {who} {about}: {} (policy version {})",
            question.action,
            decision.reason(),
            decision.policy_version
        ),
    };
    Err((error, decision.determining))
}

fn subject_refused(reason: String) -> NodeError {
    NodeError::Unauthenticated { reason: format!("subject_token refused: {reason}") }
}

fn actor_refused(error: NodeError) -> NodeError {
    match error {
        NodeError::Unauthenticated { reason } => {
            NodeError::Unauthenticated { reason: format!("actor_token: {reason}") }
        }
        other => other,
    }
}

/// The limits of the fields only an exchange has.
fn check_exchange(request: &ExchangeRequest) -> Result<(), InvalidField> {
    if request.subject_token.is_empty() || request.subject_token.len() > idmesh_token::TOKEN_MAX_BYTES {
        return Err(InvalidField::new(
            "subject_token",
            format!("must be 1 to {} bytes", idmesh_token::TOKEN_MAX_BYTES),
        ));
    }
    if ![String::new(), TOKEN_TYPE_JWT.to_owned(), TOKEN_TYPE_ACCESS_TOKEN.to_owned()]
        .contains(&request.subject_token_type)
    {
        return Err(InvalidField::new(
            "subject_token_type",
            format!("must be {TOKEN_TYPE_JWT} or {TOKEN_TYPE_ACCESS_TOKEN}"),
        ));
    }
    if !request.actor_token_type.is_empty() && request.actor_token_type != TOKEN_TYPE_JWT {
        return Err(InvalidField::new("actor_token_type", format!("must be {TOKEN_TYPE_JWT}")));
    }
    if !request.delegation_id.is_empty() {
        idmesh_state::validate_delegation_id("delegation_id", &request.delegation_id)?;
    }
    Ok(())
}
