//! `idmesh.v1.Delegations` and `idmesh.v1.Issuers`.

use crate::{Node, NodeError};
use idmesh_proto::v1::delegations_server::Delegations;
use idmesh_proto::v1::issuers_server::Issuers;
use idmesh_proto::v1::{
    Delegation, DelegationResponse, DeleteIssuerRequest, DeleteIssuerResponse, GetDelegationRequest,
    GrantDelegationRequest, Issuer, IssuerResponse, ListDelegationsRequest, ListDelegationsResponse,
    ListIssuersRequest, ListIssuersResponse, PutIssuerRequest, RevokeDelegationRequest,
};
use idmesh_state::{IssuerKey, NewDelegation, Op, PublicJwk, TrustedIssuer, UserRef};
use idmesh_types::limits::{DELEGATION_MAX_LIFETIME_SECS, PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX};
use idmesh_types::{AgentId, InvalidField, UnixMillis};
use tonic::{Request, Response, Status};

/// Longest JWKS document accepted for an issuer, in bytes.
pub const ISSUER_JWKS_MAX_BYTES: usize = 32 * 1024;

/// Delegations and trusted issuers of one node.
#[derive(Debug, Clone)]
pub struct DelegationsApi {
    node: Node,
}

impl DelegationsApi {
    /// The delegation and issuer services of `node`.
    pub fn new(node: Node) -> Self {
        Self { node }
    }
}

fn to_proto(d: &idmesh_state::Delegation) -> Delegation {
    Delegation {
        id: d.id.clone(),
        user: d.user.subject.clone(),
        user_issuer: d.user.issuer.clone(),
        agent_id: d.agent.to_string(),
        scopes: d.scopes.iter().cloned().collect(),
        audiences: d.audiences.iter().cloned().collect(),
        granted_at_unix_ms: d.granted_at.0,
        expires_at_unix_ms: d.expires_at.0,
        revoked: d.revoked.is_some(),
        revoked_at_unix_ms: d.revoked.as_ref().map_or(0, |r| r.at.0),
        revoked_reason: d.revoked.as_ref().map(|r| r.reason.clone()).unwrap_or_default(),
    }
}

fn issuer_to_proto(issuer: &TrustedIssuer) -> Issuer {
    let keys: Vec<serde_json::Value> = issuer
        .keys
        .iter()
        .map(|k| {
            let mut jwk: serde_json::Value = serde_json::from_str(&k.jwk.to_json()).unwrap_or_default();
            jwk["kid"] = serde_json::Value::String(k.kid.clone());
            jwk
        })
        .collect();
    Issuer {
        issuer: issuer.issuer.clone(),
        audience: issuer.audience.clone(),
        jwks: serde_json::json!({ "keys": keys }).to_string(),
        updated_at_unix_ms: issuer.updated_at.0,
    }
}

/// The Ed25519 keys of a JWKS document, under the `kid`s the issuer gave them. Keys of other
/// types are refused (not skipped): an operator who pastes an RSA-only JWKS must learn that it
/// cannot work.
pub fn parse_issuer_jwks(jwks: &str) -> Result<Vec<IssuerKey>, InvalidField> {
    if jwks.len() > ISSUER_JWKS_MAX_BYTES {
        return Err(InvalidField::new("jwks", format!("must be at most {ISSUER_JWKS_MAX_BYTES} bytes")));
    }
    let document: serde_json::Value = serde_json::from_str(jwks)
        .map_err(|e| InvalidField::new("jwks", format!("must be a JWKS JSON document ({e})")))?;
    let Some(entries) = document.get("keys").and_then(serde_json::Value::as_array) else {
        return Err(InvalidField::new("jwks", "must be an object with a \"keys\" array"));
    };
    let mut keys = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let field = format!("jwks.keys[{i}]");
        let Some(kid) = entry.get("kid").and_then(serde_json::Value::as_str) else {
            return Err(InvalidField::new(field, "needs a kid (tokens name their key by it)"));
        };
        if entry.get("kty").and_then(serde_json::Value::as_str) != Some("OKP") {
            return Err(InvalidField::new(
                field,
                "only Ed25519 keys (kty OKP) are supported for user issuers so far",
            ));
        }
        let mut bare = entry.clone();
        if let Some(map) = bare.as_object_mut() {
            map.remove("kid");
        }
        let jwk = PublicJwk::parse(&field, &bare.to_string())?;
        keys.push(IssuerKey { kid: kid.to_owned(), jwk });
    }
    Ok(keys)
}

#[tonic::async_trait]
impl Delegations for DelegationsApi {
    async fn grant_delegation(
        &self,
        request: Request<GrantDelegationRequest>,
    ) -> Result<Response<DelegationResponse>, Status> {
        let r = request.into_inner();
        let agent = AgentId::parse_field("agent_id", &r.agent_id).map_err(NodeError::from)?;
        if r.ttl_secs == 0 || r.ttl_secs > DELEGATION_MAX_LIFETIME_SECS {
            return Err(NodeError::from(InvalidField::new(
                "ttl_secs",
                format!("must be 1 to {DELEGATION_MAX_LIFETIME_SECS}"),
            ))
            .into());
        }
        let expires_at = UnixMillis(self.node.now().0.saturating_add(r.ttl_secs * 1000));
        let grant = NewDelegation {
            id: String::new(),
            user: UserRef { issuer: r.user_issuer, subject: r.user },
            agent,
            scopes: r.scopes,
            audiences: r.audiences,
            expires_at,
        };
        let (delegation, log_index) = self.node.grant_delegation(grant).await?;
        Ok(Response::new(DelegationResponse { delegation: Some(to_proto(&delegation)), log_index }))
    }

    async fn get_delegation(
        &self,
        request: Request<GetDelegationRequest>,
    ) -> Result<Response<DelegationResponse>, Status> {
        let id = request.into_inner().id;
        idmesh_state::validate_delegation_id("id", &id).map_err(NodeError::from)?;
        let state = self.node.shared().read();
        match state.state.delegations.by_id.get(&id) {
            Some(d) => Ok(Response::new(DelegationResponse { delegation: Some(to_proto(d)), log_index: 0 })),
            None => Err(NodeError::NotFound { what: format!("delegation {id}") }.into()),
        }
    }

    async fn list_delegations(
        &self,
        request: Request<ListDelegationsRequest>,
    ) -> Result<Response<ListDelegationsResponse>, Status> {
        let r = request.into_inner();
        let page_size = match r.page_size as usize {
            0 => PAGE_SIZE_DEFAULT,
            n if n <= PAGE_SIZE_MAX => n,
            n => {
                return Err(NodeError::from(InvalidField::new(
                    "page_size",
                    format!("at most {PAGE_SIZE_MAX} (got {n})"),
                ))
                .into());
            }
        };
        let agent = match r.agent_id.as_str() {
            "" => None,
            id => Some(AgentId::parse_field("agent_id", id).map_err(NodeError::from)?),
        };
        let state = self.node.shared().read();
        let matching = state
            .state
            .delegations
            .by_id
            .range::<String, _>((std::ops::Bound::Excluded(&r.after), std::ops::Bound::Unbounded))
            .map(|(_, d)| d)
            .filter(|d| agent.as_ref().is_none_or(|a| &d.agent == a))
            .filter(|d| r.user.is_empty() || d.user.subject == r.user);
        let mut delegations: Vec<Delegation> = matching.take(page_size + 1).map(to_proto).collect();
        let next_after = if delegations.len() > page_size {
            delegations.truncate(page_size);
            delegations.last().map(|d| d.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListDelegationsResponse { delegations, next_after }))
    }

    async fn revoke_delegation(
        &self,
        request: Request<RevokeDelegationRequest>,
    ) -> Result<Response<DelegationResponse>, Status> {
        let r = request.into_inner();
        let (delegation, log_index) = self.node.revoke_delegation(r.id, r.reason).await?;
        Ok(Response::new(DelegationResponse { delegation: Some(to_proto(&delegation)), log_index }))
    }
}

#[tonic::async_trait]
impl Issuers for DelegationsApi {
    async fn put_issuer(
        &self,
        request: Request<PutIssuerRequest>,
    ) -> Result<Response<IssuerResponse>, Status> {
        let r = request.into_inner();
        let keys = parse_issuer_jwks(&r.jwks).map_err(NodeError::from)?;
        let config =
            TrustedIssuer { issuer: r.issuer, audience: r.audience, keys, updated_at: UnixMillis(0) };
        match self.node.write_issuer(Op::PutIssuer(config)).await? {
            (Some(issuer), log_index) => {
                Ok(Response::new(IssuerResponse { issuer: Some(issuer_to_proto(&issuer)), log_index }))
            }
            (None, _) => Err(NodeError::Storage { detail: "an issuer write deleted it".into() }.into()),
        }
    }

    async fn list_issuers(
        &self,
        _request: Request<ListIssuersRequest>,
    ) -> Result<Response<ListIssuersResponse>, Status> {
        let state = self.node.shared().read();
        let issuers = state.state.issuers.by_issuer.values().map(issuer_to_proto).collect();
        Ok(Response::new(ListIssuersResponse { issuers }))
    }

    async fn delete_issuer(
        &self,
        request: Request<DeleteIssuerRequest>,
    ) -> Result<Response<DeleteIssuerResponse>, Status> {
        let issuer = request.into_inner().issuer;
        let (_, log_index) = self.node.write_issuer(Op::DeleteIssuer { issuer }).await?;
        Ok(Response::new(DeleteIssuerResponse { log_index }))
    }
}
