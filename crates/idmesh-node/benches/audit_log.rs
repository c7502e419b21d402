//! The audit trail's costs, on sled in a temporary directory, each next to the limit measured in
//! the same run:
//!
//! 1. durable appends/s on one node at 1/16/64 concurrent writers (group commit), next to the
//!    disk's own fsync rate;
//! 2. token issuance on one node with its audit log on sled vs in memory (the cost of durable
//!    audit), next to raw Ed25519 signs and verifies;
//! 3. query latency over a log of `IDMESH_BENCH_AUDIT_RECORDS` records (default 1,000,000; the
//!    issue's figure is 10,000,000): a user's whole trace, an agent's first page, a time window;
//! 4. catch-up: a site whose node wrote `IDMESH_BENCH_CATCHUP_RECORDS` records (default
//!    200,000) while apart, and a node of another site that then links to it: records/s until
//!    it holds them all.
//!
//! `cargo bench -p idmesh-node --bench audit_log`; `IDMESH_BENCH_SECS` (default 3) per case;
//! `IDMESH_BENCH_ONLY=appends|issuance|queries|catch_up` runs one section;
//! `IDMESH_BENCH_AUDIT_DIR=DIR` keeps the query section's store in DIR and reuses it next time.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use ed25519_dalek::{Signer as _, SigningKey, Verifier as _};
use idmesh_audit::{AuthzDecision, Event, Filter, Record, RecordOrigin};
use idmesh_node::audit::keys::put_record;
use idmesh_node::tokens::TokenRequest;
use idmesh_node::{Node, NodeConfig, RunningNode};
use idmesh_state::{Op, PublicJwk, RegisterAgent};
use idmesh_store::{MemStore, SledOptions, SledStore, Store, WriteBatch};
use idmesh_types::{SiteName, TrustDomain, UnixMillis};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const TRUST_DOMAIN: &str = "bench.example";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn config(site: &str, dir: &Path) -> NodeConfig {
    let trust_domain = TrustDomain::parse_field("td", TRUST_DOMAIN).unwrap();
    let site = SiteName::parse_field("site", site).unwrap();
    let peer = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    NodeConfig::single_node(trust_domain, site, dir.to_owned(), "127.0.0.1:0".parse().unwrap(), peer)
}

async fn ready(running: RunningNode) -> RunningNode {
    let started = Instant::now();
    while running.node.signing_keys().is_empty() || running.node.current_leader().is_none() {
        assert!(started.elapsed() < Duration::from_secs(30), "node not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running
}

fn sled(dir: &Path) -> Arc<dyn Store> {
    Arc::new(SledStore::open(dir.join("store"), SledOptions::default()).unwrap())
}

/// fsync/s of a small file in `dir`: the ceiling of one writer waiting for each write.
fn fsync_rate(dir: &Path, secs: f64) -> f64 {
    let mut file = std::fs::File::create(dir.join("fsync-probe")).unwrap();
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed().as_secs_f64() < secs {
        file.write_all(&[0u8; 64]).unwrap();
        file.sync_data().unwrap();
        n += 1;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn decision(i: u64) -> Event {
    Event::Authorized(AuthzDecision {
        agent: Some(format!("spiffe://{TRUST_DOMAIN}/agents/a{}", i % 1000)),
        on_behalf_of: Some(format!("u{}", i % 10_000)),
        actors: vec![format!("spiffe://{TRUST_DOMAIN}/agents/a{}", i % 1000)],
        jti: Some(format!("jti-{i:016x}")),
        action: format!("app{}:read", i % 20),
        resource: format!("doc/{i}"),
        allowed: !i.is_multiple_of(7),
        determining_policies: vec!["p1".into()],
        reason: "permitted by p1".into(),
        policy_version: "pv-0011223344556677".into(),
    })
}

async fn appends(secs: f64) {
    let dir = tempfile::tempdir().unwrap();
    let fsyncs = fsync_rate(dir.path(), 1.0);
    let running = ready(Node::start_on(config("bench", dir.path()), sled(dir.path())).await.unwrap()).await;
    println!("\n## Durable audit appends on one node (sled, group commit)\n");
    println!("disk fsync rate (one writer, 64-byte writes): {fsyncs:.0}/s\n");
    println!("| writers | appends/s | appends per fsync-limited writer |");
    println!("|---|---|---|");
    for writers in [1u64, 16, 64] {
        let done = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let (node, done) = (running.node.clone(), done.clone());
                tokio::spawn(async move {
                    let mut i = w << 32;
                    while started.elapsed().as_secs_f64() < secs {
                        node.audit().append(decision(i)).await.unwrap();
                        done.fetch_add(1, Ordering::Relaxed);
                        i += 1;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
        println!("| {writers} | {rate:.0} | {:.1}× |", rate / fsyncs);
    }
    running.shutdown().await;
}

fn assertions(key: &SigningKey, count: usize) -> Vec<String> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let id = format!("spiffe://{TRUST_DOMAIN}/agents/bot");
    let kid = PublicJwk::of_signing_key(key).thumbprint();
    (0..count)
        .map(|n| {
            let claims = serde_json::json!({"iss": id, "sub": id, "aud": format!("https://{TRUST_DOMAIN}/sites/bench"), "iat": now, "exp": now + 300, "jti": format!("a-{n}")});
            idmesh_token::jws::sign(key, "JWT", &kid, &claims).unwrap()
        })
        .collect()
}

async fn issuance_rate(node: &Node, pending: Vec<String>, secs: f64, tasks: usize) -> f64 {
    let queue = Arc::new(std::sync::Mutex::new(pending));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (node, queue, done) = (node.clone(), queue.clone(), done.clone());
            tokio::spawn(async move {
                while started.elapsed().as_secs_f64() < secs {
                    let Some(assertion) = queue.lock().unwrap().pop() else { return };
                    let request = TokenRequest {
                        client_assertion: assertion,
                        audiences: vec!["api".into()],
                        ..Default::default()
                    };
                    node.issue_token(request).await.unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

async fn issuance(secs: f64) {
    let key = SigningKey::from_bytes(&[9; 32]);
    let started = Instant::now();
    let mut signs = 0u64;
    while started.elapsed().as_secs_f64() < 1.0 {
        std::hint::black_box(key.sign(b"a message of about the size of a token's signing input"));
        signs += 1;
    }
    let sign_rate = signs as f64 / started.elapsed().as_secs_f64();
    let signature = key.sign(b"m");
    let verifying = key.verifying_key();
    let started = Instant::now();
    let mut verifies = 0u64;
    while started.elapsed().as_secs_f64() < 1.0 {
        std::hint::black_box(verifying.verify(b"m", &signature).is_ok());
        verifies += 1;
    }
    let verify_rate = verifies as f64 / started.elapsed().as_secs_f64();
    let per_token = 1.0 / (1.0 / sign_rate + 1.0 / verify_rate);
    println!("\n## Token issuance with its audit record durable vs in memory (one node, 16 tasks)\n");
    println!(
        "raw Ed25519 on one core: {sign_rate:.0} signs/s, {verify_rate:.0} verifies/s; issuance ceiling (1 verify + 1 sign): {per_token:.0}/s per core\n"
    );
    println!("| audit log on | tokens/s |");
    println!("|---|---|");
    for on_disk in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let store = if on_disk { sled(dir.path()) } else { Arc::new(MemStore::new()) as Arc<dyn Store> };
        let running = ready(Node::start_on(config("bench", dir.path()), store).await.unwrap()).await;
        running
            .node
            .write(Op::RegisterAgent(RegisterAgent {
                id: format!("spiffe://{TRUST_DOMAIN}/agents/bot").parse().unwrap(),
                owner: "ops".into(),
                labels: BTreeMap::new(),
                credentials: vec![PublicJwk::of_signing_key(&key)],
            }))
            .await
            .unwrap();
        let pending = assertions(&key, (per_token * secs * 1.5) as usize + 1000);
        let rate = issuance_rate(&running.node, pending, secs, 16).await;
        println!(
            "| {} | {rate:.0} |",
            if on_disk { "sled (fsync, group commit)" } else { "memory (no fsync)" }
        );
        running.shutdown().await;
    }
}

/// Resident memory of this process, in MiB.
fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().split(' ').next()?.parse::<u64>().ok());
    kib.unwrap_or(0) / 1024
}

/// Writes `count` decisions spread over 9 nodes of 3 sites straight into `store` (chained, with
/// their indexes), `IDMESH_BENCH_LOAD_BATCH` records per write (default 1, as a node writes
/// them: measured here, sled kept 18 GiB resident after 1.5M records written in batches of
/// 10,000, and 371 MiB after 500,000 written one by one, which was faster too); returns the
/// time span they cover.
fn bulk_load(store: &dyn Store, count: u64, first: UnixMillis) -> UnixMillis {
    let per_write = env_or("IDMESH_BENCH_LOAD_BATCH", 1);
    let origins: Vec<RecordOrigin> =
        (0..9).map(|n| RecordOrigin { site: format!("s{}", n / 3), node: n % 3 + 1 }).collect();
    let mut last: Vec<Option<Record>> = vec![None; origins.len()];
    let mut batch = WriteBatch::new();
    let mut time = first;
    for i in 0..count {
        let at = (i % origins.len() as u64) as usize;
        time = UnixMillis(first.0 + i * 10);
        let record = Record::next(last[at].as_ref(), origins[at].clone(), time, decision(i));
        put_record(&mut batch, &record, serde_json::to_vec(&record).unwrap());
        last[at] = Some(record);
        if (i + 1) % per_write == 0 {
            store.write(std::mem::take(&mut batch)).unwrap();
        }
        if (i + 1) % 500_000 == 0 {
            eprintln!("loaded {} records, RSS {} MiB", i + 1, rss_mib());
        }
    }
    store.write(batch).unwrap();
    store.flush().unwrap();
    time
}

async fn queries(records: u64) {
    // `IDMESH_BENCH_AUDIT_DIR` keeps the loaded store, so a large log is loaded once and its
    // queries can be measured again later (on a quiet machine).
    let temp = tempfile::tempdir().unwrap();
    let dir = std::env::var_os("IDMESH_BENCH_AUDIT_DIR").map_or_else(|| temp.path().to_owned(), Into::into);
    let marker = dir.join(format!("loaded-{records}"));
    let store = sled(&dir);
    let first = UnixMillis(1_700_000_000_000);
    let (end, loaded) = if let Ok(text) = std::fs::read_to_string(&marker) {
        (UnixMillis(first.0 + (records - 1) * 10), format!("loaded earlier: {}", text.trim()))
    } else {
        // A node first (a data dir holds its identity), then the records, then the node again.
        let first_run = ready(Node::start_on(config("bench", &dir), store.clone()).await.unwrap()).await;
        first_run.shutdown().await;
        let started = Instant::now();
        let end = bulk_load(store.as_ref(), records, first);
        let text = format!("in {:.0} s", started.elapsed().as_secs_f64());
        std::fs::write(&marker, &text).unwrap();
        (end, format!("loaded {text}"))
    };
    let disk = store.size_on_disk().unwrap_or(0);
    let running = ready(Node::start_on(config("bench", &dir), store).await.unwrap()).await;
    let audit = running.node.audit();
    println!(
        "\n## Queries over {records} records (sled; {loaded}, {} MiB on disk; RSS {} MiB after reopening)\n",
        disk >> 20,
        rss_mib()
    );
    println!("| query | records | pages | total ms (cold) | first page ms (cold) | total ms (warm) |");
    println!("|---|---|---|---|---|---|");
    let cases = [
        ("trace --user u42 (whole)", Filter { user: Some("u42".into()), ..Filter::default() }, true),
        (
            "trace --agent a7 (first page)",
            Filter { agent: Some(format!("spiffe://{TRUST_DOMAIN}/agents/a7")), ..Filter::default() },
            false,
        ),
        (
            "last minute, denied (first page)",
            Filter { from: Some(UnixMillis(end.0 - 60_000)), allowed: Some(false), ..Filter::default() },
            false,
        ),
        (
            "jti of one record",
            Filter { jti: Some(format!("jti-{:016x}", records / 2)), ..Filter::default() },
            true,
        ),
    ];
    let run = |filter: &Filter, whole: bool| {
        let started = Instant::now();
        let mut cursor: Option<String> = None;
        let (mut found, mut pages, mut first_page_ms) = (0usize, 0usize, 0.0);
        loop {
            let page = audit.query(filter, cursor.as_deref(), 1000, false).unwrap();
            pages += 1;
            found += page.records.len();
            if pages == 1 {
                first_page_ms = started.elapsed().as_secs_f64() * 1000.0;
            }
            cursor = page.cursor;
            if cursor.is_none() || !whole {
                break;
            }
        }
        (found, pages, started.elapsed().as_secs_f64() * 1000.0, first_page_ms)
    };
    for (what, filter, whole) in cases {
        let (found, pages, cold_ms, first_page_ms) = run(&filter, whole);
        let (_, _, warm_ms, _) = run(&filter, whole);
        println!("| {what} | {found} | {pages} | {cold_ms:.1} | {first_page_ms:.1} | {warm_ms:.1} |");
    }
    println!("\nRSS after the queries: {} MiB", rss_mib());
    running.shutdown().await;
}

async fn catch_up(records: u64) {
    let east_dir = tempfile::tempdir().unwrap();
    let east_store = sled(east_dir.path());
    let first_run =
        ready(Node::start_on(config("east", east_dir.path()), east_store.clone()).await.unwrap()).await;
    first_run.shutdown().await;
    // The chain of east's node 2, written while apart (straight into the store of node 1, which
    // holds it like any chain of its site and serves it).
    let origin = RecordOrigin { site: "east".into(), node: 2 };
    {
        let store = east_store.clone();
        let mut last: Option<Record> = None;
        // One record per write, as a node writes them (see `bulk_load`).
        for i in 0..records {
            let record =
                Record::next(last.as_ref(), origin.clone(), UnixMillis(1_700_000_000_000 + i), decision(i));
            let mut batch = WriteBatch::new();
            put_record(&mut batch, &record, serde_json::to_vec(&record).unwrap());
            store.write(batch).unwrap();
            last = Some(record);
        }
        store.flush().unwrap();
    }
    let east = ready(Node::start_on(config("east", east_dir.path()), east_store).await.unwrap()).await;
    let west_dir = tempfile::tempdir().unwrap();
    let west = ready(Node::start(config("west", west_dir.path())).await.unwrap()).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let link = tokio::spawn(idmesh_node::mesh::run_link(
        west.node.clone(),
        "east".into(),
        east.peer_addr.to_string(),
        stopped,
    ));
    let mut first_record: Option<f64> = None;
    loop {
        let held = west.node.audit().held().get(&origin).map_or(0, |(seq, _)| *seq);
        if held > 0 && first_record.is_none() {
            first_record = Some(started.elapsed().as_secs_f64());
        }
        if held >= records {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(3600), "catch-up stalled at {held}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let first = first_record.unwrap_or(0.0);
    let rate = records as f64 / (secs - first).max(0.001);
    println!("\n## Catch-up over a link (one node per site, loopback gRPC, sled on both sides)\n");
    println!(
        "{records} records: first one held after {first:.1} s (link up, keys synced), all after {secs:.1} s: {rate:.0} records/s checked and made durable"
    );
    println!(
        "a site apart for a week at 10 audited requests/s (6,048,000 records) would catch up in about {:.0} s at this rate",
        6_048_000.0 / rate
    );
    println!("RSS of the process (both nodes) after the catch-up: {} MiB", rss_mib());
    let _ = stop.send(true);
    let _ = link.await;
    west.shutdown().await;
    east.shutdown().await;
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let secs = env_or("IDMESH_BENCH_SECS", 3) as f64;
    let records = env_or("IDMESH_BENCH_AUDIT_RECORDS", 1_000_000);
    let catch_up_records = env_or("IDMESH_BENCH_CATCHUP_RECORDS", 200_000);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    // IDMESH_BENCH_ONLY=appends|issuance|queries|catch_up runs one section.
    let only = std::env::var("IDMESH_BENCH_ONLY").unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || only == name;
    runtime.block_on(async move {
        if wanted("appends") {
            appends(secs).await;
        }
        if wanted("issuance") {
            issuance(secs).await;
        }
        if wanted("queries") {
            queries(records).await;
        }
        if wanted("catch_up") {
            catch_up(catch_up_records).await;
        }
    });
}
