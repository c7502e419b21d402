//! The on-disk adapter over sled 0.34.

mod data_dir;
#[cfg(test)]
mod tests;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use data_dir::DataDirState;

use crate::batch::resolve_effects;
use crate::{KeyRange, Order, Pair, Store, StoreError, WriteBatch};

/// The sled tree holding the adapter's own bookkeeping (never user keys).
const META_TREE: &[u8] = b"idmesh-store/meta";
/// Key in [`META_TREE`] written and flushed when a store is created. A store directory whose
/// sled files open without it lost its data (sled recovers an unreadable log as empty).
const MARKER_KEY: &[u8] = b"created";
/// Value of [`MARKER_KEY`]: the adapter's on-disk format.
const MARKER_VALUE: &[u8] = b"idmesh-store sled v1";

/// How sled trades speed for space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SledMode {
    /// Favour write throughput (sled `Mode::HighThroughput`); uses more disk.
    #[default]
    HighThroughput,
    /// Favour small files (sled `Mode::LowSpace`); compacts more.
    LowSpace,
}

/// Settings of a [`SledStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SledOptions {
    /// Upper bound of sled's page cache, in bytes. Default 128 MiB.
    pub cache_capacity_bytes: u64,
    /// Speed/space trade-off. Default [`SledMode::HighThroughput`].
    pub mode: SledMode,
    /// How long `open` retries while the directory's lock is held, in milliseconds. Default
    /// 1000. sled releases its lock on the `db` file shortly *after* the last handle is
    /// dropped (its IO threads finish first), so an immediate reopen in the same process
    /// would otherwise fail; a lock held by another process fails once this has passed.
    pub lock_wait_ms: u64,
}

impl Default for SledOptions {
    fn default() -> Self {
        Self { cache_capacity_bytes: 128 * 1024 * 1024, mode: SledMode::HighThroughput, lock_wait_ms: 1000 }
    }
}

/// A [`Store`] on disk, in one sled tree (callers' keys carry their own keyspace prefixes).
///
/// Rules:
/// - [`Store::write`] is one `sled::Batch` applied with `apply_batch` (atomic, also across a
///   crash). Writes are serialized by a lock, so a delete-range removes exactly the keys present
///   when its batch is applied.
/// - [`Store::flush`] is `Db::flush` (write and fsync). sled only syncs by itself every 500 ms:
///   flush is the durability point.
/// - [`SledStore::open`] never creates a store over data it cannot read: a corrupt, unreadable
///   or foreign directory is [`StoreError::Open`], and nothing in it is changed.
pub struct SledStore {
    db: sled::Db,
    path: PathBuf,
    write_lock: Mutex<()>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore").field("path", &self.path).finish_non_exhaustive()
    }
}

impl SledStore {
    /// Opens the store in directory `path`, creating it (and missing parents) if `path` does
    /// not exist or is an empty directory.
    ///
    /// Fails with [`StoreError::Open`] naming `path` if the path is not a directory, is not
    /// readable, holds other files, holds a sled store whose files are corrupt or truncated,
    /// or is open in another process (sled locks its `db` file).
    pub fn open(path: impl AsRef<Path>, options: SledOptions) -> Result<SledStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        let open_error = |detail: String| StoreError::Open { path: path.clone(), detail };
        let state = data_dir::inspect(&path).map_err(open_error)?;
        let config =
            sled::Config::new().path(&path).cache_capacity(options.cache_capacity_bytes).mode(match options
                .mode
            {
                SledMode::HighThroughput => sled::Mode::HighThroughput,
                SledMode::LowSpace => sled::Mode::LowSpace,
            });
        let started = Instant::now();
        let lock_deadline = started + Duration::from_millis(options.lock_wait_ms);
        let db = loop {
            match catch_unwind(AssertUnwindSafe(|| config.open())) {
                Ok(Ok(db)) => break db,
                Ok(Err(sled::Error::Io(error)))
                    if is_lock_error(&error) && Instant::now() < lock_deadline =>
                {
                    std::thread::sleep(LOCK_RETRY_INTERVAL);
                }
                Ok(Err(error)) => {
                    return Err(open_error(format!("sled failed to open it: {error}")));
                }
                Err(_) => return Err(open_error("sled panicked while recovering it".to_owned())),
            }
        };
        check_marker(&db, state).map_err(open_error)?;
        tracing::info!(
            path = %path.display(),
            created = state == DataDirState::New,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "opened sled store"
        );
        Ok(SledStore { db, path, write_lock: Mutex::new(()) })
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Pause between attempts to take the directory's lock.
const LOCK_RETRY_INTERVAL: Duration = Duration::from_millis(10);

/// sled reports a held lock as an `Other` IO error with this text (sled 0.34 `try_lock`).
fn is_lock_error(error: &std::io::Error) -> bool {
    error.to_string().contains("could not acquire lock")
}

/// On a new store, writes and flushes the marker; on an existing one, requires it.
fn check_marker(db: &sled::Db, state: DataDirState) -> Result<(), String> {
    let meta = db.open_tree(META_TREE).map_err(|error| format!("sled: {error}"))?;
    let marker = meta.get(MARKER_KEY).map_err(|error| format!("sled: {error}"))?;
    match (state, marker) {
        (_, Some(value)) if value.as_ref() == MARKER_VALUE => Ok(()),
        (_, Some(value)) => Err(format!(
            "unknown store format marker {:?} (expected {:?})",
            String::from_utf8_lossy(&value),
            String::from_utf8_lossy(MARKER_VALUE)
        )),
        (DataDirState::Existing, None) => {
            Err("sled opened its files but recovered none of the store's data (the marker written \
             at creation is missing): the log is corrupt or truncated, and sled's recovery may \
             have rewritten parts of the `db` file (or the directory is a sled database that \
             idmesh did not create). If this directory comes from a first start \
             that was interrupted, it holds no data and may be removed"
                .to_owned())
        }
        (DataDirState::New, None) => {
            meta.insert(MARKER_KEY, MARKER_VALUE).map_err(|error| format!("sled: {error}"))?;
            db.flush().map_err(|error| format!("sled flush: {error}"))?;
            Ok(())
        }
    }
}

/// The pairs of `tree` in `range` (ascending; `.rev()` for descending).
fn sled_range(tree: &sled::Tree, range: &KeyRange) -> sled::Iter {
    tree.range::<&Vec<u8>, _>((range.start.as_ref(), range.end.as_ref()))
}

impl Store for SledStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get(key)?.map(|value| value.to_vec()))
    }

    fn scan(&self, range: &KeyRange, order: Order, limit: usize) -> Result<Vec<Pair>, StoreError> {
        if limit == 0 || range.is_empty() {
            return Ok(Vec::new());
        }
        let iter = sled_range(&self.db, range);
        let to_pair = |item: sled::Result<(sled::IVec, sled::IVec)>| {
            item.map(|(key, value)| (key.to_vec(), value.to_vec())).map_err(StoreError::from)
        };
        match order {
            Order::Ascending => iter.take(limit).map(to_pair).collect(),
            Order::Descending => iter.rev().take(limit).map(to_pair).collect(),
        }
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        // The lock guards no data, only the order of writes: a panic cannot leave it broken.
        let _write_guard = self.write_lock.lock().unwrap_or_else(PoisonError::into_inner);
        let effects = resolve_effects(batch, |range| {
            sled_range(&self.db, range)
                .keys()
                .map(|key| key.map(|key| key.to_vec()).map_err(StoreError::from))
                .collect()
        })?;
        let mut sled_batch = sled::Batch::default();
        for (key, effect) in effects {
            match effect {
                Some(value) => sled_batch.insert(key, value),
                None => sled_batch.remove(key),
            }
        }
        self.db.apply_batch(sled_batch)?;
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        let flushed_bytes = self.db.flush()?;
        tracing::trace!(
            flushed_bytes,
            elapsed_us = started.elapsed().as_micros() as u64,
            "flushed sled store"
        );
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }
}
