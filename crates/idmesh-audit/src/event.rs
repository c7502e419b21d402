//! What an audit record says happened.

use serde::{Deserialize, Serialize};

/// One audited event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Event {
    /// The node started.
    NodeStarted {
        /// idmesh version.
        version: String,
    },
    /// A token was issued.
    TokenIssued(IssuedToken),
    /// A token request was refused.
    TokenRefused(RefusedToken),
}

/// A token that was issued, and the assertion that obtained it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedToken {
    /// The agent (SPIFFE id) the token was issued to.
    pub agent: String,
    /// The token's `jti`.
    pub jti: String,
    /// The site key that signed it.
    pub kid: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Audiences.
    pub audiences: Vec<String>,
    /// Issued at, seconds since the epoch.
    pub issued_at: u64,
    /// Expires at, seconds since the epoch.
    pub expires_at: u64,
    /// The client assertion's `jti`.
    pub assertion_jti: String,
    /// The client assertion's `exp` (its `jti` is remembered until then).
    pub assertion_exp: u64,
}

/// A token request that was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedToken {
    /// The agent, when the assertion named one.
    pub agent: Option<String>,
    /// The gRPC code given.
    pub code: String,
    /// Why.
    pub reason: String,
    /// The assertion's `jti` and `exp`, when it verified (its `jti` is then spent).
    pub assertion: Option<(String, u64)>,
}
