//! Talking to the nodes of several sites through the CLI and the mesh API, for the cross-site
//! tests: run a command, read agents, issue and verify tokens, wait for hashes to converge or a
//! link to reach a state.

use super::{Mesh, Options, TRUST_DOMAIN, cli, stderr, stdout};
use idmesh_proto::v1::mesh_client::MeshClient;
use idmesh_proto::v1::{GetMeshStatusRequest, LinkState, MeshStatus, RemoteSite};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

/// For a site to elect a leader and create its signing key.
pub const LEADER: Duration = Duration::from_secs(60);
/// For sites to reach the same state after a change or a heal (links back off up to 30 s).
pub const CONVERGE: Duration = Duration::from_secs(120);
/// For a link to notice that it was cut, or a node to notice a change.
pub const NOTICE: Duration = Duration::from_secs(60);

/// A proxy to `target` whose own address is none of the (chosen, not yet bound) node addresses.
pub fn proxy_to(name: &str, target: SocketAddr, mesh: &Mesh) -> super::proxy::Proxy {
    let taken: Vec<SocketAddr> =
        mesh.sites.values().flat_map(|s| s.nodes.values()).flat_map(|n| [n.public, n.peer]).collect();
    let mut spare = Vec::new();
    loop {
        let proxy = super::proxy::Proxy::start(name, target);
        if !taken.contains(&proxy.addr()) {
            return proxy;
        }
        spare.push(proxy);
    }
}

/// The flags of a link to `site` at `addr`.
pub fn links(site: &str, addr: SocketAddr) -> Vec<String> {
    vec!["--links".into(), format!("{site}={addr}")]
}

pub fn server(mesh: &Mesh, site: &str, node: u64) -> String {
    mesh.site(site).node(node).public.to_string()
}

/// Runs the CLI against a node, with `--output json`.
pub fn run(mesh: &Mesh, site: &str, node: u64, args: &[&str]) -> Output {
    let mut args = args.to_vec();
    args.extend(["--output", "json"]);
    cli(&server(mesh, site, node), &args)
}

/// Runs the CLI against a node; it must succeed; returns its JSON output.
pub fn ok(mesh: &Mesh, site: &str, node: u64, args: &[&str]) -> Value {
    let out = run(mesh, site, node, args);
    assert!(
        out.status.success(),
        "`idmesh {}` at {site} node {node} failed ({:?}):\n{}{}",
        args.join(" "),
        out.status.code(),
        stdout(&out),
        stderr(&out)
    );
    serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("`idmesh {}`: not JSON ({e}): {}", args.join(" "), stdout(&out)))
}

/// The CLI's view of agent `name` at a node (a local read of that node's applied state), or
/// `None` if that node does not know it.
pub fn agent(mesh: &Mesh, site: &str, node: u64, name: &str) -> Option<Value> {
    let out = run(mesh, site, node, &["agent", "get", name]);
    if out.status.success() {
        return Some(serde_json::from_str(&stdout(&out)).unwrap());
    }
    assert!(stderr(&out).contains("NOT_FOUND"), "`agent get {name}` at {site} node {node}: {}", stderr(&out));
    None
}

/// Every agent a node holds (local read), by name.
pub fn agents(mesh: &Mesh, site: &str, node: u64) -> BTreeMap<String, Value> {
    let list = ok(mesh, site, node, &["agent", "list", "--all"]);
    let prefix = format!("spiffe://{TRUST_DOMAIN}/agents/");
    list["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["id"].as_str().unwrap().strip_prefix(&prefix).unwrap().to_owned(), a.clone()))
        .collect()
}

pub fn issue_args<'a>(agent: &'a str, key: &'a Path) -> [&'a str; 10] {
    let key = key.to_str().unwrap();
    ["token", "issue", "--agent", agent, "--key", key, "--audience", "cargo-api", "--scope", "manifest:read"]
}

/// Issues a token as `agent` at a node; it must succeed.
pub fn issue(mesh: &Mesh, site: &str, node: u64, agent: &str, key: &Path) -> String {
    let reply = ok(mesh, site, node, &issue_args(agent, key));
    reply["access_token"].as_str().unwrap().to_owned()
}

/// Waits until a node refuses to issue tokens to `agent` (it applied the agent's revocation).
pub async fn wait_issuing_refused(mesh: &Mesh, site: &str, node: u64, agent: &str, key: &Path) {
    let deadline = Instant::now() + NOTICE;
    while run(mesh, site, node, &issue_args(agent, key)).status.success() {
        assert!(Instant::now() < deadline, "{site} still issues tokens to revoked {agent} after {NOTICE:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Asks a node to verify `token`.
pub fn verify(mesh: &Mesh, site: &str, node: u64, token: &str) -> Output {
    run(mesh, site, node, &["token", "verify", token])
}

/// A node's mesh status, if it answers.
pub async fn mesh_status(addr: SocketAddr) -> Option<MeshStatus> {
    let channel = super::endpoint(addr)
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .ok()?;
    MeshClient::new(channel).get_mesh_status(GetMeshStatusRequest {}).await.ok().map(|r| r.into_inner())
}

/// Every node's state hash (`None` where the node did not answer).
pub async fn hashes(mesh: &Mesh) -> Vec<(String, u64, Option<String>)> {
    let mut all = Vec::new();
    for (site, node) in mesh.all_nodes() {
        let status = mesh_status(mesh.site(&site).node(node).public).await;
        all.push((site, node, status.map(|s| s.state_hash)));
    }
    all
}

/// Waits until every node of `mesh` reports the same state hash; returns it.
pub async fn wait_converged(mesh: &Mesh, what: &str) -> String {
    let started = Instant::now();
    loop {
        let all = hashes(mesh).await;
        if let Some(first) = &all[0].2
            && all.iter().all(|(_, _, h)| h.as_ref() == Some(first))
        {
            eprintln!("{what}: all {} nodes at {first} after {:?}", all.len(), started.elapsed());
            return first.clone();
        }
        if started.elapsed() > CONVERGE {
            let mut report = String::new();
            for (site, node) in mesh.all_nodes() {
                let status = mesh_status(mesh.site(&site).node(node).public).await;
                report.push_str(&format!("\n  {site} node {node}: {status:?}"));
            }
            panic!("{what}: nodes did not reach the same state hash within {CONVERGE:?}:{report}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A node's state hash once it has stayed the same for two seconds (the node has nothing of
/// its own left to write, such as publishing its keys).
pub async fn settled_hash(mesh: &Mesh, site: &str, node: u64) -> String {
    let deadline = Instant::now() + NOTICE;
    let addr = mesh.site(site).node(node).public;
    let mut last = mesh_status(addr).await.map(|s| s.state_hash);
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = mesh_status(addr).await.map(|s| s.state_hash);
        if now != last {
            (last, since) = (now, Instant::now());
        } else if let Some(hash) = &last
            && since.elapsed() >= Duration::from_secs(2)
        {
            return hash.clone();
        }
        assert!(Instant::now() < deadline, "{site} node {node}: state hash still changing after {NOTICE:?}");
    }
}

/// Waits until `node`'s view of its link to `remote` satisfies `check`.
pub async fn wait_link(
    mesh: &Mesh,
    site: &str,
    node: u64,
    remote: &str,
    what: &str,
    check: impl Fn(&RemoteSite) -> bool,
) {
    let deadline = Instant::now() + NOTICE;
    loop {
        let status = mesh_status(mesh.site(site).node(node).public).await;
        let link = status.as_ref().and_then(|s| s.sites.iter().find(|r| r.site == remote));
        if link.is_some_and(&check) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{site} node {node}: link to {remote} not {what} within {NOTICE:?}; status {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn connected(link: &RemoteSite) -> bool {
    link.state == LinkState::Connected as i32
}

pub fn status_of(agent: &Value) -> &str {
    agent["status"].as_str().unwrap()
}

/// Two single-node sites of our trust domain with no link between them.
pub async fn two_sites(a: &str, b: &str) -> Mesh {
    let mut mesh = Mesh::new();
    mesh.add_site(a, TRUST_DOMAIN, 1, Options::default());
    mesh.add_site(b, TRUST_DOMAIN, 1, Options::default());
    mesh.start();
    for site in mesh.sites.values() {
        site.wait_leader(LEADER).await;
    }
    mesh
}

/// Runs the CLI (JSON output) and expects it to fail with exit 1 and `code` in its message.
pub fn refused(mesh: &Mesh, site: &str, args: &[&str], code: &str) -> String {
    let out = run(mesh, site, 1, args);
    assert_eq!(out.status.code(), Some(1), "`idmesh {}` should be refused: {}", args.join(" "), stdout(&out));
    let message = stderr(&out);
    assert!(message.contains(code), "`idmesh {}`: expected {code}: {message}", args.join(" "));
    message
}
