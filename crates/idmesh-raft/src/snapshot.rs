//! Snapshots. Taking one costs O(1): it holds a structure-sharing clone of the materialized
//! state and a handle to the shard documents. It is encoded only when a follower that lags
//! behind the purged log needs it: the signing keys and every shard document, saved whole.
//!
//! The documents encoded may already hold changes of entries after the snapshot's last log id
//! (they are read when the snapshot is sent). That is harmless: the follower replays those
//! entries after installing, and applying a change twice changes nothing.
//!
//! Snapshots are not written to disk: the state machine is durable itself, and after a restart
//! openraft takes a fresh snapshot if the log was purged.

use crate::applied::SharedState;
use crate::codec::{decode, encode};
use idmesh_state::crdt::{SHARD_COUNT, Shard};
use idmesh_state::{ChangeBytes, SiteKeys, SiteState};
use idmesh_types::TrustDomain;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io;
use std::sync::Arc;

/// Version of [`SnapshotPayload`]'s encoding.
pub const SNAPSHOT_FORMAT: u32 = 2;

/// The data of a snapshot.
#[derive(Clone)]
pub enum SnapshotData {
    /// The state at the snapshot's last log id, and the live shard documents.
    View {
        /// Materialized agents and signing keys at the snapshot point.
        state: SiteState,
        /// The state machine's shared state, to save the shard documents from.
        shared: SharedState,
    },
    /// An encoded [`SnapshotPayload`], as received from a leader.
    Encoded(Arc<Vec<u8>>),
}

impl fmt::Debug for SnapshotData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotData::View { state, .. } => write!(f, "View({} agents)", state.registry.len()),
            SnapshotData::Encoded(bytes) => write!(f, "Encoded({} bytes)", bytes.len()),
        }
    }
}

/// What [`SnapshotData::into_parts`] gives: signing keys, join tokens, the ids ever members,
/// the loaded shards and their saved bytes.
pub type SnapshotParts =
    (SiteKeys, idmesh_state::JoinTokens, std::collections::BTreeSet<u64>, Vec<Shard>, Vec<ChangeBytes>);

/// What a snapshot carries between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPayload {
    /// [`SNAPSHOT_FORMAT`] of the writer.
    pub format: u32,
    /// Trust domain of the site.
    pub trust_domain: TrustDomain,
    /// The site's signing keys (private parts included: snapshots travel only inside a site).
    pub signing_keys: SiteKeys,
    /// The site's join tokens (absent in snapshots of builds before join tokens).
    #[serde(default)]
    pub join_tokens: idmesh_state::JoinTokens,
    /// Every node id ever a member (absent in snapshots of older builds).
    #[serde(default)]
    pub members_ever: std::collections::BTreeSet<u64>,
    /// Every shard document, saved whole, in shard order.
    pub shards: Vec<ChangeBytes>,
}

impl SnapshotData {
    /// The encoded form, to send to a follower. Saves every shard document under the state
    /// machine's lock: call it off the async workers.
    pub fn encode(&self) -> Result<Arc<Vec<u8>>, io::Error> {
        match self {
            SnapshotData::Encoded(bytes) => Ok(bytes.clone()),
            SnapshotData::View { state, shared } => {
                let shards = {
                    let mut applied = shared.write();
                    applied.shards.iter_mut().map(|slot| ChangeBytes(slot.applied.save())).collect()
                };
                let payload = SnapshotPayload {
                    format: SNAPSHOT_FORMAT,
                    trust_domain: state.registry.trust_domain().clone(),
                    signing_keys: state.keys.clone(),
                    join_tokens: state.join_tokens.clone(),
                    members_ever: state.members_ever.clone(),
                    shards,
                };
                Ok(Arc::new(encode("snapshot", &payload)?))
            }
        }
    }

    /// The signing keys, join tokens and shard documents this snapshot holds, checked to be of
    /// `trust_domain`.
    pub fn into_parts(self, trust_domain: &TrustDomain) -> Result<SnapshotParts, io::Error> {
        let bytes = self.encode()?;
        let payload: SnapshotPayload = decode("snapshot", &bytes)?;
        let invalid = |detail: String| io::Error::new(io::ErrorKind::InvalidData, detail);
        if payload.format != SNAPSHOT_FORMAT {
            return Err(invalid(format!(
                "snapshot format {} is not supported (this build reads {SNAPSHOT_FORMAT})",
                payload.format
            )));
        }
        if &payload.trust_domain != trust_domain {
            return Err(invalid(format!(
                "snapshot is of trust domain {}, not {trust_domain}",
                payload.trust_domain
            )));
        }
        if payload.shards.len() != usize::from(SHARD_COUNT) {
            return Err(invalid(format!("snapshot has {} shards, not {SHARD_COUNT}", payload.shards.len())));
        }
        let shards = payload
            .shards
            .iter()
            .map(|saved| Shard::load(&saved.0).map_err(|e| invalid(format!("snapshot shard: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((payload.signing_keys, payload.join_tokens, payload.members_ever, shards, payload.shards))
    }
}
