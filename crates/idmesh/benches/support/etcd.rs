//! etcd, for comparison: a cluster of real `etcd` processes and the two RPCs the benchmark
//! needs, `etcdserverpb.KV/Put` and `etcdserverpb.Maintenance/Status`.
//!
//! idmesh's protobuf types live in `idmesh-proto`, the only crate meant to know protobuf. These
//! messages are a third-party wire format used only by this benchmark, so they are written by
//! hand here (the few fields needed, with etcd 3.4's tag numbers from its `rpc.proto`; prost
//! skips the fields left out) rather than generated into the project's proto crate.

use super::{Cluster, System, free_addr, spawn};
use anyhow::bail;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tonic::client::Grpc;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic_prost::ProstCodec;

/// `etcdserverpb.PutRequest` (key and value only).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `etcdserverpb.PutResponse`, ignored: decoded as an empty message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutResponse {}

/// `etcdserverpb.StatusRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusRequest {}

/// `etcdserverpb.ResponseHeader` (`member_id` only).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseHeader {
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
}

/// `etcdserverpb.StatusResponse` (the fields used here).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(uint64, tag = "4")]
    pub leader: u64,
    #[prost(uint64, tag = "5")]
    pub raft_index: u64,
    #[prost(uint64, tag = "7")]
    pub raft_applied_index: u64,
}

/// Whether `etcd` is on PATH.
pub fn available() -> bool {
    Command::new("etcd").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// A client of one etcd member.
#[derive(Debug)]
pub struct Client(Grpc<Channel>);

impl Client {
    pub fn new(channel: Channel) -> Self {
        Client(Grpc::new(channel))
    }

    pub async fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), tonic::Status> {
        self.0.ready().await.map_err(|e| tonic::Status::unavailable(format!("channel not ready: {e}")))?;
        let path = PathAndQuery::from_static("/etcdserverpb.KV/Put");
        let codec = ProstCodec::<PutRequest, PutResponse>::default();
        self.0.unary(tonic::Request::new(PutRequest { key, value }), path, codec).await.map(drop)
    }

    pub async fn status(&mut self) -> Result<StatusResponse, tonic::Status> {
        self.0.ready().await.map_err(|e| tonic::Status::unavailable(format!("channel not ready: {e}")))?;
        let path = PathAndQuery::from_static("/etcdserverpb.Maintenance/Status");
        let codec = ProstCodec::<StatusRequest, StatusResponse>::default();
        Ok(self.0.unary(tonic::Request::new(StatusRequest {}), path, codec).await?.into_inner())
    }
}

async fn status(addr: SocketAddr) -> anyhow::Result<StatusResponse> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(2))
        .connect()
        .await?;
    Ok(Client::new(channel).status().await?)
}

impl Cluster {
    /// `n` etcd members forming one cluster, data dirs under `root/<tag>-member-<id>`, with
    /// their default durability (every write fsynced) and an 8 GiB backend quota.
    pub fn start_etcd(root: &Path, tag: &str, n: u64) -> anyhow::Result<Cluster> {
        let addrs: Vec<(SocketAddr, SocketAddr)> =
            (0..n).map(|_| Ok((free_addr()?, free_addr()?))).collect::<anyhow::Result<_>>()?;
        let initial: Vec<String> =
            addrs.iter().zip(1..).map(|((_, peer), id)| format!("m{id}=http://{peer}")).collect();
        let initial = initial.join(",");
        let mut members = Vec::new();
        for ((client, peer), id) in addrs.into_iter().zip(1..) {
            let data_dir = root.join(format!("{tag}-member-{id}"));
            let mut cmd = Command::new("etcd");
            cmd.args(["--name", &format!("m{id}")])
                .arg("--data-dir")
                .arg(&data_dir)
                .args(["--listen-client-urls", &format!("http://{client}")])
                .args(["--advertise-client-urls", &format!("http://{client}")])
                .args(["--listen-peer-urls", &format!("http://{peer}")])
                .args(["--initial-advertise-peer-urls", &format!("http://{peer}")])
                .args(["--initial-cluster", &initial, "--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", &format!("bench-{tag}")])
                .args(["--quota-backend-bytes", &(8_u64 << 30).to_string()])
                .args(["--logger", "zap", "--log-level", "warn"]);
            members.push(spawn(cmd, id, client, data_dir, root.join(format!("{tag}-member-{id}.log")))?);
        }
        Ok(Cluster { system: System::Etcd, members })
    }

    /// Waits until every etcd member names the same leader; returns its index in `members`.
    pub async fn etcd_leader(&self, within: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + within;
        loop {
            let mut seen = Vec::new();
            for m in &self.members {
                seen.push(status(m.public).await.ok());
            }
            let leaders: Vec<Option<u64>> = seen.iter().map(|s| s.as_ref().map(|s| s.leader)).collect();
            if let Some(Some(leader)) = leaders.first()
                && *leader != 0
                && leaders.iter().all(|l| *l == Some(*leader))
                && let Some(i) = seen.iter().position(|s| {
                    s.as_ref().and_then(|s| s.header.as_ref()).is_some_and(|h| h.member_id == *leader)
                })
            {
                return Ok(i);
            }
            if Instant::now() > deadline {
                bail!(
                    "no agreed etcd leader within {within:?}: leaders seen {leaders:?}\n{}",
                    self.log_tails(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every etcd member has applied the leader's raft log.
    pub async fn etcd_caught_up(&self, leader: usize, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        let target = status(self.members[leader].public).await?.raft_index;
        loop {
            let mut applied = Vec::new();
            for m in &self.members {
                applied.push(status(m.public).await.ok().map(|s| s.raft_applied_index));
            }
            if applied.iter().all(|a| a.is_some_and(|a| a >= target)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("etcd members did not apply raft index {target} within {within:?}: {applied:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
