//! What the benchmark measured, how it is summarized, and how it is printed.

use super::System;
use anyhow::Context as _;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The benchmark's settings, from the environment (see the benchmark's doc).
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub secs: f64,
    pub warmup_secs: f64,
    pub agents: u64,
    #[serde(skip)]
    pub dir: Option<PathBuf>,
    /// Keep the data dirs and the servers' logs instead of deleting them.
    #[serde(skip)]
    pub keep: bool,
    /// Where the JSON report goes.
    #[serde(skip)]
    pub out: PathBuf,
}

impl Settings {
    pub fn from_env() -> anyhow::Result<Settings> {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
            match std::env::var(name) {
                Ok(text) => {
                    text.trim().parse().ok().with_context(|| format!("{name}={text:?} is not a valid number"))
                }
                Err(_) => Ok(default),
            }
        }
        let settings = Settings {
            secs: var("IDMESH_BENCH_SECS", 10.0)?,
            warmup_secs: var("IDMESH_BENCH_WARMUP", 2.0)?,
            agents: var("IDMESH_BENCH_AGENTS", 100_000)?,
            dir: std::env::var_os("IDMESH_BENCH_DIR").map(PathBuf::from),
            keep: var("IDMESH_BENCH_KEEP", 0_u8)? != 0,
            out: std::env::var_os("IDMESH_BENCH_OUT").map_or_else(default_out, PathBuf::from),
        };
        anyhow::ensure!(settings.secs > 0.0 && settings.warmup_secs >= 0.0, "durations must be positive");
        Ok(settings)
    }
}

/// The commit of the work tree, `-dirty` if it has changes (sources may change while a long
/// benchmark runs: this is read when it starts).
pub fn commit() -> String {
    let out = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=12"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    match out {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        _ => "unknown".to_owned(),
    }
}

/// `target/bench-registry-writes.json` (of `CARGO_TARGET_DIR` if set).
fn default_out() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"), PathBuf::from);
    target.canonicalize().unwrap_or(target).join("bench-registry-writes.json")
}

/// Where a run's clients connect: all to the leader, or spread over every member (a follower
/// forwards writes to its leader).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Leader,
    All,
}

/// One write: when it started (from the run's start), how long it took, and its error.
#[derive(Debug)]
pub struct Outcome {
    pub at: Duration,
    pub latency: Duration,
    pub error: Option<tonic::Status>,
}

/// The figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunStats {
    pub system: &'static str,
    pub nodes: usize,
    pub target: Target,
    pub clients: usize,
    pub secs: f64,
    pub ok: u64,
    /// Failed writes in the measured window; every one is counted here.
    pub errors: u64,
    pub warmup_errors: u64,
    pub writes_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Successful writes completed in the measured window's slowest whole second.
    pub slowest_second: Option<u64>,
    /// Error messages (code: message, truncated) and how many times each was seen.
    pub errors_by_kind: BTreeMap<String, u64>,
}

/// Summarizes the outcomes that started within `window` (all of them if `None`).
pub fn summarize(
    (system, nodes, target, clients): (System, usize, Target, usize),
    outcomes: &[Outcome],
    window: Option<(Duration, Duration)>,
    secs: f64,
) -> RunStats {
    let inside = |o: &&Outcome| window.is_none_or(|(from, to)| o.at >= from && o.at < to);
    let mut latencies: Vec<Duration> =
        outcomes.iter().filter(inside).filter(|o| o.error.is_none()).map(|o| o.latency).collect();
    latencies.sort_unstable();
    let pct = |q: f64| {
        let rank = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len().max(1));
        latencies.get(rank - 1).map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    let mut errors_by_kind = BTreeMap::new();
    for o in outcomes.iter().filter(inside) {
        if let Some(e) = &o.error {
            let kind = format!("{:?}: {}", e.code(), super::truncate(e.message(), 160));
            let key = if errors_by_kind.len() < 10 || errors_by_kind.contains_key(&kind) {
                kind
            } else {
                "(other)".into()
            };
            *errors_by_kind.entry(key).or_insert(0) += 1;
        }
    }
    let slowest_second = window.and_then(|(from, to)| {
        let seconds = (to - from).as_secs() as usize;
        let mut per_second = vec![0_u64; seconds];
        for o in outcomes.iter().filter(|o| o.error.is_none()) {
            let done = o.at + o.latency;
            if done >= from && done < to {
                let s = (done - from).as_secs() as usize;
                if let Some(n) = per_second.get_mut(s) {
                    *n += 1;
                }
            }
        }
        per_second.into_iter().min()
    });
    let warmup_errors = match window {
        Some((from, _)) => outcomes.iter().filter(|o| o.error.is_some() && o.at < from).count() as u64,
        None => 0,
    };
    RunStats {
        system: system.name(),
        nodes,
        target,
        clients,
        secs,
        ok: latencies.len() as u64,
        errors: errors_by_kind.values().sum(),
        warmup_errors,
        writes_per_s: latencies.len() as f64 / secs,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        slowest_second,
        errors_by_kind,
    }
}

/// One member's memory and disk after a load, and before it.
#[derive(Debug, Clone, Serialize)]
pub struct Footprint {
    pub member: u64,
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
    pub data_bytes: u64,
    pub data_allocated_bytes: u64,
    pub empty_rss_kib: u64,
    pub empty_data_bytes: u64,
    /// idmesh only: the node's agent count after the load.
    pub agent_count: Option<u64>,
    /// idmesh only: snapshots the node built during the load (its log says so).
    pub snapshots_built: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadStats {
    pub system: &'static str,
    pub items: u64,
    pub secs: f64,
    /// Seconds the other members took, after the last write, to apply everything.
    pub catch_up_secs: f64,
    pub run: RunStats,
    /// (seconds since the start, writes done, writes/s over the last interval).
    pub progress: Vec<(f64, u64, f64)>,
    pub footprint: Vec<Footprint>,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub settings: Option<Settings>,
    /// The commit measured, and whether the work tree had changes (`git describe`).
    pub commit: String,
    pub cores: usize,
    /// At the start and at the end.
    pub fsync_per_s: Vec<f64>,
    /// The 1-minute load average, at the start and at the end.
    pub load_average: Vec<String>,
    pub runs: Vec<RunStats>,
    pub loads: Vec<LoadStats>,
    pub etcd: String,
    /// Things worth a look: processes that died, warnings and errors in the servers' logs, leader
    /// changes during a run.
    pub oddities: Vec<String>,
    pub failures: Vec<String>,
}

fn header() -> String {
    format!(
        "{:<7} {:>5} {:<6} {:>7} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7}",
        "system",
        "nodes",
        "target",
        "clients",
        "writes/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "worst 1s",
        "errors"
    )
}

pub fn row(s: &RunStats) -> String {
    let target = match s.target {
        Target::Leader => "leader",
        Target::All => "all",
    };
    let worst = s.slowest_second.map_or("-".to_owned(), |n| n.to_string());
    format!(
        "{:<7} {:>5} {:<6} {:>7} {:>9.0} {:>8.2} {:>8.2} {:>8.1} {:>8} {:>7}",
        s.system, s.nodes, target, s.clients, s.writes_per_s, s.p50_ms, s.p99_ms, s.max_ms, worst, s.errors
    )
}

pub fn print_report(report: &Report) {
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!("\n==== registry_writes report ====");
    let fsync: Vec<String> = report.fsync_per_s.iter().map(|r| format!("{r:.0}")).collect();
    println!(
        "commit {}; disk fsync rate (start, end): {} /s; load average (start, end): {}; cores: {}; etcd: {}",
        report.commit,
        fsync.join(", "),
        report.load_average.join(", "),
        report.cores,
        report.etcd
    );
    println!("\n{}", header());
    for run in &report.runs {
        println!("{}", row(run));
    }
    let etcd_runs: Vec<&RunStats> = report.runs.iter().filter(|r| r.system == "etcd").collect();
    if !etcd_runs.is_empty() {
        println!(
            "\nidmesh / etcd (3 members):  {:<6} {:>7} {:>9} {:>8}",
            "target", "clients", "writes/s", "p99 ms"
        );
        for idm in report.runs.iter().filter(|r| r.system == "idmesh" && r.nodes == 3) {
            if let Some(e) = etcd_runs.iter().find(|e| e.target == idm.target && e.clients == idm.clients) {
                let ratio = |a: f64, b: f64| if b > 0.0 { format!("{:.2}", a / b) } else { "-".into() };
                let target = if idm.target == Target::Leader { "leader" } else { "all" };
                println!(
                    "{:<27} {target:<6} {:>7} {:>9} {:>8}",
                    "",
                    idm.clients,
                    ratio(idm.writes_per_s, e.writes_per_s),
                    ratio(idm.p99_ms, e.p99_ms)
                );
            }
        }
    }
    for load in &report.loads {
        println!(
            "\n{} with {} items: written in {:.1} s ({:.0}/s, p99 {:.1} ms, max {:.0} ms, {} errors); followers caught up {:.1} s later",
            load.system,
            load.items,
            load.secs,
            load.run.writes_per_s,
            load.run.p99_ms,
            load.run.max_ms,
            load.run.errors,
            load.catch_up_secs
        );
        println!(
            "  member  RSS MiB (empty)   peak MiB   data MiB (empty)   allocated MiB   agents  snapshots"
        );
        for f in &load.footprint {
            println!(
                "  {:>6}  {:>7.1} ({:>5.1})   {:>8.1}   {:>8.1} ({:>5.2})   {:>13.1}   {:>6}  {:>9}",
                f.member,
                mib(f.rss_kib),
                mib(f.empty_rss_kib),
                mib(f.peak_rss_kib),
                f.data_bytes as f64 / 1048576.0,
                f.empty_data_bytes as f64 / 1048576.0,
                f.data_allocated_bytes as f64 / 1048576.0,
                f.agent_count.map_or("-".to_owned(), |n| n.to_string()),
                f.snapshots_built.map_or("-".to_owned(), |n| n.to_string())
            );
        }
    }
    if !report.oddities.is_empty() {
        println!("\noddities:");
        for o in &report.oddities {
            println!("  - {o}");
        }
    }
}
