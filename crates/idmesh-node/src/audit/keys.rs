//! Where audit records and their index entries live in the store.
//!
//! ```text
//! audit/r/<origin><seq BE>                               the record (JSON)
//! audit/t/<time BE><origin><seq BE>                      every record, by time
//! audit/i/<tag><len u16 BE><value><time BE><origin><seq BE>  by agent, user, jti, action
//! audit/a/<holder>                                       what a holder acknowledged (JSON)
//! audit/f/<origin>                                       first record kept (seq BE), once cut
//! origin = holder = <site len u8><site><node BE>
//! ```
//!
//! Every index is ordered by time, so a query reads one contiguous range of one index, in time
//! order, whatever the number of records.

use idmesh_audit::{Record, RecordOrigin, Term};
use idmesh_types::UnixMillis;

/// Every audit key starts with this.
pub const AUDIT: &[u8] = b"audit/";
/// Records.
pub const RECORDS: &[u8] = b"audit/r/";
/// The time index.
pub const BY_TIME: &[u8] = b"audit/t/";
/// The term indexes.
pub const BY_TERM: &[u8] = b"audit/i/";
/// What other nodes acknowledged holding.
pub const ACKNOWLEDGED: &[u8] = b"audit/a/";
/// Where retention cut each chain.
pub const FIRST_KEPT: &[u8] = b"audit/f/";

/// The origin's bytes inside keys.
pub fn origin_bytes(origin: &RecordOrigin) -> Vec<u8> {
    let site = origin.site.as_bytes();
    // Site names are at most 63 bytes (validated where a site is named).
    let len = u8::try_from(site.len()).unwrap_or(u8::MAX);
    let mut out = Vec::with_capacity(1 + site.len() + 8);
    out.push(len);
    out.extend_from_slice(&site[..usize::from(len).min(site.len())]);
    out.extend_from_slice(&origin.node.to_be_bytes());
    out
}

/// `prefix` followed by the origin's bytes.
pub fn origin_key(prefix: &[u8], origin: &RecordOrigin) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(&origin_bytes(origin));
    key
}

/// The origin a key under `prefix` names (see [`origin_key`]).
pub fn parse_origin_key(prefix: &[u8], key: &[u8]) -> Option<RecordOrigin> {
    let rest = key.strip_prefix(prefix)?;
    let (&len, rest) = rest.split_first()?;
    let site = std::str::from_utf8(rest.get(..usize::from(len))?).ok()?;
    let node = rest.get(usize::from(len)..)?;
    Some(RecordOrigin { site: site.to_owned(), node: u64::from_be_bytes(node.try_into().ok()?) })
}

/// The prefix of one origin's records.
pub fn chain_prefix(origin: &RecordOrigin) -> Vec<u8> {
    origin_key(RECORDS, origin)
}

/// The key of record `seq` of `origin`.
pub fn record_key(origin: &RecordOrigin, seq: u64) -> Vec<u8> {
    let mut key = chain_prefix(origin);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The origin and seq a record key names.
pub fn parse_record_key(key: &[u8]) -> Option<(RecordOrigin, u64)> {
    let rest = key.strip_prefix(RECORDS)?;
    let (&len, rest) = rest.split_first()?;
    let site = std::str::from_utf8(rest.get(..usize::from(len))?).ok()?;
    let rest = rest.get(usize::from(len)..)?;
    if rest.len() != 16 {
        return None;
    }
    let node = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    let seq = u64::from_be_bytes(rest.get(8..)?.try_into().ok()?);
    Some((RecordOrigin { site: site.to_owned(), node }, seq))
}

/// The prefix of a term's index.
pub fn term_prefix(term: &Term) -> Vec<u8> {
    let value = term.value().as_bytes();
    let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
    let mut key = BY_TERM.to_vec();
    key.push(term.tag());
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(&value[..usize::from(len).min(value.len())]);
    key
}

/// The suffix every index entry of `record` ends with: time, origin, seq.
fn position(record: &Record) -> Vec<u8> {
    let mut out = record.time.0.to_be_bytes().to_vec();
    out.extend_from_slice(&origin_bytes(&record.origin));
    out.extend_from_slice(&record.seq.to_be_bytes());
    out
}

/// Every index key of `record`.
pub fn index_keys(record: &Record) -> Vec<Vec<u8>> {
    let at = position(record);
    let mut keys = Vec::new();
    let mut by_time = BY_TIME.to_vec();
    by_time.extend_from_slice(&at);
    keys.push(by_time);
    for term in record.terms() {
        let mut key = term_prefix(&term);
        key.extend_from_slice(&at);
        keys.push(key);
    }
    keys
}

/// Adds `record` (its stored form is `bytes`) and every index entry of it to `batch`.
pub fn put_record(batch: &mut idmesh_store::WriteBatch, record: &Record, bytes: Vec<u8>) {
    batch.put(record_key(&record.origin, record.seq), bytes);
    for key in index_keys(record) {
        batch.put(key, Vec::new());
    }
}

/// `prefix` followed by a time: where entries written at `time` start.
pub fn at_time(prefix: &[u8], time: UnixMillis) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(&time.0.to_be_bytes());
    key
}

/// The record key an index entry (under `prefix`) points at.
pub fn record_key_of_entry(prefix: &[u8], entry: &[u8]) -> Option<Vec<u8>> {
    let rest = entry.strip_prefix(prefix)?.get(8..)?;
    let mut key = RECORDS.to_vec();
    key.extend_from_slice(rest);
    Some(key)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use idmesh_audit::Event;

    #[test]
    fn an_index_entry_points_back_at_its_record() {
        let origin = RecordOrigin { site: "ship".into(), node: 3 };
        let record = Record::next(None, origin.clone(), UnixMillis(77), Event::NodeStopping);
        let keys = index_keys(&record);
        assert_eq!(keys.len(), 2, "by time and by action");
        assert_eq!(record_key_of_entry(BY_TIME, &keys[0]).unwrap(), record_key(&origin, 1));
        let action = term_prefix(&Term::Action("node_stopping".into()));
        assert_eq!(record_key_of_entry(&action, &keys[1]).unwrap(), record_key(&origin, 1));
        assert!(keys[0].starts_with(&at_time(BY_TIME, UnixMillis(77))));
        assert_eq!(parse_record_key(&record_key(&origin, 9)), Some((origin.clone(), 9)));
        assert_eq!(parse_record_key(b"audit/r/\x04ship"), None);
        assert_eq!(parse_origin_key(FIRST_KEPT, &origin_key(FIRST_KEPT, &origin)), Some(origin));
        assert_eq!(parse_origin_key(FIRST_KEPT, b"audit/f/\x04ship\0"), None);
    }
}
