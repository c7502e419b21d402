//! `idmesh.v1.AgentRegistry`: register, read, list and change agents.

use crate::{Node, NodeError};
use idmesh_proto::v1::agent_registry_server::AgentRegistry;
use idmesh_proto::v1::{
    AgentResponse, Consistency, GetAgentRequest, ListAgentsRequest, ListAgentsResponse, RegisterAgentRequest,
    ResumeAgentRequest, RevokeAgentRequest, SuspendAgentRequest, UpdateAgentRequest,
};
use idmesh_proto::{
    agent_ref, agent_to_proto, encode_page_token, list_query_from_proto, register_from_proto,
    update_from_proto,
};
use idmesh_state::{Agent, Op};
use idmesh_types::InvalidField;
use tonic::{Request, Response, Status};

/// The agent registry of one node.
#[derive(Debug, Clone)]
pub struct RegistryApi {
    node: Node,
}

impl RegistryApi {
    /// The registry service of `node`.
    pub fn new(node: Node) -> Self {
        Self { node }
    }

    async fn write(&self, op: Op) -> Result<Response<AgentResponse>, Status> {
        let (agent, log_index) =
            self.node.write(op).await.inspect_err(|e| tracing::info!(error = %e, "write refused"))?;
        tracing::debug!(agent = %agent.id, status = %agent.status, revision = agent.revision, log_index, "agent written");
        Ok(Response::new(answer(&agent, log_index)))
    }

    /// Waits as `consistency` asks before a local read.
    async fn barrier(&self, consistency: i32) -> Result<(), NodeError> {
        match Consistency::try_from(consistency) {
            Ok(Consistency::Unspecified | Consistency::Local) => Ok(()),
            Ok(Consistency::Linearizable) => self.node.linearize().await.map(|_| ()),
            Err(_) => Err(InvalidField::new("consistency", format!("unknown value {consistency}")).into()),
        }
    }

    fn id(&self, text: &str) -> Result<idmesh_types::AgentId, NodeError> {
        Ok(agent_ref("agent", text, &self.node.config().trust_domain)?)
    }
}

fn answer(agent: &Agent, log_index: u64) -> AgentResponse {
    AgentResponse { agent: Some(agent_to_proto(agent)), log_index }
}

#[tonic::async_trait]
impl AgentRegistry for RegistryApi {
    async fn register_agent(
        &self,
        request: Request<RegisterAgentRequest>,
    ) -> Result<Response<AgentResponse>, Status> {
        let op = register_from_proto(request.get_ref(), &self.node.config().trust_domain)
            .map_err(NodeError::from)?;
        self.write(op).await
    }

    async fn get_agent(&self, request: Request<GetAgentRequest>) -> Result<Response<AgentResponse>, Status> {
        let request = request.into_inner();
        let id = self.id(&request.agent)?;
        self.barrier(request.consistency).await?;
        let state = self.node.shared().read();
        let agent = state
            .state
            .registry
            .get(&id)
            .ok_or_else(|| NodeError::NotFound { what: format!("agent {id}") })?;
        let log_index = state.last_applied.as_ref().map_or(0, |l| l.index);
        Ok(Response::new(answer(agent, log_index)))
    }

    async fn list_agents(
        &self,
        request: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        let request = request.into_inner();
        let query =
            list_query_from_proto(&request, &self.node.config().trust_domain).map_err(NodeError::from)?;
        self.barrier(request.consistency).await?;
        let state = self.node.shared().read();
        let page = state.state.registry.list(&query).map_err(NodeError::from)?;
        Ok(Response::new(ListAgentsResponse {
            agents: page.agents.iter().map(agent_to_proto).collect(),
            next_page_token: page.next.as_ref().map(encode_page_token).unwrap_or_default(),
            log_index: state.last_applied.as_ref().map_or(0, |l| l.index),
        }))
    }

    async fn update_agent(
        &self,
        request: Request<UpdateAgentRequest>,
    ) -> Result<Response<AgentResponse>, Status> {
        let op = update_from_proto(request.get_ref(), &self.node.config().trust_domain)
            .map_err(NodeError::from)?;
        self.write(op).await
    }

    async fn suspend_agent(
        &self,
        request: Request<SuspendAgentRequest>,
    ) -> Result<Response<AgentResponse>, Status> {
        let request = request.into_inner();
        self.write(Op::SuspendAgent { id: self.id(&request.agent)?, reason: request.reason }).await
    }

    async fn resume_agent(
        &self,
        request: Request<ResumeAgentRequest>,
    ) -> Result<Response<AgentResponse>, Status> {
        let request = request.into_inner();
        self.write(Op::ResumeAgent { id: self.id(&request.agent)? }).await
    }

    async fn revoke_agent(
        &self,
        request: Request<RevokeAgentRequest>,
    ) -> Result<Response<AgentResponse>, Status> {
        let request = request.into_inner();
        self.write(Op::RevokeAgent { id: self.id(&request.agent)?, reason: request.reason }).await
    }
}
