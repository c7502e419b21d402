//! Applying the plan's faults to the simulated network and hosts. The driver owns one
//! [`Faults`]; it keeps the set of active cuts and tells turmoil only what changed.

use crate::plan::Fault;
use crate::world::{World, lock};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A cut inside one site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SiteCut {
    /// This node (index) is cut off from the others.
    Isolated(usize),
    /// Every node is cut off from every other.
    Split,
}

/// The faults in force.
#[derive(Debug, Default)]
pub struct Faults {
    site_cuts: BTreeMap<usize, SiteCut>,
    link_cuts: BTreeSet<(usize, usize)>,
    crashed: BTreeSet<(usize, usize)>,
    lossy: BTreeMap<(usize, usize), u64>,
    partitioned: BTreeSet<(String, String)>,
}

/// The default longest message delay.
pub const MAX_LATENCY_DEFAULT_MS: u64 = 5;

impl Faults {
    /// Applies `fault` at simulated `now_ms`.
    pub fn apply(&mut self, sim: &mut turmoil::Sim<'_>, world: &World, fault: &Fault, now_ms: u64) {
        let plan = &world.plan;
        let host = |site: usize, node: usize| plan.sites[site].host(node);
        let mut shown = format!("{fault:?}");
        match *fault {
            Fault::IsolateNode { site, node } => {
                self.site_cuts.insert(site, SiteCut::Isolated(node));
            }
            Fault::IsolateLeader { site } => {
                let leader = lock(&world.nodes)
                    .iter()
                    .filter(|(_, n)| n.config().site.as_str() == plan.sites[site].name)
                    .find_map(|(_, n)| n.current_leader());
                match leader {
                    Some(id) => {
                        let index = usize::try_from(id.saturating_sub(1)).unwrap_or(0);
                        self.site_cuts.insert(site, SiteCut::Isolated(index));
                        shown = format!("IsolateLeader {{ site: {site}, node: {index} }}");
                    }
                    None => shown = format!("IsolateLeader {{ site: {site} }}: no leader, nothing cut"),
                }
            }
            Fault::SplitSite { site } => {
                self.site_cuts.insert(site, SiteCut::Split);
            }
            Fault::HealSite { site } => {
                self.site_cuts.remove(&site);
            }
            Fault::Crash { site, node } => {
                if self.crashed.insert((site, node)) {
                    let name = host(site, node);
                    sim.crash(name.as_str());
                    lock(&world.nodes).remove(&name);
                    if let Some(store) = lock(&world.stores).get(&name) {
                        store.crash();
                    }
                }
            }
            Fault::Restart { site, node } => {
                if self.crashed.remove(&(site, node)) {
                    restart(sim, world, &host(site, node));
                }
            }
            Fault::CutLink { a, b } => {
                self.link_cuts.insert((a.min(b), a.max(b)));
            }
            Fault::RestoreLink { a, b } => {
                self.link_cuts.remove(&(a.min(b), a.max(b)));
            }
            Fault::AdvanceClocks { ms } => {
                world.global_clock_ms.fetch_add(ms, Ordering::SeqCst);
            }
            Fault::StepClock { site, node, ms } => {
                if let Some(offsets) = world.clocks.get(&host(site, node)) {
                    offsets.own_ms.fetch_add(ms, Ordering::SeqCst);
                }
            }
            Fault::CarryBundle { from, to } => lock(&world.carried).exports.push((from, to)),
            Fault::MaxLatency { ms } => sim.set_max_message_latency(Duration::from_millis(ms)),
            Fault::LossyLink { site, node, per_mille } => {
                self.lossy.insert((site, node), per_mille);
                set_loss(sim, world, &host(site, node), per_mille as f64 / 1000.0);
            }
        }
        world.trace(now_ms, format!("fault {shown}"));
        self.sync_network(sim, world);
    }

    /// Heals everything: cuts, links, latency, loss; restarts every crashed node.
    pub fn heal(&mut self, sim: &mut turmoil::Sim<'_>, world: &World, now_ms: u64) {
        self.site_cuts.clear();
        self.link_cuts.clear();
        sim.set_max_message_latency(Duration::from_millis(MAX_LATENCY_DEFAULT_MS));
        for (site, node) in std::mem::take(&mut self.lossy).into_keys() {
            set_loss(sim, world, &world.plan.sites[site].host(node), 0.0);
        }
        for (site, node) in std::mem::take(&mut self.crashed) {
            restart(sim, world, &world.plan.sites[site].host(node));
        }
        world.trace(now_ms, "heal: every fault undone");
        self.sync_network(sim, world);
    }

    /// Sites with a cut in force (inside, or a link of theirs).
    pub fn cut_sites(&self) -> BTreeSet<usize> {
        let mut out: BTreeSet<usize> = self.site_cuts.keys().copied().collect();
        for &(a, b) in &self.link_cuts {
            out.insert(a);
            out.insert(b);
        }
        out
    }

    fn should_cut(&self, a: (usize, usize), b: (usize, usize)) -> bool {
        if a.0 == b.0 {
            return match self.site_cuts.get(&a.0) {
                Some(SiteCut::Split) => true,
                Some(SiteCut::Isolated(n)) => a.1 == *n || b.1 == *n,
                None => false,
            };
        }
        self.link_cuts.contains(&(a.0.min(b.0), a.0.max(b.0)))
    }

    /// Partitions and repairs host pairs so that turmoil matches the cuts in force.
    fn sync_network(&mut self, sim: &mut turmoil::Sim<'_>, world: &World) {
        *lock(&world.cut_sites) = self.cut_sites();
        let hosts = world.plan.hosts();
        for (i, (sa, na, ha)) in hosts.iter().enumerate() {
            for (sb, nb, hb) in &hosts[i + 1..] {
                let pair = (ha.clone(), hb.clone());
                let cut = self.should_cut((*sa, *na), (*sb, *nb));
                if cut && self.partitioned.insert(pair.clone()) {
                    sim.partition(ha.as_str(), hb.as_str());
                } else if !cut && self.partitioned.remove(&pair) {
                    sim.repair(ha.as_str(), hb.as_str());
                }
            }
        }
    }
}

/// Sets the loss rate of every link between `host` and the other nodes.
fn set_loss(sim: &mut turmoil::Sim<'_>, world: &World, host: &str, rate: f64) {
    for (_, _, other) in world.plan.hosts() {
        if other != host {
            sim.set_link_fail_rate(host, other.as_str(), rate);
        }
    }
}

/// Starts a crashed host again on the durable part of its disk.
fn restart(sim: &mut turmoil::Sim<'_>, world: &World, host: &str) {
    {
        let mut stores = lock(&world.stores);
        if let Some(store) = stores.get(host) {
            let reopened = store.reopen();
            stores.insert(host.to_owned(), reopened);
        }
    }
    sim.bounce(host);
}
