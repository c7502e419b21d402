//! Token issuance: decided from this node's applied state alone (no Raft round trip, so it
//! works while the node is cut off), recorded in the audit log before the answer leaves.

use crate::{Node, NodeError};
use idmesh_audit::{Event, IssuedToken as IssuedEvent, RefusedToken};
use idmesh_state::AgentStatus;
use idmesh_token::access::{self, AccessClaims, Audience, IdmeshClaims};
use idmesh_token::assertion::{self, AgentKey, AssertionRules};
use idmesh_token::{Jwks, TokenError};
use idmesh_types::{InvalidField, UnixMillis};

/// The only client assertion type accepted (RFC 7523).
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
pub use idmesh_types::limits::{AUDIENCE_MAX_BYTES, AUDIENCES_MAX_COUNT, SCOPE_MAX_BYTES, SCOPES_MAX_COUNT};

/// What an agent asks for.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    /// The RFC 7523 client assertion.
    pub client_assertion: String,
    /// Its type (empty or [`JWT_BEARER`]).
    pub client_assertion_type: String,
    /// Requested scopes.
    pub scopes: Vec<String>,
    /// Requested audiences.
    pub audiences: Vec<String>,
    /// Requested lifetime; 0 for the default.
    pub ttl_secs: u64,
}

/// A token as issued.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The compact JWT.
    pub access_token: String,
    /// Its claims.
    pub claims: AccessClaims,
    /// The key that signed it.
    pub kid: String,
    /// Its lifetime.
    pub ttl_secs: u64,
    /// Position of its record in this node's audit log.
    pub audit_seq: u64,
}

/// A token minted and ready to be recorded.
struct Decision {
    claims: AccessClaims,
    kid: String,
    access_token: String,
    assertion_jti: String,
    assertion_exp: u64,
    ttl_secs: u64,
    permitted_by: Vec<String>,
}

/// Why an agent could not be authenticated, with what its audit record says.
#[derive(Debug)]
pub(crate) struct AuthFailure {
    pub(crate) error: NodeError,
    /// The agent the assertion named, once it verified.
    pub(crate) agent: Option<String>,
    /// The assertion's `jti` and `exp`, once spent.
    pub(crate) assertion: Option<(String, u64)>,
}

/// A refused request, with what the audit record says about it.
struct Refusal {
    error: NodeError,
    /// The policies that forbade it and their version, when policy refused it.
    forbidden: Option<Box<(Vec<String>, String)>>,
    agent: Option<String>,
    assertion: Option<(String, u64)>,
}

impl Refusal {
    fn before_assertion(error: NodeError) -> Box<Self> {
        Box::new(Refusal { error, agent: None, assertion: None, forbidden: None })
    }
}

impl Node {
    /// Issues a token for `request`, or refuses it; either way the outcome is in the audit log,
    /// durably, before this returns. If the record cannot be written nothing is issued.
    pub async fn issue_token(&self, request: TokenRequest) -> Result<IssuedToken, NodeError> {
        let now = self.now();
        match self.decide(&request, now) {
            Ok(Decision {
                claims,
                kid,
                access_token,
                assertion_jti,
                assertion_exp,
                ttl_secs,
                permitted_by,
            }) => {
                let event = Event::TokenIssued(IssuedEvent {
                    agent: claims.client_id.clone(),
                    jti: claims.jti.clone(),
                    kid: kid.clone(),
                    scopes: claims.scopes().map(str::to_owned).collect(),
                    audiences: claims.aud.to_vec(),
                    issued_at: claims.iat,
                    expires_at: claims.exp,
                    assertion_jti,
                    assertion_exp,
                    policy_version: claims.idmesh.policy_version.clone(),
                    determining_policies: permitted_by,
                });
                let record = self.audit().append(event).await.map_err(|e| {
                    tracing::error!(error = %e, "audit append failed; token not issued");
                    NodeError::AuditUnavailable { detail: e.to_string() }
                })?;
                tracing::debug!(agent = %claims.client_id, jti = %claims.jti, kid = %kid, "token issued");
                Ok(IssuedToken { access_token, claims, kid, ttl_secs, audit_seq: record.seq })
            }
            Err(refusal) => {
                let event = Event::TokenRefused(RefusedToken {
                    agent: refusal.agent.clone(),
                    code: format!("{:?}", refusal.error.code()),
                    reason: refusal.error.to_string(),
                    assertion: refusal.assertion.clone(),
                    policy_version: refusal.forbidden.as_ref().map(|f| f.1.clone()).unwrap_or_default(),
                    determining_policies: refusal.forbidden.as_ref().map(|f| f.0.clone()).unwrap_or_default(),
                });
                if let Err(e) = self.audit().append(event).await {
                    tracing::error!(error = %e, "audit append failed for a refusal");
                    return Err(NodeError::AuditUnavailable { detail: e.to_string() });
                }
                tracing::debug!(agent = ?refusal.agent, error = %refusal.error, "token refused");
                Err(refusal.error)
            }
        }
    }

    /// The whole decision, from local state only.
    fn decide(&self, request: &TokenRequest, now: UnixMillis) -> Result<Decision, Box<Refusal>> {
        let settings = &self.config().tokens;
        let (scopes, audiences, ttl_secs) =
            check_request(request, settings.default_ttl_secs, settings.max_ttl_secs)
                .map_err(|e| Refusal::before_assertion(e.into()))?;
        // Compiled and measured before the state is locked (both read it).
        let book = self.policy_book().map_err(Refusal::before_assertion)?;
        let freshness = self.freshness();
        let state = self.shared().read();
        let (agent, verified) =
            self.authenticate(&request.client_assertion, now, &state.state.registry).map_err(|failed| {
                Box::new(Refusal {
                    error: failed.error,
                    agent: failed.agent,
                    assertion: failed.assertion,
                    forbidden: None,
                })
            })?;
        let agent_name = verified.agent.to_string();
        let spent = Some((verified.jti.clone(), verified.exp));
        let refuse = |error: NodeError, assertion: Option<(String, u64)>| {
            Box::new(Refusal { error, agent: Some(agent_name.clone()), assertion, forbidden: None })
        };
        // Policy: every requested audience must be permitted for the requested scopes.
        let mut permitted_by = Vec::new();
        for audience in &audiences {
            let question = self.decision_request_with(
                &freshness,
                idmesh_policy::Principal::Agent {
                    id: agent_name.clone(),
                    owner: agent.owner.clone(),
                    labels: agent.labels.clone(),
                },
                "issue_token",
                idmesh_policy::Resource::Audience(audience.clone()),
                scopes.clone(),
                audiences.clone(),
            );
            let decision = book.decide(&question).map_err(|e| refuse(e.into(), spent.clone()))?;
            if !decision.allowed {
                return Err(Box::new(Refusal {
                    forbidden: Some(Box::new((
                        decision.determining.clone(),
                        decision.policy_version.clone(),
                    ))),
                    ..*refuse(
                        NodeError::PermissionDenied {
                            reason: format!(
                                "policy refuses issue_token to {agent_name} for audience {audience} with scopes [{}]: {} (policy version {})",
                                scopes.join(" "),
                                decision.reason(),
                                decision.policy_version
                            ),
                        },
                        spent,
                    )
                }));
            }
            permitted_by.extend(decision.determining);
        }
        permitted_by.sort();
        permitted_by.dedup();
        let key = state.state.keys.signing_key_at(now).ok_or_else(|| {
            refuse(NodeError::NoSigningKey { site: self.config().site.to_string() }, spent.clone())
        })?;
        let jti = random_id(self).map_err(|e| refuse(e, spent.clone()))?;
        let now_secs = now.as_secs();
        let claims = AccessClaims {
            iss: settings.issuer.clone(),
            sub: agent_name.clone(),
            client_id: agent_name.clone(),
            aud: if audiences.len() == 1 {
                Audience::One(audiences[0].clone())
            } else {
                Audience::Many(audiences)
            },
            scope: scopes.join(" "),
            iat: now_secs,
            nbf: now_secs,
            exp: now_secs + ttl_secs,
            jti,
            act: None,
            idmesh: IdmeshClaims {
                site: self.config().site.to_string(),
                node: self.config().node_id.0,
                policy_version: book.version().to_owned(),
                delegation: String::new(),
                user_issuer: String::new(),
                credential: verified.kid.clone(),
            },
        };
        let signing_key = self.key_cache().signing_key(key);
        let token = access::mint(&signing_key, &key.kid, &claims)
            .map_err(|e| refuse(NodeError::Storage { detail: e.to_string() }, spent.clone()))?;
        Ok(Decision {
            claims,
            kid: key.kid.clone(),
            access_token: token,
            assertion_jti: verified.jti,
            assertion_exp: verified.exp,
            ttl_secs,
            permitted_by,
        })
    }

    /// Verifies a client assertion against the agents of `registry`, spends its `jti`, and
    /// checks the agent is active.
    pub(crate) fn authenticate<'s>(
        &self,
        client_assertion: &str,
        now: UnixMillis,
        registry: &'s idmesh_state::Registry,
    ) -> Result<(&'s idmesh_state::Agent, assertion::VerifiedAssertion), AuthFailure> {
        let settings = &self.config().tokens;
        let accepted_audiences = [settings.issuer.clone(), format!("{}/token", settings.issuer)];
        let rules = AssertionRules {
            audiences: &accepted_audiences,
            max_lifetime_secs: settings.assertion_max_lifetime_secs,
            leeway_secs: settings.leeway_secs,
        };
        let verified = assertion::verify(client_assertion, &rules, now, |id| {
            registry.get(id).map(|agent| self.key_cache().agent_keys(&agent.credentials))
        })
        .map_err(|e| AuthFailure { error: unauthenticated(e), agent: None, assertion: None })?;
        let agent_name = verified.agent.to_string();
        let failure = |error: NodeError, assertion: Option<(String, u64)>| AuthFailure {
            error,
            agent: Some(agent_name.clone()),
            assertion,
        };
        // The jti is spent as soon as the assertion verified, whatever happens next.
        self.remember_assertion(&agent_name, &verified.jti, verified.exp, now)
            .map_err(|e| failure(e, None))?;
        let spent = Some((verified.jti.clone(), verified.exp));
        let agent = registry.get(&verified.agent).ok_or_else(|| {
            failure(
                NodeError::Unauthenticated { reason: format!("unknown agent {agent_name}") },
                spent.clone(),
            )
        })?;
        if agent.status != AgentStatus::Active {
            let why = agent
                .status_reason
                .as_deref()
                .filter(|r| !r.is_empty())
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            return Err(failure(
                NodeError::PermissionDenied {
                    reason: format!("agent {agent_name} is {}{why}", agent.status),
                },
                spent,
            ));
        }
        Ok((agent, verified))
    }

    fn remember_assertion(&self, agent: &str, jti: &str, exp: u64, now: UnixMillis) -> Result<(), NodeError> {
        let forget_after = exp + self.config().tokens.leeway_secs;
        let mut replay = self.replay().lock().unwrap_or_else(|p| p.into_inner());
        replay.check_and_remember(agent, jti, forget_after, now.as_secs()).map_err(|e| match e {
            TokenError::ReplayMemoryFull(_) => NodeError::Busy { detail: e.to_string() },
            other => unauthenticated(other),
        })
    }

    /// The JWKS of this site at the current time: every signing key not retired.
    pub fn jwks(&self) -> Jwks {
        let now = self.now();
        let state = self.shared().read();
        Jwks::new(state.state.keys.published_at(now).map(|k| k.public.clone()))
    }

    /// This site's JWKS plus every other site's keys that verify now, from the trust bundle.
    pub fn mesh_jwks(&self) -> Jwks {
        let now = self.now();
        let state = self.shared().read();
        let own = self.config().site.as_str();
        let remote = state.state.trust.sites().filter(|(site, _)| *site != own).flat_map(|(_, trust)| {
            trust.keys.iter().filter(|k| k.verifies_at(now)).map(|k| k.public.clone())
        });
        Jwks::new(
            state.state.keys.published_at(now).map(|k| k.public.clone()).chain(remote).collect::<Vec<_>>(),
        )
    }
}

fn unauthenticated(error: TokenError) -> NodeError {
    NodeError::Unauthenticated { reason: format!("client assertion refused: {error}") }
}

/// Checks the request's limits; returns the scopes (deduplicated, in order), audiences and TTL.
pub(crate) fn check_request(
    request: &TokenRequest,
    default_ttl_secs: u64,
    max_ttl_secs: u64,
) -> Result<(Vec<String>, Vec<String>, u64), InvalidField> {
    if !request.client_assertion_type.is_empty() && request.client_assertion_type != JWT_BEARER {
        return Err(InvalidField::new("client_assertion_type", format!("must be {JWT_BEARER}")));
    }
    if request.client_assertion.is_empty() {
        return Err(InvalidField::new("client_assertion", "is required"));
    }
    if request.scopes.len() > SCOPES_MAX_COUNT {
        return Err(InvalidField::new(
            "scopes",
            format!("at most {SCOPES_MAX_COUNT} (got {})", request.scopes.len()),
        ));
    }
    let mut scopes: Vec<String> = Vec::new();
    for scope in &request.scopes {
        idmesh_types::validate_scope("scopes", scope)?;
        if !scopes.contains(scope) {
            scopes.push(scope.clone());
        }
    }
    if request.audiences.is_empty() || request.audiences.len() > AUDIENCES_MAX_COUNT {
        return Err(InvalidField::new(
            "audiences",
            format!(
                "1 to {AUDIENCES_MAX_COUNT} are required: who the token is for (got {})",
                request.audiences.len()
            ),
        ));
    }
    for audience in &request.audiences {
        idmesh_types::validate_audience("audiences", audience)?;
    }
    let ttl_secs = if request.ttl_secs == 0 { default_ttl_secs } else { request.ttl_secs };
    if ttl_secs > max_ttl_secs {
        return Err(InvalidField::new("ttl_secs", format!("at most {max_ttl_secs} (got {ttl_secs})")));
    }
    Ok((scopes, request.audiences.clone(), ttl_secs))
}

/// 128 random bits, base64url: a token id no other node or site will draw.
pub(crate) fn random_id(node: &Node) -> Result<String, NodeError> {
    let bytes = node.random_bytes::<16>()?;
    use base64::Engine as _;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Keys ready to use, by `kid`. A `kid` is the thumbprint of the key bytes, so an entry never
/// goes stale; the cache only saves the point decompression (agent keys) and the key expansion
/// (site keys) that would otherwise be paid on every request.
#[derive(Debug, Default)]
pub(crate) struct KeyCache {
    inner: std::sync::Mutex<KeyCacheInner>,
}

#[derive(Debug, Default)]
struct KeyCacheInner {
    agent_keys: std::collections::HashMap<String, ed25519_dalek::VerifyingKey>,
    site_keys: std::collections::HashMap<String, ed25519_dalek::SigningKey>,
}

/// Most keys of each kind kept; the cache starts over when full.
const KEY_CACHE_MAX_ENTRIES: usize = 100_000;

impl KeyCache {
    fn agent_keys(&self, credentials: &[idmesh_state::Credential]) -> Vec<AgentKey> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        credentials
            .iter()
            .filter_map(|c| {
                if let Some(key) = inner.agent_keys.get(&c.kid) {
                    return Some(AgentKey { kid: c.kid.clone(), key: *key });
                }
                let fresh = AgentKey::of(c)?;
                if inner.agent_keys.len() >= KEY_CACHE_MAX_ENTRIES {
                    inner.agent_keys.clear();
                }
                inner.agent_keys.insert(c.kid.clone(), fresh.key);
                Some(fresh)
            })
            .collect()
    }

    pub(crate) fn signing_key(&self, key: &idmesh_state::SiteKey) -> ed25519_dalek::SigningKey {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.site_keys.len() >= KEY_CACHE_MAX_ENTRIES {
            inner.site_keys.clear();
        }
        inner.site_keys.entry(key.kid.clone()).or_insert_with(|| key.secret.signing_key()).clone()
    }
}
