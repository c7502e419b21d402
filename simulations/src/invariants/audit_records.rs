//! Every issued token has exactly one audit record: each token a client received appears once,
//! as `TokenIssued` (or `TokenExchanged`) with its jti, in the issuing node's hash-chained audit log, at the sequence
//! number the node answered with — also after that node crashed and restarted. And each node's
//! chain verifies. Protects "what did this agent do, when": no token exists that the audit
//! trail does not show.
//!
//!
//! Replicas agree with their origin: every record a node holds of another node's chain is, byte
//! for byte, the record that node wrote at that seq (no fork, none a crash undid), and no node
//! reported a problem with records it received (forks, gaps, unknown nodes, forged
//! checkpoints). Whether every record reaches every node in the end is tested with real
//! processes (`tests/audit.rs`, `tests/delegation.rs`), not here.

use super::Violation;
use crate::world::{World, lock};
use idmesh_audit::{Event, Record, RecordOrigin};
use std::collections::BTreeMap;

/// Most audit records read per node.
const RECORDS_MAX: usize = 1_000_000;

/// Every running node's whole audit log, by host (read once, for every audit check).
pub fn read_logs(world: &World) -> BTreeMap<String, Result<Vec<Record>, String>> {
    lock(&world.nodes)
        .iter()
        .map(|(host, node)| (host.clone(), node.audit().read_from(1, RECORDS_MAX).map_err(|e| e.to_string())))
        .collect()
}

/// Replicas agree with their origins, and no node reported a problem with received records.
pub fn check_replicas(world: &World, logs: &BTreeMap<String, Result<Vec<Record>, String>>) -> Vec<Violation> {
    let nodes: Vec<(String, idmesh_node::Node)> =
        lock(&world.nodes).iter().map(|(host, node)| (host.clone(), node.clone())).collect();
    let own: BTreeMap<RecordOrigin, &Vec<Record>> = nodes
        .iter()
        .filter_map(|(host, node)| Some((node.audit().origin().clone(), logs.get(host)?.as_ref().ok()?)))
        .collect();
    let mut out = Vec::new();
    for (host, node) in &nodes {
        for problem in node.audit().problems() {
            out.push(Violation::new(
                "audit_records",
                format!("{host} reported audit records from {}: {}", problem.from, problem.problem),
            ));
        }
        for origin in node.audit().held().keys().filter(|o| *o != node.audit().origin()) {
            let Some(written) = own.get(origin) else { continue };
            let copy = match node.audit().read_chain(origin, 1, RECORDS_MAX) {
                Ok(copy) => copy,
                Err(e) => {
                    out.push(Violation::new(
                        "audit_records",
                        format!("{host}: copy of {origin:?} unreadable: {e}"),
                    ));
                    continue;
                }
            };
            for record in &copy {
                let original = usize::try_from(record.seq).ok().and_then(|s| written.get(s.checked_sub(1)?));
                if original != Some(record) {
                    out.push(Violation::new(
                        "audit_records",
                        format!(
                            "{host} holds record {} of node {} of site {} unlike the one its node holds ({})",
                            record.seq,
                            origin.node,
                            origin.site,
                            if original.is_some() { "a fork" } else { "the origin has no such record" }
                        ),
                    ));
                    break;
                }
            }
        }
    }
    out
}

/// The final check, over the logs [`read_logs`] read.
pub fn check(world: &World, logs: &BTreeMap<String, Result<Vec<Record>, String>>) -> Vec<Violation> {
    let tokens = lock(&world.ledger).tokens.clone();
    let mut out = Vec::new();
    let mut by_host: BTreeMap<String, BTreeMap<String, Vec<u64>>> = BTreeMap::new();
    for (host, records) in logs {
        let records = match records {
            Ok(records) => records,
            Err(e) => {
                out.push(Violation::new("audit_records", format!("{host}: audit log unreadable: {e}")));
                continue;
            }
        };
        if let Err(e) = idmesh_audit::verify_chain(records) {
            out.push(Violation::new("audit_records", format!("{host}: chain does not verify: {e}")));
        }
        let jtis = by_host.entry(host.clone()).or_default();
        for record in records {
            let jti = match &record.event {
                Event::TokenIssued(token) => &token.jti,
                Event::TokenExchanged(token) => &token.jti,
                _ => continue,
            };
            jtis.entry(jti.clone()).or_default().push(record.seq);
        }
    }
    for token in &tokens {
        let seqs = by_host.get(&token.host).and_then(|j| j.get(&token.jti)).cloned().unwrap_or_default();
        if seqs != [token.audit_seq] {
            out.push(Violation::new(
                "audit_records",
                format!(
                    "token {} for {} issued by {} at {} ms (audit {}) has records at {seqs:?}",
                    token.jti, token.agent, token.host, token.at_ms, token.audit_seq
                ),
            ));
        }
    }
    out
}
