//! Why a policy or a request was refused.

use idmesh_types::InvalidField;

/// A policy that does not compile or validate, or a request that cannot be decided.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A field breaks a rule (size, characters, count).
    #[error(transparent)]
    Invalid(#[from] InvalidField),
    /// The policy text does not parse or does not validate against the schema: Cedar's
    /// diagnostics, one per line.
    #[error("policy {id} is not valid: {diagnostics}")]
    Rejected {
        /// The policy.
        id: String,
        /// Cedar's diagnostics.
        diagnostics: String,
    },
    /// The action is not built in and was not declared by the operator.
    #[error("unknown action {action}: declare it first (idmesh policy action add {action})")]
    UnknownAction {
        /// The action asked for.
        action: String,
    },
    /// The request does not fit the schema (a bug, or data over limits).
    #[error("cannot decide: {detail}")]
    Request {
        /// What did not fit.
        detail: String,
    },
}
