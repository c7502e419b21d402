//! Encoding of everything the Raft layer persists: JSON, readable when debugging a data dir.
//! A value that does not decode is reported with the key it was read from; never skipped.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::io;

pub(crate) fn encode<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>, io::Error> {
    serde_json::to_vec(value).map_err(|e| io::Error::other(format!("cannot encode {what}: {e}")))
}

pub(crate) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, io::Error> {
    serde_json::from_slice(bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "stored {what} is corrupt and cannot be decoded ({e}); the data dir needs repair or restore"
            ),
        )
    })
}

pub(crate) fn store_err(e: idmesh_store::StoreError) -> io::Error {
    io::Error::other(e)
}
