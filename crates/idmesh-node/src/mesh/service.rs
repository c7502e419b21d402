//! The server side of sync sessions: another site's node dials this one.

use super::session;
use crate::Node;
use idmesh_proto::peer::SyncFrame;
use idmesh_proto::peer::mesh_sync_server::MeshSync;
use std::pin::Pin;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Frames a session may queue towards the peer before it waits for the peer to read.
const OUTBOUND_QUEUE_FRAMES: usize = 1024;

/// Serves sync sessions for one node.
#[derive(Debug, Clone)]
pub struct MeshSyncService {
    node: Node,
}

impl MeshSyncService {
    /// The sync service of `node`.
    pub fn new(node: Node) -> Self {
        Self { node }
    }
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<SyncFrame, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl MeshSync for MeshSyncService {
    type ExchangeStream = FrameStream;

    async fn exchange(
        &self,
        request: Request<Streaming<SyncFrame>>,
    ) -> Result<Response<Self::ExchangeStream>, Status> {
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE_FRAMES);
        let node = self.node.clone();
        tokio::spawn(async move {
            if let Err(e) = session::run(node, tx, inbound, None).await {
                tracing::info!(error = %e, "incoming sync session ended");
            }
        });
        let outbound = tokio_stream::StreamExt::map(ReceiverStream::new(rx), Ok::<SyncFrame, Status>);
        Ok(Response::new(Box::pin(outbound)))
    }
}
