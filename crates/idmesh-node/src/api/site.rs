//! `idmesh.v1.Site`: status and membership of the site.

use crate::Node;
use idmesh_proto::v1::site_server::Site;
use idmesh_proto::v1::{AddNodeRequest, GetSiteStatusRequest, RemoveNodeRequest, SiteStatus};
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
        let request = request.into_inner();
        let log_index = self.node.add_node(request.node_id, request.peer_addr.clone()).await?;
        tracing::info!(added = request.node_id, peer_addr = %request.peer_addr, log_index, "node added");
        Ok(Response::new(self.node.site_status()))
    }

    async fn remove_node(&self, request: Request<RemoveNodeRequest>) -> Result<Response<SiteStatus>, Status> {
        let request = request.into_inner();
        let log_index = self.node.remove_node(request.node_id).await?;
        tracing::info!(removed = request.node_id, log_index, "node removed");
        Ok(Response::new(self.node.site_status()))
    }
}
