//! `idmesh.v1.Mesh`: other sites as this node sees them, and merge conflicts.

use crate::mesh::LinkState;
use crate::{Node, NodeError};
use idmesh_proto::v1::mesh_server::Mesh;
use idmesh_proto::v1::{
    BundlePiece, Conflict, ExportBundleRequest, ExportTrustRequest, GetMeshStatusRequest,
    ImportBundleResponse, ImportTrustResponse, ListConflictsRequest, ListConflictsResponse, MeshStatus,
    RemoteSite, TrustFile,
};
use idmesh_state::bundle::BUNDLE_MAX_BYTES;
use idmesh_types::InvalidField;
use std::pin::Pin;
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status, Streaming};

/// Size of the pieces a bundle is streamed in.
const BUNDLE_PIECE_BYTES: usize = 1024 * 1024;

type PieceStream = Pin<Box<dyn Stream<Item = Result<BundlePiece, Status>> + Send + 'static>>;

/// Most conflicts one request lists.
const CONFLICTS_LIMIT_MAX: u32 = 1000;

/// The mesh service of one node.
#[derive(Debug, Clone)]
pub struct MeshApi {
    node: Node,
}

impl MeshApi {
    /// The mesh service of `node`.
    pub fn new(node: Node) -> Self {
        Self { node }
    }
}

#[tonic::async_trait]
impl Mesh for MeshApi {
    type ExportBundleStream = PieceStream;

    async fn export_bundle(
        &self,
        request: Request<ExportBundleRequest>,
    ) -> Result<Response<Self::ExportBundleStream>, Status> {
        let for_site = request.into_inner().for_site;
        let for_site = Some(for_site.as_str()).filter(|s| !s.is_empty());
        if let Some(site) = for_site {
            idmesh_types::SiteName::parse_field("for_site", site).map_err(NodeError::from)?;
        }
        let (bytes, _) = self.node.export_bundle(for_site).await?;
        let pieces: Vec<Result<BundlePiece, Status>> =
            bytes.chunks(BUNDLE_PIECE_BYTES).map(|p| Ok(BundlePiece { data: p.to_vec() })).collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(pieces))))
    }

    async fn import_bundle(
        &self,
        request: Request<Streaming<BundlePiece>>,
    ) -> Result<Response<ImportBundleResponse>, Status> {
        let mut pieces = request.into_inner();
        let mut bytes = Vec::new();
        while let Some(piece) = pieces.next().await {
            let piece = piece?;
            if bytes.len() + piece.data.len() > BUNDLE_MAX_BYTES {
                return Err(NodeError::from(InvalidField::new(
                    "bundle",
                    format!("at most {BUNDLE_MAX_BYTES} bytes"),
                ))
                .into());
            }
            bytes.extend_from_slice(&piece.data);
        }
        let summary = self.node.import_bundle(&bytes).await.inspect_err(|e| {
            tracing::warn!(error = %e, bytes = bytes.len(), "bundle refused");
        })?;
        Ok(Response::new(ImportBundleResponse {
            bundle_id: summary.header.bundle_id,
            origin_site: summary.header.origin_site,
            created_at_unix_ms: summary.header.created_at.0,
            chunks: u32::try_from(summary.chunks).unwrap_or(u32::MAX),
            log_entries: u32::try_from(summary.entries).unwrap_or(u32::MAX),
        }))
    }

    async fn export_trust(
        &self,
        _request: Request<ExportTrustRequest>,
    ) -> Result<Response<TrustFile>, Status> {
        let file = self.node.export_trust();
        let json = serde_json::to_string_pretty(&file)
            .map_err(|e| NodeError::Storage { detail: format!("cannot encode the trust file: {e}") })?;
        Ok(Response::new(TrustFile { json }))
    }

    async fn import_trust(
        &self,
        request: Request<TrustFile>,
    ) -> Result<Response<ImportTrustResponse>, Status> {
        let file = self.node.import_trust(&request.into_inner().json).await?;
        Ok(Response::new(ImportTrustResponse {
            site: file.site,
            keys: u32::try_from(file.trust.keys.len()).unwrap_or(u32::MAX),
        }))
    }

    async fn get_mesh_status(
        &self,
        _request: Request<GetMeshStatusRequest>,
    ) -> Result<Response<MeshStatus>, Status> {
        let now = self.node.now();
        let sites = self
            .node
            .mesh()
            .sites()
            .into_iter()
            .map(|s| RemoteSite {
                site: s.site,
                state: match s.state {
                    LinkState::Connected => idmesh_proto::v1::LinkState::Connected,
                    LinkState::Connecting => idmesh_proto::v1::LinkState::Connecting,
                    LinkState::Down => idmesh_proto::v1::LinkState::Down,
                } as i32,
                peer_addr: s.peer_addr,
                last_sync_unix_ms: s.last_sync.map_or(0, |t| t.0),
                sync_age_secs: s.last_sync.map(|t| now.0.saturating_sub(t.0) / 1000),
                shards_pending: s.shards_pending,
                changes_received: s.changes_received,
                messages_sent: s.messages_sent,
                last_error: s.last_error,
            })
            .collect();
        Ok(Response::new(MeshStatus {
            site: self.node.config().site.to_string(),
            node_id: self.node.config().node_id.0,
            state_hash: self.node.shared().state_hash(),
            sites,
            audit_chains: {
                let acknowledged = self.node.audit_acknowledged_by_all();
                let audit = self.node.audit();
                audit
                    .held()
                    .iter()
                    .map(|(o, (seq, _))| idmesh_proto::v1::AuditChainHeld {
                        site: o.site.clone(),
                        node: o.node,
                        last_seq: *seq,
                        first_seq: audit.first_kept(o),
                        acknowledged_seq: acknowledged.get(o).copied().unwrap_or(0),
                    })
                    .collect()
            },
            audit_retention_secs: self.node.config().audit_retention_secs,
            audit_waiting: self.node.audit().waiting().iter().map(ToString::to_string).collect(),
            audit_problems: self.node.audit().problems().iter().map(ToString::to_string).collect(),
        }))
    }

    async fn list_conflicts(
        &self,
        request: Request<ListConflictsRequest>,
    ) -> Result<Response<ListConflictsResponse>, Status> {
        let limit = match request.into_inner().limit {
            0 => 100,
            n if n > CONFLICTS_LIMIT_MAX => {
                return Err(NodeError::from(InvalidField::new(
                    "limit",
                    format!("at most {CONFLICTS_LIMIT_MAX}"),
                ))
                .into());
            }
            n => n,
        };
        let (conflicts, truncated) = self.node.shared().conflicts(limit as usize);
        Ok(Response::new(ListConflictsResponse {
            conflicts: conflicts
                .into_iter()
                .map(|c| Conflict { agent: c.agent, field: c.field, values: c.values, kept: c.kept })
                .collect(),
            truncated,
        }))
    }
}
