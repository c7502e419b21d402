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
pub use names::{validate_action_name, validate_policy_id};
pub use time::UnixMillis;
