//! RFC 9068 access tokens: what idmesh issues (`typ: at+jwt`, `alg: EdDSA`), and the offline
//! verifier that enforcement points embed.

use crate::{Jwks, TokenError, jws};
use ed25519_dalek::SigningKey;
use idmesh_types::UnixMillis;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The `typ` of access tokens.
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// True for the `typ` values RFC 9068 allows for access tokens.
pub fn is_access_token_type(typ: &str) -> bool {
    typ.eq_ignore_ascii_case("at+jwt") || typ.eq_ignore_ascii_case("application/at+jwt")
}

/// `aud`: one value or several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// A single audience.
    One(String),
    /// Several audiences.
    Many(Vec<String>),
}

impl Audience {
    /// True if `value` is one of the audiences.
    pub fn contains(&self, value: &str) -> bool {
        match self {
            Audience::One(one) => one == value,
            Audience::Many(many) => many.iter().any(|a| a == value),
        }
    }

    /// The audiences as a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Audience::One(one) => vec![one.clone()],
            Audience::Many(many) => many.clone(),
        }
    }
}

impl fmt::Display for Audience {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_vec().join(", "))
    }
}

/// idmesh's own claims in every token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdmeshClaims {
    /// The site whose key signed the token.
    pub site: String,
    /// The node that issued it.
    pub node: u64,
    /// The version of the policy set that permitted it (empty in tokens from before policies).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub policy_version: String,
    /// The delegation the token acts under (tokens on behalf of a user only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub delegation: String,
    /// The issuer of the user in `sub` (tokens on behalf of a user only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_issuer: String,
    /// The thumbprint of the credential the agent authenticated with: removing that credential
    /// from the agent makes the token invalid wherever the removal has arrived.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub credential: String,
}

/// RFC 8693 §4.1 `act`: the current actor, and nested inside it the actor before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorClaim {
    /// The actor (an agent's SPIFFE id).
    pub sub: String,
    /// The actor it acts for in turn, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Box<ActorClaim>>,
}

impl ActorClaim {
    /// The chain of actors `chain` names, outermost (current) first; `None` if empty.
    pub fn from_chain(chain: &[String]) -> Option<ActorClaim> {
        chain
            .iter()
            .rev()
            .fold(None, |inner, sub| Some(ActorClaim { sub: sub.clone(), act: inner.map(Box::new) }))
    }

    /// The actors, outermost (current) first.
    pub fn chain(&self) -> Vec<String> {
        let mut out = vec![self.sub.clone()];
        let mut next = self.act.as_deref();
        while let Some(actor) = next {
            out.push(actor.sub.clone());
            next = actor.act.as_deref();
        }
        out
    }
}

/// The claims of an idmesh access token (RFC 9068 §2.2 plus `idmesh`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The issuing site's issuer URL.
    pub iss: String,
    /// The subject: the agent (or, acting on behalf, the user).
    pub sub: String,
    /// The agent the token was issued to.
    pub client_id: String,
    /// Who the token is for.
    pub aud: Audience,
    /// Space-separated scopes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
    /// Issued at (seconds since the epoch).
    pub iat: u64,
    /// Not before.
    pub nbf: u64,
    /// Expires at.
    pub exp: u64,
    /// Unique token id.
    pub jti: String,
    /// The acting chain, when the token acts on behalf of a user (RFC 8693).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<ActorClaim>,
    /// Where it was issued.
    pub idmesh: IdmeshClaims,
}

impl AccessClaims {
    /// The scopes, split.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.split(' ').filter(|s| !s.is_empty())
    }

    /// The acting chain, outermost (current) first; empty when the agent acts for itself.
    pub fn actors(&self) -> Vec<String> {
        self.act.as_ref().map(ActorClaim::chain).unwrap_or_default()
    }

    /// The user the token acts for, if it acts for one.
    pub fn on_behalf_of(&self) -> Option<&str> {
        (self.act.is_some() || self.sub != self.client_id).then_some(self.sub.as_str())
    }
}

/// Signs `claims` as an access token with the site key `key` whose thumbprint is `kid`.
pub fn mint(key: &SigningKey, kid: &str, claims: &AccessClaims) -> Result<String, TokenError> {
    jws::sign(key, ACCESS_TOKEN_TYPE, kid, claims)
}

/// What a verifier requires of an access token.
#[derive(Debug, Clone, Default)]
pub struct VerifyRules {
    /// Accepted issuers; empty accepts any issuer whose key is in the JWKS.
    pub issuers: Vec<String>,
    /// The audience this verifier is; `None` skips the audience check (only for tools: an
    /// enforcement point must set it).
    pub audience: Option<String>,
    /// Clock leeway, at most [`crate::LEEWAY_MAX_SECS`].
    pub leeway_secs: u64,
}

/// Verifies an access token offline at time `now`: shape, `alg`, `typ`, signature by a key of
/// `jwks`, then `iss`, `aud`, `exp`, `nbf`, `iat` and the required claims.
pub fn verify(
    token: &str,
    jwks: &Jwks,
    rules: &VerifyRules,
    now: UnixMillis,
) -> Result<AccessClaims, TokenError> {
    let leeway = rules.leeway_secs.min(crate::LEEWAY_MAX_SECS);
    let now = now.as_secs();
    let parsed = jws::parse(token)?;
    if !parsed.header.typ.as_deref().is_some_and(is_access_token_type) {
        return Err(TokenError::Type { got: parsed.header.typ.clone(), want: ACCESS_TOKEN_TYPE });
    }
    let kid = parsed.header.kid.as_deref().ok_or_else(|| TokenError::Malformed("kid is required".into()))?;
    let key = jwks.key(kid).ok_or_else(|| TokenError::UnknownKey(kid.to_owned()))?;
    parsed.verify(&key)?;
    let claims: AccessClaims = parsed.claims()?;
    if !rules.issuers.is_empty() && !rules.issuers.contains(&claims.iss) {
        return Err(TokenError::Issuer(format!("{} is not accepted", claims.iss)));
    }
    if let Some(audience) = &rules.audience
        && !claims.aud.contains(audience)
    {
        return Err(TokenError::Audience(format!("token is for {}, not {audience}", claims.aud)));
    }
    if claims.exp.saturating_add(leeway) <= now {
        return Err(TokenError::Expired { exp: claims.exp, now, leeway_secs: leeway });
    }
    for (name, at) in [("nbf", claims.nbf), ("iat", claims.iat)] {
        if at > now.saturating_add(leeway) {
            return Err(TokenError::NotYetValid { claim: name, at, now, leeway_secs: leeway });
        }
    }
    if claims.jti.is_empty() || claims.sub.is_empty() || claims.client_id.is_empty() {
        return Err(TokenError::Claim {
            claim: "jti",
            rule: "jti, sub and client_id must not be empty".into(),
        });
    }
    Ok(claims)
}
