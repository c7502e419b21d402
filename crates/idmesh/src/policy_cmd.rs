//! `idmesh policy …` and `idmesh authorize`.

use crate::cli::{ActionCommand, AuthorizeArgs, ClientArgs, PolicyCommand};
use crate::client::connect;
use crate::exit::Failure;
use crate::output::summary;
use idmesh_proto::v1::authz_client::AuthzClient;
use idmesh_proto::v1::policies_client::PoliciesClient;
use idmesh_proto::v1::{
    AuthorizeRequest, DeclareActionsRequest, DeletePolicyRequest, GetPolicyRequest, ListActionsRequest,
    ListPoliciesRequest, Policy, PutPolicyRequest, ValidatePolicyRequest,
};
use idmesh_types::limits::POLICY_TEXT_MAX_BYTES;
use serde_json::{Value, json};
use std::path::Path;

fn read_text(path: &Path) -> Result<String, Failure> {
    let bytes = crate::sync_cmd::read_limited(path, POLICY_TEXT_MAX_BYTES)?;
    String::from_utf8(bytes).map_err(|_| Failure::usage(format!("{} is not UTF-8 text", path.display())))
}

fn policy_json(policy: &Policy) -> Value {
    json!({
        "id": policy.id,
        "revision": policy.revision,
        "updated_at_unix_ms": policy.updated_at_unix_ms,
        "not_in_force": policy.not_in_force,
        "text": policy.text,
    })
}

pub async fn policy(client: ClientArgs, command: PolicyCommand) -> Result<(), Failure> {
    let mut api = PoliciesClient::new(connect(&client).await?);
    let value = match command {
        PolicyCommand::Put { id, file, expected_revision } => {
            let text = read_text(&file)?;
            let reply = api.put_policy(PutPolicyRequest { id, text, expected_revision }).await?.into_inner();
            let mut value = reply.policy.as_ref().map(policy_json).unwrap_or_default();
            value["policy_version"] = json!(reply.policy_version);
            value
        }
        PolicyCommand::Get { id } => {
            let reply = api.get_policy(GetPolicyRequest { id }).await?.into_inner();
            let mut value = reply.policy.as_ref().map(policy_json).unwrap_or_default();
            value["policy_version"] = json!(reply.policy_version);
            value
        }
        PolicyCommand::List => {
            let reply = api.list_policies(ListPoliciesRequest {}).await?.into_inner();
            json!({
                "policy_version": reply.policy_version,
                "actions": reply.actions,
                "policies": reply.policies.iter().map(|p| json!({
                    "id": p.id,
                    "revision": p.revision,
                    "not_in_force": p.not_in_force,
                })).collect::<Vec<_>>(),
            })
        }
        PolicyCommand::Validate { id, file } => {
            let text = read_text(&file)?;
            let reply =
                api.validate_policy(ValidatePolicyRequest { id: id.clone(), text }).await?.into_inner();
            if !reply.valid {
                return Err(Failure::server(format!("policy {id} is not valid: {}", reply.diagnostics)));
            }
            json!({ "id": id, "valid": true, "statements": reply.statements })
        }
        PolicyCommand::Delete { id } => {
            let reply = api.delete_policy(DeletePolicyRequest { id: id.clone() }).await?.into_inner();
            json!({ "deleted": id, "policy_version": reply.policy_version })
        }
        PolicyCommand::Action { command } => {
            let reply = match command {
                ActionCommand::Add { names } => api.declare_actions(DeclareActionsRequest { names }).await?,
                ActionCommand::List => api.list_actions(ListActionsRequest {}).await?,
            }
            .into_inner();
            json!({ "actions": reply.actions, "builtin": reply.builtin })
        }
    };
    summary(client.output, &value);
    Ok(())
}

pub async fn authorize(client: ClientArgs, args: AuthorizeArgs) -> Result<(), Failure> {
    let mut attributes = std::collections::HashMap::new();
    for pair in &args.attributes {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| Failure::usage(format!("--attr {pair:?}: expected KEY=VALUE")))?;
        attributes.insert(key.to_owned(), value.to_owned());
    }
    let mut api = AuthzClient::new(connect(&client).await?);
    let reply = api
        .authorize(AuthorizeRequest {
            token: args.token,
            action: args.action,
            resource: args.resource,
            resource_attributes: attributes,
        })
        .await?
        .into_inner();
    summary(
        client.output,
        &json!({
            "allowed": reply.allowed,
            "reason": reply.reason,
            "determining_policies": reply.determining_policies,
            "errors": reply.errors,
            "policy_version": reply.policy_version,
            "agent": reply.agent_id,
            "on_behalf_of": reply.on_behalf_of,
            "actors": reply.actors,
            "audit_seq": reply.audit_seq,
        }),
    );
    if reply.allowed { Ok(()) } else { Err(Failure::server(format!("denied: {}", reply.reason))) }
}
