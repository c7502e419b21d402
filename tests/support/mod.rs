//! Test harness: a site of real `idmesh node` processes on 127.0.0.1.
//!
//! Each node gets its own data dir under one temp dir and its own free ports. Processes are
//! killed when the `Site` is dropped; if the test panicked, the tail of every node's log is
//! printed first. Sites in one test binary run one at a time (they share two cores); a `Mesh`
//! holds several named sites, possibly of other trust domains, as one turn.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

pub mod mesh_cli;
pub mod pki;
pub mod proxy;

use idmesh_proto::v1::agent_registry_client::AgentRegistryClient;
use idmesh_proto::v1::signing_keys_client::SigningKeysClient;
use idmesh_proto::v1::site_client::SiteClient;
use idmesh_proto::v1::{GetSiteStatusRequest, ListSigningKeysRequest, NodeRole, SiteStatus};
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

pub const BIN: &str = env!("CARGO_BIN_EXE_idmesh");
pub const TRUST_DOMAIN: &str = "acme.example";
pub const SITE: &str = "eu-west";

static ONE_SITE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A free port on 127.0.0.1 (bound then released), never one this test process handed out
/// before: the kernel may give a released port again at once, and two listeners of one node
/// once got the same port that way.
pub fn free_addr() -> SocketAddr {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        if !given.contains(&addr.port()) {
            given.push(addr.port());
            return addr;
        }
    }
}

/// Extra node settings for a test.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Flags added to every node's command line.
    pub extra_args: Vec<String>,
    /// Run plaintext (`--insecure`) instead of with the site's test CA.
    pub insecure: bool,
}

impl Options {
    /// Snapshots every `logs` entries with nothing kept behind them.
    pub fn snapshot_every(logs: u64) -> Self {
        Self {
            extra_args: vec![
                "--snapshot-every-logs".into(),
                logs.to_string(),
                "--logs-kept-after-snapshot".into(),
                "0".into(),
            ],
            insecure: false,
        }
    }
}

#[derive(Debug)]
pub struct NodeProc {
    pub id: u64,
    pub public: SocketAddr,
    pub peer: SocketAddr,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    pub child: Option<Child>,
    pub site_peers: Option<String>,
    /// Flags added to this node's command line only (after the site's `Options::extra_args`),
    /// e.g. its `--links`.
    pub extra_args: Vec<String>,
}

pub struct Site {
    /// The site's name (`SITE` for `Site::start`).
    pub name: String,
    pub trust_domain: String,
    pub dir: tempfile::TempDir,
    pub nodes: BTreeMap<u64, NodeProc>,
    pub options: Options,
    /// This site's CA (`ca.pem`, `ca.key`); nodes get certificates from it.
    pub ca_dir: PathBuf,
    /// Other sites' CA files its nodes trust (`--peer-cas`; a `Mesh` fills it).
    pub peer_cas: Vec<PathBuf>,
    /// `None` when a `Mesh` holds the turn for all its sites.
    _turn: Option<MutexGuard<'static, ()>>,
}

impl Site {
    /// `n` nodes forming one site, all started.
    pub fn start(n: u64, options: Options) -> Site {
        let turn = ONE_SITE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let mut site = Site::prepare(SITE, TRUST_DOMAIN, n, options);
        site._turn = Some(turn);
        site.spawn_all();
        site
    }

    /// `n` nodes forming site `name` of `trust_domain`, none started yet (their addresses are
    /// chosen, so other sites and proxies can refer to them; see `NodeProc::extra_args` and
    /// `spawn_all`). Takes no turn: use it through `Mesh`.
    fn prepare(name: &str, trust_domain: &str, n: u64, options: Options) -> Site {
        let dir = tempfile::Builder::new().prefix(&format!("idmesh-{name}-")).tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        pki::make_ca(&ca_dir, trust_domain, name);
        pki::make_kek(&dir.path().join("kek"));
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            nodes.insert(id, NodeProc::new(dir.path(), id, &ca_dir, options.insecure));
        }
        let peers: Vec<String> = nodes.values().map(|p| format!("{}={}", p.id, p.peer)).collect();
        let peers = peers.join(",");
        for node in nodes.values_mut() {
            node.site_peers = Some(peers.clone());
        }
        Site {
            name: name.to_owned(),
            trust_domain: trust_domain.to_owned(),
            dir,
            nodes,
            options,
            ca_dir,
            peer_cas: Vec::new(),
            _turn: None,
        }
    }

    /// Starts every node that is not running.
    pub fn spawn_all(&mut self) {
        let idle: Vec<u64> = self.nodes.values().filter(|n| n.child.is_none()).map(|n| n.id).collect();
        for id in idle {
            self.spawn(id);
        }
    }

    /// A new node `id` that is not an initial member (no site peers), started.
    pub fn add_process(&mut self, id: u64) -> &NodeProc {
        let node = NodeProc::new(self.dir.path(), id, &self.ca_dir, self.options.insecure);
        self.nodes.insert(id, node);
        self.spawn(id);
        &self.nodes[&id]
    }

    /// A new node `id` (not an initial member) with no certificate, started with `--join
    /// <token>` through node `via`'s public port; `extra` flags are added.
    pub fn add_joining_process(&mut self, id: u64, token: &str, via: u64, extra: &[&str]) -> &NodeProc {
        let mut node = NodeProc::new(self.dir.path(), id, &self.ca_dir, true);
        register_ca(node.public, &self.ca_dir.join("ca.pem"));
        let via = self.nodes[&via].public.to_string();
        let ca = self.ca_dir.join("ca.pem").display().to_string();
        node.extra_args = ["--join", token, "--join-server", &via, "--join-ca", &ca]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect();
        self.nodes.insert(id, node);
        self.spawn(id);
        &self.nodes[&id]
    }

    pub fn node(&self, id: u64) -> &NodeProc {
        &self.nodes[&id]
    }

    /// The command line of node `id`.
    pub fn command(&self, id: u64) -> Command {
        let node = &self.nodes[&id];
        let mut cmd = Command::new(BIN);
        cmd.arg("node")
            .args(["--node-id", &id.to_string()])
            .args(["--site", &self.name, "--trust-domain", &self.trust_domain])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--listen", &node.public.to_string()])
            .args(["--peer-listen", &node.peer.to_string()])
            .args(&self.options.extra_args)
            .args(&node.extra_args)
            .env("RUST_LOG", "info,openraft=warn");
        if self.options.insecure {
            cmd.arg("--insecure");
        } else {
            cmd.arg("--tls-dir").arg(node.data_dir.with_extension("tls"));
            cmd.arg("--kek-file").arg(self.dir.path().join("kek"));
            if !self.peer_cas.is_empty() {
                let files: Vec<String> = self.peer_cas.iter().map(|p| p.display().to_string()).collect();
                cmd.args(["--peer-cas", &files.join(",")]);
            }
        }
        if let Some(peers) = &node.site_peers {
            cmd.args(["--site-peers", peers]);
        }
        cmd
    }

    /// Starts node `id` (its process must not be running).
    pub fn spawn(&mut self, id: u64) {
        let mut cmd = self.command(id);
        let node = self.nodes.get_mut(&id).unwrap();
        assert!(node.child.is_none(), "node {id} is already running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log_path).unwrap();
        let child = cmd.stdout(Stdio::null()).stderr(log).spawn().unwrap();
        node.child = Some(child);
    }

    /// SIGKILL: the process dies at once, nothing is flushed by it.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.nodes.get_mut(&id).unwrap().child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self, id: u64) {
        if let Some(mut child) = self.nodes.get_mut(&id).unwrap().child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("node {id} did not stop within 20 s of SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes.values().filter(|n| n.child.is_some()).map(|n| n.id).collect()
    }

    /// A registry client on node `id`.
    pub async fn registry(&self, id: u64) -> AgentRegistryClient<Channel> {
        AgentRegistryClient::new(channel(self.nodes[&id].public).await)
    }

    /// A site client on node `id`.
    pub async fn site_client(&self, id: u64) -> SiteClient<Channel> {
        SiteClient::new(channel(self.nodes[&id].public).await)
    }

    /// Node `id`'s view of the site, if it answers.
    pub async fn status(&self, id: u64) -> Option<SiteStatus> {
        let endpoint = endpoint(self.nodes[&id].public)
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(2));
        let channel = endpoint.connect().await.ok()?;
        let status = SiteClient::new(channel).get_site_status(GetSiteStatusRequest {}).await.ok()?;
        Some(status.into_inner())
    }

    /// Waits until every running node names the same leader, which is itself running and
    /// leading, and the site has a signing key (the leader creates the first one right after
    /// the site forms); returns the leader.
    pub async fn wait_leader(&self, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let leader = self.wait_agreed_leader(within).await;
            if self.has_signing_key(leader).await {
                return leader;
            }
            assert!(Instant::now() < deadline, "site has no signing key within {within:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn has_signing_key(&self, node: u64) -> bool {
        let Ok(channel) = endpoint(self.nodes[&node].public).connect().await else {
            return false;
        };
        let keys = SigningKeysClient::new(channel).list_signing_keys(ListSigningKeysRequest {}).await;
        keys.is_ok_and(|k| !k.into_inner().keys.is_empty())
    }

    async fn wait_agreed_leader(&self, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let mut leaders = Vec::new();
            for id in self.running() {
                leaders.push(self.status(id).await.map(|s| (s.leader_id, s.node_id, s.role)));
            }
            if let Some(Some((leader, _, _))) = leaders.first() {
                let agreed = leaders.iter().all(|l| matches!(l, Some((x, _, _)) if x == leader));
                let leads = leaders
                    .iter()
                    .any(|l| matches!(l, Some((x, me, role)) if x == me && *role == NodeRole::Leader as i32));
                if *leader != 0 && agreed && leads {
                    return *leader;
                }
            }
            assert!(Instant::now() < deadline, "no agreed leader within {within:?}: {leaders:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `check` holds for node `id`'s status.
    pub async fn wait_status(
        &self,
        id: u64,
        within: Duration,
        what: &str,
        check: impl Fn(&SiteStatus) -> bool,
    ) -> SiteStatus {
        let deadline = Instant::now() + within;
        loop {
            let status = self.status(id).await;
            if let Some(s) = &status
                && check(s)
            {
                return s.clone();
            }
            if Instant::now() >= deadline {
                // What the other members think (the leader's matched index per member) is what
                // tells a stuck replication from a diverged state.
                let mut others = String::new();
                for other in self.nodes.keys().copied().filter(|&n| n != id).collect::<Vec<_>>() {
                    others.push_str(&format!("\nnode {other}: {:?}", self.status(other).await));
                }
                panic!("node {id}: {what} not reached within {within:?}; last status {status:?}{others}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs the CLI against node `id`.
    pub fn cli(&self, id: u64, args: &[&str]) -> Output {
        cli(&self.nodes[&id].public.to_string(), args)
    }

    /// The last lines of node `id`'s log.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[&id].log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for id in self.nodes.keys().copied().collect::<Vec<_>>() {
                eprintln!("---- log of {} node {id} (tail) ----\n{}", self.name, self.log_tail(id, 60));
            }
        }
        for id in self.nodes.keys().copied().collect::<Vec<_>>() {
            self.kill(id);
        }
    }
}

impl NodeProc {
    /// Node `id` with its own ports, data dir and (unless `insecure`) a certificate of the CA
    /// in `ca_dir`, in `node-<id>.tls`.
    fn new(dir: &Path, id: u64, ca_dir: &Path, insecure: bool) -> Self {
        let public = free_addr();
        let data_dir = dir.join(format!("node-{id}"));
        if !insecure {
            pki::issue(ca_dir, id, &data_dir.with_extension("tls"), pki::VALID);
            register_ca(public, &ca_dir.join("ca.pem"));
        }
        NodeProc {
            id,
            public,
            peer: free_addr(),
            data_dir,
            log_path: dir.join(format!("node-{id}.log")),
            child: None,
            site_peers: None,
            extra_args: Vec::new(),
        }
    }
}

/// Several named sites in one test, started as one turn (see `ONE_SITE_AT_A_TIME`). Dropping it
/// kills every node (printing log tails first if the test panicked).
pub struct Mesh {
    pub sites: BTreeMap<String, Site>,
    _turn: MutexGuard<'static, ()>,
}

impl Mesh {
    /// An empty mesh; waits for the turn.
    pub fn new() -> Mesh {
        let turn = ONE_SITE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        Mesh { sites: BTreeMap::new(), _turn: turn }
    }

    /// Adds site `name` of `trust_domain` with `n` nodes, not started (`start` starts it).
    pub fn add_site(&mut self, name: &str, trust_domain: &str, n: u64, options: Options) -> &mut Site {
        assert!(!self.sites.contains_key(name), "site {name} added twice");
        let site = Site::prepare(name, trust_domain, n, options);
        self.sites.entry(name.to_owned()).or_insert(site)
    }

    /// Starts every node of every site that is not running. Each site's nodes trust the CAs
    /// of the other sites of its trust domain.
    pub fn start(&mut self) {
        let cas: Vec<(String, String, PathBuf)> = self
            .sites
            .values()
            .map(|s| (s.name.clone(), s.trust_domain.clone(), s.ca_dir.join("ca.pem")))
            .collect();
        for site in self.sites.values_mut() {
            site.peer_cas = cas
                .iter()
                .filter(|(name, td, _)| name != &site.name && td == &site.trust_domain)
                .map(|(_, _, ca)| ca.clone())
                .collect();
            site.spawn_all();
        }
    }

    pub fn site(&self, name: &str) -> &Site {
        self.sites.get(name).unwrap_or_else(|| panic!("no site {name}"))
    }

    pub fn site_mut(&mut self, name: &str) -> &mut Site {
        self.sites.get_mut(name).unwrap_or_else(|| panic!("no site {name}"))
    }

    /// Every node of every site, as (site, node id).
    pub fn all_nodes(&self) -> Vec<(String, u64)> {
        self.sites.values().flat_map(|s| s.nodes.keys().map(|id| (s.name.clone(), *id))).collect()
    }
}

impl Default for Mesh {
    fn default() -> Self {
        Mesh::new()
    }
}

/// Public addresses of test nodes that run TLS, and the CA file their certificates chain to.
static CAS: Mutex<BTreeMap<SocketAddr, PathBuf>> = Mutex::new(BTreeMap::new());

/// Clients of the node at `addr` verify it with `ca_file` (TLS); unregistered: plaintext. The
/// CLI also presents the admin certificate beside the CA (`<ca dir>/../admin`), if there is one.
pub fn register_ca(addr: SocketAddr, ca_file: &Path) {
    CAS.lock().unwrap_or_else(|p| p.into_inner()).insert(addr, ca_file.to_owned());
}

/// The admin certificate directory of the node at `addr` (admin.pem, admin.key), if any.
pub fn admin_of(addr: &str) -> Option<PathBuf> {
    let dir = pki::admin_dir(ca_of(addr)?.parent()?);
    dir.join("admin.pem").exists().then_some(dir)
}

/// The CA file of the node at `addr`, if it runs TLS.
pub fn ca_of(addr: &str) -> Option<PathBuf> {
    let addr: SocketAddr = addr.parse().ok()?;
    CAS.lock().unwrap_or_else(|p| p.into_inner()).get(&addr).cloned()
}

/// An endpoint for the node at `addr`: TLS verified with its CA, or plaintext.
pub fn endpoint(addr: SocketAddr) -> tonic::transport::Endpoint {
    match ca_of(&addr.to_string()) {
        Some(ca) => Channel::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(std::fs::read(ca).unwrap()))
                    .domain_name(addr.ip().to_string()),
            )
            .unwrap(),
        None => Channel::from_shared(format!("http://{addr}")).unwrap(),
    }
}

/// A channel to `addr`, retrying while the node starts.
pub async fn channel(addr: SocketAddr) -> Channel {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let endpoint =
            endpoint(addr).connect_timeout(Duration::from_millis(500)).timeout(Duration::from_secs(30));
        match endpoint.connect().await {
            Ok(channel) => return channel,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot connect to {addr}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Runs `idmesh <args> --server <server>` and returns what it did.
/// With `--ca` when the node runs TLS, else `--insecure`.
pub fn cli(server: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).args(["--server", server]).env("RUST_LOG", "warn");
    match ca_of(server) {
        Some(ca) => cmd.arg("--ca").arg(ca),
        None => cmd.arg("--insecure"),
    };
    if let Some(admin) = admin_of(server) {
        cmd.arg("--client-cert")
            .arg(admin.join("admin.pem"))
            .arg("--client-key")
            .arg(admin.join("admin.key"));
    }
    cmd.output().unwrap()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A valid Ed25519 public JWK (deterministic from `seed`).
pub fn jwk(seed: u8) -> String {
    use base64::Engine as _;
    let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes());
    format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{x}"}}"#)
}

/// An agent's key pair for token tests (deterministic from `seed`).
pub fn agent_key(seed: u8) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
}

/// The public JWK of `key`.
pub fn public_jwk(key: &ed25519_dalek::SigningKey) -> String {
    idmesh_state::PublicJwk::of_signing_key(key).to_json()
}

/// Seconds since the epoch now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// A client assertion for `agent` (a name in this trust domain), signed with `key`.
pub fn assertion(key: &ed25519_dalek::SigningKey, agent: &str, audience: &str, jti: &str) -> String {
    let id = format!("spiffe://{TRUST_DOMAIN}/agents/{agent}");
    let now = now_secs();
    let claims =
        serde_json::json!({"iss": id, "sub": id, "aud": audience, "iat": now, "exp": now + 60, "jti": jti});
    let kid = idmesh_state::PublicJwk::of_signing_key(key).thumbprint();
    idmesh_token::jws::sign(key, "JWT", &kid, &claims).unwrap()
}

/// The issuer every node of the test site uses.
pub fn issuer() -> String {
    format!("https://{TRUST_DOMAIN}/sites/{SITE}")
}
