//! `idmesh.v1.Policies` and `idmesh.v1.Authz`.

use crate::authz::AuthorizeQuery;
use crate::{Node, NodeError};
use idmesh_proto::v1::authz_server::Authz;
use idmesh_proto::v1::policies_server::Policies;
use idmesh_proto::v1::{
    ActionsResponse, AuthorizeRequest, AuthorizeResponse, DeclareActionsRequest, DeletePolicyRequest,
    DeletePolicyResponse, GetPolicyRequest, ListActionsRequest, ListPoliciesRequest, ListPoliciesResponse,
    Policy, PolicyResponse, PutPolicyRequest, ValidatePolicyRequest, ValidatePolicyResponse,
};
use idmesh_state::{Applied, Command, Op};
use tonic::{Request, Response, Status};

/// Policy administration of one node.
#[derive(Debug, Clone)]
pub struct PoliciesApi {
    node: Node,
}

impl PoliciesApi {
    /// The policy service of `node`.
    pub fn new(node: Node) -> Self {
        Self { node }
    }

    fn to_proto(&self, policy: &idmesh_state::Policy) -> Result<Policy, NodeError> {
        let book = self.node.policy_book()?;
        Ok(Policy {
            id: policy.id.clone(),
            text: policy.text.clone(),
            revision: policy.revision,
            updated_at_unix_ms: policy.updated_at.0,
            not_in_force: book.excluded().get(&policy.id).cloned().unwrap_or_default(),
        })
    }

    fn version(&self) -> Result<String, NodeError> {
        Ok(self.node.policy_book()?.version().to_owned())
    }

    fn actions(&self) -> ActionsResponse {
        ActionsResponse {
            actions: self.node.shared().read().state.policies.actions.iter().cloned().collect(),
            builtin: idmesh_state::BUILTIN_ACTION_NAMES.iter().map(|a| (*a).to_owned()).collect(),
        }
    }
}

#[tonic::async_trait]
impl Policies for PoliciesApi {
    async fn put_policy(
        &self,
        request: Request<PutPolicyRequest>,
    ) -> Result<Response<PolicyResponse>, Status> {
        let r = request.into_inner();
        let (policy, _) = self.node.put_policy(r.id, r.text, r.expected_revision).await?;
        Ok(Response::new(PolicyResponse {
            policy: Some(self.to_proto(&policy)?),
            policy_version: self.version()?,
        }))
    }

    async fn get_policy(
        &self,
        request: Request<GetPolicyRequest>,
    ) -> Result<Response<PolicyResponse>, Status> {
        let id = request.into_inner().id;
        idmesh_types::validate_policy_id(&id).map_err(NodeError::from)?;
        let policy = self.node.shared().read().state.policies.by_id.get(&id).cloned();
        let policy = policy.ok_or_else(|| NodeError::NotFound { what: format!("policy {id}") })?;
        Ok(Response::new(PolicyResponse {
            policy: Some(self.to_proto(&policy)?),
            policy_version: self.version()?,
        }))
    }

    async fn list_policies(
        &self,
        _request: Request<ListPoliciesRequest>,
    ) -> Result<Response<ListPoliciesResponse>, Status> {
        let policies = self.node.shared().read().state.policies.clone();
        let list = policies.by_id.values().map(|p| self.to_proto(p)).collect::<Result<Vec<_>, _>>()?;
        Ok(Response::new(ListPoliciesResponse {
            policies: list,
            actions: policies.actions.iter().cloned().collect(),
            policy_version: self.version()?,
        }))
    }

    async fn validate_policy(
        &self,
        request: Request<ValidatePolicyRequest>,
    ) -> Result<Response<ValidatePolicyResponse>, Status> {
        let r = request.into_inner();
        let actions = self.node.shared().read().state.policies.actions.clone();
        Ok(Response::new(match idmesh_policy::validate_policy(&r.id, &r.text, &actions) {
            Ok(statements) => ValidatePolicyResponse {
                valid: true,
                diagnostics: String::new(),
                statements: u32::try_from(statements).unwrap_or(u32::MAX),
            },
            Err(idmesh_policy::PolicyError::Rejected { diagnostics, .. }) => {
                ValidatePolicyResponse { valid: false, diagnostics, statements: 0 }
            }
            Err(other) => return Err(NodeError::from(other).into()),
        }))
    }

    async fn delete_policy(
        &self,
        request: Request<DeletePolicyRequest>,
    ) -> Result<Response<DeletePolicyResponse>, Status> {
        let id = request.into_inner().id;
        self.node.write_command(Command { at: self.node.now(), op: Op::DeletePolicy { id } }).await?;
        Ok(Response::new(DeletePolicyResponse { policy_version: self.version()? }))
    }

    async fn declare_actions(
        &self,
        request: Request<DeclareActionsRequest>,
    ) -> Result<Response<ActionsResponse>, Status> {
        let names = request.into_inner().names;
        match self
            .node
            .write_command(Command { at: self.node.now(), op: Op::DeclareActions { names } })
            .await?
        {
            (Applied::Actions(_), _) => Ok(Response::new(self.actions())),
            (other, _) => {
                Err(NodeError::Storage { detail: format!("an action declaration applied as {other:?}") }
                    .into())
            }
        }
    }

    async fn list_actions(
        &self,
        _request: Request<ListActionsRequest>,
    ) -> Result<Response<ActionsResponse>, Status> {
        Ok(Response::new(self.actions()))
    }
}

/// Authorization decisions of one node.
#[derive(Debug, Clone)]
pub struct AuthzApi {
    node: Node,
}

impl AuthzApi {
    /// The Authz service of `node`.
    pub fn new(node: Node) -> Self {
        Self { node }
    }
}

#[tonic::async_trait]
impl Authz for AuthzApi {
    async fn authorize(
        &self,
        request: Request<AuthorizeRequest>,
    ) -> Result<Response<AuthorizeResponse>, Status> {
        let r = request.into_inner();
        let outcome = self
            .node
            .authorize(AuthorizeQuery {
                token: r.token,
                action: r.action,
                resource: r.resource,
                resource_attributes: r.resource_attributes.into_iter().collect(),
            })
            .await?;
        Ok(Response::new(AuthorizeResponse {
            allowed: outcome.allowed,
            determining_policies: outcome.determining,
            reason: outcome.reason,
            errors: outcome.errors,
            policy_version: outcome.policy_version,
            agent_id: outcome.agent,
            on_behalf_of: outcome.on_behalf_of.unwrap_or_default(),
            audit_seq: outcome.audit_seq,
            actors: outcome.actors,
        }))
    }
}
