//! Snapshots. A snapshot is taken without copying the state: the registry is a persistent map,
//! so the snapshot holds a cheap clone of it ([`SnapshotData::View`]). It is encoded only when
//! a follower that lags behind the purged log needs it, and decoded by that follower.
//!
//! Snapshots are not written to disk: the state machine itself is durable (written through to
//! the store, flushed when a snapshot is taken), and after a restart openraft asks for a fresh
//! snapshot of it when the log has been purged.

use crate::codec::{decode, encode};
use idmesh_state::{Agent, Registry, SiteKeys, SiteState};
use idmesh_types::TrustDomain;
use serde::{Deserialize, Serialize};
use std::io;
use std::sync::Arc;

/// Version of [`SnapshotPayload`]'s encoding.
pub const SNAPSHOT_FORMAT: u32 = 1;

/// The data of a snapshot.
#[derive(Debug, Clone)]
pub enum SnapshotData {
    /// The state as it was at the snapshot's last log id (a structure-sharing clone).
    View(SiteState),
    /// An encoded [`SnapshotPayload`], as received from a leader.
    Encoded(Arc<Vec<u8>>),
}

impl SnapshotData {
    /// The encoded form, to send to a follower. Costs time and memory in proportion to the
    /// state: call it off the async workers.
    pub fn encode(&self) -> Result<Arc<Vec<u8>>, io::Error> {
        match self {
            SnapshotData::Encoded(bytes) => Ok(bytes.clone()),
            SnapshotData::View(state) => {
                let payload = SnapshotPayloadRef {
                    format: SNAPSHOT_FORMAT,
                    trust_domain: state.registry.trust_domain(),
                    agents: state.registry.agents().collect(),
                    signing_keys: &state.keys,
                };
                Ok(Arc::new(encode("snapshot", &payload)?))
            }
        }
    }

    /// The state this snapshot holds, checked to be of `trust_domain`.
    pub fn into_state(self, trust_domain: &TrustDomain) -> Result<SiteState, io::Error> {
        let state = match self {
            SnapshotData::View(state) => state,
            SnapshotData::Encoded(bytes) => {
                let payload = SnapshotPayload::decode(&bytes, trust_domain)?;
                let registry = Registry::restore(payload.trust_domain, payload.agents)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                SiteState { registry, keys: payload.signing_keys }
            }
        };
        if state.registry.trust_domain() != trust_domain {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("snapshot is of trust domain {}, not {trust_domain}", state.registry.trust_domain()),
            ));
        }
        Ok(state)
    }
}

/// Everything the state machine holds, as a snapshot is encoded between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPayload {
    /// [`SNAPSHOT_FORMAT`] of the writer.
    pub format: u32,
    /// Trust domain of every agent in it.
    pub trust_domain: TrustDomain,
    /// Every agent, in id order.
    pub agents: Vec<Agent>,
    /// The site's signing keys (private parts included: snapshots travel only inside a site).
    pub signing_keys: SiteKeys,
}

/// [`SnapshotPayload`] by reference, to encode without cloning every agent.
#[derive(Serialize)]
struct SnapshotPayloadRef<'a> {
    format: u32,
    trust_domain: &'a TrustDomain,
    agents: Vec<&'a Agent>,
    signing_keys: &'a SiteKeys,
}

impl SnapshotPayload {
    /// Decodes a payload and checks it is of a known format and of `trust_domain`.
    pub fn decode(bytes: &[u8], trust_domain: &TrustDomain) -> Result<Self, io::Error> {
        let payload: Self = decode("snapshot", bytes)?;
        if payload.format != SNAPSHOT_FORMAT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "snapshot format {} is not supported (this build reads {SNAPSHOT_FORMAT})",
                    payload.format
                ),
            ));
        }
        if &payload.trust_domain != trust_domain {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("snapshot is of trust domain {}, not {trust_domain}", payload.trust_domain),
            ));
        }
        Ok(payload)
    }
}
