//! Taking in other nodes' records: what a receiver stores and what it reports.
//!
//! Every node holds every node's chain. What it holds of a chain is a prefix: records 1 to N,
//! each checked. Records from a peer are admitted one chain at a time, in order: a record that
//! continues the prefix (next seq, links to the held tail, hash matches, checkpoint signed by
//! the origin site) is stored; one already held is a duplicate (ignored) if identical and a
//! fork (reported) if not; one past a gap is reported and nothing after it of that chain is
//! taken. Nothing reported is stored: the receiver never papers over a problem.

use crate::{CheckpointError, Event, Hash, KeyLookup, Record, RecordOrigin};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The tail held of each chain: (seq, hash) of its newest record.
pub type Held = BTreeMap<RecordOrigin, (u64, Hash)>;

/// What was wrong with records a peer sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A record at a position already held, with other content: two histories of one chain.
    Fork {
        /// Whose chain.
        origin: RecordOrigin,
        /// Where.
        seq: u64,
    },
    /// A record that does not follow the held tail.
    Gap {
        /// Whose chain.
        origin: RecordOrigin,
        /// The seq expected next.
        expected: u64,
        /// The seq received.
        got: u64,
    },
    /// A record of a node this receiver does not know (a site not in the trust bundle, or a
    /// node that is not a member of this site).
    UnknownNode {
        /// The origin claimed.
        origin: RecordOrigin,
    },
    /// A record that does not check: its hash, its link, or its checkpoint.
    Invalid {
        /// Whose chain.
        origin: RecordOrigin,
        /// Where.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// Records of the receiver's own chain that it never wrote.
    NotWrittenHere {
        /// The first such seq.
        seq: u64,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let chain = |o: &RecordOrigin| format!("node {} of site {}", o.node, o.site);
        match self {
            Problem::Fork { origin, seq } => {
                write!(f, "fork: record {seq} of {} differs from the one held", chain(origin))
            }
            Problem::Gap { origin, expected, got } => {
                write!(f, "gap: record {got} of {} received, {expected} expected", chain(origin))
            }
            Problem::UnknownNode { origin } => write!(f, "records of an unknown node: {}", chain(origin)),
            Problem::Invalid { origin, seq, reason } => {
                write!(f, "invalid record {seq} of {}: {reason}", chain(origin))
            }
            Problem::NotWrittenHere { seq } => {
                write!(f, "records of this node's own chain from {seq} on that it never wrote")
            }
        }
    }
}

/// What to do with a batch of records from a peer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Admission {
    /// To store, each chain's in order.
    pub accepted: Vec<Record>,
    /// Already held, identical (or older than where retention cut the chain here).
    pub duplicates: u64,
    /// Chains new here that start after a retention cut elsewhere: origin and first seq.
    pub cut_starts: Vec<(RecordOrigin, u64)>,
    /// Not stored, and why.
    pub problems: Vec<Problem>,
}

/// What the receiver knows besides the held tails.
pub struct Receiver<'a> {
    /// The receiver's own chain: never extended from outside.
    pub own: &'a RecordOrigin,
    /// Whether records of this origin may be taken.
    pub is_known: &'a (dyn Fn(&RecordOrigin) -> bool + Sync),
    /// The hash of a record held (to tell duplicates from forks).
    pub held_hash: &'a (dyn Fn(&RecordOrigin, u64) -> Option<Hash> + Sync),
    /// Site keys, to check checkpoints (a key not known yet is not a reason to refuse, except
    /// for the checkpoint a cut chain starts with).
    pub keys: KeyLookup<'a>,
    /// The first record kept here of a chain (above 1 once retention cut it).
    pub first_kept: &'a (dyn Fn(&RecordOrigin) -> u64 + Sync),
}

impl fmt::Debug for Receiver<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").field("own", self.own).finish_non_exhaustive()
    }
}

/// Decides which of `incoming` to store, given the tails `held`.
pub fn admit(held: &Held, incoming: Vec<Record>, receiver: &Receiver<'_>) -> Admission {
    let mut out = Admission::default();
    let mut tails = held.clone();
    let mut stopped: BTreeSet<RecordOrigin> = BTreeSet::new();
    for record in incoming {
        if stopped.contains(&record.origin) {
            continue;
        }
        let origin = record.origin.clone();
        let (tail_seq, tail_hash) = tails.get(&origin).copied().unwrap_or((0, Hash::default()));
        let problem = if record.seq < (receiver.first_kept)(&origin) {
            // Removed here by retention once every holder had it: nothing left to compare.
            out.duplicates += 1;
            continue;
        } else if record.seq <= tail_seq {
            if (receiver.held_hash)(&origin, record.seq) == Some(record.hash) {
                out.duplicates += 1;
                continue;
            }
            Problem::Fork { origin: origin.clone(), seq: record.seq }
        } else if &origin == receiver.own {
            Problem::NotWrittenHere { seq: record.seq }
        } else if !(receiver.is_known)(&origin) {
            Problem::UnknownNode { origin: origin.clone() }
        } else if tail_seq == 0 && record.seq > 1 && starts_after_cut(&record, receiver.keys) {
            // The sender removed the records before it (retention); the signed checkpoint
            // proves the hash the chain continues from.
            tails.insert(origin.clone(), (record.seq, record.hash));
            out.cut_starts.push((origin, record.seq));
            out.accepted.push(record);
            continue;
        } else if record.seq != tail_seq + 1 {
            Problem::Gap { origin: origin.clone(), expected: tail_seq + 1, got: record.seq }
        } else if let Err(reason) = check_next(&record, tail_hash, receiver.keys) {
            Problem::Invalid { origin: origin.clone(), seq: record.seq, reason }
        } else {
            tails.insert(origin, (record.seq, record.hash));
            out.accepted.push(record);
            continue;
        };
        out.problems.push(problem);
        stopped.insert(origin);
    }
    out
}

fn starts_after_cut(record: &Record, keys: KeyLookup<'_>) -> bool {
    let Event::Checkpoint(checkpoint) = &record.event else { return false };
    record.hash_is_valid()
        && crate::retention::can_start_after_cut(record)
        && checkpoint.verify(&record.origin, keys).is_ok()
}

fn check_next(record: &Record, tail_hash: Hash, keys: KeyLookup<'_>) -> Result<(), String> {
    if !record.hash_is_valid() {
        return Err("its hash does not match its content".into());
    }
    if record.prev_hash != tail_hash {
        return Err("it does not link to the record held before it".into());
    }
    if let Event::Checkpoint(checkpoint) = &record.event {
        if checkpoint.covers_seq + 1 != record.seq || checkpoint.covers_hash != record.prev_hash {
            return Err("a checkpoint that does not cover the record before it".into());
        }
        match checkpoint.verify(&record.origin, keys) {
            Ok(()) | Err(CheckpointError::UnknownKey { .. }) => {}
            Err(e) => return Err(format!("checkpoint {e}")),
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::Checkpoint;
    use idmesh_types::UnixMillis;

    fn at(site: &str, node: u64) -> RecordOrigin {
        RecordOrigin { site: site.into(), node }
    }

    fn chain(origin: &RecordOrigin, n: u64) -> Vec<Record> {
        let mut out: Vec<Record> = Vec::new();
        for i in 0..n {
            let event = Event::NodeStarted { version: format!("{i}") };
            out.push(Record::next(out.last(), origin.clone(), UnixMillis(i), event));
        }
        out
    }

    fn run(held: &Held, stored: &[Record], incoming: Vec<Record>) -> Admission {
        let own = at("here", 1);
        let is_known = |o: &RecordOrigin| o.site != "nowhere";
        let held_hash = |o: &RecordOrigin, seq: u64| {
            stored.iter().find(|r| &r.origin == o && r.seq == seq).map(|r| r.hash)
        };
        let key = ed25519_dalek::SigningKey::from_bytes(&[4; 32]).verifying_key();
        let keys = move |site: &str, kid: &str| (site == "ship" && kid == "k").then_some(key);
        admit(
            held,
            incoming,
            &Receiver {
                own: &own,
                is_known: &is_known,
                held_hash: &held_hash,
                keys: &keys,
                first_kept: &|o: &RecordOrigin| if o.node == 7 { 3 } else { 1 },
            },
        )
    }

    #[test]
    fn a_chain_is_taken_in_order_duplicates_are_ignored_and_problems_stop_it() {
        let ship = at("ship", 2);
        let records = chain(&ship, 5);
        let mut held = Held::new();
        let first = run(&held, &[], records[..3].to_vec());
        assert_eq!((first.accepted.len(), first.problems.len()), (3, 0));
        held.insert(ship.clone(), (3, records[2].hash));

        // Overlapping delivery: the first three are duplicates, the rest is taken.
        let again = run(&held, &records[..3], records.clone());
        assert_eq!((again.accepted.len(), again.duplicates), (2, 3));

        // A gap: record 5 without 4.
        let gap = run(&held, &records[..3], vec![records[4].clone()]);
        assert_eq!(gap.problems, [Problem::Gap { origin: ship.clone(), expected: 4, got: 5 }]);

        // A fork: another record 2, and nothing after it of that chain is taken.
        let mut other = records[1].clone();
        other.event = Event::NodeStopping;
        let other = Record::next(Some(&records[0]), ship.clone(), other.time, other.event);
        let fork = run(&held, &records[..3], vec![other, records[3].clone()]);
        assert_eq!(fork.problems, [Problem::Fork { origin: ship.clone(), seq: 2 }]);
        assert!(fork.accepted.is_empty());

        // A modified record 4.
        let mut modified = records[3].clone();
        modified.time = UnixMillis(99);
        let bad = run(&held, &records[..3], vec![modified]);
        assert!(
            matches!(&bad.problems[0], Problem::Invalid { seq: 4, reason, .. } if reason.contains("hash"))
        );

        // Unknown nodes and the receiver's own chain are refused.
        let stranger = run(&Held::new(), &[], chain(&at("nowhere", 1), 1));
        assert!(matches!(&stranger.problems[0], Problem::UnknownNode { .. }));
        let mine = run(&Held::new(), &[], chain(&at("here", 1), 1));
        assert_eq!(mine.problems, [Problem::NotWrittenHere { seq: 1 }]);
    }

    #[test]
    fn a_forged_checkpoint_is_refused_and_an_unknown_key_is_not() {
        let ship = at("ship", 2);
        let records = chain(&ship, 2);
        let sign = |seed: u8, kid: &str| {
            let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
            let checkpoint = Checkpoint::sign(&key, kid, &ship, 2, records[1].hash);
            let mut all = records.clone();
            all.push(Record::next(
                Some(&records[1]),
                ship.clone(),
                UnixMillis(9),
                Event::Checkpoint(checkpoint),
            ));
            run(&Held::new(), &[], all)
        };
        assert_eq!(sign(4, "k").accepted.len(), 3);
        let forged = sign(5, "k");
        assert_eq!(forged.accepted.len(), 2);
        assert!(
            matches!(&forged.problems[0], Problem::Invalid { seq: 3, reason, .. } if reason.contains("forged"))
        );
        assert_eq!(sign(5, "not-yet-known").accepted.len(), 3);
    }

    #[test]
    fn a_chain_cut_elsewhere_is_taken_from_its_signed_checkpoint() {
        let ship = at("ship", 2);
        let records = chain(&ship, 4);
        let cut = |seed: u8, kid: &str| {
            let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
            let checkpoint = Checkpoint::sign(&key, kid, &ship, 4, records[3].hash);
            let start =
                Record::next(Some(&records[3]), ship.clone(), UnixMillis(9), Event::Checkpoint(checkpoint));
            let next = Record::next(Some(&start), ship.clone(), UnixMillis(10), Event::NodeStopping);
            run(&Held::new(), &[], vec![start, next])
        };
        let taken = cut(4, "k");
        assert_eq!((taken.accepted.len(), taken.cut_starts.clone()), (2, vec![(ship.clone(), 5)]));
        // Forged, or signed by a key not known here: no proof, so a gap.
        for refused in [cut(5, "k"), cut(4, "not-yet-known")] {
            assert!(refused.accepted.is_empty());
            assert!(matches!(refused.problems[0], Problem::Gap { expected: 1, got: 5, .. }));
        }
        // A plain record cannot start a chain after a cut.
        let gap = run(&Held::new(), &[], records[2..].to_vec());
        assert!(matches!(gap.problems[0], Problem::Gap { expected: 1, got: 3, .. }));
        // Records older than a cut made here are not compared (they were removed).
        let cut_here = at("ship", 7);
        let old = chain(&cut_here, 2);
        let held: Held = [(cut_here, (5, Hash::default()))].into();
        let admission = run(&held, &[], old);
        assert_eq!((admission.duplicates, admission.problems.len()), (2, 0));
    }
}
