//! No acknowledged admin write is lost: every registration and revocation (of an agent or a
//! delegation) a client was told
//! succeeded is, after the heal, present at every node of every site — whatever crashed,
//! whichever leader changed, whatever was cut off. Protects durability (nothing acknowledged
//! before it is on disk) and replication (nothing acknowledged is dropped by a merge).

use super::Violation;
use crate::ledger::AckedWrite;
use crate::world::{World, lock};
use idmesh_state::AgentStatus;

/// The final check: one violation per lost write, naming the nodes that lack it.
pub fn check(world: &World) -> Vec<Violation> {
    let writes = lock(&world.ledger).writes.clone();
    let nodes = lock(&world.nodes).clone();
    let mut out = Vec::new();
    for (at_ms, _, write) in &writes {
        let (agent, want_revoked) = match write {
            AckedWrite::Registered { agent } => (agent, false),
            AckedWrite::Revoked { agent } => (agent, true),
            AckedWrite::DelegationRevoked { id } => {
                let lacking: Vec<&String> = nodes
                    .iter()
                    .filter(|(_, node)| {
                        let state = node.shared().read();
                        state.state.delegations.by_id.get(id).is_none_or(|d| d.revoked.is_none())
                    })
                    .map(|(host, _)| host)
                    .collect();
                if !lacking.is_empty() {
                    out.push(Violation::new(
                        "acknowledged_writes",
                        format!("{write:?} acknowledged at {at_ms} ms is missing at {lacking:?}"),
                    ));
                }
                continue;
            }
        };
        let mut lacking = Vec::new();
        for (host, node) in &nodes {
            let state = node.shared().read();
            let status = agent.parse().ok().and_then(|id| state.state.registry.get(&id)).map(|a| a.status);
            let lost = match status {
                None => true,
                Some(status) => want_revoked && status != AgentStatus::Revoked,
            };
            if lost {
                lacking.push(format!("{host} ({status:?})"));
            }
        }
        if !lacking.is_empty() {
            out.push(Violation::new(
                "acknowledged_writes",
                format!("{write:?} acknowledged at {at_ms} ms is missing at {}", lacking.join(", ")),
            ));
        }
    }
    out
}
