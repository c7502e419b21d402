//! Site consensus: openraft wired to idmesh's state and storage.
//!
//! - [`TypeConfig`]: the openraft type configuration (a log entry carries one
//!   [`idmesh_state::Command`]; applying it yields a [`WriteOutcome`]).
//! - [`LogStore`]: the Raft log and vote, kept in a [`idmesh_store::Store`]. Appends are
//!   acknowledged to openraft only after a flush; concurrent appends share one flush (group
//!   commit, see [`flusher`]).
//! - [`StateMachine`]: the applied [`idmesh_state::Registry`], held in memory for reads
//!   ([`SharedState`]) and written through to the store with its applied log id; snapshots are
//!   structure-sharing views of it ([`SnapshotData`]), encoded only to send.
//!
//! Everything is persisted in one `Store` under distinct key prefixes ([`keys`]).

mod applied;
mod apply;
mod codec;
mod compact;
pub mod flusher;
pub mod keys;
mod log_store;
pub mod offload;
mod runtime;
mod snapshot;
mod state_machine;
mod types;

pub use applied::{AppliedState, ShardSlot, SharedState};
pub use log_store::{LogReader, LogStore};
pub use runtime::{RaftRuntime, seed_raft_rng};
pub use snapshot::{SnapshotData, SnapshotParts, SnapshotPayload};
pub use state_machine::{SnapshotBuilder, StateMachine};
pub use types::*;

use idmesh_store::Store;
use idmesh_types::TrustDomain;
use std::sync::Arc;

/// Opens the log store and state machine of one node over `store`.
///
/// Fails if what is on disk cannot be read or belongs to another trust domain; nothing is reset.
pub fn open(
    store: Arc<dyn Store>,
    trust_domain: TrustDomain,
) -> Result<(LogStore, StateMachine), std::io::Error> {
    let flusher = flusher::Flusher::start(store.clone())?;
    let log = LogStore::new(store.clone(), flusher.clone());
    let sm = StateMachine::open(store, trust_domain, flusher)?;
    Ok((log, sm))
}
