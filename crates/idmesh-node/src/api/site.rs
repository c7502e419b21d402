//! `idmesh.v1.Site`: status and membership of the site.

use crate::Node;
use idmesh_proto::v1::site_server::Site;
use idmesh_proto::v1::{
    AddNodeRequest, CreateJoinTokenRequest, CreateJoinTokenResponse, GetSiteStatusRequest, JoinRequest,
    JoinResponse, RemoveNodeRequest, SiteStatus,
};
use tonic::{Request, Response, Status};

/// The site service of one node.
#[derive(Debug, Clone)]
pub struct SiteApi {
    node: Node,
}

impl SiteApi {
    /// The site service of `node`.
    pub fn new(node: Node) -> Self {
        Self { node }
    }
}

#[tonic::async_trait]
impl Site for SiteApi {
    async fn get_site_status(
        &self,
        _request: Request<GetSiteStatusRequest>,
    ) -> Result<Response<SiteStatus>, Status> {
        Ok(Response::new(self.node.site_status()))
    }

    async fn add_node(&self, request: Request<AddNodeRequest>) -> Result<Response<SiteStatus>, Status> {
        self.node.require_admin(&request, "adding a node")?;
        let request = request.into_inner();
        let log_index = self.node.add_node(request.node_id, request.peer_addr.clone()).await?;
        tracing::info!(added = request.node_id, peer_addr = %request.peer_addr, log_index, "node added");
        Ok(Response::new(self.node.site_status()))
    }

    async fn remove_node(&self, request: Request<RemoveNodeRequest>) -> Result<Response<SiteStatus>, Status> {
        self.node.require_admin(&request, "removing a node")?;
        let request = request.into_inner();
        let log_index = self.node.remove_node(request.node_id).await?;
        tracing::info!(removed = request.node_id, log_index, "node removed");
        Ok(Response::new(self.node.site_status()))
    }

    async fn create_join_token(
        &self,
        request: Request<CreateJoinTokenRequest>,
    ) -> Result<Response<CreateJoinTokenResponse>, Status> {
        self.node.require_admin(&request, "minting a join token")?;
        let (token, expires_at) = self.node.mint_join_token(request.into_inner().ttl_secs).await?;
        Ok(Response::new(CreateJoinTokenResponse { token, expires_at_unix_ms: expires_at.0 }))
    }

    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let request = request.into_inner();
        if request.names.len() > idmesh_tls::CERT_NAMES_MAX {
            return Err(crate::NodeError::from(idmesh_types::InvalidField::new(
                "names",
                format!("at most {}", idmesh_tls::CERT_NAMES_MAX),
            ))
            .into());
        }
        let (cert_pem, ca_pem) =
            self.node.join(&request.token, request.node_id, &request.csr_pem, &request.names).await?;
        Ok(Response::new(JoinResponse { cert_pem, ca_pem }))
    }
}
