use idmesh_types::InvalidField;
use serde::{Deserialize, Serialize};

/// Why a command or query was refused. Refusals change nothing.
///
/// Serializable: it is the answer a replica computes when applying a log entry, returned to the
/// client that proposed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum StateError {
    /// The input broke a rule (a limit, a format).
    #[error("invalid argument: {0}")]
    Invalid(InvalidField),
    /// The thing to create exists already.
    #[error("{what} already exists")]
    AlreadyExists {
        /// What exists, e.g. `agent spiffe://acme.example/agents/a`.
        what: String,
    },
    /// The thing named does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What is missing.
        what: String,
    },
    /// The thing exists but its state forbids the change.
    #[error("{what}: {rule}")]
    FailedPrecondition {
        /// What was to be changed.
        what: String,
        /// The rule that forbids it and what to do instead.
        rule: String,
    },
}

impl From<InvalidField> for StateError {
    fn from(value: InvalidField) -> Self {
        StateError::Invalid(value)
    }
}
