//! `idmesh delegation …` and `idmesh issuer …`.

use crate::cli::{ClientArgs, DelegationCommand, IssuerCommand};
use crate::client::connect;
use crate::exit::Failure;
use crate::output::summary;
use crate::token_cmd::resolve_agent;
use idmesh_proto::v1::delegations_client::DelegationsClient;
use idmesh_proto::v1::issuers_client::IssuersClient;
use idmesh_proto::v1::{
    Delegation, DeleteIssuerRequest, GetDelegationRequest, GrantDelegationRequest, Issuer,
    ListDelegationsRequest, ListIssuersRequest, PutIssuerRequest, RevokeDelegationRequest,
};
use serde_json::{Value, json};

fn delegation_json(d: &Delegation) -> Value {
    json!({
        "id": d.id,
        "user": d.user,
        "user_issuer": d.user_issuer,
        "agent_id": d.agent_id,
        "scopes": d.scopes,
        "audiences": d.audiences,
        "granted_at_unix_ms": d.granted_at_unix_ms,
        "expires_at_unix_ms": d.expires_at_unix_ms,
        "revoked": d.revoked,
        "revoked_at_unix_ms": if d.revoked { json!(d.revoked_at_unix_ms) } else { Value::Null },
        "revoked_reason": if d.revoked { json!(d.revoked_reason) } else { Value::Null },
    })
}

fn issuer_json(i: &Issuer) -> Value {
    let jwks: Value = serde_json::from_str(&i.jwks).unwrap_or(Value::Null);
    json!({
        "issuer": i.issuer,
        "audience": i.audience,
        "kids": jwks["keys"].as_array().map(|keys| keys.iter().map(|k| k["kid"].clone()).collect::<Vec<_>>()),
        "updated_at_unix_ms": i.updated_at_unix_ms,
    })
}

pub async fn delegation(client: ClientArgs, command: DelegationCommand) -> Result<(), Failure> {
    let channel = connect(&client).await?;
    let mut api = DelegationsClient::new(channel.clone());
    let value = match command {
        DelegationCommand::Grant { user, issuer, agent, scopes, audiences, ttl_secs } => {
            let agent = resolve_agent(&channel, &agent, "--agent").await?;
            let request = GrantDelegationRequest {
                user,
                user_issuer: issuer,
                agent_id: agent.to_string(),
                scopes,
                audiences,
                ttl_secs,
            };
            let reply = api.grant_delegation(request).await?.into_inner();
            reply.delegation.as_ref().map(delegation_json).unwrap_or_default()
        }
        DelegationCommand::Get { id } => {
            let reply = api.get_delegation(GetDelegationRequest { id }).await?.into_inner();
            reply.delegation.as_ref().map(delegation_json).unwrap_or_default()
        }
        DelegationCommand::List { agent, user } => {
            let agent_id = match agent {
                Some(agent) => resolve_agent(&channel, &agent, "--agent").await?.to_string(),
                None => String::new(),
            };
            let mut all = Vec::new();
            let mut after = String::new();
            loop {
                let request = ListDelegationsRequest {
                    agent_id: agent_id.clone(),
                    user: user.clone().unwrap_or_default(),
                    page_size: 1000,
                    after,
                };
                let reply = api.list_delegations(request).await?.into_inner();
                all.extend(reply.delegations.iter().map(delegation_json));
                if reply.next_after.is_empty() {
                    break;
                }
                after = reply.next_after;
            }
            json!({ "delegations": all })
        }
        DelegationCommand::Revoke { id, reason } => {
            let reply = api.revoke_delegation(RevokeDelegationRequest { id, reason }).await?.into_inner();
            reply.delegation.as_ref().map(delegation_json).unwrap_or_default()
        }
    };
    summary(client.output, &value);
    Ok(())
}

pub async fn issuer(client: ClientArgs, command: IssuerCommand) -> Result<(), Failure> {
    let mut api = IssuersClient::new(connect(&client).await?);
    let value = match command {
        IssuerCommand::Put { issuer, jwks, audience } => {
            let bytes = crate::sync_cmd::read_limited(&jwks, idmesh_node::api::ISSUER_JWKS_MAX_BYTES)?;
            let jwks = String::from_utf8(bytes)
                .map_err(|_| Failure::usage(format!("{} is not UTF-8 text", jwks.display())))?;
            let reply = api.put_issuer(PutIssuerRequest { issuer, audience, jwks }).await?.into_inner();
            reply.issuer.as_ref().map(issuer_json).unwrap_or_default()
        }
        IssuerCommand::List => {
            let reply = api.list_issuers(ListIssuersRequest {}).await?.into_inner();
            json!({ "issuers": reply.issuers.iter().map(issuer_json).collect::<Vec<_>>() })
        }
        IssuerCommand::Delete { issuer } => {
            let reply = api.delete_issuer(DeleteIssuerRequest { issuer: issuer.clone() }).await?.into_inner();
            json!({ "deleted": issuer, "log_index": reply.log_index })
        }
    };
    summary(client.output, &value);
    Ok(())
}
