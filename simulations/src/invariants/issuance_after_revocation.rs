//! No node issues a token for an agent after that node applied the agent's revocation.
//! Protects the meaning of "revoked" at each node: partitioned or not, a node that knows of a
//! revocation refuses from that moment on. (Before it knows, it may issue: that is the
//! availability trade DESIGN §2 makes, bounded by the token lifetime.)

use super::Violation;
use super::revocation_wins::RevocationWatch;
use idmesh_audit::{Event, Record};
use std::collections::BTreeMap;

/// The final check: every `TokenIssued` record after the point where the observer first saw
/// the agent revoked at that node is a violation. (`logs`: every node's audit log, from
/// `audit_records::read_logs`; an unreadable one is reported there.)
pub fn check(
    logs: &BTreeMap<String, Result<Vec<Record>, String>>,
    revocations: &RevocationWatch,
) -> Vec<Violation> {
    let mut out = Vec::new();
    for (host, records) in logs {
        let (Some(seen), Ok(records)) = (revocations.seen.get(host), records) else { continue };
        for record in records {
            if let Event::TokenIssued(token) = &record.event
                && let Some(&revoked_by) = seen.get(&token.agent)
                && record.seq > revoked_by
            {
                out.push(Violation::new(
                    "issuance_after_revocation",
                    format!(
                        "{host} issued {} for {} (audit {}) after it had applied the revocation (audit end {revoked_by})",
                        token.jti, token.agent, record.seq
                    ),
                ));
            }
        }
    }
    out
}
