//! Watching the mesh while it runs: every few simulated milliseconds the driver reads each
//! running node (Raft metrics, applied registry, audit log's end), checks the invariants that
//! must hold at every instant, and notes leader changes in the trace.

use crate::invariants::Violation;
use crate::invariants::raft_safety::RaftSafety;
use crate::invariants::revocation_wins::RevocationWatch;
use crate::world::{World, lock};
use openraft::ServerState;
use std::collections::BTreeMap;

/// What the observer has seen so far.
#[derive(Debug, Default)]
pub struct Observer {
    /// Leaders and applied entries per site.
    pub raft: RaftSafety,
    /// Revocations seen per node.
    pub revocations: RevocationWatch,
    /// Per site: the leader last seen (for the trace).
    last_leader: BTreeMap<String, Option<u64>>,
    /// Per revocation acknowledged to a client: when every node first showed it.
    pub revoked_everywhere_ms: BTreeMap<String, u64>,
    /// What broke, in the order it was seen.
    pub violations: Vec<Violation>,
}

impl Observer {
    /// One observation of every running node at simulated `now_ms`.
    pub fn observe(&mut self, world: &World, now_ms: u64) {
        let nodes: Vec<(String, idmesh_node::Node)> =
            lock(&world.nodes).iter().map(|(h, n)| (h.clone(), n.clone())).collect();
        let mut leaders_now: BTreeMap<String, Option<u64>> = BTreeMap::new();
        for (host, node) in &nodes {
            let site = node.config().site.to_string();
            let metrics = node.metrics();
            let found = self.raft.observe(&site, host, &metrics, now_ms);
            self.violations.extend(found);
            let found = self.revocations.observe(host, node, now_ms);
            self.violations.extend(found);
            let leading = (metrics.state == ServerState::Leader).then_some(metrics.id);
            let entry = leaders_now.entry(site).or_insert(None);
            *entry = entry.or(leading);
        }
        for (site, leader) in leaders_now {
            if self.last_leader.get(&site) != Some(&leader) {
                match leader {
                    Some(id) => world.trace(now_ms, format!("site {site} led by node {id}")),
                    None => world.trace(now_ms, format!("site {site} has no leader")),
                }
                self.last_leader.insert(site, leader);
            }
        }
        if nodes.len() == world.plan.hosts().len() {
            self.watch_propagation(world, &nodes, now_ms);
        }
    }

    /// When each revocation a client was told about is applied at every node.
    fn watch_propagation(&mut self, world: &World, nodes: &[(String, idmesh_node::Node)], now_ms: u64) {
        let revoked = lock(&world.ledger).revoked();
        for agent in revoked.keys() {
            if !self.revoked_everywhere_ms.contains_key(agent)
                && nodes.iter().all(|(host, _)| self.revocations.has_seen(host, agent))
            {
                self.revoked_everywhere_ms.insert(agent.clone(), now_ms);
            }
        }
    }
}
