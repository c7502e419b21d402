//! What the simulation shares between its hosts and its driver: the plan, each node's disk
//! (which outlives crashes), the running nodes, clocks, the ledger and the trace. Also the
//! software of a node host: a real `idmesh_node::Node` on the simulated machine.

use crate::ledger::Ledger;
use crate::plan::Plan;
use crate::rng::SimRng;
use crate::sim_host::{ClockOffsets, SimClock, SimEntropy, SimTransport};
use crate::trace::Trace;
use idmesh_node::{Host, Node, NodeConfig, RaftTiming, TokenSettings};
use idmesh_store::MemStore;
use idmesh_types::{NodeId, SiteName, TrustDomain};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Public gRPC port of every node host.
pub const PUBLIC_PORT: u16 = 7000;
/// Peer gRPC port of every node host.
pub const PEER_PORT: u16 = 7100;
/// The simulated trust domain.
pub const TRUST_DOMAIN: &str = "mesh.sim";

/// Locks a mutex, ignoring poisoning (a panic is reported through the panic log instead).
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Switches that re-introduce known bugs, so a test can show the simulation finds them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bugs {
    /// Flushes return before anything is durable; a background sync every 500 ms does the
    /// real work (see [`crate::bugs::LyingFlush`]).
    pub ack_before_flush: bool,
}

/// The state shared by every host and the driver.
#[derive(Debug)]
pub struct World {
    /// The run's plan.
    pub plan: Plan,
    /// Bugs switched on for this run.
    pub bugs: Bugs,
    /// Each node's disk, by host; replaced by its durable part when the node restarts.
    pub stores: Mutex<BTreeMap<String, MemStore>>,
    /// The running incarnation of each node, by host.
    pub nodes: Mutex<BTreeMap<String, Node>>,
    /// Each node's clock offsets, by host.
    pub clocks: BTreeMap<String, ClockOffsets>,
    /// The offset every clock shares (clients' too).
    pub global_clock_ms: Arc<AtomicI64>,
    /// How many times each host has booted.
    pub boots: Mutex<BTreeMap<String, u64>>,
    /// What clients were told.
    pub ledger: Mutex<Ledger>,
    /// The event trace.
    pub trace: Mutex<Trace>,
    /// Whether clients may still write (false from the heal on).
    pub writes_open: AtomicBool,
    /// Set once every node holds one state: clients then check tokens across sites.
    pub converged: AtomicBool,
    /// Sites with a fault cutting them off right now (inside or from other sites).
    pub cut_sites: Mutex<BTreeSet<usize>>,
    /// Bundles on their way.
    pub carried: Mutex<crate::carry::Carried>,
    /// Nodes that failed to start, with the reason.
    pub boot_errors: Mutex<Vec<String>>,
}

impl World {
    /// The world of `plan`, every disk empty.
    pub fn new(plan: Plan, bugs: Bugs) -> Self {
        let global_clock_ms = Arc::new(AtomicI64::new(0));
        let mut stores = BTreeMap::new();
        let mut clocks = BTreeMap::new();
        for (_, _, host) in plan.hosts() {
            stores.insert(host.clone(), MemStore::new());
            clocks.insert(host, ClockOffsets { global_ms: global_clock_ms.clone(), own_ms: Arc::default() });
        }
        Self {
            plan,
            bugs,
            stores: Mutex::new(stores),
            nodes: Mutex::default(),
            clocks,
            global_clock_ms,
            boots: Mutex::default(),
            ledger: Mutex::default(),
            trace: Mutex::default(),
            writes_open: AtomicBool::new(true),
            converged: AtomicBool::new(false),
            cut_sites: Mutex::default(),
            carried: Mutex::default(),
            boot_errors: Mutex::default(),
        }
    }

    /// Appends to the trace.
    pub fn trace(&self, at_ms: u64, event: impl std::fmt::Display) {
        lock(&self.trace).push(at_ms, event);
    }

    /// Whether clients may still write.
    pub fn writes_open(&self) -> bool {
        self.writes_open.load(Ordering::SeqCst)
    }

    /// The configuration of node `node` of site `site`.
    pub fn node_config(&self, site: usize, node: usize) -> NodeConfig {
        let plan = &self.plan;
        let site_plan = &plan.sites[site];
        // Names in the plan are valid site names; a failure here is a bug of the plan.
        let trust_domain =
            TrustDomain::parse_field("trust_domain", TRUST_DOMAIN).unwrap_or_else(|e| panic!("{e}"));
        let site_name = SiteName::parse_field("site", &site_plan.name).unwrap_or_else(|e| panic!("{e}"));
        let site_peers: BTreeMap<NodeId, String> = (0..site_plan.nodes)
            .map(|i| (NodeId(i as u64 + 1), format!("{}:{PEER_PORT}", site_plan.host(i))))
            .collect();
        let mut links = Vec::new();
        for other in plan.linked_sites(site) {
            let other_plan = &plan.sites[other];
            let name = SiteName::parse_field("links", &other_plan.name).unwrap_or_else(|e| panic!("{e}"));
            links.push((name, format!("{}:{PEER_PORT}", other_plan.host(node % other_plan.nodes))));
        }
        let raft = RaftTiming {
            snapshot_every_logs: 300,
            logs_kept_after_snapshot: 50,
            write_timeout_ms: 5_000,
            ..RaftTiming::default()
        };
        NodeConfig {
            node_id: NodeId(node as u64 + 1),
            tokens: TokenSettings::defaults_for(&trust_domain, &site_name),
            site: site_name,
            trust_domain,
            data_dir: format!("sim/{}", site_plan.host(node)).into(),
            listen: SocketAddr::from(([0, 0, 0, 0], PUBLIC_PORT)),
            peer_listen: SocketAddr::from(([0, 0, 0, 0], PEER_PORT)),
            site_peers,
            links,
            raft,
            audit_retention_secs: 0,
            // turmoil has no TLS; TLS is tested with real processes (tests/tls.rs).
            security: idmesh_node::Security::Plaintext,
            kek: None,
        }
    }

    /// The software of a node host: starts the node on what its disk holds and keeps it
    /// running until the host crashes.
    pub async fn run_node(self: Arc<Self>, site: usize, node: usize) -> turmoil::Result {
        let host_name = self.plan.sites[site].host(node);
        let boot = {
            let mut boots = lock(&self.boots);
            let count = boots.entry(host_name.clone()).or_insert(0);
            *count += 1;
            *count
        };
        let store = lock(&self.stores).get(&host_name).cloned().unwrap_or_default();
        let store: Arc<dyn idmesh_store::Store> = if self.bugs.ack_before_flush {
            Arc::new(crate::bugs::LyingFlush {
                disk: store,
                last_real_ms: std::sync::atomic::AtomicU64::new(0),
            })
        } else {
            Arc::new(store)
        };
        let entropy = SimRng::new(self.plan.seed, &format!("entropy/{host_name}/{boot}"));
        let host = Host {
            clock: Arc::new(SimClock(self.clocks.get(&host_name).cloned().unwrap_or_default())),
            entropy: Arc::new(SimEntropy(Mutex::new(entropy))),
            transport: Arc::new(SimTransport),
        };
        match Node::start_on_host(self.node_config(site, node), store, host).await {
            Ok(running) => {
                lock(&self.nodes).insert(host_name, running.node.clone());
                std::future::pending::<()>().await;
                drop(running);
                Ok(())
            }
            Err(e) => {
                lock(&self.boot_errors).push(format!("{host_name} (boot {boot}): {e}"));
                Err(e.into())
            }
        }
    }
}
