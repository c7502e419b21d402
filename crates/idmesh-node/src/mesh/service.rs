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
        let proven = crate::PeerInfo::of(&request);
        if let (crate::Security::Tls(_), None) = (&self.node.config().security, &proven) {
            return Err(Status::permission_denied("the connection carries no verified certificate"));
        }
        let mut inbound = request.into_inner();
        let (frames_tx, mut frames_rx) = mpsc::channel::<SyncFrame>(OUTBOUND_QUEUE_FRAMES);
        let (out_tx, out_rx) = mpsc::channel::<Result<SyncFrame, Status>>(OUTBOUND_QUEUE_FRAMES);
        let node = self.node.clone();
        tokio::spawn(async move {
            let forward = async {
                while let Some(frame) = frames_rx.recv().await {
                    if out_tx.send(Ok(frame)).await.is_err() {
                        break;
                    }
                }
            };
            // The session owns `frames_tx`: forwarding ends when the session does.
            let (result, ()) =
                tokio::join!(session::run(node, frames_tx, &mut inbound, None, proven), forward);
            if let Err(e) = result {
                tracing::info!(error = %e, "incoming sync session ended");
                if let session::SessionError::Peer(reason) = e {
                    // Tell the dialler why, so its `mesh status` shows the reason too.
                    let _ = out_tx
                        .send(Err(Status::failed_precondition(format!("sync refused: {reason}"))))
                        .await;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }
}
