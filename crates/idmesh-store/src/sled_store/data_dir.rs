//! Checks a sled data directory before sled sees it.
//!
//! sled 0.34 is forgiving in ways a store must not be: it creates a missing directory, treats a
//! `conf` file of 8 bytes or less as absent (and rewrites it), only warns when the `conf`
//! checksum fails, and recovers a `db` file in which it finds no valid segment as an empty
//! database, *overwriting* the file with a fresh segment. So the adapter decides itself whether
//! a directory is new or holds a store, refuses a `db` file without one valid segment header
//! before sled sees it, and after opening checks the marker written when the store was created
//! (see `super::MARKER_KEY`).

use std::fs;
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::path::Path;

/// What a data directory holds, as far as can be told before opening it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum DataDirState {
    /// Missing or empty: a store will be created in it.
    New,
    /// Holds sled's files, whose `conf` passed its checksum: open it, expect the marker.
    Existing,
}

/// Entries that may be in a new data directory: `lost+found` at the root of a file system, and
/// sled's `blobs` directory, created first when a previous start stopped right after it.
const IGNORED_IN_NEW_DIR: [&str; 2] = ["lost+found", "blobs"];

/// Classifies the directory at `path`. `Err` holds why it cannot be used, for
/// [`StoreError::Open`](crate::StoreError::Open).
pub(super) fn inspect(path: &Path) -> Result<DataDirState, String> {
    match fs::metadata(path) {
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(DataDirState::New),
        Err(error) => {
            return Err(format!("cannot read the data directory's metadata: {error}"));
        }
        Ok(metadata) if !metadata.is_dir() => {
            return Err("the path exists but is not a directory".to_owned());
        }
        Ok(_) => {}
    }
    let mut names = Vec::new();
    let entries = fs::read_dir(path).map_err(|error| format!("cannot list the data directory: {error}"))?;
    for entry in entries {
        let entry = entry.map_err(|error| format!("cannot list the data directory: {error}"))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    let has = |name: &str| names.iter().any(|entry| entry == name);
    if has("conf") || has("db") {
        let segment_size_bytes = check_conf(path)?;
        check_db(path, segment_size_bytes)?;
        return Ok(DataDirState::Existing);
    }
    let blobs_empty = !has("blobs") || is_empty_dir(&path.join("blobs"));
    if blobs_empty && names.iter().all(|name| IGNORED_IN_NEW_DIR.contains(&name.as_str())) {
        return Ok(DataDirState::New);
    }
    Err(format!(
        "the directory is not empty but holds no sled store (no `conf` or `db` file; found: {}); \
         refusing to create a store among other files",
        names.join(", ")
    ))
}

fn is_empty_dir(path: &Path) -> bool {
    fs::read_dir(path).map(|mut entries| entries.next().is_none()).unwrap_or(false)
}

/// sled's `conf`: text lines (`segment_size: N`, ...), then the little-endian CRC-32 of the
/// text. Returns the segment size in bytes.
fn check_conf(dir: &Path) -> Result<u64, String> {
    let bytes =
        fs::read(dir.join("conf")).map_err(|error| format!("cannot read sled's `conf` file: {error}"))?;
    let Some(split) = bytes.len().checked_sub(4).filter(|&text_len| text_len > 4) else {
        return Err(format!("sled's `conf` file is truncated ({} bytes)", bytes.len()));
    };
    let (text, crc_bytes) = bytes.split_at(split);
    let crc_stored = u32::from_le_bytes([crc_bytes[0], crc_bytes[1], crc_bytes[2], crc_bytes[3]]);
    if crc32(text) != crc_stored {
        return Err("sled's `conf` file fails its checksum (corrupt)".to_owned());
    }
    String::from_utf8_lossy(text)
        .lines()
        .find_map(|line| line.strip_prefix("segment_size: "))
        .and_then(|size| size.trim().parse::<u64>().ok())
        .filter(|size| size.is_power_of_two() && *size >= SEGMENT_HEADER_LEN_BYTES)
        .ok_or_else(|| "sled's `conf` file has no valid `segment_size`".to_owned())
}

/// Length of the header at the start of every segment of sled 0.34's log.
const SEGMENT_HEADER_LEN_BYTES: u64 = 20;

/// The log must exist, be readable, and hold at least one segment whose header passes its
/// checksum; otherwise sled would recover it as an empty database and overwrite it.
fn check_db(dir: &Path, segment_size_bytes: u64) -> Result<(), String> {
    let read_error = |error: std::io::Error| format!("cannot read sled's `db` file: {error}");
    let metadata = fs::metadata(dir.join("db")).map_err(read_error)?;
    if !metadata.is_file() {
        return Err("sled's `db` entry is not a file".to_owned());
    }
    if metadata.len() == 0 {
        return Err("sled's `db` file is empty".to_owned());
    }
    let mut file = fs::File::open(dir.join("db")).map_err(read_error)?;
    let mut header = [0u8; SEGMENT_HEADER_LEN_BYTES as usize];
    let mut segment_start_bytes = 0;
    while segment_start_bytes + SEGMENT_HEADER_LEN_BYTES <= metadata.len() {
        file.seek(SeekFrom::Start(segment_start_bytes)).map_err(read_error)?;
        file.read_exact(&mut header).map_err(read_error)?;
        if is_valid_segment_header(&header) {
            return Ok(());
        }
        segment_start_bytes += segment_size_bytes;
    }
    Err("sled's `db` file holds no valid log segment (corrupt or overwritten)".to_owned())
}

/// A sled 0.34 segment header: `crc32 ^ 0xFFFF_FFFF` (little-endian) of bytes 4..20, then
/// the segment's LSN and the highest stable LSN (both XOR-masked).
fn is_valid_segment_header(header: &[u8; SEGMENT_HEADER_LEN_BYTES as usize]) -> bool {
    let stored = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) ^ u32::MAX;
    crc32(&header[4..]) == stored
}

/// CRC-32 (IEEE 802.3, the one `crc32fast` computes for sled), bit by bit: only used on the
/// few bytes of `conf`.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }
}
