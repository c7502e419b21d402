//! Retention at a node: what other holders acknowledged holding (kept on disk), where each
//! chain was cut, and removing the records `idmesh_audit::retention` allows.
//!
//! Nothing is removed unless the node is configured with a retention period
//! (`--audit-retention-secs`; 0, the default, keeps everything). A record is removed only once
//! it is older than the period, every other member of this site and every other site this node
//! knows of acknowledged holding it, and a signed checkpoint follows it (the chain is cut just
//! before that checkpoint, which stays). Each cut is written in one atomic batch with the new
//! first seq of the chain, and audited (`retention_applied`).

use super::keys::{
    ACKNOWLEDGED, FIRST_KEPT, at_time, chain_prefix, index_keys, origin_key, parse_origin_key,
    parse_record_key, record_key, record_key_of_entry, term_prefix,
};
use super::{AuditError, AuditLog, decode, store_err};
use crate::{Node, NodeError};
use idmesh_audit::retention::{Acknowledged, CheckpointAt, cuts, held_by_all, held_by_any};
use idmesh_audit::{Event, RecordOrigin, RetentionCut, Term};
use idmesh_store::{KeyRange, Order, Store, WriteBatch};
use idmesh_types::UnixMillis;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How often a node with a retention period looks for records to remove.
pub const RETENTION_EVERY: Duration = Duration::from_secs(10);
/// Most records one pass removes (the rest wait for the next pass).
const REMOVED_PER_PASS_MAX: u64 = 100_000;
/// Most checkpoints one pass considers, oldest first.
const CHECKPOINTS_PER_PASS_MAX: usize = 200_000;
/// Most holders whose acknowledgements are kept (a trust domain has far fewer nodes).
const HOLDERS_MAX: usize = 4096;
/// Longest retention period accepted: 100 years.
pub const RETENTION_MAX_SECS: u64 = 100 * 365 * 86_400;

/// Acknowledgements kept on disk, by holder (`node` 0: a node of that site reached over a link
/// or heard from through a bundle, whose id is not known).
pub(super) fn load_acknowledged(
    store: &dyn Store,
) -> Result<BTreeMap<RecordOrigin, Acknowledged>, AuditError> {
    let mut out = BTreeMap::new();
    for (key, bytes) in
        store.scan(&KeyRange::prefix(ACKNOWLEDGED), Order::Ascending, HOLDERS_MAX).map_err(store_err)?
    {
        let Some(holder) = parse_origin_key(ACKNOWLEDGED, &key) else { continue };
        let Ok(entries) = serde_json::from_slice::<Vec<(RecordOrigin, u64)>>(&bytes) else {
            // Only delays removal: the holder reports again at its next exchange.
            tracing::warn!(site = %holder.site, node = holder.node, "audit: an acknowledgement on disk does not decode; ignored");
            continue;
        };
        out.insert(holder, entries.into_iter().collect());
    }
    Ok(out)
}

/// Where retention cut each chain (chains never cut are absent).
pub(super) fn load_first_kept(store: &dyn Store) -> Result<BTreeMap<RecordOrigin, u64>, AuditError> {
    let mut out = BTreeMap::new();
    for (key, bytes) in
        store.scan(&KeyRange::prefix(FIRST_KEPT), Order::Ascending, usize::MAX).map_err(store_err)?
    {
        let (Some(origin), Ok(seq)) =
            (parse_origin_key(FIRST_KEPT, &key), <[u8; 8]>::try_from(bytes.as_slice()))
        else {
            return Err(AuditError::Corrupt {
                seq: 0,
                detail: "a retention cut on disk does not decode".into(),
            });
        };
        out.insert(origin, u64::from_be_bytes(seq));
    }
    Ok(out)
}

/// A cut made by [`AuditLog::remove_retained`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// The chain.
    pub origin: RecordOrigin,
    /// Its first record now.
    pub first_kept_seq: u64,
    /// Records removed.
    pub removed: u64,
}

impl AuditLog {
    /// Notes that `holder` holds `held` (what it said in an exchange, or a bundle's header).
    /// Kept on disk without a flush: an acknowledgement lost in a crash only delays removal.
    pub fn note_acknowledged(&self, holder: RecordOrigin, held: Acknowledged) -> Result<(), AuditError> {
        let mut acks = self.acknowledged.lock().unwrap_or_else(|p| p.into_inner());
        if acks.get(&holder) == Some(&held) {
            return Ok(());
        }
        if !acks.contains_key(&holder) && acks.len() >= HOLDERS_MAX {
            tracing::warn!(site = %holder.site, node = holder.node, "audit: too many holders; acknowledgement ignored");
            return Ok(());
        }
        let entries: Vec<(&RecordOrigin, &u64)> = held.iter().collect();
        let bytes = serde_json::to_vec(&entries).map_err(store_err)?;
        let mut batch = WriteBatch::new();
        batch.put(origin_key(ACKNOWLEDGED, &holder), bytes);
        self.store.write(batch).map_err(store_err)?;
        acks.insert(holder, held);
        Ok(())
    }

    /// What each holder last acknowledged.
    pub fn acknowledged(&self) -> BTreeMap<RecordOrigin, Acknowledged> {
        self.acknowledged.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The first record of `origin`'s chain held here: 1 unless retention cut it.
    pub fn first_kept(&self, origin: &RecordOrigin) -> u64 {
        self.first_kept.lock().unwrap_or_else(|p| p.into_inner()).get(origin).copied().unwrap_or(1)
    }

    /// Notes (in `batch`) that `origin`'s chain starts at `seq` here.
    pub(super) fn cut_chain(&self, batch: &mut WriteBatch, origin: &RecordOrigin, seq: u64) {
        batch.put(origin_key(FIRST_KEPT, origin), seq.to_be_bytes().to_vec());
    }

    /// Remembers cuts once written.
    pub(super) fn note_cut(&self, origin: &RecordOrigin, seq: u64) {
        self.first_kept.lock().unwrap_or_else(|p| p.into_inner()).insert(origin.clone(), seq);
    }

    /// Removes what retention allows: records written before `keep_after` that every holder
    /// acknowledged (`acknowledged`: per chain, the newest record every holder has), each chain
    /// cut just before a checkpoint. Blocking (reads and writes the store); one pass removes at
    /// most [`REMOVED_PER_PASS_MAX`] records, one checkpoint interval per atomic batch.
    pub fn remove_retained(
        &self,
        acknowledged: &Acknowledged,
        keep_after: UnixMillis,
    ) -> Result<Vec<Cut>, AuditError> {
        let _one_pass_at_a_time = self.removing.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Cut> = Vec::new();
        // Nothing acknowledged past a chain's first record (a known site that never said what
        // it holds): no cut is possible, so the checkpoint index is not read.
        if acknowledged.iter().all(|(origin, seq)| *seq <= self.first_kept(origin)) {
            return Ok(out);
        }
        let mut removed_total = 0u64;
        for (origin, checkpoints) in self.checkpoints_before(keep_after)? {
            let mut first = self.first_kept(&origin);
            let acked = acknowledged.get(&origin).copied().unwrap_or(0);
            let mut removed_here = 0u64;
            for cut in cuts(&checkpoints, first, acked, keep_after) {
                if removed_total >= REMOVED_PER_PASS_MAX {
                    break;
                }
                let mut batch = WriteBatch::new();
                let count = usize::try_from(cut.seq - first).unwrap_or(usize::MAX);
                let range = KeyRange::prefix_starting_at(&chain_prefix(&origin), record_key(&origin, first));
                for (key, bytes) in self.store.scan(&range, Order::Ascending, count).map_err(store_err)? {
                    if parse_record_key(&key).is_none_or(|(_, seq)| seq >= cut.seq) {
                        break;
                    }
                    if let Ok(record) = decode(&bytes) {
                        for index in index_keys(&record) {
                            batch.delete(index);
                        }
                    }
                    batch.delete(key);
                    removed_here += 1;
                    removed_total += 1;
                }
                self.cut_chain(&mut batch, &origin, cut.seq);
                self.store.write(batch).map_err(store_err)?;
                self.note_cut(&origin, cut.seq);
                first = cut.seq;
            }
            if removed_here > 0 {
                out.push(Cut { origin, first_kept_seq: first, removed: removed_here });
            }
        }
        if !out.is_empty() {
            self.store.flush().map_err(store_err)?;
        }
        Ok(out)
    }

    /// Checkpoints written before `keep_after`, oldest first (at most
    /// [`CHECKPOINTS_PER_PASS_MAX`]), by chain.
    fn checkpoints_before(
        &self,
        keep_after: UnixMillis,
    ) -> Result<BTreeMap<RecordOrigin, Vec<CheckpointAt>>, AuditError> {
        // The kind of `Event::Checkpoint`.
        let prefix = term_prefix(&Term::Action("checkpoint".to_owned()));
        let range = KeyRange::between(prefix.clone(), at_time(&prefix, keep_after));
        let mut out: BTreeMap<RecordOrigin, Vec<CheckpointAt>> = BTreeMap::new();
        for (entry, _) in
            self.store.scan(&range, Order::Ascending, CHECKPOINTS_PER_PASS_MAX).map_err(store_err)?
        {
            let time = entry.get(prefix.len()..prefix.len() + 8).and_then(|b| <[u8; 8]>::try_from(b).ok());
            let record = record_key_of_entry(&prefix, &entry).and_then(|key| parse_record_key(&key));
            let (Some(time), Some((origin, seq))) = (time, record) else { continue };
            out.entry(origin)
                .or_default()
                .push(CheckpointAt { seq, time: UnixMillis(u64::from_be_bytes(time)) });
        }
        for checkpoints in out.values_mut() {
            checkpoints.sort_by_key(|c| c.seq);
        }
        Ok(out)
    }
}

impl Node {
    /// Per chain, the newest record that this node, every other member of its site and every
    /// other site it knows of (in the trust bundle, or linked) hold, as they last said.
    pub fn audit_acknowledged_by_all(&self) -> Acknowledged {
        let own_site = self.config().site.to_string();
        let me = self.config().node_id.0;
        let acks = self.audit().acknowledged();
        let mine: Acknowledged = self.audit().held().into_iter().map(|(o, (seq, _))| (o, seq)).collect();
        let mut holders: Vec<Acknowledged> = vec![mine];
        for member in self.member_ids().into_iter().filter(|id| *id != me) {
            let holder = RecordOrigin { site: own_site.clone(), node: member };
            holders.push(acks.get(&holder).cloned().unwrap_or_default());
        }
        let mut sites: BTreeSet<String> = {
            let state = self.shared().read();
            state.state.trust.sites().map(|(site, _)| site.to_owned()).collect()
        };
        sites.extend(self.config().links.iter().map(|(site, _)| site.to_string()));
        sites.extend(self.mesh().sites().into_iter().map(|s| s.site));
        sites.remove(&own_site);
        for site in sites {
            holders.push(held_by_any(acks.iter().filter(|(h, _)| h.site == site).map(|(_, held)| held)));
        }
        held_by_all(&holders)
    }

    /// One retention pass (see the module docs); each cut is audited. Returns the cuts.
    pub async fn apply_audit_retention(&self) -> Result<Vec<Cut>, NodeError> {
        let retention_secs = self.config().audit_retention_secs;
        if retention_secs == 0 {
            return Ok(Vec::new());
        }
        let keep_after = UnixMillis(self.now().0.saturating_sub(retention_secs.saturating_mul(1000)));
        let acknowledged = self.audit_acknowledged_by_all();
        let node = self.clone();
        let made =
            tokio::task::spawn_blocking(move || node.audit().remove_retained(&acknowledged, keep_after))
                .await
                .map_err(|e| NodeError::Storage { detail: format!("audit retention stopped: {e}") })?
                .map_err(|e| NodeError::Storage { detail: e.to_string() })?;
        for cut in &made {
            tracing::info!(site = %cut.origin.site, node = cut.origin.node, first_kept_seq = cut.first_kept_seq, removed = cut.removed, "audit: retention removed old records");
            let event = Event::RetentionApplied(RetentionCut {
                site: cut.origin.site.clone(),
                node: cut.origin.node,
                first_kept_seq: cut.first_kept_seq,
                removed: cut.removed,
                retention_secs,
            });
            if let Err(e) = self.audit().append(event).await {
                tracing::warn!(error = %e, "audit: cannot record a retention cut");
            }
        }
        Ok(made)
    }

    /// Runs until the node stops: a retention pass every [`RETENTION_EVERY`] (if a period is set).
    pub(crate) async fn retain_audit_periodically(self, mut stopped: tokio::sync::watch::Receiver<bool>) {
        if self.config().audit_retention_secs == 0 {
            return;
        }
        while Self::sleep_unless_stopped(&mut stopped, RETENTION_EVERY).await {
            if let Err(e) = self.apply_audit_retention().await {
                tracing::warn!(error = %e, "audit: retention pass failed");
            }
        }
    }
}
