//! The registry as CRDT documents: how a site's changes become automerge changes, and how any
//! set of changes, in any order, materializes into the same agents.
//!
//! Agents are spread over [`SHARD_COUNT`] documents ([`Shard`]) by a stable hash of their name,
//! so that no document grows with the whole registry. Inside a shard every fact is a scalar
//! under a flat key `"<name>/<field>[/<sub-key>]"` of the root map: no nested objects, so two
//! sites never create competing objects for the same agent, and each field has its own merge
//! rule (see [`materialize`]). Nothing is ever deleted except labels; a revocation is a key of
//! its own that no later change removes.
//!
//! Determinism: a change is created once, with an explicit actor ([`Actor`]) and time; replicas
//! apply its bytes. No clock is read here and ids are inputs.

mod edit;
mod grants;
mod imports;
mod keys;
mod materialize;
mod policy;
mod shard;
mod sync;
mod trust;

pub use edit::Actor;
pub use grants::{
    DELEGATION_NAME_PREFIX, ISSUER_NAME_PREFIX, TOKEN_NAME_PREFIX, delegation_entry_name, issuer_entry_name,
    materialize_grants, refresh_grants, shard_of_delegation, shard_of_issuer, shard_of_token,
};
pub use imports::{ImportRecord, shard_of_bundle};
pub use materialize::Conflict;
pub use policy::{
    ACTIONS_NAME, POLICY_NAME_PREFIX, materialize_policies, policy_entry_name, policy_of_entry,
    shard_of_actions, shard_of_policy,
};
pub use shard::{CrdtError, SHARD_COUNT, Shard, ShardId, shard_of};
pub use sync::{ChangeHash, SYNC_MESSAGE_MAX_BYTES, SyncMessage, SyncState, decode_sync_message, state_hash};
pub use trust::{
    SITE_NAME_PREFIX, SITE_NODES_MAX_COUNT, SiteTrust, TrustBundle, TrustedKey, shard_of_site,
    site_entry_name, site_of_entry,
};
