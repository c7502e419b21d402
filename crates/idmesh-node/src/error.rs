//! Errors of a node, and their one mapping to gRPC status codes.
//!
//! Every message says what was wrong and, where it helps, what to do.

use idmesh_state::StateError;
use idmesh_types::InvalidField;
use serde::{Deserialize, Serialize};
use tonic::{Code, Status};

/// Why a node could not serve a request. Serializable: a leader answers forwarded requests
/// with it, and the forwarding node passes it on unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum NodeError {
    /// The request broke a rule.
    #[error("invalid argument: {0}")]
    Invalid(InvalidField),
    /// The state refused the command.
    #[error(transparent)]
    State(StateError),
    /// The site has no leader this node knows of.
    #[error("site {site} has no leader: a majority of its nodes may be down or unreachable; retry later")]
    NoLeader {
        /// The site.
        site: String,
    },
    /// The leader has not heard from a quorum recently, so it cannot commit.
    #[error(
        "site {site} has no quorum: leader {leader} has not heard from a majority for {silent_ms} ms; nothing was written; retry later"
    )]
    NoQuorum {
        /// The site.
        site: String,
        /// The leader's node id.
        leader: u64,
        /// Time since a majority last acknowledged the leader.
        silent_ms: u64,
    },
    /// The leader could not be reached to forward the request.
    #[error("cannot reach leader {leader} at {addr}: {detail}; retry later")]
    LeaderUnreachable {
        /// The leader's node id.
        leader: u64,
        /// Its peer address.
        addr: String,
        /// What failed.
        detail: String,
    },
    /// The write was proposed but its outcome is unknown (timeout or leader change).
    #[error(
        "{what}: outcome unknown ({detail}); the write may or may not have been applied: read it back before retrying"
    )]
    OutcomeUnknown {
        /// The request.
        what: String,
        /// What happened.
        detail: String,
    },
    /// A linearizable read could not be confirmed by a quorum in time.
    #[error("linearizable read not possible: {detail}; retry later or read with consistency=local")]
    ReadNotLinearizable {
        /// What failed.
        detail: String,
    },
    /// A membership change that the current membership does not allow.
    #[error("membership change refused: {detail}")]
    Membership {
        /// Why.
        detail: String,
    },
    /// A node or member that does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What is missing.
        what: String,
    },
    /// A request from a peer of another site, trust domain or meant for another node.
    #[error("peer request refused: {detail}")]
    WrongPeer {
        /// Why.
        detail: String,
    },
    /// This node is shutting down or its Raft core stopped.
    #[error("node is shutting down or failed: {detail}")]
    Stopped {
        /// Why.
        detail: String,
    },
    /// The caller could not be authenticated (its client assertion was refused).
    #[error("unauthenticated: {reason}")]
    Unauthenticated {
        /// Why.
        reason: String,
    },
    /// The caller is known but not allowed (e.g. a suspended or revoked agent).
    #[error("permission denied: {reason}")]
    PermissionDenied {
        /// Why.
        reason: String,
    },
    /// The site has no signing key yet (its leader creates one after the site forms).
    #[error("site {site} has no signing key yet; its leader creates one once elected, retry shortly")]
    NoSigningKey {
        /// The site.
        site: String,
    },
    /// The audit log could not be written: the request was not served (fail closed).
    #[error("audit log cannot be written ({detail}); nothing was issued")]
    AuditUnavailable {
        /// What failed.
        detail: String,
    },
    /// A bounded resource is full; retry later.
    #[error("busy: {detail}")]
    Busy {
        /// What is full.
        detail: String,
    },
    /// An air-gap bundle or trust file was refused; nothing was applied.
    #[error("bundle refused, nothing applied: {0}")]
    Bundle(#[from] idmesh_state::bundle::BundleError),
    /// The bundle was imported before (here or at a site that passed its changes on).
    #[error(
        "bundle {bundle_id} from site {origin_site} was already imported (at unix ms {imported_at_ms}); nothing applied"
    )]
    BundleImported {
        /// Its id.
        bundle_id: String,
        /// Its origin.
        origin_site: String,
        /// When it was first imported.
        imported_at_ms: u64,
    },
    /// A policy does not parse or validate against the schema; nothing was stored.
    #[error("policy {id} is not valid, nothing stored: {diagnostics}")]
    PolicyRejected {
        /// The policy.
        id: String,
        /// Cedar's diagnostics.
        diagnostics: String,
    },
    /// An action that is neither built in nor declared.
    #[error("unknown action {action}: declare it first (idmesh policy action add {action})")]
    UnknownAction {
        /// The action.
        action: String,
    },
    /// The policy engine could not decide (a bug; the request was refused).
    #[error("policy engine failed, request refused: {detail}")]
    PolicyEngine {
        /// What failed.
        detail: String,
    },
    /// Storage failed; the request was not served.
    #[error("storage error: {detail}")]
    Storage {
        /// What failed.
        detail: String,
    },
}

impl From<InvalidField> for NodeError {
    fn from(value: InvalidField) -> Self {
        NodeError::Invalid(value)
    }
}

impl From<StateError> for NodeError {
    fn from(value: StateError) -> Self {
        match value {
            StateError::Invalid(invalid) => NodeError::Invalid(invalid),
            other => NodeError::State(other),
        }
    }
}

impl From<idmesh_policy::PolicyError> for NodeError {
    fn from(value: idmesh_policy::PolicyError) -> Self {
        use idmesh_policy::PolicyError;
        match value {
            PolicyError::Invalid(invalid) => NodeError::Invalid(invalid),
            PolicyError::Rejected { id, diagnostics } => NodeError::PolicyRejected { id, diagnostics },
            PolicyError::UnknownAction { action } => NodeError::UnknownAction { action },
            PolicyError::Request { detail } => NodeError::PolicyEngine { detail },
        }
    }
}

impl NodeError {
    /// The gRPC code of this error.
    pub fn code(&self) -> Code {
        match self {
            NodeError::Invalid(_) => Code::InvalidArgument,
            NodeError::State(StateError::Invalid(_)) => Code::InvalidArgument,
            NodeError::State(StateError::AlreadyExists { .. }) => Code::AlreadyExists,
            NodeError::State(StateError::NotFound { .. }) | NodeError::NotFound { .. } => Code::NotFound,
            NodeError::State(StateError::FailedPrecondition { .. }) | NodeError::Membership { .. } => {
                Code::FailedPrecondition
            }
            NodeError::NoLeader { .. }
            | NodeError::NoQuorum { .. }
            | NodeError::LeaderUnreachable { .. }
            | NodeError::OutcomeUnknown { .. }
            | NodeError::ReadNotLinearizable { .. }
            | NodeError::Stopped { .. } => Code::Unavailable,
            NodeError::WrongPeer { .. } | NodeError::PermissionDenied { .. } => Code::PermissionDenied,
            NodeError::Unauthenticated { .. } => Code::Unauthenticated,
            NodeError::NoSigningKey { .. } | NodeError::AuditUnavailable { .. } => Code::Unavailable,
            NodeError::Busy { .. } => Code::ResourceExhausted,
            NodeError::Bundle(idmesh_state::bundle::BundleError::UnknownKey { .. }) => {
                Code::FailedPrecondition
            }
            NodeError::Bundle(_) => Code::InvalidArgument,
            NodeError::BundleImported { .. } => Code::AlreadyExists,
            NodeError::PolicyRejected { .. } | NodeError::UnknownAction { .. } => Code::InvalidArgument,
            NodeError::Storage { .. } | NodeError::PolicyEngine { .. } => Code::Internal,
        }
    }
}

impl From<NodeError> for Status {
    fn from(error: NodeError) -> Self {
        Status::new(error.code(), error.to_string())
    }
}
