#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};

use super::*;
use crate::WriteBatch;

fn open(path: &Path) -> Result<SledStore, StoreError> {
    SledStore::open(path, SledOptions::default())
}

/// A store at `dir/store` holding 100 flushed keys, closed again.
fn populated_store(dir: &Path) -> PathBuf {
    let path = dir.join("store");
    let store = open(&path).unwrap();
    let mut batch = WriteBatch::new();
    for i in 0..100u32 {
        batch.put(i.to_be_bytes().to_vec(), vec![7u8; 100]);
    }
    store.write(batch).unwrap();
    store.flush().unwrap();
    drop(store);
    path
}

/// Every file under `path` with its length and a hash of its bytes, to prove a failed open
/// changed nothing.
fn snapshot_files(path: &Path) -> Vec<(PathBuf, usize, u64)> {
    let mut files = Vec::new();
    let mut pending = vec![path.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                pending.push(entry.path());
            } else {
                let bytes = fs::read(entry.path()).unwrap();
                let mut hasher = std::hash::DefaultHasher::new();
                std::hash::Hash::hash(&bytes, &mut hasher);
                files.push((entry.path(), bytes.len(), std::hash::Hasher::finish(&hasher)));
            }
        }
    }
    files.sort();
    files
}

/// Asserts that opening `path` fails with `StoreError::Open` naming it, and leaves it as it was.
fn assert_open_refused(path: &Path, expected_detail: &str) {
    let before = snapshot_files(path);
    let error = open(path).expect_err("open must refuse this directory");
    let message = error.to_string();
    assert!(matches!(&error, StoreError::Open { path: error_path, .. } if error_path == path));
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("Nothing was reset"), "{message}");
    assert!(message.contains(expected_detail), "expected {expected_detail:?} in: {message}");
    assert_eq!(before, snapshot_files(path), "a refused open must not change the directory");
}

#[test]
fn flushed_data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = populated_store(dir.path());
    let store = open(&path).unwrap();
    assert_eq!(store.get(&5u32.to_be_bytes()).unwrap(), Some(vec![7u8; 100]));
    assert_eq!(store.scan(&KeyRange::all(), Order::Ascending, 1000).unwrap().len(), 100);
    assert!(store.size_on_disk().unwrap() > 0);
}

#[test]
fn open_creates_missing_and_empty_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("a/b/store")).unwrap();
    assert_eq!(store.get(b"k").unwrap(), None);
    let empty = dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    drop(open(&empty).unwrap());
    drop(open(&empty).unwrap());
}

#[test]
fn garbage_db_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = populated_store(dir.path());
    let length = fs::metadata(path.join("db")).unwrap().len() as usize;
    let garbage: Vec<u8> = (0..length).map(|i| (i * 131 % 251) as u8).collect();
    fs::write(path.join("db"), garbage).unwrap();
    for entry in fs::read_dir(&path).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.starts_with("snap.") {
            fs::remove_file(path.join(name)).unwrap();
        }
    }
    assert_open_refused(&path, "no valid log segment");
}

#[test]
fn garbage_behind_a_valid_segment_header_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = populated_store(dir.path());
    let mut bytes = fs::read(path.join("db")).unwrap();
    for (i, byte) in bytes.iter_mut().enumerate().skip(20) {
        *byte = (i * 131 % 251) as u8;
    }
    fs::write(path.join("db"), bytes).unwrap();
    let error = open(&path).expect_err("sled recovers nothing: open must fail");
    assert!(matches!(error, StoreError::Open { .. }), "{error}");
    assert!(error.to_string().contains("marker"), "{error}");
    let error = open(&path).expect_err("and keep failing: no empty store replaces it");
    assert!(error.to_string().contains("marker"), "{error}");
}

#[test]
fn zeroed_db_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = populated_store(dir.path());
    let length = fs::metadata(path.join("db")).unwrap().len() as usize;
    fs::write(path.join("db"), vec![0u8; length]).unwrap();
    assert_open_refused(&path, "no valid log segment");
}

#[test]
fn empty_or_missing_db_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = populated_store(dir.path());
    fs::write(path.join("db"), b"").unwrap();
    assert_open_refused(&path, "`db` file is empty");
    fs::remove_file(path.join("db")).unwrap();
    assert_open_refused(&path, "cannot read sled's `db` file");
}

#[test]
fn garbage_conf_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = populated_store(dir.path());
    fs::write(path.join("conf"), b"segment_size: 0\nnot a config at all\x01\x02\x03\x04").unwrap();
    assert_open_refused(&path, "checksum");
    fs::write(path.join("conf"), b"1234").unwrap();
    assert_open_refused(&path, "truncated");
    fs::remove_file(path.join("conf")).unwrap();
    assert_open_refused(&path, "cannot read sled's `conf` file");
}

#[test]
fn regular_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-a-dir");
    fs::write(&path, b"hello").unwrap();
    let error = open(&path).expect_err("a file is not a data directory");
    assert!(matches!(error, StoreError::Open { .. }));
    assert!(error.to_string().contains("not a directory"), "{error}");
    assert_eq!(fs::read(&path).unwrap(), b"hello");
}

#[test]
fn foreign_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
    assert_open_refused(dir.path(), "holds no sled store");
}

#[test]
fn second_open_of_the_same_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = populated_store(dir.path());
    let _first = open(&path).unwrap();
    let options = SledOptions { lock_wait_ms: 100, ..SledOptions::default() };
    let error = SledStore::open(&path, options).expect_err("sled locks its db file");
    assert!(error.to_string().contains("could not acquire lock"), "{error}");
    assert!(matches!(error, StoreError::Open { .. }), "{error}");
}

#[test]
fn unreadable_dir_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = populated_store(dir.path());
    fs::set_permissions(&path, fs::Permissions::from_mode(0o000)).unwrap();
    if fs::read_dir(&path).is_ok() {
        // Running as root (or with CAP_DAC_OVERRIDE): permissions do not stop us, so an
        // unreadable directory cannot be produced here. Nothing to check.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        return;
    }
    let error = open(&path).expect_err("an unreadable directory cannot be opened");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    assert!(matches!(error, StoreError::Open { .. }), "{error}");
    assert!(open(&path).is_ok(), "the data must still be there once readable again");
}
