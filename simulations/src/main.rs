//! `idmesh-simulations`: run one seed (`--seed N`) or a batch (`--seeds N [--first S]`).
//!
//! A batch runs every seed in a child process of its own (`--jobs` at a time), so a seed whose
//! run panics or aborts is reported as a failure of that seed and the batch goes on.

use anyhow::{Context as _, Result};
use clap::Parser;
use idmesh_simulations::figures::summary;
use idmesh_simulations::plan::Shape;
use idmesh_simulations::{Bugs, Options, run};
use std::io::Write as _;
use std::process::Command;

#[derive(Parser, Debug, Clone)]
#[command(about = "Deterministic simulation of an idmesh mesh: faults from a seed, invariants on every run")]
struct Args {
    /// Run exactly this seed (and print its trace with --trace).
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run this many seeds, starting at --first, each in a child process.
    #[arg(long)]
    seeds: Option<u64>,
    /// The first seed of a batch.
    #[arg(long, default_value_t = 1)]
    first: u64,
    /// Child processes at a time in a batch (default: the number of cores).
    #[arg(long)]
    jobs: Option<usize>,
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
    /// Print the result as one JSON line (used by batches).
    #[arg(long, hide = true)]
    json: bool,
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
    if !idmesh_simulations::run::reproducible() {
        eprintln!(
            "warning: built without --cfg tokio_unstable (a RUSTFLAGS variable replaces .cargo/config.toml): tokio's internal choices are not seeded and a seed will not replay exactly"
        );
    }
    let options =
        Options { shape: Shape { chaos_ms: args.chaos_secs * 1000, fault_count: args.faults }, bugs };
    match args.seeds {
        Some(count) => batch(&args, count),
        None => single(&args, args.seed.unwrap_or(args.first), options),
    }
}

fn single(args: &Args, seed: u64, options: Options) -> Result<()> {
    let report = run(seed, options);
    let mut out = std::io::stdout().lock();
    if args.trace {
        for line in &report.trace {
            writeln!(out, "{line}")?;
        }
    }
    if args.json {
        writeln!(out, "RESULT {}", report.to_json())?;
    } else {
        writeln!(out, "{}", report.summary_line())?;
        for violation in &report.violations {
            writeln!(out, "  {violation}")?;
        }
        if !report.violations.is_empty() {
            writeln!(out, "reproduce: {}", reproduce(args, seed))?;
        }
    }
    out.flush()?;
    if !report.violations.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

fn reproduce(args: &Args, seed: u64) -> String {
    let bug = args.bug.as_deref().map(|b| format!(" --bug {b}")).unwrap_or_default();
    format!(
        "cargo run --release -p idmesh-simulations -- --seed {seed} --chaos-secs {} --faults {}{bug} --trace",
        args.chaos_secs, args.faults
    )
}

/// What a child reported (or how it died).
fn run_child(args: &Args, seed: u64) -> Result<serde_json::Value> {
    let exe = std::env::current_exe().context("cannot find this program to run a seed")?;
    let mut command = Command::new(exe);
    command.args(["--seed", &seed.to_string(), "--chaos-secs", &args.chaos_secs.to_string()]);
    command.args(["--faults", &args.faults.to_string(), "--json"]);
    if let Some(bug) = &args.bug {
        command.args(["--bug", bug]);
    }
    let output = command.output().context("cannot start a seed's process")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if let Some(line) = stdout.lines().find_map(|l| l.strip_prefix("RESULT ")) {
        return serde_json::from_str(line).context("a seed's result does not parse");
    }
    // The run died before reporting: most likely a panic, which the default hook printed.
    let stderr = String::from_utf8_lossy(&output.stderr);
    let panic =
        stderr.lines().skip_while(|l| !l.contains("panicked at")).take(2).collect::<Vec<_>>().join(" ");
    let detail =
        if panic.is_empty() { format!("the run ended with {} and no result", output.status) } else { panic };
    Ok(serde_json::json!({"seed": seed, "violations": [format!("[no_panic] {detail}")], "figures": {}}))
}

fn batch(args: &Args, count: u64) -> Result<()> {
    let seeds: Vec<u64> = (args.first..args.first + count).collect();
    let jobs =
        args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    let (sender, receiver) = std::sync::mpsc::channel();
    let queue = std::sync::Arc::new(std::sync::Mutex::new(seeds.clone().into_iter()));
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            let (queue, sender) = (queue.clone(), sender.clone());
            scope.spawn(move || {
                loop {
                    let next = queue.lock().map(|mut q| q.next()).unwrap_or(None);
                    let Some(seed) = next else { break };
                    let _ = sender.send((seed, run_child(args, seed)));
                }
            });
        }
        drop(sender);
    });
    let mut results: Vec<(u64, Result<serde_json::Value>)> = receiver.into_iter().collect();
    results.sort_by_key(|(seed, _)| *seed);

    let mut out = std::io::stdout().lock();
    let mut failed = Vec::new();
    let (mut convergence, mut revocation, mut partitioned, mut wall) = (vec![], vec![], vec![], vec![]);
    for (seed, result) in &results {
        let value = match result {
            Ok(value) => value,
            Err(e) => {
                writeln!(out, "seed {seed}: FAILED to run: {e:#}")?;
                failed.push(*seed);
                continue;
            }
        };
        let violations: Vec<String> = value["violations"]
            .as_array()
            .map(|v| v.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        writeln!(out, "{}", value["line"].as_str().unwrap_or(&format!("seed {seed}: FAILED")))?;
        for violation in &violations {
            writeln!(out, "  {violation}")?;
        }
        if !violations.is_empty() {
            failed.push(*seed);
        }
        let figures = &value["figures"];
        convergence.extend(figures["heal_to_convergence_ms"].as_u64());
        revocation.extend(figures["revocation_after_heal_ms"].as_u64());
        partitioned.extend(figures["tokens_while_partitioned"].as_u64());
        wall.extend(figures["wall_ms"].as_u64());
    }
    writeln!(out, "{}", summary("heal → convergence", &convergence, " ms"))?;
    writeln!(out, "{}", summary("revocation applied everywhere after heal", &revocation, " ms"))?;
    writeln!(out, "{}", summary("tokens issued while partitioned", &partitioned, ""))?;
    writeln!(out, "{}", summary("wall time per run", &wall, " ms"))?;
    if failed.is_empty() {
        writeln!(out, "all {} seeds passed", seeds.len())?;
        return Ok(());
    }
    writeln!(out, "{} of {} seeds failed: {failed:?}", failed.len(), seeds.len())?;
    for seed in &failed {
        writeln!(out, "reproduce: {}", reproduce(args, *seed))?;
    }
    out.flush()?;
    std::process::exit(1);
}
