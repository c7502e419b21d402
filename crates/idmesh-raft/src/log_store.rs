//! The Raft log and vote of one node, kept in its [`Store`].

use crate::codec::{decode, encode, store_err};
use crate::flusher::Flusher;
use crate::keys::{self, COMMITTED, PURGED, VOTE};
use crate::{Entry, LogId, TypeConfig, Vote};
use idmesh_store::{Order, Store, WriteBatch};
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{OptionalSend, entry::RaftEntry};
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

/// Log entries removed per write when purging.
const PURGE_CHUNK_ENTRIES: u64 = 512;

/// Reads log entries and the vote; cloned for each replication stream.
#[derive(Debug, Clone)]
pub struct LogReader {
    store: Arc<dyn Store>,
}

/// The log storage of one node: entries, vote, committed and purged pointers.
///
/// Every write happens in call order (openraft serializes them); `append` is acknowledged
/// through the group-commit [`Flusher`], `save_vote` returns only after a flush.
#[derive(Debug, Clone)]
pub struct LogStore {
    reader: LogReader,
    flusher: Flusher,
}

impl LogStore {
    /// A log store over `store`, made durable by `flusher`.
    pub fn new(store: Arc<dyn Store>, flusher: Flusher) -> Self {
        Self { reader: LogReader { store }, flusher }
    }

    /// The group-commit flusher this log store acknowledges through; other durable writers of
    /// the same store (the audit log) share its flushes.
    pub fn flusher(&self) -> Flusher {
        self.flusher.clone()
    }

    fn store(&self) -> &Arc<dyn Store> {
        &self.reader.store
    }

    fn read<T: serde::de::DeserializeOwned>(&self, key: &[u8], what: &str) -> Result<Option<T>, io::Error> {
        self.reader.read(key, what)
    }

    fn write(&self, batch: WriteBatch) -> Result<(), io::Error> {
        self.store().write(batch).map_err(store_err)
    }
}

/// A log entry from its stored bytes, which are wiped once decoded: an entry may carry a new
/// signing key.
fn decode_entry(bytes: Vec<u8>) -> Result<Entry, io::Error> {
    let bytes = zeroize::Zeroizing::new(bytes);
    decode("log entry", &bytes)
}

impl LogReader {
    fn read<T: serde::de::DeserializeOwned>(&self, key: &[u8], what: &str) -> Result<Option<T>, io::Error> {
        match self.store.get(key).map_err(store_err)? {
            Some(bytes) => Ok(Some(decode(what, &bytes)?)),
            None => Ok(None),
        }
    }

    fn last_entry(&self) -> Result<Option<Entry>, io::Error> {
        let last = self.store.scan(&keys::log_range(0, None), Order::Descending, 1).map_err(store_err)?;
        last.into_iter().next().map(|(_, bytes)| decode_entry(bytes)).transpose()
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.checked_add(1),
            Bound::Excluded(&e) => Some(e),
            Bound::Unbounded => None,
        };
        if end.is_some_and(|end| end <= start) {
            return Ok(Vec::new());
        }
        let pairs =
            self.store.scan(&keys::log_range(start, end), Order::Ascending, usize::MAX).map_err(store_err)?;
        pairs.into_iter().map(|(_, bytes)| decode_entry(bytes)).collect()
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.read(VOTE, "vote")
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        self.reader.try_get_log_entries(range).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.reader.read_vote().await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id: Option<LogId> = self.read(PURGED, "purged log id")?;
        let last_log_id = match self.reader.last_entry()? {
            Some(entry) => Some(entry.log_id()),
            None => last_purged_log_id,
        };
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let mut batch = WriteBatch::new();
        batch.put(VOTE, encode("vote", vote)?);
        self.write(batch)?;
        self.flusher.flush().await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not flushed on its own: a committed pointer that is lost in a crash only means more
        // entries are re-applied from the log on restart. It is written after the entries it
        // covers, so a store that keeps a prefix of its writes never has it point past them.
        let mut batch = WriteBatch::new();
        match committed {
            Some(id) => batch.put(COMMITTED, encode("committed log id", &id)?),
            None => batch.delete(COMMITTED),
        };
        self.write(batch)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        self.read(COMMITTED, "committed log id")
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::new();
        for entry in entries {
            batch.put(keys::log_key(entry.log_id().index), encode("log entry", &entry)?);
        }
        self.write(batch)?;
        self.flusher.after_flush(callback);
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let start = last_log_id.map_or(0, |id| id.index + 1);
        let mut batch = WriteBatch::new();
        batch.delete_range(keys::log_range(start, None));
        self.write(batch)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // The purged pointer moves first, with the first chunk of removals; the rest go in
        // further chunks, oldest first, so that appends are never held up by one huge batch.
        // After a crash in between, entries at or below the pointer are left over: never read
        // (reads start after the pointer), removed by the next purge. No hole can appear.
        let end = log_id.index + 1;
        let first =
            self.store().scan(&keys::log_range(0, Some(end)), Order::Ascending, 1).map_err(store_err)?;
        let mut start = first.first().and_then(|(key, _)| keys::log_index(key)).unwrap_or(end);
        let mut batch = WriteBatch::new();
        batch.put(PURGED, encode("purged log id", &log_id)?);
        loop {
            let chunk_end = start.saturating_add(PURGE_CHUNK_ENTRIES).min(end);
            if start < chunk_end {
                batch.delete_range(keys::log_range(start, Some(chunk_end)));
            }
            self.write(std::mem::take(&mut batch))?;
            if chunk_end >= end {
                return Ok(());
            }
            start = chunk_end;
            tokio::task::yield_now().await;
        }
    }
}
