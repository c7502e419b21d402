//! What a site's Raft log carries.

use crate::Command;
use crate::crdt::ShardId;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Most changes one remote entry carries.
pub const REMOTE_CHANGES_MAX_COUNT: usize = 2_000;

/// The bytes of one automerge change (base64 when serialized as JSON).
#[derive(Clone, PartialEq, Eq)]
pub struct ChangeBytes(pub Vec<u8>);

impl fmt::Debug for ChangeBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChangeBytes({} bytes)", self.0.len())
    }
}

impl Serialize for ChangeBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD_NO_PAD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for ChangeBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD_NO_PAD.decode(text.as_bytes()).map(ChangeBytes).map_err(serde::de::Error::custom)
    }
}

/// One entry of a site's Raft log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entry {
    /// A change to the site's own state: its signing keys.
    Site(Command),
    /// An admin change of one agent: the command (for the answer and the audit trail) and the
    /// automerge change the leader recorded for it. Every replica applies the same bytes.
    Agent {
        /// The command as the client asked it.
        command: Command,
        /// The shard of the agent.
        shard: ShardId,
        /// The change.
        change: ChangeBytes,
    },
    /// An admin change of a policy, the declared actions, a delegation or a trusted issuer:
    /// like `Agent`, the command and the one change the leader recorded for it.
    Admin {
        /// The command as the client asked it.
        command: Command,
        /// The shard the change is in.
        shard: ShardId,
        /// The change.
        change: ChangeBytes,
    },
    /// A change this site made that is not an admin command: publishing its own public keys in
    /// the trust bundle. Recorded by the leader like an agent change.
    Publish {
        /// The shard of the site's trust entry.
        shard: ShardId,
        /// The change.
        change: ChangeBytes,
    },
    /// Changes learned from another site (a sync session or a bundle), applied together.
    Remote {
        /// The site they came from (for the record; merging does not depend on it).
        origin: String,
        /// The changes, by shard.
        changes: Vec<(ShardId, ChangeBytes)>,
    },
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Site(command) => write!(f, "{command}"),
            Entry::Agent { command, shard, .. } | Entry::Admin { command, shard, .. } => {
                write!(f, "{command} (shard {})", shard.0)
            }
            Entry::Publish { shard, .. } => write!(f, "trust bundle entry (shard {})", shard.0),
            Entry::Remote { origin, changes } => write!(f, "{} changes from site {origin}", changes.len()),
        }
    }
}
