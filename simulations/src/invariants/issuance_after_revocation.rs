//! No node issues a token for an agent after that node applied the agent's revocation.
//! Protects the meaning of "revoked" at each node: partitioned or not, a node that knows of a
//! revocation refuses from that moment on. (Before it knows, it may issue: that is the
//! availability trade DESIGN §2 makes, bounded by the token lifetime.)

use super::Violation;
use super::revocation_wins::RevocationWatch;
use crate::world::{World, lock};
use idmesh_audit::Event;

/// Most audit records read per node.
const RECORDS_MAX: usize = 1_000_000;

/// The final check: every `TokenIssued` record after the point where the observer first saw
/// the agent revoked at that node is a violation.
pub fn check(world: &World, revocations: &RevocationWatch) -> Vec<Violation> {
    let nodes = lock(&world.nodes).clone();
    let mut out = Vec::new();
    for (host, node) in &nodes {
        let Some(seen) = revocations.seen.get(host) else { continue };
        let records = match node.audit().read_from(1, RECORDS_MAX) {
            Ok(records) => records,
            Err(e) => {
                out.push(Violation::new(
                    "issuance_after_revocation",
                    format!("{host}: audit log unreadable: {e}"),
                ));
                continue;
            }
        };
        for record in &records {
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
