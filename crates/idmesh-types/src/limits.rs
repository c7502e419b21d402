//! Every size and count idmesh accepts has a limit, named here.
//!
//! Limits are enforced where input enters (the public API) and again where state changes (apply),
//! so a command that reached the log by another path is held to the same rules.

/// Longest trust domain, in bytes (SPIFFE allows 255).
pub const TRUST_DOMAIN_MAX_BYTES: usize = 255;
/// Longest agent name (the last path segment of an agent id), in bytes.
pub const AGENT_NAME_MAX_BYTES: usize = 128;
/// Longest site name, in bytes.
pub const SITE_NAME_MAX_BYTES: usize = 63;
/// Longest owner string of an agent, in bytes.
pub const OWNER_MAX_BYTES: usize = 256;
/// Most labels on one agent.
pub const LABELS_MAX_COUNT: usize = 32;
/// Longest label key, in bytes.
pub const LABEL_KEY_MAX_BYTES: usize = 63;
/// Longest label value, in bytes.
pub const LABEL_VALUE_MAX_BYTES: usize = 256;
/// Most credentials (public keys) registered for one agent.
pub const CREDENTIALS_MAX_COUNT: usize = 8;
/// Longest serialized JWK accepted, in bytes.
pub const JWK_MAX_BYTES: usize = 1024;
/// Longest free-text reason (suspend, revoke), in bytes.
pub const REASON_MAX_BYTES: usize = 512;
/// Default page size of a list.
pub const PAGE_SIZE_DEFAULT: usize = 100;
/// Largest page size of a list.
pub const PAGE_SIZE_MAX: usize = 1000;
/// Most label selectors in one list filter.
pub const LABEL_SELECTORS_MAX_COUNT: usize = 16;
/// Largest encoded command accepted into the Raft log, in bytes.
pub const COMMAND_MAX_BYTES: usize = 64 * 1024;

/// Longest policy id, in bytes (`[A-Za-z0-9._-]`).
pub const POLICY_ID_MAX_BYTES: usize = 64;
/// Longest policy text (Cedar), in bytes.
pub const POLICY_TEXT_MAX_BYTES: usize = 32 * 1024;
/// Most policies a trust domain holds.
pub const POLICIES_MAX_COUNT: usize = 4096;
/// Most application actions an operator declares.
pub const ACTIONS_MAX_COUNT: usize = 256;
/// Longest application action name, in bytes (`[a-z0-9_:.-]`).
pub const ACTION_NAME_MAX_BYTES: usize = 64;
/// Most scopes in one request or token.
pub const SCOPES_MAX_COUNT: usize = 32;
/// Longest scope, in bytes.
pub const SCOPE_MAX_BYTES: usize = 128;
/// Most audiences in one request or token.
pub const AUDIENCES_MAX_COUNT: usize = 8;
/// Most attributes (tags) a client passes for one resource or request context.
pub const REQUEST_ATTRIBUTES_MAX_COUNT: usize = 32;
/// Longest attribute key, in bytes.
pub const ATTRIBUTE_KEY_MAX_BYTES: usize = 63;
/// Longest attribute value, in bytes.
pub const ATTRIBUTE_VALUE_MAX_BYTES: usize = 1024;
/// Longest application resource id, in bytes.
pub const RESOURCE_ID_MAX_BYTES: usize = 512;
/// Longest audience, in bytes.
pub const AUDIENCE_MAX_BYTES: usize = 256;

/// Most delegations a trust domain holds (revoked and expired ones included: they are kept so
/// that no revoked grant can come back).
pub const DELEGATIONS_MAX_COUNT: usize = 100_000;
/// Longest a delegation may last, in seconds (one year).
pub const DELEGATION_MAX_LIFETIME_SECS: u64 = 366 * 24 * 3600;
/// Longest user subject (`sub` of the user's token), in bytes.
pub const USER_SUBJECT_MAX_BYTES: usize = 256;
/// Longest issuer URL (of a trusted user issuer or a site), in bytes.
pub const ISSUER_MAX_BYTES: usize = 256;
/// Most trusted user issuers a trust domain configures.
pub const TRUSTED_ISSUERS_MAX_COUNT: usize = 64;
/// Most keys in one trusted issuer's JWKS.
pub const ISSUER_KEYS_MAX_COUNT: usize = 16;
/// Deepest actor chain a token may carry, whatever the configuration says.
pub const ACTOR_CHAIN_MAX_DEPTH: usize = 8;
/// Longest token id (`jti`) accepted, in bytes.
pub const TOKEN_ID_MAX_BYTES: usize = 128;
/// Most unexpired token revocations a trust domain holds.
pub const REVOKED_TOKENS_MAX_COUNT: usize = 100_000;
/// Farthest ahead a revoked token's expiry may be, in seconds (a week: no token lives longer).
pub const TOKEN_REVOCATION_MAX_AHEAD_SECS: u64 = 7 * 24 * 3600;
