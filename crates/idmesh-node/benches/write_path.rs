//! The write path of one node without the network: a single-node site on an in-memory store,
//! `Node::write` called by concurrent tasks (evaluation, the CRDT change, Raft, apply,
//! materialization). `cargo bench -p idmesh-node --bench write_path`; `IDMESH_BENCH_SECS`
//! (default 5) and `IDMESH_BENCH_TASKS` (default 16).
//!
//! With `IDMESH_BENCH_AGENTS=N` it instead registers N agents on a sled store in a temporary
//! directory (as a real node keeps them) and reports the process's resident memory and the
//! store's size on disk, e.g. N = 1,000,000 for the memory goal of a node with a million agents.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use idmesh_node::{Node, NodeConfig};
use idmesh_state::{Op, RegisterAgent};
use idmesh_store::MemStore;
use idmesh_types::{SiteName, TrustDomain};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let secs: f64 = std::env::var("IDMESH_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let tasks: usize = std::env::var("IDMESH_BENCH_TASKS").ok().and_then(|s| s.parse().ok()).unwrap_or(16);
    let agents: Option<u64> = std::env::var("IDMESH_BENCH_AGENTS").ok().and_then(|s| s.parse().ok());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async move {
        let trust_domain = TrustDomain::parse_field("td", "bench.example").unwrap();
        let site = SiteName::parse_field("site", "bench").unwrap();
        let peer = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let config = NodeConfig::single_node(
            trust_domain.clone(),
            site,
            "mem".into(),
            "127.0.0.1:0".parse().unwrap(),
            peer,
        );
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn idmesh_store::Store> = match agents {
            Some(_) => Arc::new(
                idmesh_store::SledStore::open(dir.path().join("store"), idmesh_store::SledOptions::default())
                    .unwrap(),
            ),
            None => Arc::new(MemStore::new()),
        };
        let running = Node::start_on(config, store.clone()).await.unwrap();
        while running.node.current_leader().is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let done = Arc::new(AtomicU64::new(0));
        let deadline =
            Instant::now() + Duration::from_secs_f64(if agents.is_some() { 86_400.0 } else { secs });
        let quota = agents.unwrap_or(u64::MAX);
        let started = Instant::now();
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let (node, done, trust_domain) = (running.node.clone(), done.clone(), trust_domain.clone());
                tokio::spawn(async move {
                    let mut i = 0u64;
                    while Instant::now() < deadline && done.fetch_add(1, Ordering::Relaxed) < quota {
                        let id = format!("spiffe://{trust_domain}/agents/t{t}-{i}").parse().unwrap();
                        let op = Op::RegisterAgent(RegisterAgent {
                            id,
                            owner: "bench".into(),
                            labels: BTreeMap::from([("env".into(), "prod".into())]),
                            credentials: vec![],
                        });
                        node.write(op).await.unwrap();
                        i += 1;
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
        let n = done.load(Ordering::Relaxed).min(quota);
        let elapsed = started.elapsed().as_secs_f64();
        println!(
            "write_path: {n} registrations in {elapsed:.1} s by {tasks} tasks: {:.0}/s",
            n as f64 / elapsed
        );
        if agents.is_some() {
            store.flush().unwrap();
            let disk = store.size_on_disk().unwrap();
            println!(
                "write_path: {} agents: RSS {:.0} MiB, store on disk {:.0} MiB (sled, page cache 128 MiB)",
                running.node.shared().read().state.registry.len(),
                rss_bytes() as f64 / 1_048_576.0,
                disk as f64 / 1_048_576.0
            );
        }
        running.shutdown().await;
    });
}

/// Resident set size of this process, from /proc (0 where unavailable).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
