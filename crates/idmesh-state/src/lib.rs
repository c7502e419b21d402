//! The replicated model of an idmesh site.
//!
//! A site's state is changed only by [`Command`]s that went through its Raft log. [`Registry::apply`]
//! is a pure function of the state and the command: the time of a change is a field of the
//! command (chosen once, by the node that proposed it), never read here, so every replica that
//! applies the same log reaches the same state.
//!
//! Validation happens twice with the same rules: where a request enters (so that a bad request
//! is refused before it reaches the log) and inside `apply` (so that the log can never make the
//! state break a rule, whatever wrote it).

mod agent;
pub mod bundle;
mod command;
pub mod crdt;
mod credential;
mod delegation;
mod entry;
mod error;
mod issuer;
pub mod join;
pub mod keys;
mod list;
mod policy;
mod registry;
mod site;
mod token_revocation;
pub mod validate;

pub use agent::{Agent, AgentStatus};
pub use command::{Command, NewSigningKey, Op, RegisterAgent, UpdateAgent};
pub use credential::{Credential, PublicJwk};
pub use delegation::{
    DELEGATION_ID_PREFIX, Delegation, DelegationContext, DelegationRevocation, Delegations, NewDelegation,
    NotCovered, UserRef, delegation_after, validate_delegation_id,
};
pub use entry::{ChangeBytes, Entry, REMOTE_CHANGES_MAX_COUNT};
pub use error::StateError;
pub use issuer::{ISSUER_KID_MAX_BYTES, IssuerKey, TrustedIssuer, TrustedIssuers, issuer_after};
pub use join::{JoinToken, JoinTokens};
pub use keys::{KeySecret, KeyStatus, SiteKey, SiteKeys};
pub use list::{LabelSelector, ListQuery, Page};
pub use policy::{Policies, Policy, actions_after, policy_after};
pub use registry::{Registry, agent_after};
pub use site::{Applied, SiteState};
pub use token_revocation::{RevokedToken, RevokedTokens, token_revocation_after, validate_token_id};

/// The actions idmesh decides itself; an operator cannot declare them again.
pub const BUILTIN_ACTION_NAMES: [&str; 3] = ["issue_token", "exchange_token", "delegate"];
