//! The node's audit log: a hash chain of records (see `idmesh-audit`) kept in the node's store
//! with its indexes (`keys.rs`), appended durably before the request it records is answered,
//! and signed by checkpoints.
//!
//! Appends are serialized only for the moment it takes to chain and write a record; making it
//! durable is a flush shared with every other writer waiting at the same time (group commit,
//! the same flusher as the Raft log). If a record cannot be made durable the append fails and
//! the caller refuses its request (fail closed).

pub mod keys;
mod query;
mod replica;
mod replicate;
mod retention;

pub use query::{AuditPage, ChainReport, QUERY_LIMIT_MAX};
pub use replica::{RECORD_MAX_BYTES, ReportedProblem, TRANSFER_MAX_BYTES, TRANSFER_MAX_RECORDS};
pub use replicate::AUDIT_SYNC_EVERY;
pub use retention::{Cut, RETENTION_EVERY, RETENTION_MAX_SECS};

use idmesh_audit::{Checkpoint, Event, Hash, Held, Record, RecordOrigin};
use idmesh_raft::SharedState;
use idmesh_raft::flusher::Flusher;
use idmesh_store::{KeyRange, Order, Store, WriteBatch};
use idmesh_types::UnixMillis;
use keys::{AUDIT, chain_prefix, parse_record_key, put_record, record_key};
use std::sync::Arc;
use tokio::sync::{Mutex, broadcast};

/// A checkpoint is written after this many records...
pub const CHECKPOINT_EVERY_RECORDS: u64 = 1000;
/// ... or when records are this old and none covers them (checked every few seconds).
pub const CHECKPOINT_EVERY_SECS: u64 = 60;
/// Records a slow follower may fall behind before it is told it lagged.
const FOLLOW_BUFFER: usize = 4096;

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

fn store_err(e: impl std::fmt::Display) -> AuditError {
    AuditError::Store(e.to_string())
}

#[derive(Debug)]
struct Tail {
    /// The newest record's (seq, hash).
    last: Option<(u64, Hash)>,
    since_checkpoint: u64,
    oldest_unsigned: Option<UnixMillis>,
}

/// One node's audit log.
#[derive(Debug)]
pub struct AuditLog {
    store: Arc<dyn Store>,
    flusher: Flusher,
    origin: RecordOrigin,
    clock: Arc<dyn crate::host::Clock>,
    shared: SharedState,
    tail: Mutex<Tail>,
    appended: broadcast::Sender<Record>,
    /// The tail of every chain held, durable (this node's own included).
    held: std::sync::Mutex<Held>,
    /// Records from peers are taken in one batch at a time.
    accepting: Mutex<()>,
    problems: std::sync::Mutex<std::collections::VecDeque<replica::ReportedProblem>>,
    /// What other holders last said they hold, by holder.
    acknowledged:
        std::sync::Mutex<std::collections::BTreeMap<RecordOrigin, idmesh_audit::retention::Acknowledged>>,
    /// Where retention cut each chain (absent: never cut).
    first_kept: std::sync::Mutex<std::collections::BTreeMap<RecordOrigin, u64>>,
    /// One retention pass at a time.
    removing: std::sync::Mutex<()>,
    /// Other sites' chains not taken because their site has not published the node, by chain.
    waiting: std::sync::Mutex<std::collections::BTreeMap<RecordOrigin, replica::ReportedProblem>>,
}

impl AuditLog {
    /// Opens the log in `store`, checking its last record; `shared` gives the site key that
    /// signs checkpoints.
    pub fn open(
        store: Arc<dyn Store>,
        flusher: Flusher,
        origin: RecordOrigin,
        clock: Arc<dyn crate::host::Clock>,
        shared: SharedState,
    ) -> Result<Self, AuditError> {
        migrate_unindexed(store.as_ref(), &origin)?;
        let recent = store
            .scan(
                &KeyRange::prefix(&chain_prefix(&origin)),
                Order::Descending,
                CHECKPOINT_EVERY_RECORDS as usize,
            )
            .map_err(store_err)?;
        let mut tail = Tail { last: None, since_checkpoint: 0, oldest_unsigned: None };
        for (n, (key, bytes)) in recent.iter().enumerate() {
            let record = decode(bytes);
            if n == 0 {
                // A damaged last record does not stop the node: the chain goes on after it
                // and verification names it, so the evidence stays and nothing is reset.
                let seq = parse_record_key(key).map_or(0, |(_, seq)| seq);
                match &record {
                    Ok(r) if r.hash_is_valid() && r.origin == origin && r.seq == seq => {}
                    Ok(_) => tracing::error!(
                        seq,
                        "audit: the last record of this node's chain does not match its hash or place; `idmesh audit verify` reports it, the chain goes on after it"
                    ),
                    Err(e) => {
                        tracing::error!(seq, error = %e, "audit: the last record of this node's chain does not decode; the chain goes on after it")
                    }
                }
                let hash = record.as_ref().map(|r| r.hash).unwrap_or_default();
                tail.last = Some((seq, hash));
            }
            match record {
                Ok(record) if matches!(record.event, Event::Checkpoint(_)) => break,
                Ok(record) => tail.oldest_unsigned = Some(record.time),
                Err(_) => {}
            }
            tail.since_checkpoint += 1;
        }
        let (appended, _) = broadcast::channel(FOLLOW_BUFFER);
        let held = replica::load_held(store.as_ref())?;
        let acknowledged = retention::load_acknowledged(store.as_ref())?;
        let first_kept = retention::load_first_kept(store.as_ref())?;
        Ok(Self {
            store,
            flusher,
            origin,
            clock,
            shared,
            tail: Mutex::new(tail),
            appended,
            held: std::sync::Mutex::new(held),
            accepting: Mutex::new(()),
            problems: std::sync::Mutex::new(std::collections::VecDeque::new()),
            acknowledged: std::sync::Mutex::new(acknowledged),
            first_kept: std::sync::Mutex::new(first_kept),
            removing: std::sync::Mutex::new(()),
            waiting: std::sync::Mutex::new(std::collections::BTreeMap::new()),
        })
    }

    /// This node's place in the mesh.
    pub fn origin(&self) -> &RecordOrigin {
        &self.origin
    }

    /// Appends `event` and returns its record once it is durable. Every
    /// [`CHECKPOINT_EVERY_RECORDS`] records a signed checkpoint follows in the same write.
    pub async fn append(&self, event: Event) -> Result<Record, AuditError> {
        let (record, written) = {
            let mut tail = self.tail.lock().await;
            let now = self.clock.now();
            let record = Record::after(tail.last, self.origin.clone(), now, event);
            let mut written = vec![record.clone()];
            tail.since_checkpoint += 1;
            tail.oldest_unsigned.get_or_insert(now);
            if tail.since_checkpoint >= CHECKPOINT_EVERY_RECORDS {
                written.extend(self.checkpoint_after((record.seq, record.hash), now));
            }
            self.write(&written)?;
            if written.len() > 1 {
                tail.since_checkpoint = 0;
                tail.oldest_unsigned = None;
            }
            tail.last = written.last().map(|r| (r.seq, r.hash));
            (record, written)
        };
        self.flusher.flush().await.map_err(store_err)?;
        self.note_durable(written.iter().map(|r| (r.seq, r.hash)).max_by_key(|(seq, _)| *seq));
        for record in written {
            // No follower listening is not an error.
            let _ = self.appended.send(record);
        }
        Ok(record)
    }

    /// Writes a checkpoint now if some record is not covered by one and either `force` or the
    /// oldest such record is [`CHECKPOINT_EVERY_SECS`] old. Returns it, once durable.
    pub async fn checkpoint_if_due(&self, force: bool) -> Result<Option<Record>, AuditError> {
        let record = {
            let mut tail = self.tail.lock().await;
            let now = self.clock.now();
            let due = tail.oldest_unsigned.is_some_and(|oldest| {
                force || now.0.saturating_sub(oldest.0) >= CHECKPOINT_EVERY_SECS * 1000
            });
            let Some(last) = tail.last.filter(|_| due) else { return Ok(None) };
            let Some(checkpoint) = self.checkpoint_after(last, now) else { return Ok(None) };
            self.write(std::slice::from_ref(&checkpoint))?;
            tail.since_checkpoint = 0;
            tail.oldest_unsigned = None;
            tail.last = Some((checkpoint.seq, checkpoint.hash));
            checkpoint
        };
        self.flusher.flush().await.map_err(store_err)?;
        self.note_durable(Some((record.seq, record.hash)));
        let _ = self.appended.send(record.clone());
        Ok(Some(record))
    }

    /// Peers may be sent this node's records up to `durable` (never one a crash could undo).
    fn note_durable(&self, durable: Option<(u64, Hash)>) {
        let Some((seq, hash)) = durable else { return };
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let entry = held.entry(self.origin.clone()).or_insert((0, Hash::default()));
        if seq > entry.0 {
            *entry = (seq, hash);
        }
    }

    /// The checkpoint record signing `last`, if the site has a signing key yet.
    fn checkpoint_after(&self, (seq, hash): (u64, Hash), now: UnixMillis) -> Option<Record> {
        let (kid, key) = {
            let state = self.shared.read();
            let key = state.state.keys.signing_key_at(now)?;
            (key.kid.clone(), key.secret.signing_key())
        };
        let checkpoint = Checkpoint::sign(&key, &kid, &self.origin, seq, hash);
        Some(Record::after(Some((seq, hash)), self.origin.clone(), now, Event::Checkpoint(checkpoint)))
    }

    fn write(&self, records: &[Record]) -> Result<(), AuditError> {
        let mut batch = WriteBatch::new();
        for record in records {
            let bytes = serde_json::to_vec(record).map_err(store_err)?;
            put_record(&mut batch, record, bytes);
        }
        self.store.write(batch).map_err(store_err)
    }

    /// Records appended from now on (a follower that falls [`FOLLOW_BUFFER`] behind is told
    /// how many it missed).
    pub fn subscribe(&self) -> broadcast::Receiver<Record> {
        self.appended.subscribe()
    }

    /// This node's records written at or after `since`, newest first, at most `limit`.
    pub fn recent(&self, since: UnixMillis, limit: usize) -> Result<Vec<Record>, AuditError> {
        let prefix = chain_prefix(&self.origin);
        let mut out = Vec::new();
        let mut range = KeyRange::prefix(&prefix);
        loop {
            let page = self.store.scan(&range, Order::Descending, 256).map_err(store_err)?;
            let Some((oldest_key, _)) = page.last() else { return Ok(out) };
            let next_end = oldest_key.clone();
            for (_, bytes) in &page {
                let record = decode(bytes)?;
                if record.time < since || out.len() >= limit {
                    return Ok(out);
                }
                out.push(record);
            }
            range = KeyRange::between(prefix.clone(), next_end);
        }
    }

    /// The sequence number of this node's newest record, 0 when the log is empty.
    pub fn last_seq(&self) -> Result<u64, AuditError> {
        let last = self
            .store
            .scan(&KeyRange::prefix(&chain_prefix(&self.origin)), Order::Descending, 1)
            .map_err(store_err)?;
        match last.first() {
            None => Ok(0),
            Some((_, bytes)) => decode(bytes).map(|record| record.seq),
        }
    }

    /// This node's records with `from_seq <= seq`, oldest first, at most `limit`.
    pub fn read_from(&self, from_seq: u64, limit: usize) -> Result<Vec<Record>, AuditError> {
        self.read_chain(&self.origin, from_seq, limit)
    }

    /// `origin`'s records held here with `from_seq <= seq`, oldest first, at most `limit`.
    pub fn read_chain(
        &self,
        origin: &RecordOrigin,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<Record>, AuditError> {
        let range = KeyRange::prefix_starting_at(&chain_prefix(origin), record_key(origin, from_seq));
        let pairs = self.store.scan(&range, Order::Ascending, limit).map_err(store_err)?;
        pairs.iter().map(|(_, bytes)| decode(bytes)).collect()
    }
}

fn decode(bytes: &[u8]) -> Result<Record, AuditError> {
    serde_json::from_slice(bytes)
        .map_err(|e| AuditError::Corrupt { seq: 0, detail: format!("does not decode: {e}") })
}

/// Data dirs written before records were indexed kept them at `audit/<seq BE>` (whose first
/// byte is 0 for any seq below 2^56): move them to their indexed place, 10,000 at a time.
fn migrate_unindexed(store: &dyn Store, origin: &RecordOrigin) -> Result<(), AuditError> {
    let mut old_prefix = AUDIT.to_vec();
    old_prefix.push(0);
    loop {
        let old = store.scan(&KeyRange::prefix(&old_prefix), Order::Ascending, 10_000).map_err(store_err)?;
        if old.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::new();
        for (key, bytes) in old {
            let record = decode(&bytes)?;
            if &record.origin != origin {
                return Err(AuditError::Corrupt {
                    seq: record.seq,
                    detail: "a record of another node".into(),
                });
            }
            put_record(&mut batch, &record, bytes);
            batch.delete(key);
        }
        store.write(batch).map_err(store_err)?;
        store.flush().map_err(store_err)?;
    }
}

/// How often the node checks whether records wait for a checkpoint.
const CHECKPOINT_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

impl crate::Node {
    /// Runs until the node stops: signs records that have waited [`CHECKPOINT_EVERY_SECS`]
    /// for a checkpoint.
    pub(crate) async fn checkpoint_audit_periodically(self, mut stopped: tokio::sync::watch::Receiver<bool>) {
        while Self::sleep_unless_stopped(&mut stopped, CHECKPOINT_CHECK).await {
            match self.audit().checkpoint_if_due(false).await {
                Ok(Some(record)) => tracing::debug!(seq = record.seq, "audit checkpoint written"),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "audit: cannot write a checkpoint"),
            }
        }
    }
}
