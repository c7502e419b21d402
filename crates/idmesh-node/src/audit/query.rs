//! Reading the audit log: queries over the indexes, and verification of every chain held.

use super::keys::{BY_TIME, RECORDS, at_time, parse_record_key, record_key_of_entry, term_prefix};
use super::{AuditLog, decode};
use crate::NodeError;
use idmesh_audit::{ChainError, ChainSummary, ChainVerifier, Filter, KeyLookup, Record, RecordOrigin};
use idmesh_store::{KeyRange, Order};
use idmesh_types::InvalidField;
use std::ops::Bound;

/// Most records one query returns.
pub const QUERY_LIMIT_MAX: usize = 1000;
/// Most index entries one query call reads; past that it returns what it found and a cursor.
const QUERY_SCAN_MAX: usize = 100_000;
/// Records read per store scan while verifying.
const VERIFY_PAGE: usize = 1024;

/// One page of a query's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPage {
    /// Matching records, in time order (newest first if asked).
    pub records: Vec<Record>,
    /// Where to continue, when there may be more.
    pub cursor: Option<String>,
}

/// What verifying one node's chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// Whose chain.
    pub origin: RecordOrigin,
    /// What verified.
    pub summary: ChainSummary,
    /// The first record that does not fit, and why.
    pub broken: Option<ChainError>,
}

fn storage(e: impl std::fmt::Display) -> NodeError {
    NodeError::Storage { detail: format!("audit log: {e}") }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

impl AuditLog {
    /// The records matching `filter`, in time order (`newest_first` reverses it), at most
    /// `limit` (≤ [`QUERY_LIMIT_MAX`]), continuing after `cursor` (from an earlier page of the
    /// same query). Reads one index — the most selective term the filter names, else the time
    /// index — over the filter's time range only.
    pub fn query(
        &self,
        filter: &Filter,
        cursor: Option<&str>,
        limit: usize,
        newest_first: bool,
    ) -> Result<AuditPage, NodeError> {
        if limit == 0 || limit > QUERY_LIMIT_MAX {
            return Err(
                InvalidField::new("limit", format!("must be 1 to {QUERY_LIMIT_MAX} (got {limit})")).into()
            );
        }
        let prefix = filter.best_term().map_or_else(|| BY_TIME.to_vec(), |term| term_prefix(&term));
        let mut low = Bound::Included(at_time(&prefix, filter.from.unwrap_or_default()));
        let mut high = match filter.until {
            Some(until) => Bound::Excluded(at_time(&prefix, until)),
            None => KeyRange::prefix(&prefix).end,
        };
        if let Some(cursor) = cursor {
            let bad = || InvalidField::new("cursor", "is not a cursor this query returned");
            let key = unhex(cursor).filter(|k| k.starts_with(&prefix)).ok_or_else(bad)?;
            if newest_first {
                high = Bound::Excluded(key);
            } else {
                low = Bound::Excluded(key);
            }
        }
        let order = if newest_first { Order::Descending } else { Order::Ascending };
        let mut records = Vec::new();
        let mut scanned = 0usize;
        loop {
            let range = KeyRange::new(low.clone(), high.clone());
            let page = self.store.scan(&range, order, VERIFY_PAGE).map_err(storage)?;
            let exhausted = page.len() < VERIFY_PAGE;
            for (entry, _) in page {
                scanned += 1;
                if let Some(key) = record_key_of_entry(&prefix, &entry)
                    && let Some(bytes) = self.store.get(&key).map_err(storage)?
                {
                    let record = decode(&bytes).map_err(storage)?;
                    if filter.matches(&record) {
                        records.push(record);
                    }
                }
                let full = records.len() >= limit || scanned >= QUERY_SCAN_MAX;
                if newest_first {
                    high = Bound::Excluded(entry);
                } else {
                    low = Bound::Excluded(entry);
                }
                if full {
                    let at = if newest_first { &high } else { &low };
                    let cursor = match at {
                        Bound::Excluded(key) => Some(hex(key)),
                        _ => None,
                    };
                    return Ok(AuditPage { records, cursor });
                }
            }
            if exhausted {
                return Ok(AuditPage { records, cursor: None });
            }
        }
    }

    /// Verifies every chain this node holds, each from its first record, in constant memory:
    /// links, hashes, gaps, and every checkpoint's signature against `keys`.
    pub fn verify_all(&self, keys: KeyLookup<'_>) -> Result<Vec<ChainReport>, NodeError> {
        let mut reports: Vec<ChainReport> = Vec::new();
        let mut current: Option<(RecordOrigin, ChainVerifier, Option<ChainError>)> = None;
        let mut low = Bound::Included(RECORDS.to_vec());
        let high = KeyRange::prefix(RECORDS).end;
        loop {
            let page = self
                .store
                .scan(&KeyRange::new(low.clone(), high.clone()), Order::Ascending, VERIFY_PAGE)
                .map_err(storage)?;
            let exhausted = page.len() < VERIFY_PAGE;
            for (key, bytes) in page {
                low = Bound::Excluded(key.clone());
                let Some((origin, seq)) = parse_record_key(&key) else {
                    return Err(storage(format!("a key that names no record: {}", hex(&key))));
                };
                if current.as_ref().is_none_or(|(at, _, _)| at != &origin) {
                    if let Some((origin, verifier, broken)) = current.take() {
                        reports.push(ChainReport { origin, summary: verifier.summary(), broken });
                    }
                    let verifier = ChainVerifier::from_cut(self.first_kept(&origin));
                    current = Some((origin.clone(), verifier, None));
                }
                let Some((_, verifier, broken)) = current.as_mut() else { continue };
                if broken.is_some() {
                    continue;
                }
                let checked = match decode(&bytes) {
                    Err(e) => Err(ChainError { seq, reason: format!("it {e}") }),
                    Ok(record) if record.origin != origin || record.seq != seq => Err(ChainError {
                        seq,
                        reason: format!(
                            "the record stored here says it is seq {} of node {} of site {} (moved)",
                            record.seq, record.origin.node, record.origin.site
                        ),
                    }),
                    Ok(record) => verifier.push(&record, Some(keys)),
                };
                if let Err(e) = checked {
                    *broken = Some(e);
                }
            }
            if exhausted {
                break;
            }
        }
        if let Some((origin, verifier, broken)) = current {
            reports.push(ChainReport { origin, summary: verifier.summary(), broken });
        }
        Ok(reports)
    }
}
