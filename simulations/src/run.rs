//! One run: build the world of a seed, drive it through boot, chaos, heal and quiet, then check
//! every invariant.

use crate::faults::{Faults, MAX_LATENCY_DEFAULT_MS};
use crate::figures::Figures;
use crate::invariants::{self, Violation};
use crate::observe::Observer;
use crate::plan::{Plan, Shape};
use crate::sim_host::EPOCH_MS;
use crate::world::{Bugs, World, lock};
use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, UNIX_EPOCH};

/// Simulated time per step.
pub const TICK_MS: u64 = 2;
/// Simulated time between two observations.
const OBSERVE_EVERY_MS: u64 = 100;
/// Simulated time between two convergence checks after the heal.
const CONVERGENCE_CHECK_EVERY_MS: u64 = 500;

/// How to run a seed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// The shape of the run.
    pub shape: Shape,
    /// Bugs to switch on.
    pub bugs: Bugs,
}

/// What a run found.
#[derive(Debug)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Broken invariants (empty: the run passed).
    pub violations: Vec<Violation>,
    /// The event trace.
    pub trace: Vec<String>,
    /// SHA-256 of the trace.
    pub trace_digest: String,
    /// Figures of the run.
    pub figures: Figures,
}

thread_local! {
    /// Panics on this thread since the run began (a run is one thread).
    static PANICS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Installs (once) a panic hook that records panics of simulation threads.
fn record_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|p| p.borrow_mut().push(info.to_string()));
            previous(info);
        }));
    });
}

/// Whether this build replays seeds exactly: tokio's internal random choices are seeded only
/// when it was compiled with `--cfg tokio_unstable` (see `.cargo/config.toml`).
pub fn reproducible() -> bool {
    cfg!(tokio_unstable)
}

impl Report {
    /// One human line: outcome, trace digest and figures.
    pub fn summary_line(&self) -> String {
        let f = &self.figures;
        format!(
            "seed {}: {} · trace {} · converged {} after heal · revocations everywhere {} after heal · {} tokens ({} while partitioned; {} of {} checks across sites active) · {} writes · {:.1} s",
            self.seed,
            if self.violations.is_empty() { "ok" } else { "FAILED" },
            &self.trace_digest[..16.min(self.trace_digest.len())],
            f.heal_to_convergence_ms.map_or("never".into(), |ms| format!("{ms} ms")),
            f.revocation_after_heal_ms.map_or("-".into(), |ms| format!("{ms} ms")),
            f.tokens_issued,
            f.tokens_while_partitioned,
            f.tokens_checked.1,
            f.tokens_checked.0,
            f.writes_acknowledged,
            f.wall.as_secs_f64(),
        )
    }

    /// The report as one JSON object (what a batch's child prints).
    pub fn to_json(&self) -> String {
        let f = &self.figures;
        serde_json::json!({
            "seed": self.seed,
            "line": self.summary_line(),
            "violations": self.violations.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "trace_digest": self.trace_digest,
            "figures": {
                "heal_to_convergence_ms": f.heal_to_convergence_ms,
                "revocation_after_heal_ms": f.revocation_after_heal_ms,
                "tokens_issued": f.tokens_issued,
                "tokens_while_partitioned": f.tokens_while_partitioned,
                "writes_acknowledged": f.writes_acknowledged,
                "wall_ms": u64::try_from(f.wall.as_millis()).unwrap_or(u64::MAX),
            },
        })
        .to_string()
    }
}

/// Simulated time the clients get to check every token after convergence.
const VERIFY_MAX_MS: u64 = 60_000;

/// Steps until every client has checked every token (or the time is up).
fn verify_tokens(sim: &mut turmoil::Sim<'_>, violations: &mut Vec<Violation>) {
    for _ in 0..VERIFY_MAX_MS / TICK_MS {
        match sim.step() {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => {
                violations.push(Violation::new("host_failed", e.to_string()));
                return;
            }
        }
    }
    violations.push(Violation::new("cross_site_tokens", "clients did not finish checking tokens in time"));
}

/// Runs `seed` and checks it.
pub fn run(seed: u64, options: Options) -> Report {
    record_panics();
    PANICS.with(|p| p.borrow_mut().clear());
    let started = Instant::now();
    let plan = Plan::from_seed(seed, options.shape);
    let timing = plan.timing;
    let world = Arc::new(World::new(plan, options.bugs));
    idmesh_raft::seed_raft_rng(seed);

    let mut builder = turmoil::Builder::new();
    builder
        .simulation_duration(Duration::from_millis(timing.heal_at_ms + timing.quiet_max_ms + 10_000))
        .tick_duration(Duration::from_millis(TICK_MS))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(MAX_LATENCY_DEFAULT_MS))
        .epoch(UNIX_EPOCH + Duration::from_millis(EPOCH_MS))
        .tcp_capacity(4096)
        .rng_seed(seed);
    let mut sim = builder.build();
    for (site, node, host) in world.plan.hosts() {
        let world = world.clone();
        sim.host(host.as_str(), move || world.clone().run_node(site, node));
    }
    for site in 0..world.plan.sites.len() {
        let name = format!("client-{}", world.plan.sites[site].name);
        sim.client(name.as_str(), crate::workload::run_client(world.clone(), site));
    }

    let mut faults = Faults::default();
    let mut observer = Observer::default();
    let mut pending = world.plan.faults.clone();
    let mut violations = Vec::new();
    let (mut healed, mut converged_at) = (false, None);
    let (mut next_observe, mut next_check) = (0, timing.heal_at_ms);
    loop {
        if let Err(e) = sim.step() {
            violations.push(Violation::new("host_failed", e.to_string()));
            break;
        }
        let now = u64::try_from(sim.elapsed().as_millis()).unwrap_or(u64::MAX);
        while let Some(entry) = pending.first_entry() {
            if *entry.key() > now {
                break;
            }
            for fault in entry.remove() {
                faults.apply(&mut sim, &world, &fault, now);
            }
        }
        if !healed && now >= timing.heal_at_ms {
            healed = true;
            world.writes_open.store(false, Ordering::SeqCst);
            faults.heal(&mut sim, &world, now);
        }
        if now >= next_observe {
            next_observe = now + OBSERVE_EVERY_MS;
            observer.observe(&world, now);
        }
        if healed && now >= next_check {
            next_check = now + CONVERGENCE_CHECK_EVERY_MS;
            if invariants::convergence::converged(&world) {
                converged_at = Some(now);
                world.trace(now, "converged");
                world.converged.store(true, Ordering::SeqCst);
                verify_tokens(&mut sim, &mut violations);
                break;
            }
            if now >= timing.heal_at_ms + timing.quiet_max_ms {
                break;
            }
        }
    }

    violations.append(&mut observer.violations);
    violations.extend(lock(&world.boot_errors).iter().map(|e| Violation::new("host_failed", e.clone())));
    violations.extend(
        PANICS.with(|p| p.borrow_mut().drain(..).map(|m| Violation::new("no_panic", m)).collect::<Vec<_>>()),
    );
    violations.extend(invariants::convergence::check(&world));
    violations.extend(invariants::acknowledged_writes::check(&world));
    violations.extend(invariants::revocation_wins::check_everywhere(&world));
    let audit_logs = invariants::audit_records::read_logs(&world);
    violations.extend(invariants::issuance_after_revocation::check(&audit_logs, &observer.revocations));
    violations.extend(invariants::audit_records::check(&world, &audit_logs));
    violations.extend(invariants::audit_records::check_replicas(&world, &audit_logs));
    violations.extend(invariants::raft_safety::check_logs(&world));
    violations.extend(invariants::bundles::check(&world));
    if converged_at.is_some() {
        violations.extend(invariants::cross_site_tokens::check(&world));
    }

    let figures = Figures::of_run(&world, &observer, converged_at, started.elapsed());
    for (host, hash) in invariants::convergence::hashes(&world) {
        world.trace(converged_at.unwrap_or(0), format!("final {host} {hash}"));
    }
    // Tear the simulation down before the world: node tasks hold clones of it.
    drop(sim);
    let trace = lock(&world.trace);
    Report { seed, violations, trace: trace.lines().to_vec(), trace_digest: trace.digest(), figures }
}
