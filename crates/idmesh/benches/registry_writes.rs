//! Durable write throughput and latency of an idmesh site (`RegisterAgent`), next to the limits
//! that explain them: the disk's raw fsync rate, a single-node site (no replication), and etcd
//! doing the same job when an `etcd` binary is on PATH. Then the memory and disk a site takes
//! for many agents.
//!
//! Run: `cargo bench -p idmesh --bench registry_writes` (the binary does nothing without
//! `--bench`, as under `cargo test --all-targets`). Settings, from the environment:
//! - `IDMESH_BENCH_SECS`: measured seconds per run (default 10), after `IDMESH_BENCH_WARMUP`
//!   seconds of warm-up (default 2);
//! - `IDMESH_BENCH_AGENTS`: agents (and etcd keys) loaded for the memory and disk figures
//!   (default 100000; 0 skips that part);
//! - `IDMESH_BENCH_DIR`: where the temporary data dirs go (default: the system temp dir);
//!   `IDMESH_BENCH_KEEP=1` keeps them, with the servers' logs;
//! - `IDMESH_BENCH_OUT`: the JSON report's path (default: `target/bench-registry-writes.json`).
//!
//! Every process runs on this machine, clients included: they share its cores. The report is
//! printed and written as JSON to `target/bench-registry-writes.json`.
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::unwrap_used, clippy::expect_used)]

mod support;

use anyhow::Context as _;
use idmesh_proto::v1::RegisterAgentRequest;
use idmesh_proto::v1::agent_registry_client::AgentRegistryClient;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::report::{
    Footprint, LoadStats, Outcome, Report, Settings, Target, print_report, row, summarize,
};
use support::{Cluster, System, etcd};
use tokio::sync::Notify;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(60);
/// Client counts of the throughput runs, each aimed at the leader; then one spread over all.
const CONCURRENCY: [usize; 3] = [1, 16, 64];
const LOAD_CLIENTS: usize = 64;
/// About the size of one registered agent's JSON; the value of each etcd Put.
const ETCD_VALUE_BYTES: usize = 400;

/// What every write carries besides its unique name.
#[derive(Debug)]
struct Payload {
    jwks: Vec<String>,
    value: Vec<u8>,
}

impl Payload {
    fn new() -> Payload {
        use base64::Engine as _;
        let jwks = (1..=64_u8)
            .map(|seed| {
                let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
                let x =
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes());
                format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{x}"}}"#)
            })
            .collect();
        Payload { jwks, value: vec![b'v'; ETCD_VALUE_BYTES] }
    }
}

/// One client's connection.
#[derive(Debug)]
enum Writer {
    Idmesh(AgentRegistryClient<Channel>),
    Etcd(etcd::Client),
}

impl Writer {
    async fn connect(system: System, addr: SocketAddr) -> anyhow::Result<Writer> {
        let channel: Channel = support::connect(addr).await?;
        Ok(match system {
            System::Idmesh => Writer::Idmesh(AgentRegistryClient::new(channel)),
            System::Etcd => Writer::Etcd(etcd::Client::new(channel)),
        })
    }

    /// One durable write of a new agent (or key) `name`.
    async fn write(
        &mut self,
        name: String,
        client: usize,
        seq: usize,
        payload: &Payload,
    ) -> Result<(), tonic::Status> {
        match self {
            Writer::Idmesh(api) => {
                let request = RegisterAgentRequest {
                    agent: name,
                    owner: "bench-team".into(),
                    labels: [("env", "bench".to_owned()), ("client", client.to_string())]
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect(),
                    credentials: vec![payload.jwks[seq % payload.jwks.len()].clone()],
                };
                api.register_agent(request).await.map(drop)
            }
            Writer::Etcd(kv) => kv.put(format!("/bench/{name}").into_bytes(), payload.value.clone()).await,
        }
    }
}

/// When the clients stop: at a deadline, or once `total` writes have been started.
#[derive(Debug, Clone)]
enum Until {
    Deadline(Instant),
    Count { started: Arc<AtomicU64>, total: u64 },
}

/// Writes done so far, for progress lines.
#[derive(Debug, Default)]
struct Counters {
    ok: AtomicU64,
    errors: AtomicU64,
}

/// Runs `clients` clients, each with its own channel, client `i` on `addrs[i % addrs.len()]`,
/// each writing new names one after the other until `until`. Returns every write's outcome.
async fn drive(
    system: System,
    addrs: &[SocketAddr],
    clients: usize,
    tag: &str,
    until: impl Fn(Instant) -> Until,
    counters: &Arc<Counters>,
) -> anyhow::Result<Vec<Outcome>> {
    let payload = Arc::new(Payload::new());
    let mut writers = Vec::new();
    for i in 0..clients {
        writers.push(Writer::connect(system, addrs[i % addrs.len()]).await?);
    }
    let start = Instant::now();
    let until = until(start);
    let mut tasks = Vec::new();
    for (client, mut writer) in writers.into_iter().enumerate() {
        let (payload, until, counters, tag) =
            (payload.clone(), until.clone(), counters.clone(), tag.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for seq in 0.. {
                let go = match &until {
                    Until::Deadline(deadline) => Instant::now() < *deadline,
                    Until::Count { started, total } => started.fetch_add(1, Ordering::Relaxed) < *total,
                };
                if !go {
                    break;
                }
                let began = Instant::now();
                let result = writer.write(format!("{tag}-c{client}-{seq}"), client, seq, &payload).await;
                let latency = began.elapsed();
                let failed = result.is_err();
                let counter = if failed { &counters.errors } else { &counters.ok };
                counter.fetch_add(1, Ordering::Relaxed);
                outcomes.push(Outcome { at: began - start, latency, error: result.err() });
                if failed {
                    // Not a hot loop against a server that refuses everything.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            outcomes
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.context("a client task panicked")?);
    }
    Ok(all)
}

#[tokio::main]
async fn main() -> ExitCode {
    // `cargo test --benches` (or `--all-targets`) runs this binary without `--bench`: it takes
    // minutes and needs the whole machine, so it only runs under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("registry_writes: skipped (a benchmark: cargo bench -p idmesh --bench registry_writes)");
        return ExitCode::SUCCESS;
    }
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("registry_writes: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let mut report = Report {
        settings: Some(settings.clone()),
        commit: support::report::commit(),
        cores: std::thread::available_parallelism().map_or(0, usize::from),
        ..Report::default()
    };
    let dir = match &settings.dir {
        Some(parent) => tempfile::Builder::new().prefix("idmesh-bench-").tempdir_in(parent),
        None => tempfile::Builder::new().prefix("idmesh-bench-").tempdir(),
    };
    let dir = dir.expect("cannot create the benchmark's temp dir");
    let root = dir.path();
    println!(
        "registry_writes: idmesh over {}; {} s per run after {} s warm-up, {} agents for the footprint; data in {}",
        support::transport_name(),
        settings.secs,
        settings.warmup_secs,
        settings.agents,
        root.display()
    );
    println!("commit {}; clients and servers share this machine's {} cores\n", report.commit, report.cores);

    measure_fsync(&mut report, root);
    let idmesh_runs: Vec<(Target, usize)> =
        CONCURRENCY.iter().map(|&c| (Target::Leader, c)).chain([(Target::All, LOAD_CLIENTS)]).collect();
    let phase = throughput(&mut report, root, &settings, System::Idmesh, 3, &idmesh_runs).await;
    record(&mut report, "idmesh, 3 nodes", phase);
    let phase = throughput(
        &mut report,
        root,
        &settings,
        System::Idmesh,
        1,
        &[(Target::Leader, 1), (Target::Leader, 64)],
    )
    .await;
    record(&mut report, "idmesh, 1 node", phase);
    let etcd = etcd::available();
    if etcd {
        report.etcd = "ran".into();
        let phase = throughput(&mut report, root, &settings, System::Etcd, 3, &idmesh_runs).await;
        record(&mut report, "etcd, 3 members", phase);
    } else {
        report.etcd = "skipped: no `etcd` on PATH (apt-get install etcd-server)".into();
        println!("etcd: {}", report.etcd);
    }
    if settings.agents > 0 {
        let phase = load(&mut report, root, &settings, System::Idmesh).await;
        record(&mut report, "idmesh footprint", phase);
        if etcd {
            let phase = load(&mut report, root, &settings, System::Etcd).await;
            record(&mut report, "etcd footprint", phase);
        }
    }
    measure_fsync(&mut report, root);

    print_report(&report);
    let path = &settings.out;
    let json = serde_json::to_string_pretty(&report).expect("the report serializes");
    match std::fs::write(path, json + "\n") {
        Ok(()) => println!("\nreport written to {}", path.display()),
        Err(e) => report.failures.push(format!("cannot write {}: {e}", path.display())),
    }
    if settings.keep {
        println!("data dirs and server logs kept in {}", dir.keep().display());
    }
    if report.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "\nregistry_writes: {} part(s) failed:\n{}",
            report.failures.len(),
            report.failures.join("\n")
        );
        ExitCode::FAILURE
    }
}

fn record(report: &mut Report, what: &str, result: anyhow::Result<()>) {
    if let Err(e) = result {
        eprintln!("{what}: FAILED: {e:#}");
        report.failures.push(format!("{what}: {e:#}"));
    }
}

fn measure_fsync(report: &mut Report, root: &Path) {
    match support::fsync_rate(root, 2.0) {
        Ok(rate) => {
            // Someone else's build or tests on the machine would show here.
            let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
            let load = load.split_whitespace().next().unwrap_or("?").to_owned();
            println!("disk: {rate:.0} fsyncs/s (append 4 KiB + fdatasync, 2 s); load average {load}\n");
            report.fsync_per_s.push(rate);
            report.load_average.push(load);
        }
        Err(e) => record(report, "fsync rate", Err(e)),
    }
}

async fn start(system: System, root: &Path, tag: &str, nodes: u64) -> anyhow::Result<(Cluster, usize)> {
    let cluster = match system {
        System::Idmesh => Cluster::start_idmesh(root, tag, nodes)?,
        System::Etcd => Cluster::start_etcd(root, tag, nodes)?,
    };
    let leader = leader(&cluster).await?;
    Ok((cluster, leader))
}

async fn leader(cluster: &Cluster) -> anyhow::Result<usize> {
    match cluster.system {
        System::Idmesh => cluster.idmesh_leader(WAIT).await,
        System::Etcd => cluster.etcd_leader(WAIT).await,
    }
}

/// Starts a cluster of `nodes` and does `runs` against it, one after the other.
async fn throughput(
    report: &mut Report,
    root: &Path,
    settings: &Settings,
    system: System,
    nodes: u64,
    runs: &[(Target, usize)],
) -> anyhow::Result<()> {
    let tag = format!("{}-{nodes}", system.name());
    let (mut cluster, mut leader_at) = start(system, root, &tag, nodes).await?;
    let (warmup, secs) =
        (Duration::from_secs_f64(settings.warmup_secs), Duration::from_secs_f64(settings.secs));
    for (i, &(target, clients)) in runs.iter().enumerate() {
        let addrs = match target {
            Target::Leader => vec![cluster.members[leader_at].public],
            Target::All => cluster.addrs(),
        };
        let counters = Arc::new(Counters::default());
        let until = |start: Instant| Until::Deadline(start + warmup + secs);
        let outcomes = drive(system, &addrs, clients, &format!("r{i}"), until, &counters).await?;
        let stats = summarize(
            (system, cluster.members.len(), target, clients),
            &outcomes,
            Some((warmup, warmup + secs)),
            settings.secs,
        );
        println!("{}", row(&stats));
        for (kind, n) in &stats.errors_by_kind {
            println!("    {n} × {kind}");
        }
        report.runs.push(stats);
        let now = leader(&cluster).await?;
        if now != leader_at {
            report.oddities.push(format!(
                "{tag}: leader changed from member {} to {} during the run with {clients} clients",
                cluster.members[leader_at].id, cluster.members[now].id
            ));
            leader_at = now;
        }
    }
    note_problems(report, &mut cluster, &tag);
    Ok(())
}

/// Loads `settings.agents` agents (or etcd keys) into a new 3-member cluster and measures what
/// each member then takes in memory and on disk.
async fn load(report: &mut Report, root: &Path, settings: &Settings, system: System) -> anyhow::Result<()> {
    let tag = format!("{}-load", system.name());
    let (mut cluster, leader_at) = start(system, root, &tag, 3).await?;
    let empty: Vec<((u64, u64), (u64, u64))> = cluster
        .members
        .iter()
        .map(|m| Ok((support::rss_kib(m.pid().context("not running")?)?, support::dir_size(&m.data_dir)?)))
        .collect::<anyhow::Result<_>>()?;
    println!(
        "\n{} footprint: writing {} items with {LOAD_CLIENTS} clients to the leader",
        system.name(),
        settings.agents
    );

    let counters = Arc::new(Counters::default());
    let done = Arc::new(Notify::new());
    let progress = tokio::spawn(progress_lines(counters.clone(), done.clone(), settings.agents));
    let started = Arc::new(AtomicU64::new(0));
    let total = settings.agents;
    let until = |_: Instant| Until::Count { started: started.clone(), total };
    let began = Instant::now();
    let outcomes =
        drive(system, &[cluster.members[leader_at].public], LOAD_CLIENTS, "load", until, &counters).await;
    let secs = began.elapsed().as_secs_f64();
    done.notify_one();
    let progress = progress.await.context("the progress task panicked")?;
    let outcomes = outcomes?;

    let caught = Instant::now();
    let statuses = match system {
        System::Idmesh => Some(cluster.idmesh_caught_up(leader_at, Duration::from_secs(300)).await?),
        System::Etcd => {
            cluster.etcd_caught_up(leader_at, Duration::from_secs(300)).await?;
            None
        }
    };
    let catch_up_secs = caught.elapsed().as_secs_f64();
    let run = summarize((system, 3, Target::Leader, LOAD_CLIENTS), &outcomes, None, secs);
    println!("{}", row(&run));
    for (kind, n) in &run.errors_by_kind {
        println!("    {n} × {kind}");
    }
    let mut footprint = Vec::new();
    for (i, (m, ((empty_rss, _), (empty_data, _)))) in cluster.members.iter().zip(empty).enumerate() {
        let (rss, peak) = support::rss_kib(m.pid().context("not running")?)?;
        let (data, allocated) = support::dir_size(&m.data_dir)?;
        let agent_count = statuses.as_ref().map(|s| s[i].agent_count);
        let snapshots_built = statuses.as_ref().map(|_| m.log_lines_with("snapshot taken"));
        footprint.push(Footprint {
            member: m.id,
            rss_kib: rss,
            peak_rss_kib: peak,
            data_bytes: data,
            data_allocated_bytes: allocated,
            empty_rss_kib: empty_rss,
            empty_data_bytes: empty_data,
            agent_count,
            snapshots_built,
        });
    }
    report.loads.push(LoadStats {
        system: system.name(),
        items: settings.agents,
        secs,
        catch_up_secs,
        run,
        progress,
        footprint,
    });
    note_problems(report, &mut cluster, &tag);
    Ok(())
}

/// Prints a line every 5 s until `done` is notified; returns the samples.
async fn progress_lines(counters: Arc<Counters>, done: Arc<Notify>, total: u64) -> Vec<(f64, u64, f64)> {
    let (start, mut samples, mut last) = (Instant::now(), Vec::new(), (0.0, 0));
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = done.notified() => return samples,
        }
        let now = start.elapsed().as_secs_f64();
        let (ok, errors) = (counters.ok.load(Ordering::Relaxed), counters.errors.load(Ordering::Relaxed));
        let rate = (ok + errors - last.1) as f64 / (now - last.0);
        println!(
            "  {now:>6.0} s: {}/{total} written ({rate:.0}/s over the last 5 s), {errors} errors",
            ok + errors
        );
        samples.push((now, ok + errors, rate));
        last = (now, ok + errors);
    }
}

/// Adds to the report what the cluster's processes and logs say went wrong.
fn note_problems(report: &mut Report, cluster: &mut Cluster, tag: &str) {
    report.oddities.extend(cluster.exited().into_iter().map(|e| format!("{tag}: {e}")));
    for (member, count, sample) in cluster.log_problems(8) {
        if count > 0 {
            report.oddities.push(format!(
                "{tag} member {member}: {count} warning/error log lines, e.g.:\n      {}",
                sample.join("\n      ")
            ));
        }
    }
}
