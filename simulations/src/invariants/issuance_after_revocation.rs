//! No node issues a token for an agent after that node applied the agent's revocation, and no
//! node exchanges a token under a delegation after it applied the delegation's revocation.
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
    let none = BTreeMap::new();
    for (host, records) in logs {
        let Ok(records) = records else { continue };
        let agents = revocations.seen.get(host).unwrap_or(&none);
        let delegations = revocations.seen_delegations.get(host).unwrap_or(&none);
        for record in records {
            // (what was revoked, the token, its agent) for every token this record issued.
            let (revoked_by, jti, agent, what) = match &record.event {
                Event::TokenIssued(t) => (agents.get(&t.agent), &t.jti, &t.agent, "the agent's revocation"),
                Event::TokenExchanged(t) => match (agents.get(&t.agent), delegations.get(&t.delegation)) {
                    (Some(a), _) => (Some(a), &t.jti, &t.agent, "the agent's revocation"),
                    (None, d) => (d, &t.jti, &t.agent, "the delegation's revocation"),
                },
                _ => continue,
            };
            if let Some(&revoked_by) = revoked_by
                && record.seq > revoked_by
            {
                out.push(Violation::new(
                    "issuance_after_revocation",
                    format!(
                        "{host} issued {jti} for {agent} (audit {}) after it had applied {what} (audit end {revoked_by})",
                        record.seq
                    ),
                ));
            }
        }
    }
    out
}
