//! `idmesh-simulations`: run one seed (`--seed N`) or a batch (`--seeds N [--first S]`).

use anyhow::Result;
use clap::Parser;
use idmesh_simulations::figures::summary;
use idmesh_simulations::plan::Shape;
use idmesh_simulations::{Bugs, Options, run};
use std::io::Write as _;

#[derive(Parser, Debug)]
#[command(about = "Deterministic simulation of an idmesh mesh: faults from a seed, invariants on every run")]
struct Args {
    /// Run exactly this seed (and print its trace with --trace).
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run this many seeds, starting at --first.
    #[arg(long)]
    seeds: Option<u64>,
    /// The first seed of a batch.
    #[arg(long, default_value_t = 1)]
    first: u64,
    /// Simulated seconds of chaos (workload and faults) before the heal.
    #[arg(long, default_value_t = 40)]
    chaos_secs: u64,
    /// Faults scheduled during the chaos.
    #[arg(long, default_value_t = 10)]
    faults: usize,
    /// Print the whole event trace of a single seed.
    #[arg(long)]
    trace: bool,
    /// Re-introduce a known bug (to see the simulation catch it): ack-before-flush.
    #[arg(long)]
    bug: Option<String>,
}

/// Log lines carry simulated time (the wall clock would differ between two runs of a seed).
struct SimTime;

impl tracing_subscriber::fmt::time::FormatTime for SimTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        write!(w, "{:>9}", idmesh_simulations::sim_host::sim_ms())
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_timer(SimTime)
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let bugs = match args.bug.as_deref() {
        None => Bugs::default(),
        Some("ack-before-flush") => Bugs { ack_before_flush: true },
        Some(other) => anyhow::bail!("unknown --bug {other:?}; known: ack-before-flush"),
    };
    let options =
        Options { shape: Shape { chaos_ms: args.chaos_secs * 1000, fault_count: args.faults }, bugs };
    let seeds: Vec<u64> = match (args.seed, args.seeds) {
        (Some(seed), _) => vec![seed],
        (None, Some(count)) => (args.first..args.first + count).collect(),
        (None, None) => vec![args.first],
    };
    let mut out = std::io::stdout().lock();
    let mut failed = Vec::new();
    let (mut convergence, mut revocation, mut partitioned, mut wall) = (vec![], vec![], vec![], vec![]);
    for &seed in &seeds {
        let report = run(seed, options);
        if args.trace {
            for line in &report.trace {
                writeln!(out, "{line}")?;
            }
        }
        let f = &report.figures;
        writeln!(
            out,
            "seed {seed}: {} · trace {} · converged {} after heal · revocations everywhere {} after heal · {} tokens ({} while partitioned) · {} writes · {:.1} s",
            if report.violations.is_empty() { "ok" } else { "FAILED" },
            &report.trace_digest[..16],
            f.heal_to_convergence_ms.map_or("never".into(), |ms| format!("{ms} ms")),
            f.revocation_after_heal_ms.map_or("-".into(), |ms| format!("{ms} ms")),
            f.tokens_issued,
            f.tokens_while_partitioned,
            f.writes_acknowledged,
            f.wall.as_secs_f64(),
        )?;
        for violation in &report.violations {
            writeln!(out, "  {violation}")?;
        }
        if !report.violations.is_empty() {
            failed.push(seed);
        }
        convergence.extend(f.heal_to_convergence_ms);
        revocation.extend(f.revocation_after_heal_ms);
        partitioned.push(f.tokens_while_partitioned as u64);
        wall.push(u64::try_from(f.wall.as_millis()).unwrap_or(u64::MAX));
    }
    if seeds.len() > 1 {
        writeln!(out, "{}", summary("heal → convergence", &convergence, " ms"))?;
        writeln!(out, "{}", summary("revocation applied everywhere after heal", &revocation, " ms"))?;
        writeln!(out, "{}", summary("tokens issued while partitioned", &partitioned, ""))?;
        writeln!(out, "{}", summary("wall time per run", &wall, " ms"))?;
    }
    if !failed.is_empty() {
        writeln!(out, "{} of {} seeds failed: {failed:?}", failed.len(), seeds.len())?;
        for seed in &failed {
            let bug = args.bug.as_deref().map(|b| format!(" --bug {b}")).unwrap_or_default();
            writeln!(
                out,
                "reproduce: cargo run --release -p idmesh-simulations -- --seed {seed} --chaos-secs {} --faults {}{bug} --trace",
                args.chaos_secs, args.faults
            )?;
        }
        std::process::exit(1);
    }
    Ok(())
}
