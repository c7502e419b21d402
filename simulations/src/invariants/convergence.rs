//! Convergence: after every link heals and a quiet period, every node of every site holds the
//! same state (same SHA-256 over every shard's heads). Protects "sites reconcile": no change
//! stays stranded at one site, whatever the partitions, crashes and outages were.

use super::Violation;
use crate::world::{World, lock};
use std::collections::BTreeMap;

/// Each running node's state hash, by host.
pub fn hashes(world: &World) -> BTreeMap<String, String> {
    lock(&world.nodes).iter().map(|(host, node)| (host.clone(), node.shared().state_hash())).collect()
}

/// Whether every node is running and all hold one state.
pub fn converged(world: &World) -> bool {
    let hashes = hashes(world);
    hashes.len() == world.plan.hosts().len() && hashes.values().all(|h| Some(h) == hashes.values().next())
}

/// The final check.
pub fn check(world: &World) -> Vec<Violation> {
    let hashes = hashes(world);
    let mut out = Vec::new();
    for (_, _, host) in world.plan.hosts() {
        if !hashes.contains_key(&host) {
            out.push(Violation::new("convergence", format!("{host} is not running after the heal")));
        }
    }
    let mut groups: BTreeMap<&String, Vec<&String>> = BTreeMap::new();
    for (host, hash) in &hashes {
        groups.entry(hash).or_default().push(host);
    }
    if groups.len() > 1 {
        let shown: Vec<String> = groups
            .iter()
            .map(|(hash, hosts)| format!("{}…: {}", &hash[..12.min(hash.len())], join(hosts)))
            .collect();
        out.push(Violation::new(
            "convergence",
            format!("state hashes differ after the quiet period: {}", shown.join("; ")),
        ));
    }
    out
}

fn join(hosts: &[&String]) -> String {
    hosts.iter().map(|h| h.as_str()).collect::<Vec<_>>().join(",")
}
