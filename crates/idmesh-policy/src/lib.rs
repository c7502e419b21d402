//! Policy: the Cedar schema idmesh decides with, validation of policy text against it, and
//! decisions with the partition-aware context (DESIGN §2.6, §4).
//!
//! Pure: no IO, no clock, no randomness. The time, the sync ages and everything else a decision
//! depends on are fields of the [`DecisionRequest`].
//!
//! - [`schema`]: entity types (`Agent`, `User`, `Audience`, `Resource`, `Site`), the built-in
//!   actions (`issue_token`, `exchange_token`, `delegate`) and the operator's application actions.
//! - [`PolicyBook`]: the site's policies compiled once (id → Cedar text), validated against the
//!   schema, with a version that names exactly this set; it decides requests.
//! - [`validate_policy`]: what `policy put` and `policy validate` run.

mod book;
mod context;
mod error;
pub mod schema;

pub use book::{Decision, PolicyBook, StoredPolicy, validate_policy};
pub use context::{DecisionRequest, Principal, RemoteSite, Resource};
pub use error::PolicyError;
pub use idmesh_types::{validate_action_name, validate_policy_id};
pub use schema::{BUILTIN_ACTIONS, BUILTIN_POLICIES, DEFAULT_EXCHANGE_POLICY_ID, DEFAULT_ISSUE_POLICY_ID};
