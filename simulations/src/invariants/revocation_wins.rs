//! Revocation wins and is never undone; no zombies. Once a node has applied an agent's (or a
//! delegation's) revocation, that node shows it revoked forever — across restarts, merges with sites
//! that never heard of the revocation, and concurrent updates, suspends and resumes. After the
//! heal, an agent revoked at any node is revoked at every node. Protects the one promise an
//! identity system must keep when a credential leaks.

use super::Violation;
use crate::world::{World, lock};
use idmesh_state::AgentStatus;
use std::collections::{BTreeMap, BTreeSet};

/// Per host: agents seen revoked there, with the end of that node's audit log when first seen.
#[derive(Debug, Default)]
pub struct RevocationWatch {
    /// By host, by agent: the audit log's last sequence number when the revocation was seen.
    pub seen: BTreeMap<String, BTreeMap<String, u64>>,
    /// The same for delegations: by host, by delegation id.
    pub seen_delegations: BTreeMap<String, BTreeMap<String, u64>>,
    /// (host, agent or delegation) pairs already reported, so one undoing is one violation.
    reported: BTreeSet<(String, String)>,
}

impl RevocationWatch {
    /// Checks that `node` still shows every revocation it showed before, and remembers new ones.
    pub fn observe(&mut self, host: &str, node: &idmesh_node::Node, now_ms: u64) -> Vec<Violation> {
        let mut out = Vec::new();
        // Read the audit end first: any record after it was written after this observation.
        let audit_end = node.audit().last_seq().unwrap_or(u64::MAX);
        let state = node.shared().read();
        let registry = &state.state.registry;
        let seen = self.seen.entry(host.to_owned()).or_default();
        for agent in seen.keys() {
            let status = agent.parse().ok().and_then(|id| registry.get(&id)).map(|a| a.status);
            if status != Some(AgentStatus::Revoked) && self.reported.insert((host.to_owned(), agent.clone()))
            {
                out.push(Violation::new(
                    "revocation_wins",
                    format!("{agent} was revoked at {host}, then showed {status:?} at {now_ms} ms"),
                ));
            }
        }
        for agent in registry.agents().filter(|a| a.status == AgentStatus::Revoked) {
            seen.entry(agent.id.to_string()).or_insert(audit_end);
        }
        let delegations = &state.state.delegations.by_id;
        let seen = self.seen_delegations.entry(host.to_owned()).or_default();
        for id in seen.keys() {
            let revoked = delegations.get(id).is_some_and(|d| d.revoked.is_some());
            if !revoked && self.reported.insert((host.to_owned(), id.clone())) {
                out.push(Violation::new(
                    "revocation_wins",
                    format!("delegation {id} was revoked at {host}, then was not at {now_ms} ms"),
                ));
            }
        }
        for d in delegations.values().filter(|d| d.revoked.is_some()) {
            seen.entry(d.id.clone()).or_insert(audit_end);
        }
        out
    }

    /// Whether `host` has shown `agent` revoked.
    pub fn has_seen(&self, host: &str, agent: &str) -> bool {
        self.seen.get(host).is_some_and(|s| s.contains_key(agent))
    }
}

/// After the heal: an agent revoked at any node is revoked at every node.
pub fn check_everywhere(world: &World) -> Vec<Violation> {
    let nodes = lock(&world.nodes).clone();
    let mut revoked_somewhere: BTreeMap<String, String> = BTreeMap::new();
    for (host, node) in &nodes {
        for agent in node.shared().read().state.registry.agents() {
            if agent.status == AgentStatus::Revoked {
                revoked_somewhere.entry(agent.id.to_string()).or_insert_with(|| host.clone());
            }
        }
    }
    let mut out = Vec::new();
    for (agent, first_host) in &revoked_somewhere {
        for (host, node) in &nodes {
            let status = agent
                .parse()
                .ok()
                .and_then(|id| node.shared().read().state.registry.get(&id).map(|a| a.status));
            if status != Some(AgentStatus::Revoked) {
                out.push(Violation::new(
                    "revocation_wins",
                    format!("after the heal {agent} is revoked at {first_host} but {status:?} at {host}"),
                ));
            }
        }
    }
    let mut delegations_revoked: BTreeMap<String, String> = BTreeMap::new();
    for (host, node) in &nodes {
        for d in node.shared().read().state.delegations.by_id.values().filter(|d| d.revoked.is_some()) {
            delegations_revoked.entry(d.id.clone()).or_insert_with(|| host.clone());
        }
    }
    for (id, first_host) in &delegations_revoked {
        for (host, node) in &nodes {
            let revoked =
                node.shared().read().state.delegations.by_id.get(id).is_some_and(|d| d.revoked.is_some());
            if !revoked {
                out.push(Violation::new(
                    "revocation_wins",
                    format!("after the heal delegation {id} is revoked at {first_host} but not at {host}"),
                ));
            }
        }
    }
    out
}
