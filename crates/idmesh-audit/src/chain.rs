//! The hash chain of one node's audit records.

use crate::Event;
use idmesh_types::UnixMillis;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use std::fmt;

/// A SHA-256 digest, written as hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Hash(pub [u8; 32]);

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let bad = || serde::de::Error::custom("a hash is 64 hex digits");
        if text.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16).map_err(|_| bad())?;
        }
        Ok(Hash(out))
    }
}

/// Which node's chain a record belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordOrigin {
    /// The site.
    pub site: String,
    /// The node within the site.
    pub node: u64,
}

/// One audit record: `(origin, seq, time, prev_hash, event, hash)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The node that wrote it.
    pub origin: RecordOrigin,
    /// Position in that node's chain, from 1.
    pub seq: u64,
    /// When it was written.
    pub time: UnixMillis,
    /// Hash of record `seq - 1` (all zeros for the first).
    pub prev_hash: Hash,
    /// What happened.
    pub event: Event,
    /// Hash of everything above.
    pub hash: Hash,
}

/// Domain separation for record hashes (changes if the layout ever does).
const HASH_DOMAIN: &[u8] = b"idmesh-audit-record-v1\0";

fn digest(origin: &RecordOrigin, seq: u64, time: UnixMillis, prev_hash: &Hash, event: &Event) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(HASH_DOMAIN);
    hasher.update((origin.site.len() as u64).to_be_bytes());
    hasher.update(origin.site.as_bytes());
    hasher.update(origin.node.to_be_bytes());
    hasher.update(seq.to_be_bytes());
    hasher.update(time.0.to_be_bytes());
    hasher.update(prev_hash.0);
    // serde_json writes struct fields in declaration order: a deterministic encoding.
    hasher.update(serde_json::to_vec(event).unwrap_or_default());
    Hash(hasher.finalize().into())
}

impl Record {
    /// The record that follows `prev` (or starts the chain) in `origin`'s log.
    pub fn next(prev: Option<&Record>, origin: RecordOrigin, time: UnixMillis, event: Event) -> Record {
        let (seq, prev_hash) = prev.map_or((1, Hash::default()), |p| (p.seq + 1, p.hash));
        let hash = digest(&origin, seq, time, &prev_hash, &event);
        Record { origin, seq, time, prev_hash, event, hash }
    }

    /// True if `hash` matches the record's content.
    pub fn hash_is_valid(&self) -> bool {
        digest(&self.origin, self.seq, self.time, &self.prev_hash, &self.event) == self.hash
    }
}

/// Where and why a chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at seq {seq}: {reason}")]
pub struct ChainError {
    /// The first record that does not fit.
    pub seq: u64,
    /// What is wrong with it.
    pub reason: String,
}

/// Checks consecutive records of one node's chain: each hash matches its content, each links to
/// the one before, sequence numbers have no gap, and all share one origin.
pub fn verify_chain<'a>(records: impl IntoIterator<Item = &'a Record>) -> Result<(), ChainError> {
    let mut prev: Option<&Record> = None;
    for record in records {
        if !record.hash_is_valid() {
            return Err(ChainError {
                seq: record.seq,
                reason: "its hash does not match its content (modified)".into(),
            });
        }
        if let Some(p) = prev {
            if record.origin != p.origin {
                return Err(ChainError {
                    seq: record.seq,
                    reason: "it belongs to another node's chain".into(),
                });
            }
            if record.seq != p.seq + 1 {
                return Err(ChainError {
                    seq: record.seq,
                    reason: format!("it follows seq {} (records missing or reordered)", p.seq),
                });
            }
            if record.prev_hash != p.hash {
                return Err(ChainError {
                    seq: record.seq,
                    reason: "it does not link to the record before it".into(),
                });
            }
        } else if record.seq == 1 && record.prev_hash != Hash::default() {
            return Err(ChainError { seq: 1, reason: "the first record must link to the zero hash".into() });
        }
        prev = Some(record);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn origin() -> RecordOrigin {
        RecordOrigin { site: "eu".into(), node: 1 }
    }

    fn chain(n: u64) -> Vec<Record> {
        let mut records: Vec<Record> = Vec::new();
        for i in 0..n {
            let event = Event::NodeStarted { version: format!("v{i}") };
            records.push(Record::next(records.last(), origin(), UnixMillis(1000 + i), event));
        }
        records
    }

    #[test]
    fn a_chain_verifies_and_round_trips() {
        let records = chain(5);
        verify_chain(&records).unwrap();
        let json = serde_json::to_string(&records).unwrap();
        let back: Vec<Record> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, records);
        verify_chain(&back).unwrap();
    }

    #[test]
    fn tampering_is_found_at_the_exact_record() {
        let mut modified = chain(5);
        modified[2].time = UnixMillis(1);
        assert_eq!(verify_chain(&modified).unwrap_err().seq, 3);

        let mut removed = chain(5);
        removed.remove(2);
        assert_eq!(verify_chain(&removed).unwrap_err().seq, 4);

        let mut reordered = chain(5);
        reordered.swap(1, 2);
        assert_eq!(verify_chain(&reordered).unwrap_err().seq, 3);

        // A record re-hashed after modification still breaks the link from the next one.
        let mut rehashed = chain(5);
        rehashed[1].event = Event::NodeStarted { version: "forged".into() };
        rehashed[1].hash =
            digest(&rehashed[1].origin, 2, rehashed[1].time, &rehashed[1].prev_hash, &rehashed[1].event);
        assert_eq!(verify_chain(&rehashed).unwrap_err().seq, 3);
    }
}
