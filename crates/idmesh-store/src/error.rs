//! The error type of every store operation.

use std::path::PathBuf;

/// Why a store operation failed.
///
/// A failed [`Store::write`](crate::Store::write) applied nothing; a failed
/// [`Store::flush`](crate::Store::flush) made no promise about durability (treat the writes it
/// should have covered as not acknowledged). After `Corrupt` or `Engine`, stop using the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be opened: it is missing its files, corrupt, unreadable,
    /// locked by another process, or not a directory. The store is not opened and no empty
    /// store is created in its place, now or on a later attempt; an operator has to look at
    /// the directory.
    #[error(
        "cannot open the store at {}: {detail}. Nothing was reset: no empty store was created \
         in its place",
        path.display()
    )]
    Open {
        /// The data directory.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },

    /// An IO operation failed (disk full, permission, device error).
    #[error("store IO failed: {0}")]
    Io(#[from] std::io::Error),

    /// Stored data failed an integrity check.
    #[error("store data is corrupt: {detail}")]
    Corrupt {
        /// What was found.
        detail: String,
    },

    /// The storage engine failed in a way that is not IO or corruption (an engine bug, an
    /// unsupported setting, a lock poisoned by a panic).
    #[error("storage engine failed: {detail}")]
    Engine {
        /// What the engine reported.
        detail: String,
    },
}

impl From<sled::Error> for StoreError {
    fn from(error: sled::Error) -> Self {
        match error {
            sled::Error::Io(io) => StoreError::Io(io),
            sled::Error::Corruption { at, .. } => StoreError::Corrupt {
                detail: match at {
                    Some(at) => format!("sled reported corruption at {at:?}"),
                    None => "sled reported corruption".to_owned(),
                },
            },
            other => StoreError::Engine { detail: format!("sled: {other}") },
        }
    }
}
