//! A run's plan, drawn entirely from its seed: topology, fault schedule and workload pace.
//! Pure: the same seed gives the same plan on every machine.

use crate::rng::SimRng;
use std::collections::BTreeMap;

/// One site of the simulated mesh.
#[derive(Debug, Clone)]
pub struct SitePlan {
    /// The site's name (also the prefix of its hosts' names).
    pub name: String,
    /// Its node count (1 for a ship, 3 for a site on land).
    pub nodes: usize,
}

impl SitePlan {
    /// The host name of node `index` (0-based; node ids are index + 1).
    pub fn host(&self, index: usize) -> String {
        format!("{}-{}", self.name, index + 1)
    }

    /// Every host name of the site.
    pub fn hosts(&self) -> Vec<String> {
        (0..self.nodes).map(|i| self.host(i)).collect()
    }
}

/// What happens at one moment of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Cuts `node` of `site` off from the other nodes of its site (a minority of one).
    IsolateNode { site: usize, node: usize },
    /// Cuts whichever node leads `site` at that moment off from the rest of its site.
    IsolateLeader { site: usize },
    /// Cuts every node of `site` off from every other: no majority anywhere.
    SplitSite { site: usize },
    /// Undoes the cuts inside `site`.
    HealSite { site: usize },
    /// Kills the node's process: what was not flushed is lost.
    Crash { site: usize, node: usize },
    /// Starts a crashed node again on what its disk kept.
    Restart { site: usize, node: usize },
    /// Cuts the link between two sites.
    CutLink { a: usize, b: usize },
    /// Restores the link between two sites.
    RestoreLink { a: usize, b: usize },
    /// Moves every clock forward: the wall time that passes while a link is down for weeks.
    AdvanceClocks { ms: i64 },
    /// Steps one node's clock (skew or an NTP jump).
    StepClock { site: usize, node: usize, ms: i64 },
    /// Sets the longest delivery delay of every message.
    MaxLatency { ms: u64 },
    /// An operator exports a bundle at site `from` and imports it at site `to`.
    CarryBundle { from: usize, to: usize },
    /// Makes a link between two hosts drop what it carries with the given probability per
    /// message (per mille), which breaks the TCP streams crossing it.
    LossyLink { site: usize, node: usize, per_mille: u64 },
}

/// Run-level timing (simulated milliseconds).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Workload and faults start.
    pub chaos_from_ms: u64,
    /// Every fault is healed and writes stop.
    pub heal_at_ms: u64,
    /// Longest wait for convergence after the heal.
    pub quiet_max_ms: u64,
}

/// A whole run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The seed everything was drawn from.
    pub seed: u64,
    /// Sites, full sites first, then ships.
    pub sites: Vec<SitePlan>,
    /// Links between sites (indexes into `sites`), each configured at both ends.
    pub links: Vec<(usize, usize)>,
    /// Faults by simulated millisecond.
    pub faults: BTreeMap<u64, Vec<Fault>>,
    /// Timing.
    pub timing: Timing,
    /// Mean pause between two operations of a client (ms).
    pub client_pause_ms: u64,
}

/// Knobs of a run that are not drawn from the seed.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Simulated length of the chaos phase.
    pub chaos_ms: u64,
    /// How many faults are scheduled in it.
    pub fault_count: usize,
}

impl Default for Shape {
    fn default() -> Self {
        Self { chaos_ms: 40_000, fault_count: 10 }
    }
}

const DAY_MS: i64 = 24 * 3600 * 1000;

impl Plan {
    /// The plan of `seed`.
    pub fn from_seed(seed: u64, shape: Shape) -> Self {
        let mut rng = SimRng::new(seed, "plan");
        let sites: Vec<SitePlan> = [("cloud", 3), ("port", 3), ("hq", 3), ("ship-a", 1), ("ship-b", 1)]
            .into_iter()
            .map(|(name, nodes)| SitePlan { name: name.to_owned(), nodes })
            .collect();
        // Land sites are fully linked; each ship links to one or two land sites.
        let mut links = vec![(0, 1), (0, 2), (1, 2)];
        for ship in 3..sites.len() {
            let first = usize::try_from(rng.range(0, 3)).unwrap_or(0);
            links.push((first, ship));
            if rng.percent(40) {
                links.push(((first + 1) % 3, ship));
            }
        }
        let chaos_from_ms = 5_000;
        let heal_at_ms = chaos_from_ms + shape.chaos_ms;
        let timing = Timing { chaos_from_ms, heal_at_ms, quiet_max_ms: 120_000 };
        let mut plan = Plan {
            seed,
            sites,
            links,
            faults: BTreeMap::new(),
            timing,
            client_pause_ms: rng.range(100, 500),
        };
        for _ in 0..shape.fault_count {
            plan.draw_fault(&mut rng);
        }
        // Bundles come from a stream of their own, so the faults above stay what they were for
        // a seed whatever is drawn here.
        let mut carry = SimRng::new(seed, "plan/bundles");
        for _ in 0..carry.range(0, 3) {
            let at = carry.range(chaos_from_ms, heal_at_ms);
            let from = usize::try_from(carry.range(0, plan.sites.len() as u64)).unwrap_or(0);
            let to = (from + usize::try_from(carry.range(1, plan.sites.len() as u64)).unwrap_or(1))
                % plan.sites.len();
            plan.at(at, Fault::CarryBundle { from, to });
        }
        plan
    }

    fn at(&mut self, ms: u64, fault: Fault) {
        self.faults.entry(ms.min(self.timing.heal_at_ms.saturating_sub(1))).or_default().push(fault);
    }

    fn draw_fault(&mut self, rng: &mut SimRng) {
        let Timing { chaos_from_ms: from, heal_at_ms: until, .. } = self.timing;
        let start = rng.range(from, until.saturating_sub(2_000));
        let end = (start + rng.range(1_000, (until - from) / 2)).min(until - 1);
        let land = usize::try_from(rng.range(0, 3)).unwrap_or(0);
        let any_site = usize::try_from(rng.range(0, self.sites.len() as u64)).unwrap_or(0);
        let node_of =
            |rng: &mut SimRng, site: &SitePlan| usize::try_from(rng.range(0, site.nodes as u64)).unwrap_or(0);
        match rng.range(0, 10) {
            0 => {
                let node = node_of(rng, &self.sites[land]);
                self.at(start, Fault::IsolateNode { site: land, node });
                self.at(end, Fault::HealSite { site: land });
            }
            1 => {
                self.at(start, Fault::IsolateLeader { site: land });
                self.at(end, Fault::HealSite { site: land });
            }
            2 => {
                self.at(start, Fault::SplitSite { site: land });
                self.at(end, Fault::HealSite { site: land });
            }
            3 | 4 => {
                let node = node_of(rng, &self.sites[any_site]);
                self.at(start, Fault::Crash { site: any_site, node });
                self.at(end, Fault::Restart { site: any_site, node });
            }
            5 | 6 => {
                let Some(&(a, b)) = rng.pick(&self.links.clone()) else { return };
                self.at(start, Fault::CutLink { a, b });
                if rng.percent(50) {
                    // Weeks apart: the wall clock runs on by 1 to 30 days while the link is down.
                    let days = i64::try_from(rng.range(1, 31)).unwrap_or(1);
                    self.at((start + end) / 2, Fault::AdvanceClocks { ms: days * DAY_MS });
                }
                self.at(end, Fault::RestoreLink { a, b });
            }
            7 => {
                let node = node_of(rng, &self.sites[any_site]);
                let magnitude = i64::try_from(rng.range(500, 20_000)).unwrap_or(500);
                let ms = if rng.percent(50) { magnitude } else { -magnitude };
                self.at(start, Fault::StepClock { site: any_site, node, ms });
            }
            8 => {
                self.at(start, Fault::MaxLatency { ms: rng.range(20, 400) });
                self.at(end, Fault::MaxLatency { ms: 5 });
            }
            _ => {
                let node = node_of(rng, &self.sites[any_site]);
                self.at(start, Fault::LossyLink { site: any_site, node, per_mille: rng.range(1, 20) });
                self.at(end, Fault::LossyLink { site: any_site, node, per_mille: 0 });
            }
        }
    }

    /// Every node host of the mesh, in a fixed order.
    pub fn hosts(&self) -> Vec<(usize, usize, String)> {
        let mut out = Vec::new();
        for (s, site) in self.sites.iter().enumerate() {
            for n in 0..site.nodes {
                out.push((s, n, site.host(n)));
            }
        }
        out
    }

    /// The sites `site` has a link with.
    pub fn linked_sites(&self, site: usize) -> Vec<usize> {
        self.links
            .iter()
            .filter_map(|&(a, b)| {
                if a == site {
                    Some(b)
                } else if b == site {
                    Some(a)
                } else {
                    None
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_one_plan() {
        let a = Plan::from_seed(42, Shape::default());
        let b = Plan::from_seed(42, Shape::default());
        assert_eq!(format!("{:?}", a.faults), format!("{:?}", b.faults));
        assert_eq!(a.links, b.links);
        let c = Plan::from_seed(43, Shape::default());
        assert_ne!(format!("{:?}", a.faults), format!("{:?}", c.faults));
        assert!(a.faults.keys().all(|&t| t < a.timing.heal_at_ms));
    }
}
