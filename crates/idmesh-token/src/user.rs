//! Users' tokens from trusted issuers (an OIDC identity provider): the `subject_token` of a
//! token exchange (RFC 8693). Verified offline against the issuer's keys as the replicated state
//! holds them: `alg` EdDSA only, the key named by `kid`, `iss` a trusted issuer, `aud` naming
//! what the issuer is configured to name for idmesh, `exp`/`nbf`/`iat` with bounded leeway, and
//! `may_act` (RFC 8693 §4.4), when present, naming the agent that asks.

use crate::access::Audience;
use crate::{TokenError, jws};
use ed25519_dalek::VerifyingKey;
use idmesh_types::UnixMillis;
use serde::Deserialize;

/// What the verifier needs to know about one trusted issuer.
#[derive(Debug, Clone)]
pub struct IssuerView {
    /// What its tokens must have in `aud`.
    pub audience: String,
    /// Its keys, by the `kid` it gives them.
    pub keys: Vec<(String, VerifyingKey)>,
}

/// RFC 8693 §4.4 `may_act`: who may act for the subject.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MayAct {
    /// The only actor allowed.
    pub sub: String,
}

#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Audience>,
    exp: Option<u64>,
    nbf: Option<u64>,
    iat: Option<u64>,
    may_act: Option<MayAct>,
}

/// A user token that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedUser {
    /// Its issuer.
    pub issuer: String,
    /// The user.
    pub subject: String,
    /// When it expires (seconds).
    pub exp: u64,
    /// The actor it allows, if it names one.
    pub may_act: Option<String>,
}

fn required(claim: &'static str) -> TokenError {
    TokenError::Claim { claim, rule: "is required".into() }
}

/// The `iss` a token claims, read before anything is verified (to find the issuer's keys).
pub fn claimed_issuer(token: &str) -> Result<String, TokenError> {
    let parsed = jws::parse(token)?;
    let claims: Claims = parsed.claims()?;
    claims.iss.filter(|i| !i.is_empty()).ok_or_else(|| required("iss"))
}

/// Verifies a user's token issued by a trusted issuer; `issuer` is that issuer's view, found by
/// the token's claimed `iss`.
pub fn verify_user_token(
    token: &str,
    issuer_url: &str,
    issuer: &IssuerView,
    leeway_secs: u64,
    now: UnixMillis,
) -> Result<VerifiedUser, TokenError> {
    let leeway = leeway_secs.min(crate::LEEWAY_MAX_SECS);
    let now = now.as_secs();
    let parsed = jws::parse(token)?;
    if let Some(typ) = parsed.header.typ.as_deref()
        && !(typ.eq_ignore_ascii_case("JWT") || crate::access::is_access_token_type(typ))
    {
        return Err(TokenError::Type { got: Some(typ.to_owned()), want: "JWT" });
    }
    let kid = parsed.header.kid.as_deref().ok_or_else(|| TokenError::Malformed("kid is required".into()))?;
    let key = issuer
        .keys
        .iter()
        .find(|(k, _)| k == kid)
        .map(|(_, key)| key)
        .ok_or_else(|| TokenError::UnknownKey(format!("{kid} (not a key of issuer {issuer_url})")))?;
    parsed.verify(key)?;
    let claims: Claims = parsed.claims()?;
    if claims.iss.as_deref() != Some(issuer_url) {
        return Err(TokenError::Issuer(format!("{:?} is not {issuer_url}", claims.iss)));
    }
    let subject = claims.sub.filter(|s| !s.is_empty()).ok_or_else(|| required("sub"))?;
    match &claims.aud {
        Some(aud) if aud.contains(&issuer.audience) => {}
        Some(aud) => {
            return Err(TokenError::Audience(format!("token is for {aud}, not {}", issuer.audience)));
        }
        None => return Err(required("aud")),
    }
    let exp = claims.exp.ok_or_else(|| required("exp"))?;
    if exp.saturating_add(leeway) <= now {
        return Err(TokenError::Expired { exp, now, leeway_secs: leeway });
    }
    for (name, at) in [("nbf", claims.nbf), ("iat", claims.iat)] {
        if let Some(at) = at
            && at > now.saturating_add(leeway)
        {
            return Err(TokenError::NotYetValid { claim: name, at, now, leeway_secs: leeway });
        }
    }
    Ok(VerifiedUser { issuer: issuer_url.to_owned(), subject, exp, may_act: claims.may_act.map(|m| m.sub) })
}
