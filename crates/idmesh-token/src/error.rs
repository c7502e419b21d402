//! Why a token or assertion was refused.

/// Why a token or client assertion was refused. The message says which rule failed; it never
/// contains key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a compact JWS of the expected shape, or a member of the wrong type.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `alg` is not `EdDSA` (this includes `none` and every HMAC or RSA algorithm).
    #[error("algorithm {0:?} is not accepted: only EdDSA")]
    Algorithm(String),
    /// `typ` is not the one this kind of token must carry.
    #[error("typ {got:?} is not accepted here (want {want})")]
    Type {
        /// What the header said.
        got: Option<String>,
        /// What is accepted.
        want: &'static str,
    },
    /// No key with this `kid` is known (for an assertion: among the agent's credentials).
    #[error("unknown key id {0:?}")]
    UnknownKey(String),
    /// The subject (agent) is not registered.
    #[error("unknown agent {0}")]
    UnknownAgent(String),
    /// The signature does not verify with the key.
    #[error("signature does not verify")]
    Signature,
    /// `exp` has passed (beyond the leeway).
    #[error("expired at {exp} (now {now}, leeway {leeway_secs} s)")]
    Expired {
        /// `exp`, seconds since the epoch.
        exp: u64,
        /// The verifier's time, seconds since the epoch.
        now: u64,
        /// Leeway allowed.
        leeway_secs: u64,
    },
    /// `nbf` or `iat` is in the future (beyond the leeway).
    #[error("not valid yet: {claim} is {at} (now {now}, leeway {leeway_secs} s)")]
    NotYetValid {
        /// `nbf` or `iat`.
        claim: &'static str,
        /// Its value.
        at: u64,
        /// The verifier's time.
        now: u64,
        /// Leeway allowed.
        leeway_secs: u64,
    },
    /// `aud` does not name what it must.
    #[error("wrong audience: {0}")]
    Audience(String),
    /// `iss` is not an accepted issuer.
    #[error("wrong issuer: {0}")]
    Issuer(String),
    /// A claim is missing or breaks a rule.
    #[error("claim {claim}: {rule}")]
    Claim {
        /// The claim.
        claim: &'static str,
        /// The rule it breaks.
        rule: String,
    },
    /// The assertion's `jti` was already used while the assertion is still valid.
    #[error("assertion jti {0:?} was already used")]
    Replayed(String),
    /// The replay memory is full; the assertion cannot be remembered, so it is refused.
    #[error("too many unexpired assertions remembered ({0}); retry shortly")]
    ReplayMemoryFull(usize),
}
