//! Cost of the registry documents: recording N registrations as changes at one site, applying
//! all of them at another (what a partition heal or a bundle import does), the saved size, and
//! the process's RSS. `IDMESH_BENCH_AGENTS` sets N (default 100,000).
//!
//! Run: `cargo bench -p idmesh-state --bench crdt_shards`.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use ed25519_dalek::SigningKey;
use idmesh_state::crdt::{Actor, SHARD_COUNT, Shard, shard_of};
use idmesh_state::{Command, Op, PublicJwk, RegisterAgent, Registry};
use idmesh_types::{AgentId, TrustDomain, UnixMillis};
use std::collections::BTreeMap;
use std::time::Instant;

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n: usize = std::env::var("IDMESH_BENCH_AGENTS").ok().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let td = TrustDomain::parse_field("td", "acme.example").unwrap();
    let key = PublicJwk::of_signing_key(&SigningKey::from_bytes(&[1; 32]));
    let actor = Actor::from_bytes([7; 16]);
    let rss_start = rss_mib();

    let mut registry = Registry::new(td.clone());
    let mut shards: Vec<Shard> = (0..SHARD_COUNT).map(|_| Shard::new()).collect();
    let mut changes: Vec<(usize, Vec<u8>)> = Vec::with_capacity(n);
    let mut data_bytes = 0usize;
    let started = Instant::now();
    for i in 0..n {
        let id: AgentId = format!("spiffe://acme.example/agents/agent-{i:07}").parse().unwrap();
        let command = Command {
            at: UnixMillis(1_000_000 + i as u64),
            op: Op::RegisterAgent(RegisterAgent {
                id: id.clone(),
                owner: format!("team-{}", i % 50),
                labels: BTreeMap::from([
                    ("env".into(), "prod".into()),
                    ("tier".into(), format!("{}", i % 3)),
                ]),
                credentials: vec![key.clone()],
            }),
        };
        let agent = registry.apply(&command).unwrap();
        data_bytes += serde_json::to_vec(&agent).unwrap().len();
        let shard = usize::from(shard_of(id.name()).0);
        let change = shards[shard].record(&actor, command.at, None, &agent).unwrap().unwrap();
        changes.push((shard, change));
    }
    let record_secs = started.elapsed().as_secs_f64();
    let change_bytes: usize = changes.iter().map(|(_, c)| c.len()).sum();
    let rss_recorded = rss_mib();

    let started = Instant::now();
    let mut saved = 0usize;
    for shard in &mut shards {
        saved += shard.save().len();
    }
    let save_secs = started.elapsed().as_secs_f64();

    // The other side of a partition: apply every change, in batches per shard.
    let mut remote: Vec<Shard> = (0..SHARD_COUNT).map(|_| Shard::new()).collect();
    let mut by_shard: Vec<Vec<Vec<u8>>> = vec![Vec::new(); usize::from(SHARD_COUNT)];
    for (shard, change) in changes {
        by_shard[shard].push(change);
    }
    let started = Instant::now();
    let mut touched = 0usize;
    for (shard, batch) in remote.iter_mut().zip(&by_shard) {
        touched += shard.apply(batch).unwrap().len();
    }
    let apply_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut materialized = 0usize;
    for shard in &remote {
        for name in shard.names() {
            materialized += usize::from(shard.agent(&td, &name).is_some());
        }
    }
    let materialize_secs = started.elapsed().as_secs_f64();

    // One change at a time, as a site's state machine applies its own log (apply, then read
    // back the agents it touched), on a third replica.
    let mut one_by_one: Vec<Shard> = (0..SHARD_COUNT).map(|_| Shard::new()).collect();
    let sample = n.min(20_000);
    let mut order: Vec<(usize, &Vec<u8>)> = Vec::with_capacity(sample);
    for (shard, batch) in by_shard.iter().enumerate() {
        for change in batch {
            order.push((shard, change));
        }
    }
    order.sort_by_key(|(shard, change)| (change.len() % 7, *shard));
    let started = Instant::now();
    let mut apply_only = 0.0f64;
    for (shard, change) in order.iter().take(sample) {
        let t = Instant::now();
        let touched = one_by_one[*shard].apply(std::slice::from_ref(change)).unwrap();
        apply_only += t.elapsed().as_secs_f64();
        for name in touched {
            std::hint::black_box(one_by_one[*shard].agent(&td, &name));
        }
    }
    let single_secs = started.elapsed().as_secs_f64();

    println!("crdt_shards: {n} agents over {SHARD_COUNT} shards");
    println!("  record (evaluate + one change each): {:.2} s ({:.0}/s)", record_secs, n as f64 / record_secs);
    println!(
        "  change bytes {:.1} MiB for {:.1} MiB of agent JSON ({:.2}x)",
        change_bytes as f64 / 1048576.0,
        data_bytes as f64 / 1048576.0,
        change_bytes as f64 / data_bytes as f64
    );
    println!("  saved documents {:.1} MiB in {:.2} s", saved as f64 / 1048576.0, save_secs);
    println!(
        "  apply all changes at another site: {:.2} s ({:.0} changes/s), {touched} agents touched",
        apply_secs,
        n as f64 / apply_secs
    );
    println!("  materialize every agent there: {:.2} s ({materialized} agents)", materialize_secs);
    println!(
        "  one change at a time (apply + read back), first {sample}: {:.0} µs each ({:.0} µs of it applying + finding what changed)",
        single_secs * 1e6 / sample as f64,
        apply_only * 1e6 / sample as f64
    );
    println!(
        "  RSS {:.0} MiB at start, {:.0} MiB after recording (two copies of the registry + changes in memory), {:.0} MiB at the end",
        rss_start,
        rss_recorded,
        rss_mib()
    );
}
