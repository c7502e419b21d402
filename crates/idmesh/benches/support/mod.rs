//! The processes and measurements of the registry write benchmark: an idmesh site or an etcd
//! cluster of real processes on 127.0.0.1, the disk's raw fsync rate, a process's RSS and the
//! size of a data dir.
//!
//! Every process is SIGKILLed when its `Cluster` is dropped. Killing the benchmark itself
//! (Ctrl-C) leaves them running: they would then have to be killed by hand.

pub mod etcd;
pub mod load;
/// The integration tests' CA, certificate and key-encryption key files (one source for both).
#[allow(dead_code)]
#[path = "../../../../tests/support/pki.rs"]
pub mod pki;
pub mod report;

use anyhow::{Context as _, bail};
use idmesh_proto::v1::site_client::SiteClient;
use idmesh_proto::v1::{GetSiteStatusRequest, NodeRole, SiteStatus};
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

const IDMESH: &str = env!("CARGO_BIN_EXE_idmesh");
pub const TRUST_DOMAIN: &str = "bench.example";

/// Which server a cluster runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    Idmesh,
    Etcd,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Idmesh => "idmesh",
            System::Etcd => "etcd",
        }
    }
}

/// One server process.
#[derive(Debug)]
pub struct Member {
    /// 1, 2, 3...
    pub id: u64,
    /// Where clients connect (idmesh: public gRPC; etcd: client URL).
    pub public: SocketAddr,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    child: Option<Child>,
}

impl Member {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// How many lines of its log contain `text`.
    pub fn log_lines_with(&self, text: &str) -> usize {
        std::fs::read_to_string(&self.log_path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(text))
            .count()
    }
}

/// A site (idmesh) or cluster (etcd) of `members.len()` processes.
#[derive(Debug)]
pub struct Cluster {
    pub system: System,
    pub members: Vec<Member>,
}

/// A free port on 127.0.0.1 (bound, then released).
fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

impl Cluster {
    /// `n` idmesh nodes forming one site, data dirs under `root/<tag>-node-<id>`. The nodes log
    /// at their default level (info: one line per write) to a file beside their data dir.
    /// They run TLS (a CA under `root/<tag>-ca`) unless `IDMESH_BENCH_INSECURE=1`.
    pub fn start_idmesh(root: &Path, tag: &str, n: u64) -> anyhow::Result<Cluster> {
        let addrs: Vec<(SocketAddr, SocketAddr)> =
            (0..n).map(|_| Ok((free_addr()?, free_addr()?))).collect::<anyhow::Result<_>>()?;
        let ca = (!insecure()).then(|| {
            let ca_dir = root.join(format!("{tag}-ca"));
            pki::make_ca(&ca_dir, TRUST_DOMAIN, "bench");
            pki::make_kek(&root.join(format!("{tag}-kek")));
            ca_dir
        });
        let peers: Vec<String> =
            addrs.iter().zip(1..).map(|((_, peer), id)| format!("{id}={peer}")).collect();
        let peers = peers.join(",");
        let mut members = Vec::new();
        for ((public, peer), id) in addrs.into_iter().zip(1..) {
            let data_dir = root.join(format!("{tag}-node-{id}"));
            let mut cmd = Command::new(IDMESH);
            cmd.arg("node")
                .args(["--node-id", &id.to_string(), "--site", "bench", "--trust-domain", TRUST_DOMAIN])
                .arg("--data-dir")
                .arg(&data_dir)
                .args(["--listen", &public.to_string(), "--peer-listen", &peer.to_string()])
                .args(["--site-peers", &peers])
                .env_remove("RUST_LOG");
            match &ca {
                None => {
                    cmd.arg("--insecure");
                }
                Some(ca_dir) => {
                    let tls_dir = root.join(format!("{tag}-node-{id}.tls"));
                    pki::issue(ca_dir, id, &tls_dir, pki::VALID);
                    cmd.arg("--tls-dir").arg(&tls_dir);
                    cmd.arg("--kek-file").arg(root.join(format!("{tag}-kek")));
                    CAS.lock().unwrap_or_else(|p| p.into_inner()).insert(public, tls_dir.join("ca.pem"));
                }
            }
            members.push(spawn(cmd, id, public, data_dir, root.join(format!("{tag}-node-{id}.log")))?);
        }
        Ok(Cluster { system: System::Idmesh, members })
    }

    /// Every member's client address, in member order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.members.iter().map(|m| m.public).collect()
    }

    /// Members whose process has exited, with how.
    pub fn exited(&mut self) -> Vec<String> {
        let mut gone = Vec::new();
        for m in &mut self.members {
            if let Some(child) = &mut m.child
                && let Ok(Some(status)) = child.try_wait()
            {
                gone.push(format!("{} member {} exited: {status}", self.system.name(), m.id));
            }
        }
        gone
    }

    /// The lines of every member's log that report a problem (at most `max` per member), and
    /// how many there were.
    pub fn log_problems(&self, max: usize) -> Vec<(u64, usize, Vec<String>)> {
        self.members
            .iter()
            .map(|m| {
                let text = std::fs::read_to_string(&m.log_path).unwrap_or_default();
                // etcd warns of routine events (peer connections, the simple auth token):
                // only its errors are worth a look here.
                let bad: Vec<&str> = match self.system {
                    System::Idmesh => {
                        text.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).collect()
                    }
                    System::Etcd => text
                        .lines()
                        .filter(|l| {
                            ["error", "panic", "fatal"]
                                .iter()
                                .any(|lv| l.contains(&format!("\"level\":\"{lv}\"")))
                        })
                        .collect(),
                };
                let sample = bad.iter().take(max).map(|l| truncate(l, 300)).collect();
                (m.id, bad.len(), sample)
            })
            .collect()
    }

    /// The tail of every member's log, for an error message.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for m in &self.members {
            let text = std::fs::read_to_string(&m.log_path).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let tail = all[all.len().saturating_sub(lines)..].join("\n");
            out.push_str(&format!("---- {} member {} log (tail) ----\n{tail}\n", self.system.name(), m.id));
        }
        out
    }

    /// Waits until every idmesh node names the same leader, which says it leads; returns the
    /// leader's index in `members`.
    pub async fn idmesh_leader(&self, within: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + within;
        loop {
            let mut seen = Vec::new();
            for m in &self.members {
                seen.push(idmesh_status(m.public).await.ok());
            }
            let leaders: Vec<Option<u64>> = seen.iter().map(|s| s.as_ref().map(|s| s.leader_id)).collect();
            if let Some(Some(leader)) = leaders.first()
                && *leader != 0
                && leaders.iter().all(|l| *l == Some(*leader))
                && let Some(i) = seen.iter().position(|s| {
                    s.as_ref().is_some_and(|s| s.node_id == *leader && s.role == NodeRole::Leader as i32)
                })
            {
                return Ok(i);
            }
            if Instant::now() > deadline {
                bail!(
                    "no agreed idmesh leader within {within:?}: leaders seen {leaders:?}\n{}",
                    self.log_tails(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every idmesh node has applied the leader's whole log; returns each node's
    /// status then.
    pub async fn idmesh_caught_up(&self, leader: usize, within: Duration) -> anyhow::Result<Vec<SiteStatus>> {
        let deadline = Instant::now() + within;
        let target = idmesh_status(self.members[leader].public).await?.last_log_index;
        loop {
            let mut all = Vec::new();
            for m in &self.members {
                all.push(idmesh_status(m.public).await.ok());
            }
            if all.iter().all(|s| s.as_ref().is_some_and(|s| s.applied_index >= target)) {
                return Ok(all.into_iter().flatten().collect());
            }
            if Instant::now() > deadline {
                let applied: Vec<_> = all.iter().map(|s| s.as_ref().map(|s| s.applied_index)).collect();
                bail!("nodes did not apply log index {target} within {within:?}: applied {applied:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn spawn(
    mut cmd: Command,
    id: u64,
    public: SocketAddr,
    data_dir: PathBuf,
    log_path: PathBuf,
) -> anyhow::Result<Member> {
    let log = std::fs::File::create(&log_path).with_context(|| format!("create {}", log_path.display()))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("start {:?}", cmd.get_program()))?;
    Ok(Member { id, public, data_dir, log_path, child: Some(child) })
}

/// `IDMESH_BENCH_INSECURE=1`: nodes run plaintext (for the TLS on/off comparison).
pub fn insecure() -> bool {
    std::env::var("IDMESH_BENCH_INSECURE").is_ok_and(|v| v == "1")
}

/// Which transport the idmesh nodes of this run use, for reports.
pub fn transport_name() -> &'static str {
    if insecure() { "plaintext (--insecure)" } else { "TLS" }
}

/// Public addresses of nodes that run TLS, and their CA file.
static CAS: std::sync::Mutex<std::collections::BTreeMap<SocketAddr, PathBuf>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// An endpoint for `addr`: TLS with the node's CA, or plaintext.
pub fn endpoint(addr: SocketAddr) -> anyhow::Result<Endpoint> {
    let ca = CAS.lock().unwrap_or_else(|p| p.into_inner()).get(&addr).cloned();
    Ok(match ca {
        Some(ca) => Endpoint::from_shared(format!("https://{addr}"))?.tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(std::fs::read(ca)?))
                .domain_name(addr.ip().to_string()),
        )?,
        None => Endpoint::from_shared(format!("http://{addr}"))?,
    })
}

/// A gRPC channel to `addr` (TLS when the node runs it), retrying for a while as the process
/// starts.
pub async fn connect(addr: SocketAddr) -> anyhow::Result<Channel> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let endpoint =
            endpoint(addr)?.connect_timeout(Duration::from_millis(500)).timeout(Duration::from_secs(30));
        match endpoint.connect().await {
            Ok(channel) => return Ok(channel),
            Err(e) if Instant::now() > deadline => bail!("cannot connect to {addr}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// One node's view of its site.
pub async fn idmesh_status(addr: SocketAddr) -> anyhow::Result<SiteStatus> {
    let channel = endpoint(addr)?
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(2))
        .connect()
        .await?;
    Ok(SiteClient::new(channel).get_site_status(GetSiteStatusRequest {}).await?.into_inner())
}

/// Appends 4 KiB and `fdatasync`s it in a loop for `secs` (as a write-ahead log does, so the
/// file's size changes every time): the disk's raw durable-write rate, per second.
pub fn fsync_rate(dir: &Path, secs: f64) -> anyhow::Result<f64> {
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path).with_context(|| format!("create {}", path.display()))?;
    let block = vec![0xa5_u8; 4096];
    let started = Instant::now();
    let mut count = 0_u32;
    while started.elapsed().as_secs_f64() < secs {
        file.write_all(&block)?;
        file.sync_data()?;
        count += 1;
    }
    let rate = f64::from(count) / started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(rate)
}

/// A process's resident memory now and at its peak, in KiB (`VmRSS`, `VmHWM`).
pub fn rss_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// The sum of the sizes of the files under `dir`, and of the blocks they take (as `du` counts).
pub fn dir_size(dir: &Path) -> anyhow::Result<(u64, u64)> {
    let (mut bytes, mut allocated) = (0, 0);
    for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            let (b, a) = dir_size(&entry.path())?;
            bytes += b;
            allocated += a;
        } else {
            bytes += meta.len();
            allocated += meta.blocks() * 512;
        }
    }
    Ok((bytes, allocated))
}

pub fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}
