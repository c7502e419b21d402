//! Verifying an access token at this node, whichever site of the trust domain issued it: the
//! signing key is this site's own or one the trust bundle carries; then the agent must still be
//! in good standing as this node has applied it (a revocation made anywhere holds here as soon
//! as it is applied here).

use crate::Node;
use idmesh_state::AgentStatus;
use idmesh_token::access::{self, AccessClaims, VerifyRules};
use idmesh_token::{Jwks, jws};
use idmesh_types::AgentId;

/// A token that verified: its claims and the site whose key signed it.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    /// The claims.
    pub claims: AccessClaims,
    /// The site whose key signed it.
    pub site: String,
}

/// Why a token is not valid here.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenRejected {
    /// Not a well-formed token, a bad signature, wrong issuer or audience, expired…
    #[error("{0}")]
    Invalid(String),
    /// Signed by a key this node does not know.
    #[error(
        "signing key {kid} is not known at this site: the issuing site's keys have not reached it yet (sync, or import a bundle)"
    )]
    UnknownKey {
        /// The key id.
        kid: String,
    },
    /// The delegation the token acts under is unknown here, revoked or expired.
    #[error("{0}")]
    Delegation(String),
    /// The token itself was revoked.
    #[error("token {jti} was revoked{reason}")]
    Revoked {
        /// Its id.
        jti: String,
        /// `": why"` or empty.
        reason: String,
    },
    /// The credential the agent authenticated with was removed from it.
    #[error("credential {kid} of agent {agent} was removed: tokens obtained with it are no longer valid")]
    Credential {
        /// The agent.
        agent: String,
        /// The credential's thumbprint.
        kid: String,
    },
    /// The agent is not (or no longer) in good standing here.
    #[error("agent {agent} is {status} at this site")]
    Agent {
        /// The agent.
        agent: String,
        /// `revoked`, `suspended` or `not registered`.
        status: &'static str,
    },
}

impl TokenRejected {
    /// True if the token's signature verified and it was refused for the standing of what it
    /// names (a revocation, a removed credential, a suspended agent): its claims are then the
    /// issuing site's word, fit for the audit record of the refusal.
    pub fn signature_verified(&self) -> bool {
        !matches!(self, TokenRejected::Invalid(_) | TokenRejected::UnknownKey { .. })
    }
}

impl Node {
    /// Verifies `token` (for `audience`, if given) against this site's keys and the trust
    /// bundle, then checks its agent's standing in this node's applied state.
    pub fn verify_access_token(
        &self,
        token: &str,
        audience: Option<String>,
    ) -> Result<VerifiedToken, TokenRejected> {
        let now = self.now();
        let parsed = jws::parse(token).map_err(|e| TokenRejected::Invalid(e.to_string()))?;
        let kid =
            parsed.header.kid.clone().ok_or_else(|| TokenRejected::Invalid("kid is required".into()))?;
        let own_site = self.config().site.as_str();
        let (site, issuer, public) = {
            let state = self.shared().read();
            let own = state.state.keys.published_at(now).find(|k| k.kid == kid);
            match own {
                Some(key) => (own_site.to_owned(), self.config().tokens.issuer.clone(), key.public.clone()),
                None => match state.state.trust.key(&kid) {
                    Some((site, trust, key)) if site != own_site && key.verifies_at(now) => {
                        (site.to_owned(), trust.issuer.clone(), key.public.clone())
                    }
                    _ => return Err(TokenRejected::UnknownKey { kid }),
                },
            }
        };
        let rules =
            VerifyRules { issuers: vec![issuer], audience, leeway_secs: self.config().tokens.leeway_secs };
        let claims = access::verify(token, &Jwks::new([public]), &rules, now)
            .map_err(|e| TokenRejected::Invalid(e.to_string()))?;
        if claims.idmesh.site != site {
            return Err(TokenRejected::Invalid(format!(
                "token names site {:?} but was signed by a key of site {site}",
                claims.idmesh.site
            )));
        }
        let agent_id = AgentId::parse_field("client_id", &claims.client_id)
            .map_err(|e| TokenRejected::Invalid(e.to_string()))?;
        let state = self.shared().read();
        if let Some(revoked) = state.state.revoked_tokens.by_jti.get(&claims.jti) {
            let reason =
                if revoked.reason.is_empty() { String::new() } else { format!(": {}", revoked.reason) };
            return Err(TokenRejected::Revoked { jti: claims.jti.clone(), reason });
        }
        // Every agent of the acting chain must be in good standing, the current one first.
        let mut agents = vec![agent_id];
        for actor in claims.actors().iter().skip(1) {
            agents.push(
                AgentId::parse_field("act.sub", actor).map_err(|e| TokenRejected::Invalid(e.to_string()))?,
            );
        }
        for (n, agent) in agents.iter().enumerate() {
            let rejected = |status| TokenRejected::Agent { agent: agent.to_string(), status };
            let found = state.state.registry.get(agent);
            if n == 0
                && !claims.idmesh.credential.is_empty()
                && let Some(found) = found
                && !found.credentials.iter().any(|c| c.kid == claims.idmesh.credential)
            {
                return Err(TokenRejected::Credential {
                    agent: agent.to_string(),
                    kid: claims.idmesh.credential.clone(),
                });
            }
            match found.map(|a| a.status) {
                Some(AgentStatus::Active) => {}
                Some(AgentStatus::Suspended) => return Err(rejected("suspended")),
                Some(AgentStatus::Revoked) => return Err(rejected("revoked")),
                None => return Err(rejected("not registered")),
            }
        }
        check_delegation(&claims, &state.state.delegations, now)?;
        Ok(VerifiedToken { claims, site })
    }
}

/// A token acting for a user must name a delegation this node holds, that is live now, and
/// that is the grant of that user to the innermost agent of the chain.
fn check_delegation(
    claims: &AccessClaims,
    delegations: &idmesh_state::Delegations,
    now: idmesh_types::UnixMillis,
) -> Result<(), TokenRejected> {
    let id = &claims.idmesh.delegation;
    let actors = claims.actors();
    if id.is_empty() {
        if actors.is_empty() && claims.sub == claims.client_id {
            return Ok(());
        }
        return Err(TokenRejected::Invalid("a token acting for a user must name its delegation".into()));
    }
    if actors.first() != Some(&claims.client_id) {
        return Err(TokenRejected::Invalid("act.sub must be the token's client_id".into()));
    }
    let delegation = delegations.by_id.get(id).ok_or_else(|| {
        TokenRejected::Delegation(format!(
            "delegation {id} is not known at this site yet (sync, or import a bundle)"
        ))
    })?;
    delegation.check_live(now).map_err(|e| TokenRejected::Delegation(e.to_string()))?;
    let root = actors.last().map(String::as_str).unwrap_or_default();
    if delegation.user.subject != claims.sub
        || delegation.user.issuer != claims.idmesh.user_issuer
        || delegation.agent.to_string() != root
    {
        return Err(TokenRejected::Invalid(format!(
            "the token's user and first actor do not match delegation {id}"
        )));
    }
    Ok(())
}
