//! Identifiers, time and limits shared by every idmesh crate.
//!
//! Nothing here performs IO, reads a clock or draws random numbers: a time is always a value
//! handed in by the caller ([`UnixMillis`]).

mod error;
mod ids;
pub mod limits;
mod names;
mod time;

pub use error::InvalidField;
pub use ids::{AgentId, AgentName, NodeId, SiteName, TrustDomain};
pub use names::{
    validate_action_name, validate_audience, validate_issuer, validate_policy_id, validate_scope,
    validate_user_subject,
};
pub use time::UnixMillis;
