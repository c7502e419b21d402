//! The peer gRPC service: what the other members of the site call on this node.

use super::{ForwardRequest, SNAPSHOT_MAX_BYTES};
use crate::{Node, NodeError};
use idmesh_proto::peer::raft_peer_server::RaftPeer;
use idmesh_proto::peer::{ForwardReply, RaftReply, RaftRequest, SnapshotChunk};
use idmesh_raft::{Snapshot, SnapshotData, SnapshotMeta, Vote};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

/// Serves Raft messages and forwarded requests for one node.
#[derive(Debug, Clone)]
pub struct PeerService {
    node: Node,
}

impl PeerService {
    /// The peer service of `node`.
    pub fn new(node: Node) -> Self {
        Self { node }
    }

    fn open<T: DeserializeOwned>(&self, request: &Request<RaftRequest>) -> Result<T, Status> {
        let proven = crate::PeerInfo::of(request);
        self.node.peers().check(request.get_ref().header.as_ref(), proven.as_deref())?;
        self.node.check_site_peer(proven.as_deref())?;
        decode(&request.get_ref().payload)
    }
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(bytes)
        .map_err(|e| Status::invalid_argument(format!("payload does not decode: {e}")))
}

fn reply<T: Serialize>(value: &T) -> Result<Response<RaftReply>, Status> {
    let payload = serde_json::to_vec(value).map_err(|e| Status::internal(format!("encode reply: {e}")))?;
    Ok(Response::new(RaftReply { payload: payload.into() }))
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let rpc = self.open(&request)?;
        let result = self.node.raft().append_entries(rpc).await;
        if let Ok(
            openraft::raft::AppendEntriesResponse::Success
            | openraft::raft::AppendEntriesResponse::PartialSuccess(_)
            | openraft::raft::AppendEntriesResponse::Conflict,
        ) = &result
        {
            // The site's current leader reached this node: its knowledge of the site is fresh.
            self.node.note_leader_contact();
        }
        reply(&result)
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let rpc = self.open(&request)?;
        reply(&self.node.raft().vote(rpc).await)
    }

    async fn pre_vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let rpc = self.open(&request)?;
        reply(&self.node.raft().pre_vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftReply>, Status> {
        let proven = crate::PeerInfo::of(&request);
        let mut stream = request.into_inner();
        let first =
            stream.next().await.ok_or_else(|| Status::invalid_argument("snapshot stream is empty"))??;
        self.node.peers().check(first.header.as_ref(), proven.as_deref())?;
        self.node.check_site_peer(proven.as_deref())?;
        let vote: Vote = decode(&first.vote)?;
        let meta: SnapshotMeta = decode(&first.meta)?;
        let mut data = first.data.to_vec();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if data.len() + chunk.data.len() > SNAPSHOT_MAX_BYTES {
                return Err(Status::resource_exhausted(format!(
                    "snapshot exceeds {SNAPSHOT_MAX_BYTES} bytes"
                )));
            }
            data.extend_from_slice(&chunk.data);
        }
        tracing::info!(bytes = data.len(), last_log_index = ?meta.last_log_id.as_ref().map(|l| l.index), "snapshot received");
        let snapshot = Snapshot { meta, snapshot: SnapshotData::Encoded(std::sync::Arc::new(data)) };
        reply(&self.node.raft().install_full_snapshot(vote, snapshot).await)
    }

    async fn forward(
        &self,
        request: Request<idmesh_proto::peer::ForwardRequest>,
    ) -> Result<Response<ForwardReply>, Status> {
        let proven = crate::PeerInfo::of(&request);
        let request = request.into_inner();
        self.node.peers().check(request.header.as_ref(), proven.as_deref())?;
        self.node.check_site_peer(proven.as_deref())?;
        let forwarded: ForwardRequest = decode(&request.payload)?;
        let answer = self.node.serve_forwarded(forwarded).await;
        let payload =
            serde_json::to_vec(&answer).map_err(|e| Status::internal(format!("encode reply: {e}")))?;
        Ok(Response::new(ForwardReply { payload: payload.into() }))
    }
}

impl From<NodeError> for super::ForwardReply {
    fn from(error: NodeError) -> Self {
        super::ForwardReply::Failed(error)
    }
}
