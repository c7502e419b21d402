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
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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
        Record::after(prev.map(|p| (p.seq, p.hash)), origin, time, event)
    }

    /// The record that follows the one at `(seq, hash)` (or starts the chain).
    pub fn after(prev: Option<(u64, Hash)>, origin: RecordOrigin, time: UnixMillis, event: Event) -> Record {
        let (seq, prev_hash) = prev.map_or((1, Hash::default()), |(seq, hash)| (seq + 1, hash));
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

/// The public key of `site` named `kid`, as the verifier knows it.
pub type KeyLookup<'a> = &'a (dyn Fn(&str, &str) -> Option<ed25519_dalek::VerifyingKey> + Sync);

/// Checks one node's chain a record at a time, in order, so a log of any length is verified
/// in constant memory: each hash matches its content, each record links to the one before,
/// sequence numbers have no gap, all share one origin, and each checkpoint covers the record
/// before it and (given keys) carries a valid signature of the origin site.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    origin: Option<RecordOrigin>,
    last: Option<(u64, Hash)>,
    /// Where the chain must start (`None`: anywhere).
    starts_at: Option<u64>,
    records: u64,
    checkpoints: u64,
    last_checkpoint: Option<u64>,
    first: Option<u64>,
}

/// What a verified (prefix of a) chain holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSummary {
    /// Records checked.
    pub records: u64,
    /// The last record checked and its hash.
    pub last: Option<(u64, Hash)>,
    /// Checkpoints whose signatures verified.
    pub checkpoints: u64,
    /// The newest record a verified checkpoint covers.
    pub last_checkpoint: Option<u64>,
    /// The first record checked.
    pub first: Option<u64>,
}

impl ChainVerifier {
    /// A verifier for a chain that must start at seq 1.
    pub fn from_start() -> Self {
        Self::from_cut(1)
    }

    /// A verifier for a chain whose records before `first_kept` were removed by retention: it
    /// must start at `first_kept`, and (above 1) with a checkpoint of the record before it whose
    /// signature verifies (see [`crate::retention`]).
    pub fn from_cut(first_kept: u64) -> Self {
        Self {
            origin: None,
            last: None,
            starts_at: Some(first_kept.max(1)),
            records: 0,
            checkpoints: 0,
            last_checkpoint: None,
            first: None,
        }
    }

    /// A verifier for a run of records that may start anywhere.
    pub fn from_anywhere() -> Self {
        Self { starts_at: None, ..Self::from_start() }
    }

    /// Checks the next record. `keys`: the site keys to check checkpoints with (`None` checks
    /// only that a checkpoint covers the record before it).
    pub fn push(&mut self, record: &Record, keys: Option<KeyLookup<'_>>) -> Result<(), ChainError> {
        let broken = |reason: String| ChainError { seq: record.seq, reason };
        if !record.hash_is_valid() {
            return Err(broken("its hash does not match its content (modified)".into()));
        }
        match (&self.origin, self.last) {
            (Some(origin), Some((last_seq, last_hash))) => {
                if &record.origin != origin {
                    return Err(broken("it belongs to another node's chain".into()));
                }
                if record.seq != last_seq + 1 {
                    return Err(broken(format!("it follows seq {last_seq} (records missing or reordered)")));
                }
                if record.prev_hash != last_hash {
                    return Err(broken("it does not link to the record before it".into()));
                }
            }
            _ => {
                if record.seq == 1 && record.prev_hash != Hash::default() {
                    return Err(broken("the first record must link to the zero hash".into()));
                }
                match self.starts_at {
                    Some(first) if record.seq > first => {
                        return Err(broken(format!("records {first} to {} are missing", record.seq - 1)));
                    }
                    Some(first) if record.seq < first => {
                        return Err(broken(format!(
                            "the chain was cut at seq {first} by retention, yet it starts earlier"
                        )));
                    }
                    Some(first) if first > 1 => {
                        if !crate::retention::can_start_after_cut(record) {
                            return Err(broken(format!(
                                "records before {first} were removed by retention, so the chain must start with a checkpoint of record {}",
                                first - 1
                            )));
                        }
                        if keys.is_none() {
                            return Err(broken(
                                "a chain cut by retention can be proven only with its site's keys".into(),
                            ));
                        }
                    }
                    _ => {}
                }
                self.first = Some(record.seq);
            }
        }
        if let crate::Event::Checkpoint(checkpoint) = &record.event {
            if checkpoint.covers_seq + 1 != record.seq || checkpoint.covers_hash != record.prev_hash {
                return Err(broken("a checkpoint that does not cover the record before it".into()));
            }
            if let Some(keys) = keys {
                checkpoint.verify(&record.origin, keys).map_err(|e| broken(format!("checkpoint {e}")))?;
                self.checkpoints += 1;
                self.last_checkpoint = Some(checkpoint.covers_seq);
            }
        }
        self.origin = Some(record.origin.clone());
        self.last = Some((record.seq, record.hash));
        self.records += 1;
        Ok(())
    }

    /// What has been checked so far.
    pub fn summary(&self) -> ChainSummary {
        ChainSummary {
            records: self.records,
            last: self.last,
            checkpoints: self.checkpoints,
            last_checkpoint: self.last_checkpoint,
            first: self.first,
        }
    }
}

/// Checks consecutive records of one node's chain (a run that may start anywhere); checkpoint
/// signatures are not checked (see [`ChainVerifier`]).
pub fn verify_chain<'a>(records: impl IntoIterator<Item = &'a Record>) -> Result<(), ChainError> {
    let mut verifier = ChainVerifier::from_anywhere();
    for record in records {
        verifier.push(record, None)?;
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

    fn signed_chain(key: &ed25519_dalek::SigningKey, n: u64) -> Vec<Record> {
        let mut records = chain(n);
        let last = records.last().unwrap().clone();
        let checkpoint = crate::Checkpoint::sign(key, "k1", &origin(), last.seq, last.hash);
        records.push(Record::next(Some(&last), origin(), UnixMillis(5000), Event::Checkpoint(checkpoint)));
        records
    }

    fn check_all(records: &[Record], keys: KeyLookup<'_>) -> Result<ChainSummary, ChainError> {
        let mut verifier = ChainVerifier::from_start();
        for record in records {
            verifier.push(record, Some(keys))?;
        }
        Ok(verifier.summary())
    }

    #[test]
    fn checkpoints_verify_with_the_sites_key_and_forgeries_are_named() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let public = key.verifying_key();
        let keys = move |site: &str, kid: &str| (site == "eu" && kid == "k1").then_some(public);
        let records = signed_chain(&key, 4);
        let summary = check_all(&records, &keys).unwrap();
        assert_eq!((summary.records, summary.checkpoints, summary.last_checkpoint), (5, 1, Some(4)));

        // A checkpoint signed by someone else's key, re-chained so only the signature is wrong.
        let forger = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let mut forged = chain(4);
        let last = forged.last().unwrap().clone();
        let fake = crate::Checkpoint::sign(&forger, "k1", &origin(), last.seq, last.hash);
        forged.push(Record::next(Some(&last), origin(), UnixMillis(5000), Event::Checkpoint(fake)));
        let error = check_all(&forged, &keys).unwrap_err();
        assert_eq!(error.seq, 5);
        assert!(error.reason.contains("forged"), "{error}");

        // A record inserted at the front of a chain that must start at 1.
        let error = check_all(&records[1..], &keys).unwrap_err();
        assert_eq!(error.seq, 2);
        assert!(error.reason.contains("records 1 to 1 are missing"), "{error}");
    }

    #[test]
    fn a_chain_cut_by_retention_starts_with_a_signed_checkpoint() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let public = key.verifying_key();
        let keys = move |site: &str, kid: &str| (site == "eu" && kid == "k1").then_some(public);
        let mut records = signed_chain(&key, 4);
        let last = records.last().unwrap().clone();
        records.push(Record::next(Some(&last), origin(), UnixMillis(6000), Event::NodeStopping));
        let run = |verifier: &mut ChainVerifier, from: usize| -> Result<ChainSummary, ChainError> {
            for record in &records[from..] {
                verifier.push(record, Some(&keys))?;
            }
            Ok(verifier.summary())
        };
        // Cut before the checkpoint (seq 5): what is kept proves itself.
        let summary = run(&mut ChainVerifier::from_cut(5), 4).unwrap();
        assert_eq!((summary.first, summary.records, summary.checkpoints), (Some(5), 2, 1));
        // More removed than the cut says.
        let error = run(&mut ChainVerifier::from_cut(5), 5).unwrap_err();
        assert_eq!(error.seq, 6);
        assert!(error.reason.contains("records 5 to 5 are missing"), "{error}");
        // A cut that does not start at a checkpoint.
        let error = run(&mut ChainVerifier::from_cut(4), 3).unwrap_err();
        assert!(error.reason.contains("must start with a checkpoint of record 3"), "{error}");
        // Records below the cut.
        let error = run(&mut ChainVerifier::from_cut(5), 2).unwrap_err();
        assert!(error.reason.contains("cut at seq 5"), "{error}");
        // A forged checkpoint at the cut.
        let forger = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let fake = crate::Checkpoint::sign(&forger, "k1", &origin(), 4, records[3].hash);
        let forged = Record::next(Some(&records[3]), origin(), UnixMillis(5000), Event::Checkpoint(fake));
        let error = ChainVerifier::from_cut(5).push(&forged, Some(&keys)).unwrap_err();
        assert!(error.reason.contains("forged"), "{error}");
        assert!(ChainVerifier::from_cut(5).push(&records[4], None).is_err(), "no keys, no proof");
    }
}
