//! RFC 7523 client assertions (`private_key_jwt`): an agent proves possession of one of its
//! registered keys by signing a short-lived JWT about itself.
//!
//! Rules: `alg` EdDSA; `typ` anything but an access token's; `iss` = `sub` = the agent's SPIFFE
//! id; `aud` names this site (one of the accepted audiences); `exp` required, in the future, and
//! at most `max_lifetime_secs` ahead; `iat`/`nbf` not in the future; `jti` required. The key is
//! the agent's registered credential named by `kid` (or, without `kid`, any of them).

use crate::access::{Audience, is_access_token_type};
use crate::{TokenError, jws};
use ed25519_dalek::VerifyingKey;
use idmesh_state::Credential;
use idmesh_types::{AgentId, UnixMillis};
use serde::Deserialize;

/// Longest `jti` accepted, in bytes.
pub const JTI_MAX_BYTES: usize = 256;

/// What an assertion must satisfy.
#[derive(Debug, Clone)]
pub struct AssertionRules<'a> {
    /// Values of `aud` that name this site (its issuer, its token endpoint).
    pub audiences: &'a [String],
    /// Longest an assertion may live: `exp` at most this far after now (and after `iat`).
    pub max_lifetime_secs: u64,
    /// Clock leeway, at most [`crate::LEEWAY_MAX_SECS`].
    pub leeway_secs: u64,
}

/// An assertion whose signature and claims verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAssertion {
    /// The agent that signed it.
    pub agent: AgentId,
    /// The credential that verified it.
    pub kid: String,
    /// Its id, to refuse replays.
    pub jti: String,
    /// Its expiry, seconds since the epoch.
    pub exp: u64,
}

#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Audience>,
    exp: Option<u64>,
    nbf: Option<u64>,
    iat: Option<u64>,
    jti: Option<String>,
}

fn claim(claim: &'static str, rule: impl Into<String>) -> TokenError {
    TokenError::Claim { claim, rule: rule.into() }
}

/// One registered key of an agent, ready to verify with.
#[derive(Debug, Clone)]
pub struct AgentKey {
    /// The credential's thumbprint.
    pub kid: String,
    /// The decompressed public key.
    pub key: VerifyingKey,
}

impl AgentKey {
    /// The verification key of `credential`, or `None` if its bytes are not a curve point.
    /// (Decompressing costs about as much as a third of a verification: callers on a hot path
    /// keep the result, keyed by `kid`, which names the key bytes.)
    pub fn of(credential: &Credential) -> Option<AgentKey> {
        let key = VerifyingKey::from_bytes(&credential.jwk.key_bytes()).ok()?;
        Some(AgentKey { kid: credential.kid.clone(), key })
    }
}

/// Verifies `token` as a client assertion at time `now`. `keys` returns the registered keys of
/// an agent, or `None` if it is unknown.
pub fn verify(
    token: &str,
    rules: &AssertionRules<'_>,
    now: UnixMillis,
    keys: impl FnOnce(&AgentId) -> Option<Vec<AgentKey>>,
) -> Result<VerifiedAssertion, TokenError> {
    let leeway = rules.leeway_secs.min(crate::LEEWAY_MAX_SECS);
    let now = now.as_secs();
    let parsed = jws::parse(token)?;
    if parsed.header.typ.as_deref().is_some_and(is_access_token_type) {
        return Err(TokenError::Type {
            got: parsed.header.typ.clone(),
            want: "a client assertion, not an access token",
        });
    }
    let claims: Claims = parsed.claims()?;
    let iss = claims.iss.ok_or_else(|| claim("iss", "is required (the agent's SPIFFE id)"))?;
    let sub = claims.sub.ok_or_else(|| claim("sub", "is required (the agent's SPIFFE id)"))?;
    if iss != sub {
        return Err(claim("iss", "must equal sub (an agent asserts for itself)"));
    }
    let agent = AgentId::parse_field("sub", &sub).map_err(|e| claim("sub", e.rule))?;
    let registered = keys(&agent).ok_or_else(|| TokenError::UnknownAgent(agent.to_string()))?;
    let kid = match &parsed.header.kid {
        Some(kid) => {
            let credential = registered
                .iter()
                .find(|c| &c.kid == kid)
                .ok_or_else(|| TokenError::UnknownKey(kid.clone()))?;
            parsed.verify(&credential.key)?;
            kid.clone()
        }
        None => registered
            .iter()
            .find(|c| parsed.verify(&c.key).is_ok())
            .map(|c| c.kid.clone())
            .ok_or(TokenError::Signature)?,
    };
    let aud = claims.aud.ok_or_else(|| claim("aud", "is required (this site's issuer or token endpoint)"))?;
    if !rules.audiences.iter().any(|a| aud.contains(a)) {
        return Err(TokenError::Audience(format!(
            "{aud} does not name this site (accepted: {})",
            rules.audiences.join(", ")
        )));
    }
    let exp = claims.exp.ok_or_else(|| claim("exp", "is required"))?;
    if exp.saturating_add(leeway) < now {
        return Err(TokenError::Expired { exp, now, leeway_secs: leeway });
    }
    if exp > now.saturating_add(rules.max_lifetime_secs + leeway) {
        return Err(claim(
            "exp",
            format!("is more than {} s ahead: assertions must be short-lived", rules.max_lifetime_secs),
        ));
    }
    for (name, at) in [("nbf", claims.nbf), ("iat", claims.iat)] {
        if let Some(at) = at
            && at > now.saturating_add(leeway)
        {
            return Err(TokenError::NotYetValid { claim: name, at, now, leeway_secs: leeway });
        }
    }
    if let Some(iat) = claims.iat
        && exp.saturating_sub(iat) > rules.max_lifetime_secs
    {
        return Err(claim("exp", format!("exp - iat exceeds {} s", rules.max_lifetime_secs)));
    }
    let jti = claims.jti.ok_or_else(|| claim("jti", "is required (a unique id per assertion)"))?;
    if jti.is_empty() || jti.len() > JTI_MAX_BYTES {
        return Err(claim("jti", format!("must be 1 to {JTI_MAX_BYTES} bytes")));
    }
    Ok(VerifiedAssertion { agent, kid, jti, exp })
}
