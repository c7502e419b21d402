//! openraft's network over the peer gRPC API. Payloads are openraft's messages in JSON.

use super::{Peers, SNAPSHOT_CHUNK_BYTES};
use idmesh_proto::peer::{RaftReply, RaftRequest, SnapshotChunk};
use idmesh_raft::{NodeInfo, Snapshot, TypeConfig, Vote};
use openraft::error::{NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::sync::Arc;
use tonic::Code;

/// Most (estimated) bytes of entries in one append request: half the peer message limit, so a
/// lagging follower is sent big entries (changes from another site, bundles) a few at a time.
const APPEND_BYTES_BUDGET: usize = super::PEER_MESSAGE_MAX_BYTES / 2;

/// Estimated encoded size of an entry: its change bytes travel base64-encoded in JSON.
fn entry_weight(entry: &openraft::alias::EntryOf<TypeConfig>) -> usize {
    const OVERHEAD: usize = 512;
    match &entry.payload {
        openraft::EntryPayload::Normal(idmesh_state::Entry::Remote { changes, .. }) => {
            changes.iter().map(|(_, c)| c.0.len() * 4 / 3 + 32).sum::<usize>() + OVERHEAD
        }
        openraft::EntryPayload::Normal(idmesh_state::Entry::Agent { change, .. })
        | openraft::EntryPayload::Normal(idmesh_state::Entry::Publish { change, .. }) => {
            change.0.len() * 4 / 3 + OVERHEAD
        }
        _ => OVERHEAD,
    }
}

/// Shortest deadline given to a Raft RPC.
const RPC_TIMEOUT_FLOOR: std::time::Duration = std::time::Duration::from_millis(1000);

/// Creates a connection per target for openraft; all of them share the node's channel cache.
#[derive(Debug, Clone)]
pub struct Network {
    peers: Arc<Peers>,
    /// Encode snapshots on the calling task (an in-memory store: a simulation) rather than on
    /// tokio's blocking pool.
    inline: bool,
}

impl Network {
    /// A network over `peers`.
    pub fn new(peers: Arc<Peers>, inline: bool) -> Self {
        Self { peers, inline }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: u64, node: &NodeInfo) -> Self::Network {
        PeerConnection {
            peers: self.peers.clone(),
            target,
            addr: node.peer_addr.clone(),
            inline: self.inline,
        }
    }
}

/// openraft's view of one other member.
#[derive(Debug)]
pub struct PeerConnection {
    peers: Arc<Peers>,
    target: u64,
    addr: String,
    inline: bool,
}

#[derive(Clone, Copy)]
enum Rpc {
    Append,
    Vote,
    PreVote,
}

fn network_error(detail: String) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::new(&std::io::Error::other(detail)))
}

fn status_error(status: tonic::Status) -> RPCError<TypeConfig> {
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
            RPCError::Unreachable(Unreachable::new(&std::io::Error::other(status.message().to_owned())))
        }
        _ => network_error(format!("{}: {}", status.code(), status.message())),
    }
}

impl PeerConnection {
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        rpc: Rpc,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        let payload = serde_json::to_vec(request).map_err(|e| network_error(format!("encode: {e}")))?;
        let mut client =
            self.peers.client(self.target, &self.addr).map_err(|e| network_error(e.to_string()))?;
        let mut message = tonic::Request::new(RaftRequest {
            header: Some(self.peers.header(self.target)),
            payload: payload.into(),
        });
        // openraft gives an append or vote the heartbeat interval; on two shared cores a follower
        // that is building a snapshot can take longer than that without being dead. A dead peer
        // fails fast anyway (connection refused or reset); a hung one is noticed after the floor.
        message.set_timeout(option.hard_ttl().max(RPC_TIMEOUT_FLOOR));
        let reply: Result<tonic::Response<RaftReply>, tonic::Status> = match rpc {
            Rpc::Append => client.append_entries(message).await,
            Rpc::Vote => client.vote(message).await,
            Rpc::PreVote => client.pre_vote(message).await,
        };
        let reply = reply.map_err(status_error)?.into_inner();
        let result: Result<Resp, RaftError<TypeConfig>> = serde_json::from_slice(&reply.payload)
            .map_err(|e| network_error(format!("decode reply: {e}")))?;
        result.map_err(|remote| network_error(format!("node {} failed: {remote}", self.target)))
    }
}

impl RaftNetworkV2<TypeConfig> for PeerConnection {
    type SnapshotData = idmesh_raft::SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let mut rpc = rpc;
        let total: usize = rpc.entries.iter().map(entry_weight).sum();
        if total <= APPEND_BYTES_BUDGET {
            return self.call(Rpc::Append, &rpc, &option).await;
        }
        // Send the longest prefix within the budget (at least one entry) and report it as a
        // partial success: openraft sends the rest next.
        let mut kept = 0usize;
        let mut bytes = 0usize;
        for entry in &rpc.entries {
            let weight = entry_weight(entry);
            if kept > 0 && bytes + weight > APPEND_BYTES_BUDGET {
                break;
            }
            bytes += weight;
            kept += 1;
        }
        rpc.entries.truncate(kept);
        let last = rpc.entries.last().map(|e| e.log_id);
        match self.call(Rpc::Append, &rpc, &option).await? {
            AppendEntriesResponse::Success => Ok(AppendEntriesResponse::PartialSuccess(last)),
            other => Ok(other),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(Rpc::Vote, &rpc, &option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(Rpc::PreVote, &rpc, &option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let encode_err = |e: serde_json::Error| StreamingError::Network(NetworkError::new(&e));
        let vote = serde_json::to_vec(&vote).map_err(encode_err)?;
        let meta = serde_json::to_vec(&snapshot.meta).map_err(encode_err)?;
        let view = snapshot.snapshot;
        let encoded = idmesh_raft::offload::off_worker(self.inline, "snapshot encode", move || view.encode())
            .await
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        let mut chunks = Vec::new();
        let mut data = encoded.chunks(SNAPSHOT_CHUNK_BYTES);
        chunks.push(SnapshotChunk {
            header: Some(self.peers.header(self.target)),
            vote: vote.into(),
            meta: meta.into(),
            data: data.next().map(|c| c.to_vec()).unwrap_or_default().into(),
        });
        chunks.extend(data.map(|c| SnapshotChunk { data: c.to_vec().into(), ..Default::default() }));
        let bytes = encoded.len();
        let mut client = self
            .peers
            .client(self.target, &self.addr)
            .map_err(|e| StreamingError::Network(NetworkError::new(&std::io::Error::other(e.to_string()))))?;
        let mut request = tonic::Request::new(tokio_stream::iter(chunks));
        request.set_timeout(option.hard_ttl());
        tracing::info!(target_node = self.target, bytes, "sending snapshot");
        let reply = tokio::select! {
            biased;
            reply = client.install_snapshot(request) => reply,
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        let reply = reply.map_err(|s| match status_error(s) {
            RPCError::Unreachable(u) => StreamingError::Unreachable(u),
            other => StreamingError::Network(NetworkError::new(&other)),
        })?;
        let result: Result<SnapshotResponse<TypeConfig>, openraft::error::Fatal<TypeConfig>> =
            serde_json::from_slice(&reply.into_inner().payload).map_err(encode_err)?;
        result.map_err(|fatal| StreamingError::Network(NetworkError::new(&fatal)))
    }
}
