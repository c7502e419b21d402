//! Cross-site convergence after a partition, and the air-gap bundle path, in one process.
//!
//! Two single-node sites, east and west, first share a small set of agents (registered at east,
//! synced once). Their link is then cut, and each side makes `IDMESH_BENCH_CHANGES` writes
//! (default 10000): 1% update (east) or update/revoke (west) a shared agent, so both sides edit
//! the same agents; the rest register new agents. Then east dials west through a byte-counting
//! TCP proxy, and the bench measures the time until both report the same state hash and the
//! bytes that went through the proxy each way, against the size of what changed. Before that
//! heal, east's whole state is exported as a bundle and imported into a fresh site, north.
//!
//! `cargo bench -p idmesh-node --bench mesh_converge`; `IDMESH_BENCH_CHANGES`,
//! `IDMESH_BENCH_TASKS` (concurrent writers per side, default 32), `IDMESH_BENCH_STORE`
//! (`mem`, the default, or `sled` in a temporary directory), `IDMESH_BENCH_TIMEOUT_SECS`
//! (give up waiting for convergence, default 600).
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use idmesh_node::{Node, NodeConfig, RunningNode};
use idmesh_state::crdt::{ChangeHash, SHARD_COUNT, ShardId};
use idmesh_state::{Op, RegisterAgent, UpdateAgent};
use idmesh_store::MemStore;
use idmesh_types::{AgentId, SiteName, TrustDomain};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const TRUST_DOMAIN: &str = "bench.example";
const POLL: Duration = Duration::from_millis(25);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let changes: u64 = env_or("IDMESH_BENCH_CHANGES", 10_000);
    let tasks: u64 = env_or("IDMESH_BENCH_TASKS", 32);
    let store: String = env_or("IDMESH_BENCH_STORE", "mem".to_owned());
    let timeout = Duration::from_secs(env_or("IDMESH_BENCH_TIMEOUT_SECS", 600));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(run(changes, tasks, store == "sled", timeout));
}

/// A running single-node site and, on sled, its directory.
struct Site {
    running: RunningNode,
    dir: Option<PathBuf>,
}

impl Site {
    fn node(&self) -> &Node {
        &self.running.node
    }

    async fn stop(self) {
        self.running.shutdown().await;
        if let Some(dir) = self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

async fn start_site(name: &str, sled: bool) -> Site {
    let trust_domain = TrustDomain::parse_field("td", TRUST_DOMAIN).unwrap();
    let site = SiteName::parse_field("site", name).unwrap();
    let peer = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let dir =
        sled.then(|| std::env::temp_dir().join(format!("idmesh-mesh-bench-{}-{name}", std::process::id())));
    let config = NodeConfig::single_node(
        trust_domain,
        site,
        dir.clone().unwrap_or_else(|| "mem".into()),
        "127.0.0.1:0".parse().unwrap(),
        peer,
    );
    let running = match &dir {
        Some(dir) => {
            let _ = std::fs::remove_dir_all(dir);
            Node::start(config).await.unwrap()
        }
        None => Node::start_on(config, Arc::new(MemStore::new())).await.unwrap(),
    };
    // Ready when it leads, has a signing key and has published its keys in the trust bundle.
    let started = Instant::now();
    loop {
        let ready = running.node.current_leader().is_some() && {
            let state = running.node.shared().read();
            !state.state.keys.trusted().is_empty() && state.state.trust.site(name).is_some()
        };
        if ready {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "site {name} not ready after 30 s");
        tokio::time::sleep(POLL).await;
    }
    Site { running, dir }
}

fn agent_id(name: &str) -> AgentId {
    format!("spiffe://{TRUST_DOMAIN}/agents/{name}").parse().unwrap()
}

fn agent_count(node: &Node) -> usize {
    node.shared().read().state.registry.len()
}

/// What a load phase did.
struct Load {
    writes: u64,
    secs: f64,
    /// CPU seconds the process used meanwhile.
    cpu: f64,
    /// Total JSON size of the agents as each write left them.
    json_bytes: u64,
}

/// Makes `count` writes at `node` with `tasks` concurrent writers: write `i` is `op(i)`.
async fn load(node: &Node, count: u64, tasks: u64, op: impl Fn(u64) -> Op + Send + Sync + 'static) -> Load {
    let next = Arc::new(AtomicU64::new(0));
    let json_bytes = Arc::new(AtomicU64::new(0));
    let op = Arc::new(op);
    let (started, cpu) = (Instant::now(), cpu_secs());
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (node, next, json_bytes, op) = (node.clone(), next.clone(), json_bytes.clone(), op.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return;
                    }
                    let (agent, _) = node.write(op(i)).await.unwrap();
                    json_bytes.fetch_add(serde_json::to_vec(&agent).unwrap().len() as u64, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    Load {
        writes: count,
        secs: started.elapsed().as_secs_f64(),
        cpu: cpu_secs() - cpu,
        json_bytes: json_bytes.load(Ordering::Relaxed),
    }
}

fn register(name: String) -> Op {
    Op::RegisterAgent(RegisterAgent {
        id: agent_id(&name),
        owner: "bench".into(),
        labels: BTreeMap::from([("env".into(), "prod".into())]),
        credentials: vec![],
    })
}

fn relabel(name: &str, side: &str) -> Op {
    Op::UpdateAgent(UpdateAgent {
        id: agent_id(name),
        owner: None,
        labels: Some(BTreeMap::from([("env".into(), "prod".into()), ("side".into(), side.into())])),
        add_credentials: vec![],
        remove_credentials: vec![],
        expected_revision: None,
    })
}

/// A TCP proxy in front of `upstream` that counts the bytes it forwards each way.
struct Proxy {
    addr: SocketAddr,
    /// Client → upstream (east → west).
    up: Arc<AtomicU64>,
    /// Upstream → client (west → east).
    down: Arc<AtomicU64>,
    accept: JoinHandle<()>,
}

async fn start_proxy(upstream: SocketAddr) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (up, down) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (up2, down2) = (up.clone(), down.clone());
    let accept = tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(upstream).await else { continue };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(pump(client_read, server_write, up2.clone()));
            tokio::spawn(pump(server_read, client_write, down2.clone()));
        }
    });
    Proxy { addr, up, down, accept }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    count: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                count.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
    let _ = to.shutdown().await;
}

/// A link from `from` to the site `to_site` at `addr`, stopped through the returned sender.
fn link(from: &Node, to_site: &str, addr: SocketAddr) -> (watch::Sender<bool>, JoinHandle<()>) {
    let (stop, stopped) = watch::channel(false);
    let handle = tokio::spawn(idmesh_node::mesh::run_link(
        from.clone(),
        to_site.to_owned(),
        addr.to_string(),
        stopped,
    ));
    (stop, handle)
}

/// Waits until east and west hold the same changes; the time it took, or `None` on timeout.
/// Notes in `milestones` when each side's agent count first moved and when it reached `expected`.
async fn converge(
    east: &Node,
    west: &Node,
    started: Instant,
    timeout: Duration,
    expected: usize,
    milestones: &mut Vec<String>,
) -> Option<Duration> {
    let sides = [("east", east), ("west", west)];
    let initial: Vec<usize> = sides.iter().map(|(_, node)| agent_count(node)).collect();
    let (mut moved, mut complete) = ([false; 2], [false; 2]);
    loop {
        // Hashes first: once they agree, the counts read next are the final ones.
        let equal = east.shared().state_hash() == west.shared().state_hash();
        for (i, (side, node)) in sides.iter().enumerate() {
            let count = agent_count(node);
            if !moved[i] && count != initial[i] {
                moved[i] = true;
                milestones
                    .push(format!("{side} first new agents at {:.3} s", started.elapsed().as_secs_f64()));
            }
            if !complete[i] && count >= expected {
                complete[i] = true;
                milestones.push(format!(
                    "{side} all {expected} agents at {:.3} s",
                    started.elapsed().as_secs_f64()
                ));
            }
        }
        if equal {
            return Some(started.elapsed());
        }
        if started.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

fn print_mesh(east: &Node, west: &Node) {
    for (side, node) in [("east", east), ("west", west)] {
        println!("    {side}: {} agents, state hash {}", agent_count(node), node.shared().state_hash());
        for s in node.mesh().sites() {
            println!(
                "    {side} → {}: {:?}, last sync {:?}, pending {}, received {}, sent {}, error {:?}",
                s.site,
                s.state,
                s.last_sync,
                s.shards_pending,
                s.changes_received,
                s.messages_sent,
                s.last_error
            );
            // The shards where what the session last heard of the other side's heads is not
            // this side's heads (the first few).
            let short = |heads: &[ChangeHash]| -> Vec<String> {
                heads.iter().map(|h| h.0[..4].iter().map(|b| format!("{b:02x}")).collect()).collect()
            };
            println!("      known heads of {} shards", s.known_heads.len());
            let mut shown = 0;
            for (shard, theirs) in s.known_heads.iter().enumerate() {
                let ours = node.shared().with_applied(ShardId(shard as u16), |doc| doc.heads()).unwrap();
                let mut theirs = theirs.clone();
                if let Some(t) = theirs.as_mut() {
                    t.sort();
                }
                if theirs.as_ref() != Some(&ours) && shown < 6 {
                    shown += 1;
                    println!(
                        "      shard {shard}: ours {:?}, theirs as last heard {:?}",
                        short(&ours),
                        theirs.as_deref().map(short)
                    );
                }
            }
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn print_load(side: &str, load: &Load) {
    println!(
        "  load {side}: {} writes in {:.2} s = {:.0}/s (process CPU {:.1} s); agents' JSON {} ({} B/write)",
        load.writes,
        load.secs,
        load.writes as f64 / load.secs,
        load.cpu,
        mib(load.json_bytes),
        load.json_bytes / load.writes.max(1)
    );
}

fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.trim().to_owned()).unwrap_or_default()
}

/// CPU seconds this process has used (user + system), from `/proc/self/stat`.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which ends with the last ')'): utime and stime are the
    // 12th and 13th, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Each shard's heads at `node`.
fn shard_heads(node: &Node) -> Vec<Vec<ChangeHash>> {
    (0..SHARD_COUNT)
        .map(|shard| node.shared().with_applied(ShardId(shard), |doc| doc.heads()).unwrap())
        .collect()
}

/// What `node` holds beyond `before` (its heads per shard at some earlier time): the number of
/// changes, their total raw size, and the size of the same as one compact chunk per shard (what
/// a bundle carries).
fn changed_since(node: &Node, before: &[Vec<ChangeHash>]) -> (u64, u64, u64) {
    let (mut count, mut raw, mut compact) = (0u64, 0u64, 0u64);
    for (shard, heads) in (0..SHARD_COUNT).zip(before) {
        node.shared()
            .with_applied(ShardId(shard), |doc| {
                if doc.heads() == *heads {
                    return;
                }
                let changes = doc.changes_since(heads);
                count += changes.len() as u64;
                raw += changes.iter().map(|c| c.len() as u64).sum::<u64>();
                compact += doc.save_after(heads).len() as u64;
            })
            .unwrap();
    }
    (count, raw, compact)
}

/// Waits until no byte has gone through `proxy` for `quiet` (at most `limit`); how long it took.
async fn until_idle(proxy: &Proxy, quiet: Duration, limit: Duration) -> Duration {
    let started = Instant::now();
    let total = || proxy.up.load(Ordering::Relaxed) + proxy.down.load(Ordering::Relaxed);
    let (mut last, mut since) = (total(), Instant::now());
    while since.elapsed() < quiet && started.elapsed() < limit {
        tokio::time::sleep(POLL).await;
        if total() != last {
            (last, since) = (total(), Instant::now());
        }
    }
    started.elapsed()
}

/// What each side's session believes of the other after a sync (shards it still counts as
/// pending, and whether it ever found both sides equal).
fn session_view(node: &Node) -> String {
    node.mesh()
        .sites()
        .iter()
        .map(|s| {
            format!(
                "{} → {}: pending {}, last sync {:?}",
                node.config().site,
                s.site,
                s.shards_pending,
                s.last_sync
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

async fn run(changes: u64, tasks: u64, sled: bool, timeout: Duration) {
    let shared = (changes / 100).max(1);
    let updates = changes / 100;
    println!(
        "mesh_converge: {changes} writes per side ({updates} on {shared} shared agents), {tasks} writers, {} store; load {}",
        if sled { "sled" } else { "mem" },
        load_avg()
    );
    let east = start_site("east", sled).await;
    let west = start_site("west", sled).await;

    // Before the partition: the shared agents, registered at east and synced once.
    let before = load(east.node(), shared, tasks, |k| register(format!("shared-{k}"))).await;
    let started = Instant::now();
    let (stop, handle) = link(east.node(), "west", west.running.peer_addr);
    let Some(first) =
        converge(east.node(), west.node(), started, timeout, shared as usize, &mut Vec::new()).await
    else {
        print_mesh(east.node(), west.node());
        panic!("the first sync never converged");
    };
    // Let the session go quiet (it ticks every 250 ms), then cut the link.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let first_view = format!("{}; {}", session_view(east.node()), session_view(west.node()));
    let _ = stop.send(true);
    handle.await.unwrap();
    let partition_heads = shard_heads(east.node());
    assert_eq!(partition_heads, shard_heads(west.node()), "east and west differ at the partition");
    println!(
        "  before the partition: {shared} shared agents registered at east ({:.0}/s), synced to west in {:.3} s; sessions' view 1 s later: {first_view}",
        shared as f64 / before.secs,
        first.as_secs_f64()
    );

    // The partition: each side writes on its own.
    let east_load = load(east.node(), changes, tasks, move |i| {
        if i % 100 == 99 && i / 100 < shared {
            relabel(&format!("shared-{}", i / 100), "east")
        } else {
            register(format!("east-{i}"))
        }
    })
    .await;
    print_load("east", &east_load);
    let west_load = load(west.node(), changes, tasks, move |i| {
        let k = i / 100;
        if i % 100 == 99 && k < shared {
            if k % 2 == 0 {
                relabel(&format!("shared-{k}"), "west")
            } else {
                Op::RevokeAgent { id: agent_id(&format!("shared-{k}")), reason: "bench".into() }
            }
        } else {
            register(format!("west-{i}"))
        }
    })
    .await;
    print_load("west", &west_load);
    println!("  load after the writes: {}", load_avg());

    // What changed since the partition, measured three ways.
    let (east_count, east_raw, east_compact) = changed_since(east.node(), &partition_heads);
    let (west_count, west_raw, west_compact) = changed_since(west.node(), &partition_heads);
    let changed_json = east_load.json_bytes + west_load.json_bytes;
    let changed_raw = east_raw + west_raw;
    let changed_compact = east_compact + west_compact;
    println!(
        "  changed data: {} automerge changes (east {east_count}, west {west_count}); raw change bytes {} (east {}, west {}); as save_after chunks, the form of a bundle for a site that synced before {} (east {}, west {}); agents' JSON {} (east {}, west {})",
        east_count + west_count,
        mib(changed_raw),
        mib(east_raw),
        mib(west_raw),
        mib(changed_compact),
        mib(east_compact),
        mib(west_compact),
        mib(changed_json),
        mib(east_load.json_bytes),
        mib(west_load.json_bytes)
    );

    // The bundle path: east's whole state into a fresh site.
    let started = Instant::now();
    let (bundle, _) = east.node().export_bundle(None).await.unwrap();
    let export_secs = started.elapsed().as_secs_f64();
    let north = start_site("north", sled).await;
    north.node().import_trust(&serde_json::to_string(&east.node().export_trust()).unwrap()).await.unwrap();
    let (started, cpu) = (Instant::now(), cpu_secs());
    let summary = north.node().import_bundle(&bundle).await.unwrap();
    let (import_secs, import_cpu) = (started.elapsed().as_secs_f64(), cpu_secs() - cpu);
    let (north_agents, east_agents) = (agent_count(north.node()), agent_count(east.node()));
    println!(
        "  bundle east → north: {east_agents} agents, {} in {} chunks; export {:.3} s; import {:.3} s (CPU {:.1} s; {:.0} agents/s, {} log entries); north then holds {north_agents} agents",
        mib(bundle.len() as u64),
        summary.chunks,
        export_secs,
        import_secs,
        import_cpu,
        east_agents as f64 / import_secs,
        summary.entries
    );
    if north_agents != east_agents {
        println!("  ODD: north holds {north_agents} agents after the import, east {east_agents}");
    }
    north.stop().await;

    // Heal: east dials west through the proxy.
    println!("  load before healing: {}", load_avg());
    let proxy = start_proxy(west.running.peer_addr).await;
    let (started, cpu) = (Instant::now(), cpu_secs());
    let (stop, handle) = link(east.node(), "west", proxy.addr);
    let expected = shared + 2 * (changes - updates);
    let mut milestones = Vec::new();
    let converged =
        converge(east.node(), west.node(), started, timeout, expected as usize, &mut milestones).await;
    let converge_cpu = cpu_secs() - cpu;
    let (up_at, down_at) = (proxy.up.load(Ordering::Relaxed), proxy.down.load(Ordering::Relaxed));
    let load_at = load_avg();
    match converged {
        Some(took) => {
            let (e, w) = (agent_count(east.node()), agent_count(west.node()));
            println!(
                "  converged in {:.3} s (process CPU {:.1} s; {:.0} changes/s each way); agents east {e}, west {w} (expected {expected}); load {load_at}",
                took.as_secs_f64(),
                converge_cpu,
                changes as f64 / took.as_secs_f64()
            );
            if e as u64 != expected || w as u64 != expected {
                println!("  ODD: agent counts differ from the expected {expected}");
            }
        }
        None => {
            println!("  NOT CONVERGED after {} s; mesh state:", timeout.as_secs());
            print_mesh(east.node(), west.node());
        }
    }
    println!("  timeline: {}", milestones.join("; "));
    // The session goes on exchanging the last acknowledgements: count them too.
    let idle = until_idle(&proxy, Duration::from_secs(1), Duration::from_secs(30)).await;
    let (up, down) = (proxy.up.load(Ordering::Relaxed), proxy.down.load(Ordering::Relaxed));
    println!(
        "  bytes at convergence: east → west {}, west → east {}, total {}",
        mib(up_at),
        mib(down_at),
        mib(up_at + down_at)
    );
    println!(
        "  bytes once idle for 1 s (+{:.1} s): east → west {}, west → east {}, total {}",
        idle.as_secs_f64(),
        mib(up),
        mib(down),
        mib(up + down)
    );
    println!(
        "  ratio bytes (once idle) / changed data: {:.2}× the raw changes, {:.2}× the save_after chunks, {:.2}× the agents' JSON",
        (up + down) as f64 / changed_raw as f64,
        (up + down) as f64 / changed_compact as f64,
        (up + down) as f64 / changed_json as f64
    );
    println!("  sessions' view: {}; {}", session_view(east.node()), session_view(west.node()));
    let _ = stop.send(true);
    handle.await.unwrap();
    proxy.accept.abort();
    east.stop().await;
    west.stop().await;
}
