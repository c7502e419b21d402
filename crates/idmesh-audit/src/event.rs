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
    /// An authorization decision.
    Authorized(AuthzDecision),
    /// A token on behalf of a user was issued by token exchange (RFC 8693).
    TokenExchanged(ExchangedToken),
    /// A token exchange was refused.
    ExchangeRefused(RefusedExchange),
    /// The node signed the chain so far with its site's key.
    Checkpoint(crate::Checkpoint),
    /// A change to the site's state was asked for, applied or refused.
    AdminChanged(AdminChange),
    /// A sync session with another site ended.
    SyncSession(SyncSessionEnded),
    /// A bundle file was written for another site.
    BundleExported(BundleTransfer),
    /// A bundle file from another site was imported.
    BundleImported(BundleTransfer),
    /// A new site signing key was proposed.
    KeyRotated {
        /// The new key's id.
        kid: String,
        /// When it starts signing, ms since the epoch.
        activates_at_ms: u64,
    },
    /// The node is stopping.
    NodeStopping,
    /// Retention removed the oldest records of a chain held here (every holder had them).
    RetentionApplied(RetentionCut),
}

impl Event {
    /// The event's type, as written in the record (`token_issued`, `authorized`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Event::NodeStarted { .. } => "node_started",
            Event::TokenIssued(_) => "token_issued",
            Event::TokenRefused(_) => "token_refused",
            Event::Authorized(_) => "authorized",
            Event::TokenExchanged(_) => "token_exchanged",
            Event::ExchangeRefused(_) => "exchange_refused",
            Event::Checkpoint(_) => "checkpoint",
            Event::AdminChanged(_) => "admin_changed",
            Event::SyncSession(_) => "sync_session",
            Event::BundleExported(_) => "bundle_exported",
            Event::BundleImported(_) => "bundle_imported",
            Event::KeyRotated { .. } => "key_rotated",
            Event::NodeStopping => "node_stopping",
            Event::RetentionApplied(_) => "retention_applied",
        }
    }
}

/// A change to the replicated state, as the node the client called saw it. Two records per
/// change: `requested` before it is proposed (the change is refused if that record cannot be
/// made durable) and `applied` or `refused` after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminChange {
    /// What was asked, in words (`register agent spiffe://…`, `put policy p1`, ...).
    pub change: String,
    /// The object changed: an agent id, a policy id, a delegation id, an issuer, a `jti`.
    pub target: String,
    /// Who asked. Until clients authenticate (mTLS, issue 8) this is the client's address.
    pub by: String,
    /// `requested`, `applied` or `refused`.
    pub stage: String,
    /// The log index it applied at, or why it was refused.
    pub detail: String,
}

/// Records of one chain removed by retention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionCut {
    /// The chain's site.
    pub site: String,
    /// The chain's node.
    pub node: u64,
    /// The first record kept: a checkpoint of the record before it.
    pub first_kept_seq: u64,
    /// Records removed by this cut.
    pub removed: u64,
    /// The retention period in force.
    pub retention_secs: u64,
}

/// A sync session with another site, when it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncSessionEnded {
    /// The other site.
    pub peer_site: String,
    /// `dialled` or `accepted`.
    pub direction: String,
    /// Changes received from the other site and put in this site's log.
    pub changes_received: u64,
    /// Sync messages sent to it.
    pub messages_sent: u64,
    /// Why it ended (`closed`, or the error).
    pub outcome: String,
}

/// A bundle file carried across an air gap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleTransfer {
    /// The bundle's id.
    pub bundle: String,
    /// The site that exported it.
    pub from_site: String,
    /// The site it was made for, when one was named.
    pub for_site: Option<String>,
    /// Its size in bytes.
    pub bytes: u64,
    /// Shard chunks it carries.
    pub chunks: u64,
    /// Audit records it carries (exported), or that were stored from it (imported).
    #[serde(default)]
    pub audit_records: u64,
}

/// A token issued by exchange: who acts, for whom, under which delegation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangedToken {
    /// The acting agent (the token's `client_id`).
    pub agent: String,
    /// The user acted for (the token's `sub`).
    pub user: String,
    /// The user's issuer.
    pub user_issuer: String,
    /// The delegation it acts under.
    pub delegation: String,
    /// The acting chain, outermost (current) first.
    pub actors: Vec<String>,
    /// The new token's `jti`.
    pub jti: String,
    /// The site key that signed it.
    pub kid: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Audiences.
    pub audiences: Vec<String>,
    /// Issued at, seconds since the epoch.
    pub issued_at: u64,
    /// Expires at.
    pub expires_at: u64,
    /// The actor token's (client assertion's) `jti`.
    pub assertion_jti: String,
    /// The actor token's `exp` (its `jti` is remembered until then).
    pub assertion_exp: u64,
    /// What was exchanged: `user token of <issuer>` or `idmesh token <jti>`.
    pub subject: String,
    /// The version of the policy set that permitted it.
    pub policy_version: String,
    /// The policies that permitted it.
    pub determining_policies: Vec<String>,
}

/// A token exchange that was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedExchange {
    /// The agent asking, when its assertion named one.
    pub agent: Option<String>,
    /// The user, when the subject token verified.
    pub user: Option<String>,
    /// The delegation considered, if one was.
    pub delegation: Option<String>,
    /// The acting chain the token would have had, when known.
    pub actors: Vec<String>,
    /// The gRPC code given.
    pub code: String,
    /// Why.
    pub reason: String,
    /// The assertion's `jti` and `exp`, when it verified (its `jti` is then spent).
    pub assertion: Option<(String, u64)>,
    /// The policy version, when a policy decided the refusal.
    pub policy_version: String,
    /// The policies that forbade it.
    pub determining_policies: Vec<String>,
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
    /// The version of the policy set that permitted it.
    #[serde(default)]
    pub policy_version: String,
    /// The policies that permitted it.
    #[serde(default)]
    pub determining_policies: Vec<String>,
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
    /// The policy version, when a policy decided the refusal.
    #[serde(default)]
    pub policy_version: String,
    /// The policies that forbade it (empty: refused for another reason, or no policy permitted).
    #[serde(default)]
    pub determining_policies: Vec<String>,
}

/// An authorization decision (`Authorize`), with the full acting chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthzDecision {
    /// The acting agent (the token's `client_id`), when the token verified.
    pub agent: Option<String>,
    /// The user the token acts for, if any.
    pub on_behalf_of: Option<String>,
    /// The acting chain, outermost first.
    pub actors: Vec<String>,
    /// The token's `jti`, when it verified.
    pub jti: Option<String>,
    /// The action asked about.
    pub action: String,
    /// The resource.
    pub resource: String,
    /// The answer.
    pub allowed: bool,
    /// The policies that determined it.
    pub determining_policies: Vec<String>,
    /// Why, in one line.
    pub reason: String,
    /// The policy version decided with.
    pub policy_version: String,
}
