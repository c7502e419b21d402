//! The openraft type configuration of an idmesh site.

use idmesh_state::{Applied, StateError};
use serde::{Deserialize, Serialize};
use std::fmt;

/// What a node of the site is reachable at, as recorded in the Raft membership.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Peer (node-to-node) gRPC address, `host:port`.
    pub peer_addr: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.peer_addr)
    }
}

/// The result of applying one log entry. Every replica computes the same outcome for the same
/// entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOutcome {
    /// The command was applied.
    Applied(Applied),
    /// The command was refused by the state's rules; nothing changed.
    Refused(StateError),
    /// The entry carried no command (a blank or membership entry).
    Nothing,
    /// Changes from another site: how many chunks entered the documents, and how many did not
    /// load and were dropped (every replica drops the same ones).
    Merged {
        /// Chunks applied.
        accepted: u32,
        /// Chunks dropped.
        dropped: u32,
    },
}

openraft::declare_raft_types!(
    /// The openraft type configuration of an idmesh site.
    pub TypeConfig:
        D = idmesh_state::Entry,
        R = WriteOutcome,
        NodeId = u64,
        Node = NodeInfo,
        AsyncRuntime = crate::RaftRuntime,
);

/// openraft's handle, for this configuration.
pub type Raft = openraft::Raft<TypeConfig, crate::StateMachine>;
/// A log id.
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
/// A vote.
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
/// A log entry.
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
/// Membership with the log id that set it.
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
/// A snapshot with its data.
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, crate::SnapshotData>;
