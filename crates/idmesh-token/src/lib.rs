//! idmesh tokens, with nothing but data in and data out: no IO, no clock (the time is always a
//! parameter), no randomness (the `jti` of a minted token is a parameter).
//!
//! - [`jws`]: compact JWS with EdDSA (Ed25519) only; every other `alg` is refused, and the
//!   `jwk`/`jku`/`x5u`/`x5c` header members are never used to find a key.
//! - [`assertion`]: RFC 7523 `private_key_jwt` client assertions, verified against an agent's
//!   registered credentials.
//! - [`access`]: RFC 9068 access tokens (`typ: at+jwt`): minting, and the offline verifier that
//!   policy enforcement points embed.
//! - [`jwks`]: JSON Web Key Sets of Ed25519 keys.
//! - [`user`]: users' tokens from trusted issuers, the subject of a token exchange.
//! - [`replay`]: the bounded memory of assertion ids that refuses a replay while it could still
//!   be valid.

pub mod access;
pub mod assertion;
mod b64;
mod error;
pub mod jwks;
pub mod jws;
pub mod replay;
pub mod user;

pub use access::{AccessClaims, ActorClaim, Audience, IdmeshClaims, VerifyRules};
pub use assertion::{AgentKey, AssertionRules, VerifiedAssertion};
pub use error::TokenError;
pub use jwks::Jwks;

/// Longest compact token accepted, in bytes.
pub const TOKEN_MAX_BYTES: usize = 8 * 1024;
/// Largest clock leeway a verifier may allow, in seconds.
pub const LEEWAY_MAX_SECS: u64 = 300;
