//! Retention: which old records a node may remove, and how a chain whose start was removed
//! still proves itself.
//!
//! A record may go only when all three hold:
//! 1. it is older than the retention period (an input: the node's rule and clock);
//! 2. every holder that must have it acknowledged holding it: every other member of the node's
//!    own site, and every other site this node knows (a site acknowledges a record once one of
//!    its nodes holds it durably; its own members then pull it from that node);
//! 3. the first record kept after it is a checkpoint signed by the origin's site that covers the
//!    record before it. A chain is cut only just before a checkpoint, so what is kept starts
//!    with proof of the hash it continues from: a verifier (and a node receiving the chain for
//!    the first time) starts there instead of at seq 1.

use crate::{Event, Record, RecordOrigin};
use idmesh_types::UnixMillis;
use std::collections::BTreeMap;

/// Per chain, the newest record a holder has (every one before it too).
pub type Acknowledged = BTreeMap<RecordOrigin, u64>;

/// Per chain, the newest record that every one of `holders` has (0 where one lacks the chain).
/// `holders` must include the node itself; with no holders nothing is acknowledged.
pub fn held_by_all<'a>(holders: impl IntoIterator<Item = &'a Acknowledged>) -> Acknowledged {
    let mut holders = holders.into_iter();
    let Some(first) = holders.next() else { return Acknowledged::new() };
    let mut out = first.clone();
    for holder in holders {
        for (origin, seq) in &mut out {
            *seq = (*seq).min(holder.get(origin).copied().unwrap_or(0));
        }
    }
    out
}

/// Per chain, the newest record some node of a site has: what the site acknowledged, given
/// what each of its nodes reported.
pub fn held_by_any<'a>(nodes: impl IntoIterator<Item = &'a Acknowledged>) -> Acknowledged {
    let mut out = Acknowledged::new();
    for node in nodes {
        for (origin, seq) in node {
            let entry = out.entry(origin.clone()).or_insert(0);
            *entry = (*entry).max(*seq);
        }
    }
    out
}

/// A checkpoint record of one chain: where it is and when it was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointAt {
    /// Its seq (it covers `seq - 1`).
    pub seq: u64,
    /// When it was written (no record before it is newer).
    pub time: UnixMillis,
}

/// The checkpoints (ascending by seq) at which a chain may now be cut, one after another: each
/// is after `first_kept` (the chain's current first record), covers only records every holder
/// acknowledged (`acknowledged`: the newest of them), and was written before `keep_after`.
/// Cutting at the last one removes everything retention allows; cutting at each in turn does
/// it in steps of one checkpoint interval.
pub fn cuts(
    checkpoints: &[CheckpointAt],
    first_kept: u64,
    acknowledged: u64,
    keep_after: UnixMillis,
) -> Vec<CheckpointAt> {
    checkpoints
        .iter()
        .filter(|c| c.seq > first_kept && c.seq - 1 <= acknowledged && c.time < keep_after)
        .copied()
        .collect()
}

/// True if `record` may start a chain whose earlier records were removed: a checkpoint that
/// covers the record before it (its signature is checked separately).
pub fn can_start_after_cut(record: &Record) -> bool {
    match &record.event {
        Event::Checkpoint(c) => {
            record.seq > 1 && c.covers_seq + 1 == record.seq && c.covers_hash == record.prev_hash
        }
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn at(site: &str, node: u64) -> RecordOrigin {
        RecordOrigin { site: site.into(), node }
    }

    fn acks(entries: &[(&str, u64, u64)]) -> Acknowledged {
        entries.iter().map(|(site, node, seq)| (at(site, *node), *seq)).collect()
    }

    #[test]
    fn every_holder_must_have_a_record_and_a_site_needs_only_one_node() {
        let me = acks(&[("eu", 1, 50), ("eu", 2, 40), ("us", 1, 30)]);
        let member = acks(&[("eu", 1, 45), ("eu", 2, 40)]);
        let all = held_by_all([&me, &member]);
        assert_eq!(all, acks(&[("eu", 1, 45), ("eu", 2, 40), ("us", 1, 0)]));
        assert!(held_by_all(std::iter::empty()).is_empty());

        let site = held_by_any([&acks(&[("eu", 1, 10)]), &acks(&[("eu", 1, 20), ("us", 1, 5)])]);
        assert_eq!(site, acks(&[("eu", 1, 20), ("us", 1, 5)]));
    }

    #[test]
    fn a_chain_is_cut_only_before_old_checkpoints_everyone_has() {
        let checkpoints = [
            CheckpointAt { seq: 1001, time: UnixMillis(100) },
            CheckpointAt { seq: 2002, time: UnixMillis(200) },
            CheckpointAt { seq: 3003, time: UnixMillis(300) },
        ];
        let seqs = |first, acked, keep_after| {
            cuts(&checkpoints, first, acked, UnixMillis(keep_after)).iter().map(|c| c.seq).collect::<Vec<_>>()
        };
        assert_eq!(seqs(1, 5000, 1000), vec![1001, 2002, 3003]);
        // Too recent.
        assert_eq!(seqs(1, 5000, 200), vec![1001]);
        // Record 2001 not acknowledged by everyone: 2002 would remove it.
        assert_eq!(seqs(1, 2000, 1000), vec![1001]);
        assert_eq!(seqs(1, 2001, 1000), vec![1001, 2002]);
        // Already cut at 2002.
        assert_eq!(seqs(2002, 5000, 1000), vec![3003]);
        assert!(seqs(1, 0, 1000).is_empty());
    }

    #[test]
    fn only_a_checkpoint_of_the_record_before_may_start_a_cut_chain() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let origin = at("eu", 1);
        let first = Record::next(None, origin.clone(), UnixMillis(1), Event::NodeStopping);
        let checkpoint = crate::Checkpoint::sign(&key, "k", &origin, 1, first.hash);
        let second = Record::next(Some(&first), origin.clone(), UnixMillis(2), Event::Checkpoint(checkpoint));
        assert!(can_start_after_cut(&second));
        assert!(!can_start_after_cut(&first));
        let plain = Record::next(Some(&first), origin, UnixMillis(2), Event::NodeStopping);
        assert!(!can_start_after_cut(&plain));
    }
}
