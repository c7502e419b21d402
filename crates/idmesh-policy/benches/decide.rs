//! Embedded policy decisions per second on one core, and their latency, with 10, 100 and 1,000
//! policies. Two layouts: policies spread over 50 application actions (the book evaluates only
//! those of the asked action) and every policy on the one action asked: the worst case, which is
//! also what Cedar costs without the index (every policy is evaluated).
//!
//! Run: `cargo bench -p idmesh-policy --bench decide`. `IDMESH_BENCH_SECS` sets the seconds
//! measured per case (default 3).
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use idmesh_policy::{DecisionRequest, PolicyBook, Principal, RemoteSite, Resource, StoredPolicy};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

const ACTIONS: usize = 50;

fn policies(count: usize, spread: bool) -> (Vec<StoredPolicy>, BTreeSet<String>) {
    let actions: BTreeSet<String> = (0..ACTIONS).map(|a| format!("app{a}:act")).collect();
    let list = (0..count)
        .map(|i| {
            let action = if spread { format!("app{}:act", i % ACTIONS) } else { "app0:act".to_owned() };
            let text = if i % 5 == 0 {
                format!(
                    "forbid (principal, action == Action::\"{action}\", resource) when {{ context.sync_age_secs > {} && context.scopes.contains(\"s{i}\") }};",
                    3600 + i
                )
            } else {
                format!(
                    "permit (principal is Agent, action == Action::\"{action}\", resource) when {{ principal.hasTag(\"team\") && principal.getTag(\"team\") == \"t{}\" && context.scopes.contains(\"s{}\") && resource.hasTag(\"owner\") }};",
                    i % 7,
                    i % 11
                )
            };
            StoredPolicy { id: format!("p{i}"), text }
        })
        .collect();
    (list, actions)
}

fn request() -> DecisionRequest {
    DecisionRequest {
        principal: Principal::Agent {
            id: "spiffe://acme.example/agents/bot".into(),
            owner: "ops".into(),
            labels: BTreeMap::from([("team".to_owned(), "t3".to_owned())]),
        },
        action: "app0:act".into(),
        resource: Resource::App {
            id: "accounts/42".into(),
            attributes: BTreeMap::from([("owner".to_owned(), "ops".to_owned())]),
        },
        site: "port".into(),
        node: 1,
        now_secs: 1_800_000_000,
        sync_age_secs: 12,
        partitioned: false,
        scopes: vec!["s3".into(), "s5".into()],
        audiences: vec!["payments-api".into()],
        actors: vec![],
        on_behalf_of: None,
        remote_sites: vec![RemoteSite { site: "cloud".into(), sync_age_secs: Some(30) }],
    }
}

fn measure(secs: f64, book: &PolicyBook, request: &DecisionRequest) -> (f64, u128, u128, bool) {
    let mut samples = Vec::new();
    let started = Instant::now();
    let mut allowed = false;
    while started.elapsed().as_secs_f64() < secs {
        let t = Instant::now();
        allowed = book.decide(request).unwrap().allowed;
        samples.push(t.elapsed().as_nanos());
    }
    let rate = samples.len() as f64 / started.elapsed().as_secs_f64();
    samples.sort_unstable();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    (rate, pct(0.50), pct(0.99), allowed)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let secs: f64 = std::env::var("IDMESH_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let request = request();
    println!("| policies | layout | decisions/s (1 core) | p50 µs | p99 µs | allowed |");
    println!("|---|---|---|---|---|---|");
    for count in [10, 100, 1000] {
        for (spread, layout) in [(true, "over 50 actions"), (false, "all on the asked action")] {
            let (list, actions) = policies(count, spread);
            let book = PolicyBook::compile(&list, &actions).unwrap();
            assert!(book.excluded().is_empty());
            let (rate, p50, p99, allowed) = measure(secs, &book, &request);
            println!(
                "| {count} | {layout} | {rate:.0} | {:.1} | {:.1} | {allowed} |",
                p50 as f64 / 1000.0,
                p99 as f64 / 1000.0
            );
        }
    }
}
