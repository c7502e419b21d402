//! Other nodes' chains at this node: what is held (a prefix of each chain), what a peer lacks,
//! and taking in what a peer sent (checked by `idmesh_audit::admit`, stored durably with its
//! indexes before anything is acknowledged).

use super::keys::{RECORDS, chain_prefix, parse_record_key, put_record, record_key};
use super::{AuditError, AuditLog, decode, store_err};
use idmesh_audit::{Admission, Hash, Held, KeyLookup, Receiver, Record, RecordOrigin, admit};
use idmesh_store::{KeyRange, Order, Store, WriteBatch};
use idmesh_types::UnixMillis;
use std::collections::{BTreeMap, VecDeque};

/// Most records in one pull reply or push.
pub const TRANSFER_MAX_RECORDS: usize = 2000;
/// Most bytes of records in one pull reply or push.
pub const TRANSFER_MAX_BYTES: usize = 4 * 1024 * 1024;
/// Largest record taken from a peer, in bytes (the biggest event is far below this).
pub const RECORD_MAX_BYTES: usize = 64 * 1024;
/// Problems remembered for `mesh status` (the oldest are forgotten; all are logged).
const PROBLEMS_KEPT: usize = 100;

/// A problem with records from a peer, when and from whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportedProblem {
    /// When it was found.
    pub at: UnixMillis,
    /// The peer that sent the records (`site/node`).
    pub from: String,
    /// What was wrong.
    pub problem: String,
}

impl std::fmt::Display for ReportedProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at unix ms {} from {}: {}", self.at.0, self.from, self.problem)
    }
}

/// Reads the tail of every chain in the store: one seek per chain, however long the chains.
pub(super) fn load_held(store: &dyn Store) -> Result<Held, AuditError> {
    let mut held = Held::new();
    let mut start = RECORDS.to_vec();
    loop {
        let range = KeyRange::prefix_starting_at(RECORDS, start.clone());
        let Some((key, _)) = store.scan(&range, Order::Ascending, 1).map_err(store_err)?.into_iter().next()
        else {
            return Ok(held);
        };
        let Some((origin, _)) = parse_record_key(&key) else {
            return Err(AuditError::Corrupt { seq: 0, detail: "a record key that names no record".into() });
        };
        let prefix = chain_prefix(&origin);
        let last = store.scan(&KeyRange::prefix(&prefix), Order::Descending, 1).map_err(store_err)?;
        if let Some((key, bytes)) = last.first() {
            let seq = parse_record_key(key).map_or(0, |(_, seq)| seq);
            let hash = decode(bytes).map(|r| r.hash).unwrap_or_default();
            held.insert(origin, (seq, hash));
        }
        match KeyRange::prefix(&prefix).end {
            std::ops::Bound::Excluded(next) => start = next,
            _ => return Ok(held),
        }
    }
}

impl AuditLog {
    /// The tail held of every chain, this node's own included.
    pub fn held(&self) -> Held {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records held here that a peer holding `theirs` (seq per chain) lacks, as stored, each
    /// chain's in order, within [`TRANSFER_MAX_RECORDS`] / [`TRANSFER_MAX_BYTES`]; `theirs`
    /// moves past what is returned, so a caller sending page after page passes it again. The
    /// flag says whether more remain.
    pub fn records_after(
        &self,
        theirs: &mut BTreeMap<RecordOrigin, u64>,
    ) -> Result<(Vec<Vec<u8>>, bool), AuditError> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for (origin, (seq, _)) in self.held() {
            let from = theirs.get(&origin).copied().unwrap_or(0);
            if seq <= from {
                continue;
            }
            let range = KeyRange::prefix_starting_at(&chain_prefix(&origin), record_key(&origin, from + 1));
            // Only up to the held tail: for this node's own chain, only what is durable.
            let room =
                (TRANSFER_MAX_RECORDS - out.len()).min(usize::try_from(seq - from).unwrap_or(usize::MAX));
            for (key, value) in self.store.scan(&range, Order::Ascending, room).map_err(store_err)? {
                if bytes + value.len() > TRANSFER_MAX_BYTES && !out.is_empty() {
                    return Ok((out, true));
                }
                bytes += value.len();
                out.push(value);
                if let Some((_, sent)) = parse_record_key(&key) {
                    theirs.insert(origin.clone(), sent);
                }
            }
            if out.len() >= TRANSFER_MAX_RECORDS {
                return Ok((out, true));
            }
        }
        Ok((out, false))
    }

    /// Takes in records from `from` (a peer, `site/node`): checks them against what is held,
    /// stores what continues a chain durably with its indexes, and reports the rest.
    pub async fn accept(
        &self,
        from: &str,
        records: Vec<Record>,
        is_known: &(dyn Fn(&RecordOrigin) -> bool + Sync),
        keys: KeyLookup<'_>,
    ) -> Result<Admission, AuditError> {
        let _one_at_a_time = self.accepting.lock().await;
        let held = self.held();
        let store = self.store.clone();
        let held_hash = move |origin: &RecordOrigin, seq: u64| -> Option<Hash> {
            let bytes = store.get(&record_key(origin, seq)).ok()??;
            decode(&bytes).ok().map(|r| r.hash)
        };
        let first_kept = |origin: &RecordOrigin| self.first_kept(origin);
        let receiver =
            Receiver { own: &self.origin, is_known, held_hash: &held_hash, keys, first_kept: &first_kept };
        let admission = admit(&held, records, &receiver);
        if !admission.accepted.is_empty() {
            let mut batch = WriteBatch::new();
            for record in &admission.accepted {
                let bytes = serde_json::to_vec(record).map_err(store_err)?;
                put_record(&mut batch, record, bytes);
            }
            for (origin, seq) in &admission.cut_starts {
                self.cut_chain(&mut batch, origin, *seq);
            }
            self.store.write(batch).map_err(store_err)?;
            self.flusher.flush().await.map_err(store_err)?;
            for (origin, seq) in &admission.cut_starts {
                tracing::info!(from, site = %origin.site, node = origin.node, first_kept_seq = seq, "audit: a chain cut by retention elsewhere starts here at a signed checkpoint");
                self.note_cut(origin, *seq);
            }
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
            for record in &admission.accepted {
                held.insert(record.origin.clone(), (record.seq, record.hash));
                waiting.remove(&record.origin);
            }
        }
        if !admission.problems.is_empty() {
            let now = self.clock.now();
            let mut problems = self.problems.lock().unwrap_or_else(|p| p.into_inner());
            for problem in &admission.problems {
                tracing::warn!(from, %problem, "audit records refused");
                if problems.len() == PROBLEMS_KEPT {
                    problems.pop_front();
                }
                problems.push_back(ReportedProblem {
                    at: now,
                    from: from.to_owned(),
                    problem: problem.to_string(),
                });
            }
        }
        Ok(admission)
    }

    /// Notes that `origin`'s records, offered by `from`, were not taken because its site has
    /// not published the node (yet); listed until the chain is taken.
    pub fn note_waiting(&self, origin: &RecordOrigin, from: &str) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if waiting.len() >= PROBLEMS_KEPT && !waiting.contains_key(origin) {
            return;
        }
        let problem = format!(
            "records of node {} of site {}: not among the nodes site {} published; not taken",
            origin.node, origin.site, origin.site
        );
        waiting
            .insert(origin.clone(), ReportedProblem { at: self.clock.now(), from: from.to_owned(), problem });
    }

    /// Other sites' chains not taken because their site has not published the node (at most
    /// 100), by chain.
    pub fn waiting(&self) -> Vec<ReportedProblem> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// Problems found in records from peers, oldest first (the last 100).
    pub fn problems(&self) -> VecDeque<ReportedProblem> {
        self.problems.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
