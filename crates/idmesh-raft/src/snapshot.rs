//! The snapshot format and where a node keeps its current snapshot.

use crate::codec::{decode, encode, store_err};
use crate::keys::{self, SNAPSHOT_DATA, SNAPSHOT_META};
use crate::{Snapshot, SnapshotMeta};
use idmesh_state::Agent;
use idmesh_store::{KeyRange, Order, Store, WriteBatch};
use idmesh_types::TrustDomain;
use serde::{Deserialize, Serialize};
use std::io;

/// Version of [`SnapshotPayload`]'s encoding.
pub const SNAPSHOT_FORMAT: u32 = 1;
/// Size of the chunks a snapshot is stored in.
const CHUNK_BYTES: usize = 1 << 20;

/// Everything the state machine holds, as carried by a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPayload {
    /// [`SNAPSHOT_FORMAT`] of the writer.
    pub format: u32,
    /// Trust domain of every agent in it.
    pub trust_domain: TrustDomain,
    /// Every agent, in id order.
    pub agents: Vec<Agent>,
}

impl SnapshotPayload {
    /// Encodes the payload.
    pub fn encode(&self) -> Result<Vec<u8>, io::Error> {
        encode("snapshot", self)
    }

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

/// Adds to `batch` the writes that make `meta` + `data` the current snapshot.
pub(crate) fn stage(batch: &mut WriteBatch, meta: &SnapshotMeta, data: &[u8]) -> Result<(), io::Error> {
    batch.delete_range(KeyRange::prefix(SNAPSHOT_DATA));
    for (n, chunk) in data.chunks(CHUNK_BYTES).enumerate() {
        let n = u32::try_from(n).map_err(|_| io::Error::other("snapshot exceeds 4 PiB"))?;
        batch.put(keys::snapshot_chunk_key(n), chunk.to_vec());
    }
    batch.put(SNAPSHOT_META, encode("snapshot meta", meta)?);
    Ok(())
}

/// The current snapshot, if one was ever built or installed.
pub(crate) fn load(store: &dyn Store) -> Result<Option<Snapshot>, io::Error> {
    let Some(meta_bytes) = store.get(SNAPSHOT_META).map_err(store_err)? else {
        return Ok(None);
    };
    let meta: SnapshotMeta = decode("snapshot meta", &meta_bytes)?;
    let chunks =
        store.scan(&KeyRange::prefix(SNAPSHOT_DATA), Order::Ascending, usize::MAX).map_err(store_err)?;
    let mut data = Vec::with_capacity(chunks.iter().map(|(_, c)| c.len()).sum());
    for (_, chunk) in chunks {
        data.extend_from_slice(&chunk);
    }
    Ok(Some(Snapshot { meta, snapshot: data }))
}
