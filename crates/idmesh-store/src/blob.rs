//! Blobs: large values written rarely and whole (snapshots), kept beside the ordered keys.
//!
//! A blob is replaced atomically and is durable when `put_blob` returns. Names are short and
//! plain so that an adapter can use them as file names.

use crate::StoreError;
use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Longest blob name.
pub const BLOB_NAME_MAX_BYTES: usize = 64;

/// Checks a blob name: 1 to 64 bytes of lowercase letters, digits, `-` and `_`.
pub fn check_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= BLOB_NAME_MAX_BYTES
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Engine {
            detail: format!(
                "blob name {name:?} must be 1 to {BLOB_NAME_MAX_BYTES} bytes of a-z, 0-9, '-', '_'"
            ),
        })
    }
}

/// Blobs as files in one directory: written to a temporary file, synced, renamed over the old
/// one, and the directory synced, so a crash leaves either the old or the new blob, whole.
#[derive(Debug, Clone)]
pub(crate) struct BlobDir {
    dir: PathBuf,
}

impl BlobDir {
    /// The blob directory `dir` (created on first write).
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.blob"))
    }

    pub(crate) fn put(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        check_name(name)?;
        fs::create_dir_all(&self.dir)?;
        let final_path = self.path(name);
        let temporary = self.dir.join(format!("{name}.blob.tmp"));
        {
            let mut file = File::create(&temporary)?;
            file.write_all(bytes)?;
            file.sync_all()?;
        }
        fs::rename(&temporary, &final_path)?;
        sync_dir(&self.dir)
    }

    pub(crate) fn get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        check_name(name)?;
        match fs::read(self.path(name)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Bytes the blobs occupy.
    pub(crate) fn size_bytes(&self) -> u64 {
        let Ok(entries) = fs::read_dir(&self.dir) else { return 0 };
        entries.filter_map(Result::ok).filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum()
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)?.sync_all()?;
    Ok(())
}
