//! The node's audit log: a hash chain of records (see `idmesh-audit`) kept in the node's store
//! under `audit/<seq>`, appended durably before the request it records is answered.
//!
//! Appends are serialized only for the moment it takes to chain and write a record; making it
//! durable is a flush shared with every other writer waiting at the same time (group commit,
//! the same flusher as the Raft log). If a record cannot be made durable the append fails and
//! the caller refuses its request (fail closed).

use idmesh_audit::{Event, Record, RecordOrigin};
use idmesh_raft::flusher::Flusher;
use idmesh_store::{KeyRange, Order, Store, WriteBatch};
use idmesh_types::UnixMillis;
use std::sync::Arc;
use tokio::sync::Mutex;

/// Key prefix of audit records.
pub const AUDIT: &[u8] = b"audit/";

fn record_key(seq: u64) -> Vec<u8> {
    let mut key = AUDIT.to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// Why an audit record could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The store failed.
    #[error("audit store: {0}")]
    Store(String),
    /// A stored record does not decode or its hash does not match.
    #[error("audit record at seq {seq} is corrupt: {detail}")]
    Corrupt {
        /// Where.
        seq: u64,
        /// What.
        detail: String,
    },
}

/// One node's audit log.
#[derive(Debug)]
pub struct AuditLog {
    store: Arc<dyn Store>,
    flusher: Flusher,
    origin: RecordOrigin,
    clock: Arc<dyn crate::host::Clock>,
    tail: Mutex<Option<Record>>,
}

impl AuditLog {
    /// Opens the log in `store`, checking its last record.
    pub fn open(
        store: Arc<dyn Store>,
        flusher: Flusher,
        origin: RecordOrigin,
        clock: Arc<dyn crate::host::Clock>,
    ) -> Result<Self, AuditError> {
        let last = store
            .scan(&KeyRange::prefix(AUDIT), Order::Descending, 1)
            .map_err(|e| AuditError::Store(e.to_string()))?;
        let tail = match last.first() {
            Some((_, bytes)) => {
                let record: Record = serde_json::from_slice(bytes).map_err(|e| AuditError::Corrupt {
                    seq: 0,
                    detail: format!("last record does not decode: {e}"),
                })?;
                if !record.hash_is_valid() || record.origin != origin {
                    return Err(AuditError::Corrupt {
                        seq: record.seq,
                        detail: "last record's hash or origin does not match".into(),
                    });
                }
                Some(record)
            }
            None => None,
        };
        Ok(Self { store, flusher, origin, clock, tail: Mutex::new(tail) })
    }

    /// Appends `event` and returns its record once it is durable.
    pub async fn append(&self, event: Event) -> Result<Record, AuditError> {
        let record = {
            let mut tail = self.tail.lock().await;
            let record = Record::next(tail.as_ref(), self.origin.clone(), self.clock.now(), event);
            let bytes = serde_json::to_vec(&record).map_err(|e| AuditError::Store(e.to_string()))?;
            let mut batch = WriteBatch::new();
            batch.put(record_key(record.seq), bytes);
            self.store.write(batch).map_err(|e| AuditError::Store(e.to_string()))?;
            *tail = Some(record.clone());
            record
        };
        self.flusher.flush().await.map_err(|e| AuditError::Store(e.to_string()))?;
        Ok(record)
    }

    /// Records written at or after `since`, newest first, at most `limit`.
    pub fn recent(&self, since: UnixMillis, limit: usize) -> Result<Vec<Record>, AuditError> {
        let mut out = Vec::new();
        let mut range = KeyRange::prefix(AUDIT);
        loop {
            let page = self
                .store
                .scan(&range, Order::Descending, 256)
                .map_err(|e| AuditError::Store(e.to_string()))?;
            let Some((oldest_key, _)) = page.last() else { return Ok(out) };
            let next_end = oldest_key.clone();
            for (_, bytes) in &page {
                let record: Record = serde_json::from_slice(bytes)
                    .map_err(|e| AuditError::Corrupt { seq: 0, detail: e.to_string() })?;
                if record.time < since || out.len() >= limit {
                    return Ok(out);
                }
                out.push(record);
            }
            range = KeyRange::between(AUDIT.to_vec(), next_end);
        }
    }

    /// The sequence number of the newest record written (durable or about to be), 0 when the
    /// log is empty.
    pub fn last_seq(&self) -> Result<u64, AuditError> {
        let last = self
            .store
            .scan(&KeyRange::prefix(AUDIT), Order::Descending, 1)
            .map_err(|e| AuditError::Store(e.to_string()))?;
        match last.first() {
            None => Ok(0),
            Some((_, bytes)) => serde_json::from_slice::<Record>(bytes)
                .map(|record| record.seq)
                .map_err(|e| AuditError::Corrupt { seq: 0, detail: e.to_string() }),
        }
    }

    /// Records with `from_seq <= seq`, oldest first, at most `limit` (for reading the chain).
    pub fn read_from(&self, from_seq: u64, limit: usize) -> Result<Vec<Record>, AuditError> {
        let range = KeyRange::prefix_starting_at(AUDIT, record_key(from_seq));
        let pairs =
            self.store.scan(&range, Order::Ascending, limit).map_err(|e| AuditError::Store(e.to_string()))?;
        pairs
            .iter()
            .map(|(_, bytes)| {
                serde_json::from_slice(bytes)
                    .map_err(|e| AuditError::Corrupt { seq: 0, detail: e.to_string() })
            })
            .collect()
    }
}
