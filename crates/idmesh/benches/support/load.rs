//! A closed-loop load generator over gRPC: `clients` tasks, each with its own connection, send
//! one request after another for a fixed time; the report holds the rate, latency percentiles,
//! errors and the node's CPU use over the run.

#![allow(dead_code)] // not every benchmark that includes `support` generates load

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// One request: given a connection and the request's number, its outcome.
pub type Op =
    Arc<dyn Fn(Channel, usize) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// What one run measured.
#[derive(Debug, Clone)]
pub struct LoadRun {
    pub clients: usize,
    pub ops_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: usize,
    pub first_error: Option<String>,
    /// CPU cores the node process used on average.
    pub node_cores: f64,
}

impl LoadRun {
    /// Operations per second per core the node used.
    pub fn per_core(&self) -> f64 {
        if self.node_cores > 0.0 { self.ops_per_s / self.node_cores } else { 0.0 }
    }
}

/// Operations per second of `op` on this thread, over about `secs`.
pub fn rate(secs: f64, mut op: impl FnMut(u64)) -> f64 {
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed().as_secs_f64() < secs {
        for _ in 0..100 {
            op(n);
            n += 1;
        }
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// CPU seconds (user + system) used so far by process `pid`.
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of /proc/pid/stat (utime, stime), counted after the command name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Runs `op` from `clients` connections to `addr` for `secs` (or until `limit` requests were
/// sent), measuring node `pid`'s CPU.
pub async fn load(addr: SocketAddr, pid: u32, clients: usize, secs: f64, limit: usize, op: Op) -> LoadRun {
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let cpu_before = cpu_secs(pid);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (next, op) = (next.clone(), op.clone());
        let channel = super::connect(addr).await.expect("connect");
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let (mut errors, mut first_error) = (0, None);
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= limit {
                    break;
                }
                let t = Instant::now();
                match op(channel.clone(), i).await {
                    Ok(()) => latencies.push(t.elapsed()),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (latencies, errors, first_error)
        }));
    }
    let mut latencies = Vec::new();
    let (mut errors, mut first_error) = (0, None);
    for task in tasks {
        let (l, e, f) = task.await.expect("client task");
        latencies.extend(l);
        errors += e;
        first_error = first_error.or(f);
    }
    let wall = started.elapsed().as_secs_f64();
    let node_cores = (cpu_secs(pid) - cpu_before) / wall;
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    if next.load(Ordering::Relaxed) >= limit {
        eprintln!("warning: ran out of prepared requests at {clients} clients; the rate is a lower bound");
    }
    LoadRun {
        clients,
        ops_per_s: latencies.len() as f64 / wall,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        errors,
        first_error,
        node_cores,
    }
}
