//! The snapshot format and where a node keeps its current snapshot: one blob of the store
//! (`snapshot`), holding the metadata and the data, replaced whole.

use crate::codec::{decode, encode, store_err};
use crate::{Snapshot, SnapshotMeta};
use idmesh_state::Agent;
use idmesh_store::Store;
use idmesh_types::TrustDomain;
use serde::{Deserialize, Serialize};
use std::io;

/// Version of [`SnapshotPayload`]'s encoding.
pub const SNAPSHOT_FORMAT: u32 = 1;
/// Name of the blob holding the current snapshot.
const SNAPSHOT_BLOB: &str = "snapshot";

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

/// Makes `meta` + `data` the current snapshot, durably. Layout of the blob: the length of the
/// encoded metadata (8 bytes, big-endian), the metadata, then the data.
pub(crate) fn save(store: &dyn Store, meta: &SnapshotMeta, data: &[u8]) -> Result<(), io::Error> {
    let meta = encode("snapshot meta", meta)?;
    let mut blob = Vec::with_capacity(8 + meta.len() + data.len());
    blob.extend_from_slice(&(meta.len() as u64).to_be_bytes());
    blob.extend_from_slice(&meta);
    blob.extend_from_slice(data);
    store.put_blob(SNAPSHOT_BLOB, &blob).map_err(store_err)
}

/// The current snapshot, if one was ever built or installed.
pub(crate) fn load(store: &dyn Store) -> Result<Option<Snapshot>, io::Error> {
    let Some(blob) = store.get_blob(SNAPSHOT_BLOB).map_err(store_err)? else {
        return Ok(None);
    };
    let corrupt = || io::Error::new(io::ErrorKind::InvalidData, "the stored snapshot is truncated");
    let length: [u8; 8] = blob.get(..8).ok_or_else(corrupt)?.try_into().map_err(|_| corrupt())?;
    let meta_end = usize::try_from(u64::from_be_bytes(length))
        .map_err(|_| corrupt())?
        .checked_add(8)
        .ok_or_else(corrupt)?;
    let meta: SnapshotMeta = decode("snapshot meta", blob.get(8..meta_end).ok_or_else(corrupt)?)?;
    let data = blob.get(meta_end..).ok_or_else(corrupt)?.to_vec();
    Ok(Some(Snapshot { meta, snapshot: data }))
}
